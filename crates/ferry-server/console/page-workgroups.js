// Workgroups (migration waves): membership, derived status, warnings, and progress per wave.

import { call, list } from './api.js';
import { h, fill, pageHeader, section, table, badge, act, confirmAction, dialog, field, input, select } from './ui.js';
import { barChart } from './charts.js';
import * as data from './data.js';

const WARNINGS = {
  InError: 'a member’s job failed',
  UnRelated: 'a member has no replication job',
  NotPassed: 'a member’s job failed verification',
};

export async function workgroupsPage(ctx) {
  const body = h('div', {});
  const create = h('button', { type: 'button', class: 'primary', id: 'workgroup-create' }, 'New workgroup');
  create.addEventListener('click', async () => {
    const name = input('Name', { required: true, id: 'wg-name' });
    const desc = input('Description', { id: 'wg-desc' });
    await dialog('New workgroup', () => [field('Name', name, '2–64 characters, starting with a letter.'), field('Description', desc)],
      () => call('smc', 'CreateWorkgroup', { Name: name.value.trim(), Description: desc.value.trim() }), 'Create');
  });
  ctx.show(h('div', {}, pageHeader('Workgroups', create), h('p', { class: 'muted' }, 'A workgroup is a migration wave: source servers moved together. Its status is derived from its members’ jobs.'), body));
  await ctx.live(body, async (el) => {
    const [groups, jobs, srcs] = await Promise.all([data.workgroups(), data.jobs(), data.sources()]);
    const jobBySource = new Map();
    for (const j of jobs) jobBySource.set(j.SourceId, j);
    const progress = groups.map((g) => {
      const members = list(g, 'SourceIds', 'SourceId');
      const values = members.map((s) => {
        const j = jobBySource.get(s);
        if (!j) return 0;
        return j.Status === 'Finished' ? 100 : Number(j.Progress) || 0;
      });
      const avg = values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0;
      return { label: g.Name || g.WorkgroupId, value: avg, tone: list(g, 'Warnings', 'Warning').length ? 'warn' : avg >= 100 ? 'ok' : 'info' };
    });
    fill(el,
      section('Progress per wave', barChart('Average migration progress per workgroup', progress, 100, (v) => `${v.toFixed(0)}%`)),
      groups.length ? groups.map((g) => {
        const members = list(g, 'SourceIds', 'SourceId');
        const warnings = list(g, 'Warnings', 'Warning');
        const outside = srcs.filter((s) => !members.includes(s.SourceId) && !s.WorkgroupId);
        const pick = select('SourceId', outside.map((s) => [s.SourceId, `${s.Name || s.SourceId} (${s.SourceId})`]), '', { id: `wg-add-${g.WorkgroupId}` });
        const add = h('button', { type: 'button', 'data-key': `add-${g.WorkgroupId}` }, 'Add to wave');
        add.disabled = !outside.length;
        add.addEventListener('click', () => act(add, `Source added to ${g.Name}`, () => call('smc', 'AssociateSourceServers', { WorkgroupId: g.WorkgroupId, 'SourceId.1': pick.value })));
        const del = h('button', { type: 'button', class: 'danger', 'data-key': `del-${g.WorkgroupId}` }, 'Delete workgroup');
        del.addEventListener('click', async () => {
          if (!(await confirmAction('Delete workgroup', `Delete workgroup ${g.Name}? Its sources are not affected.`))) return;
          await act(del, `Workgroup ${g.Name} deleted`, () => call('smc', 'DeleteWorkgroup', { WorkgroupId: g.WorkgroupId }));
        });
        return section(`${g.Name || g.WorkgroupId}`,
          h('p', {}, badge(g.Status), ' ', h('code', {}, g.WorkgroupId), g.Description ? ` — ${g.Description}` : ''),
          warnings.length ? h('ul', { class: 'warnings' }, warnings.map((w) => h('li', {}, h('strong', {}, w.WarningType), `: ${WARNINGS[w.WarningType] || ''} — `, list(w, 'SourceIds', 'SourceId').join(', ')))) : h('p', { class: 'muted' }, 'No warnings.'),
          table(`Members of ${g.Name}`, [
            ['Source', (s) => h('a', { href: `#/sources/${s}` }, s)],
            ['Job', (s) => { const j = jobBySource.get(s); return j ? h('a', { href: `#/jobs/${j.JobId}` }, j.Name || j.JobId) : 'none'; }],
            ['Status', (s) => { const j = jobBySource.get(s); return j ? badge(j.Status) : '—'; }],
            ['Remove', (s) => {
              const b = h('button', { type: 'button', 'data-key': `rm-${g.WorkgroupId}-${s}`, 'aria-label': `Remove ${s} from ${g.Name}` }, 'Remove');
              b.addEventListener('click', () => act(b, `Source ${s} removed`, () => call('smc', 'DisassociateSourceServers', { WorkgroupId: g.WorkgroupId, 'SourceId.1': s })));
              return b;
            }],
          ], members, 'No member yet.'),
          h('div', { class: 'toolbar' }, outside.length ? field('Add a source server', pick) : h('p', { class: 'muted' }, 'Every source is already in a wave.'), add, del));
      }) : h('p', { class: 'empty' }, 'No workgroup yet.'));
  });
  return null;
}
