// Overview: sources online/offline, jobs by status, data replicated, throughput now and over time, the next
// scheduled syncs and the failures that need attention.

import { h, fill, pageHeader, section, table, badge, bytes, rate, when, link } from './ui.js';
import { lineChart, barChart, samples } from './charts.js';
import * as data from './data.js';

const JOB_TONES = { Running: 'info', Waiting: 'info', Finished: 'ok', InError: 'bad', Stopped: 'neutral', Ready: 'neutral', Expired: 'warn', Deleting: 'warn' };

function stat(label, value, id) {
  return h('div', { class: 'card' }, h('p', { class: 'stat', id }, value), h('p', { class: 'stat-label' }, label));
}

export async function overviewPage(ctx) {
  const body = h('div', {});
  const page = h('div', {}, pageHeader('Overview', h('a', { class: 'button', href: '#/jobs/new' }, 'New replication job')), body);
  ctx.show(page);
  await ctx.live(body, async (el) => {
    const [srcs, jobs] = await Promise.all([data.sources(), data.jobs()]);
    const onlineCount = srcs.filter(data.online).length;
    let replicated = 0;
    let throughput = 0;
    for (const j of jobs) {
      for (const r of data.runs(j)) replicated += Number(r.BytesUploaded || r.BytesSent || 0);
      const cur = data.currentRun(j);
      if (cur && j.Status === 'Running') throughput += Number(cur.Throughput || 0);
    }
    samples.push('all', throughput);
    const byStatus = {};
    for (const j of jobs) byStatus[j.Status] = (byStatus[j.Status] || 0) + 1;
    const upcoming = jobs
      .map((j) => ({ j, at: data.nextSync(j) }))
      .filter((x) => x.at)
      .sort((a, b) => a.at - b.at)
      .slice(0, 5);
    const failures = [
      ...jobs.filter((j) => j.Status === 'InError').map((j) => ({ kind: 'Replication job', id: j.JobId, href: `#/jobs/${j.JobId}`, name: j.Name, what: j.ErrorCode || 'InError', info: j.StatusInfo || '' })),
      ...srcs.filter((s) => s.State === 'Unavailable').map((s) => ({ kind: 'Source server', id: s.SourceId, href: `#/sources/${s.SourceId}`, name: s.Name, what: s.ErrorCode || 'Unavailable', info: s.StatusInfo || 'The agent stopped heart-beating: check that ferry-agent runs on it and can reach this server.' })),
    ];
    fill(
      el,
      h(
        'div',
        { class: 'grid' },
        stat('Sources online', String(onlineCount), 'stat-online'),
        stat('Sources offline', String(srcs.length - onlineCount), 'stat-offline'),
        stat('Data replicated', bytes(replicated), 'stat-replicated'),
        stat('Throughput now', rate(throughput), 'stat-throughput'),
      ),
      section('Failures that need attention', failures.length
        ? table('Failures', [
            ['What', (f) => f.kind],
            ['Name', (f) => link(f.href, f.name || f.id)],
            ['Problem', (f) => h('strong', {}, f.what)],
            ['Details', (f) => f.info],
          ], failures)
        : h('p', { class: 'empty', id: 'no-failures' }, 'No failures: every job and source is healthy.')),
      h(
        'div',
        { class: 'grid' },
        section('Jobs by status', barChart('Replication jobs by status', Object.entries(byStatus).map(([k, v]) => ({ label: k, value: v, tone: JOB_TONES[k] })), 0, (v) => String(Math.round(v)))),
        section('Throughput over time', lineChart('Total replication throughput over time', samples.get('all'), rate, 1 << 20)),
      ),
      section('Next scheduled syncs', table('Next scheduled syncs', [
        ['Job', (x) => link(`#/jobs/${x.j.JobId}`, x.j.Name || x.j.JobId)],
        ['Status', (x) => badge(x.j.Status)],
        ['Runs at', (x) => when(x.at.toISOString())],
      ], upcoming, 'No sync is scheduled.')),
    );
  });
  return null;
}
