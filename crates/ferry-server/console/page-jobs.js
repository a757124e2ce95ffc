// Replication jobs: the list, the creation wizard (SMC's options), and one job's live progress, throughput
// chart, ETA, run history, log and errors, with start / stop / cut over / delete.

import { call } from './api.js';
import { h, fill, pageHeader, section, table, badge, bytes, rate, duration, when, facts, link, act, confirmAction, dialog, field, input, select, errorBox, parseJson, notice } from './ui.js';
import { lineChart, samples } from './charts.js';
import * as data from './data.js';

function progressBar(job, id) {
  const p = Math.max(0, Math.min(100, Number(job.Progress) || 0));
  return h('div', { class: 'progress-line' },
    h('progress', { max: '100', value: String(p), id, 'aria-label': `Progress of ${job.Name || job.JobId}` }, `${p.toFixed(1)}%`),
    h('span', {}, `${p.toFixed(1)}%`));
}

/** The buttons a job's status allows (smc-api.md §2.6); the API re-checks every one. */
function jobActions(ctx, job, where) {
  const id = job.JobId;
  const out = [];
  const mk = (label, key, cls, fn) => {
    const b = h('button', { type: 'button', class: cls, 'data-key': `${key}-${id}-${where}` }, label);
    b.addEventListener('click', () => fn(b));
    out.push(b);
  };
  if (['Ready', 'Stopped', 'InError'].includes(job.Status) || (job.Status === 'Waiting' && !job.RunOnce)) {
    mk(job.Status === 'Waiting' ? 'Sync now' : 'Start', 'start', 'primary', (b) => act(b, `Job ${id} started`, () => call('smc', 'StartReplicationJob', { JobId: id })));
  }
  if (job.Status === 'Running' || job.Status === 'Waiting') {
    mk('Stop', 'stop', '', (b) => act(b, `Job ${id} stopped`, () => call('smc', 'StopReplicationJob', { JobId: id })));
  }
  if (job.Status === 'Waiting' && !job.RunOnce) {
    mk('Cut over', 'cutover', '', async () => {
      const sync = h('input', { type: 'checkbox', name: 'SyncData', checked: true, id: `sync-${id}` });
      await dialog(`Cut over ${job.Name || id}`, () => [
        h('p', {}, 'Cutting over stops the periodic syncs and finishes the job. With a final sync, the latest changes are copied first and a last image is built.'),
        h('div', { class: 'field inline' }, sync, h('label', { for: `sync-${id}` }, 'Copy the latest changes first (final sync)')),
      ], () => call('smc', 'CutOverReplicationJob', { JobId: id, SyncData: sync.checked ? 'true' : 'false' }).then(() => notice(`Cut-over of ${id} started`)), 'Cut over');
    });
  }
  if (job.Status !== 'Running' && job.Status !== 'Deleting') {
    mk('Delete', 'delete', 'danger', async (b) => {
      if (!(await confirmAction('Delete replication job', `Delete job ${job.Name || id}? Its images are kept.`))) return;
      const done = await act(b, `Job ${id} deleted`, () => call('smc', 'DeleteReplicationJob', { JobId: id }));
      if (done && where === 'detail') ctx.navigate('/jobs');
    });
  }
  return h('div', { class: 'row-actions' }, out);
}

export async function jobsPage(ctx) {
  const body = h('div', {});
  ctx.show(h('div', {}, pageHeader('Replication jobs', h('a', { class: 'button primary', href: '#/jobs/new' }, 'New replication job')), body));
  await ctx.live(body, async (el) => {
    const jobs = await data.jobs();
    fill(el, table('Replication jobs', [
      ['Name', (j) => link(`#/jobs/${j.JobId}`, j.Name || j.JobId)],
      ['Source', (j) => link(`#/sources/${j.SourceId}`, j.SourceId)],
      ['Status', (j) => [badge(j.Status), j.BusinessStatus ? h('span', { class: 'muted' }, ` ${j.BusinessStatus}`) : '']],
      ['Progress', (j) => progressBar(j, `progress-${j.JobId}`)],
      ['Type', (j) => (j.RunOnce ? 'One-time' : `Incremental every ${j.Frequency || '?'} h`)],
      ['Image', (j) => (j.ImageId ? h('code', {}, j.ImageId) : '—')],
      ['Actions', (j) => jobActions(ctx, j, 'list')],
    ], jobs, 'No replication job yet. Create one from an available source server.'));
  });
  return null;
}

const STEPS = ['Source', 'Target', 'Schedule', 'Transfer', 'Review'];

export async function jobWizardPage(ctx) {
  const preset = new URLSearchParams(window.location.hash.split('?')[1] || '').get('source') || '';
  const [srcs, region] = await Promise.all([data.sources(), data.regionId()]);
  const available = srcs.filter((s) => s.State === 'Available');
  const f = {
    source: select('SourceId', available.length ? available.map((s) => [s.SourceId, `${s.Name || s.SourceId} (${s.SourceId})`]) : [['', 'No available source server']], preset, { required: true, id: 'wiz-source' }),
    name: input('Name', { id: 'wiz-name' }),
    description: input('Description', { id: 'wiz-description' }),
    region: input('RegionId', { value: region, required: true, id: 'wiz-region' }),
    targetType: select('TargetType', [['Image', 'Image'], ['TargetInstance', 'Existing instance (overwrite its disks)']], 'Image', { id: 'wiz-target-type' }),
    imageName: input('ImageName', { id: 'wiz-image-name' }),
    instanceId: input('InstanceId', { id: 'wiz-instance' }),
    systemDiskSize: input('SystemDiskSize', { type: 'number', min: '1', max: '2048', id: 'wiz-system-disk' }),
    instanceType: input('InstanceType', { id: 'wiz-instance-type' }),
    licenseType: select('LicenseType', [['', 'None'], ['BYOL', 'Bring your own licence (BYOL)']], '', { id: 'wiz-license' }),
    mode: select('Mode', [['once', 'One-time migration'], ['incremental', 'Incremental (periodic syncs, then cut over)']], 'once', { id: 'wiz-mode' }),
    frequency: input('Frequency', { type: 'number', min: '1', max: '168', value: '12', id: 'wiz-frequency' }),
    keep: input('MaxNumberOfImageToKeep', { type: 'number', min: '1', max: '10', value: '3', id: 'wiz-keep' }),
    scheduled: input('ScheduledStartTime', { type: 'datetime-local', id: 'wiz-scheduled' }),
    validDays: input('ValidDays', { type: 'number', min: '7', max: '90', value: '30', id: 'wiz-valid' }),
    netMode: select('NetMode', [['0', 'Internet'], ['2', 'VPC (private network)']], '0', { id: 'wiz-net-mode' }),
    vswitch: input('VSwitchId', { id: 'wiz-vswitch' }),
    vpc: input('VpcId', { id: 'wiz-vpc' }),
    bandwidth: input('bandwidth_limit', { type: 'number', min: '0', value: '0', id: 'wiz-bandwidth' }),
    compress: select('compress_level', ['0', '1', '3', '6', '9'].map((v) => [v, v === '0' ? 'Off' : `Level ${v}`]), '1', { id: 'wiz-compress' }),
    checksum: h('input', { type: 'checkbox', name: 'checksum', id: 'wiz-checksum' }),
    startNow: h('input', { type: 'checkbox', name: 'startNow', id: 'wiz-start-now', checked: true }),
  };
  const panes = [
    h('fieldset', {}, h('legend', {}, 'Source server'),
      available.length ? null : h('p', { class: 'error-box', role: 'alert' }, 'No source server is Available. ', link('#/activation-codes', 'Create an activation code'), ' and run the agent on a server first.'),
      field('Source server', f.source, 'Only sources that are online and have no open job can be migrated.'),
      field('Job name', f.name, 'Optional. 2–128 characters, starting with a letter; unique.'),
      field('Description', f.description)),
    h('fieldset', {}, h('legend', {}, 'Target'),
      field('Region', f.region),
      field('Target type', f.targetType),
      field('Image name', f.imageName, 'Optional; the job ID is added when the name is taken.'),
      field('Target instance ID', f.instanceId, 'Only for the "existing instance" target.'),
      field('System disk size (GiB)', f.systemDiskSize, 'Optional; must exceed the used space. Default: the source disk size.'),
      field('Intermediate instance type', f.instanceType, 'Optional; picked automatically when empty.'),
      field('Licence', f.licenseType)),
    h('fieldset', {}, h('legend', {}, 'Schedule'),
      field('Migration mode', f.mode),
      field('Sync every (hours)', f.frequency, 'Incremental jobs only: 1–168.'),
      field('Images to keep', f.keep, 'Incremental jobs only: 1–10.'),
      field('Start at (your local time)', f.scheduled, 'Optional: leave empty to start by hand (or right after creation below).'),
      field('Job valid for (days)', f.validDays, '7–90 days.'),
      h('div', { class: 'field inline' }, f.startNow, h('label', { for: 'wiz-start-now' }, 'Start the job right after creating it'))),
    h('fieldset', {}, h('legend', {}, 'Transfer'),
      field('Network', f.netMode),
      field('vSwitch ID', f.vswitch, 'VPC mode only.'),
      field('VPC ID', f.vpc, 'VPC mode only.'),
      field('Bandwidth limit (KB/s)', f.bandwidth, '0 means unlimited; a limit keeps the source responsive.'),
      field('Compression', f.compress, 'Higher levels use more CPU on the source and less bandwidth.'),
      h('div', { class: 'field inline' }, f.checksum, h('label', { for: 'wiz-checksum' }, 'Verify checksums (slower, stronger consistency check)'))),
    h('div', { id: 'wiz-review' }),
  ];
  let step = 0;
  const stepList = h('ol', { class: 'wizard-steps', 'aria-label': 'Steps' }, STEPS.map((s, i) => h('li', { 'data-step': String(i) }, `${i + 1}. ${s}`)));
  const errors = h('div', {});
  const back = h('button', { type: 'button', id: 'wiz-back' }, 'Back');
  const next = h('button', { type: 'button', class: 'primary', id: 'wiz-next' }, 'Next');
  const create = h('button', { type: 'submit', class: 'primary', id: 'wiz-create' }, 'Create job');

  const params = () => {
    const p = {
      SourceId: f.source.value,
      RegionId: f.region.value.trim(),
      Name: f.name.value.trim(),
      Description: f.description.value.trim(),
      TargetType: f.targetType.value,
      ImageName: f.imageName.value.trim(),
      InstanceId: f.targetType.value === 'TargetInstance' ? f.instanceId.value.trim() : '',
      SystemDiskSize: f.systemDiskSize.value,
      InstanceType: f.instanceType.value.trim(),
      LicenseType: f.licenseType.value,
      NetMode: f.netMode.value,
      VSwitchId: f.netMode.value === '2' ? f.vswitch.value.trim() : '',
      VpcId: f.netMode.value === '2' ? f.vpc.value.trim() : '',
      RunOnce: f.mode.value === 'once' ? 'true' : 'false',
      ReplicationParameters: JSON.stringify({ bandwidth_limit: Number(f.bandwidth.value) || 0, compress_level: Number(f.compress.value) || 0, checksum: f.checksum.checked }),
    };
    if (f.mode.value !== 'once') {
      p.Frequency = f.frequency.value;
      p.MaxNumberOfImageToKeep = f.keep.value;
    }
    if (f.scheduled.value) {
      const d = new Date(f.scheduled.value);
      if (!Number.isNaN(d.getTime())) p.ScheduledStartTime = d.toISOString().replace(/\.\d{3}Z$/, 'Z');
    }
    const days = Number(f.validDays.value);
    if (days) p.ValidTime = new Date(Date.now() + days * 86400e3).toISOString().replace(/\.\d{3}Z$/, 'Z');
    return p;
  };

  const show = () => {
    panes.forEach((p, i) => { p.hidden = i !== step; });
    for (const li of stepList.children) {
      if (Number(li.dataset.step) === step) li.setAttribute('aria-current', 'step');
      else li.removeAttribute('aria-current');
    }
    back.disabled = step === 0;
    next.hidden = step === STEPS.length - 1;
    create.hidden = step !== STEPS.length - 1;
    if (step === STEPS.length - 1) {
      const p = params();
      fill(panes[step], h('h2', {}, 'Review'), facts(Object.entries(p).filter(([, v]) => v !== '').map(([k, v]) => [k, String(v)])),
        h('p', {}, f.startNow.checked && !p.ScheduledStartTime ? 'The job starts right after it is created.' : 'The job waits for its start time (or for Start).'));
    }
    const focusable = panes[step].querySelector('input, select, h2');
    if (focusable) {
      if (focusable.tagName === 'H2') focusable.setAttribute('tabindex', '-1');
      focusable.focus();
    }
  };
  back.addEventListener('click', () => { if (step > 0) { step -= 1; show(); } });
  next.addEventListener('click', () => {
    fill(errors);
    if (step === 0 && !f.source.value) {
      fill(errors, h('p', { class: 'error-box', role: 'alert' }, 'Choose a source server first.'));
      return;
    }
    step += 1;
    show();
  });
  const form = h('form', { class: 'card', novalidate: true, id: 'job-wizard' }, stepList, panes, errors, h('div', { class: 'wizard-nav' }, back, h('span', {}, next, create)));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (step !== STEPS.length - 1) return;
    create.disabled = true;
    fill(errors);
    try {
      const p = params();
      const r = await call('smc', 'CreateReplicationJob', p);
      if (f.startNow.checked && !p.ScheduledStartTime) {
        try {
          await call('smc', 'StartReplicationJob', { JobId: r.JobId });
        } catch (e) {
          ctx.navigate(`/jobs/${r.JobId}`);
          setTimeout(() => notice(`Job ${r.JobId} was created but did not start: ${e.message}`, 'bad'), 300);
          return;
        }
      }
      ctx.navigate(`/jobs/${r.JobId}`);
    } catch (e) {
      fill(errors, errorBox(e, 'Could not create the job'));
    } finally {
      create.disabled = false;
    }
  });
  ctx.show(h('div', {}, pageHeader('New replication job'), form));
  show();
  return null;
}

function runLog(job) {
  const lines = [];
  lines.push(`${job.CreationTime || ''}  job created (${job.RunOnce ? 'one-time' : `incremental, every ${job.Frequency} h`})`);
  for (const r of data.runs(job)) {
    lines.push(`${r.StartTime || ''}  run ${r.RunId ?? ''} started (${r.Type || 'Manual'})`);
    if (r.EndTime) {
      const outcome = r.ErrorMessage ? `failed: ${r.ErrorMessage}` : `${r.RunStatus || 'finished'}${r.ImageId ? `, image ${r.ImageId}` : ''}`;
      lines.push(`${r.EndTime}  run ${r.RunId ?? ''} ${outcome}; sent ${bytes(r.BytesSent)} of ${bytes(r.BytesTotal)} scanned ${bytes(r.BytesScanned)}`);
    } else {
      lines.push(`${new Date().toISOString().replace(/\.\d{3}Z$/, 'Z')}  run ${r.RunId ?? ''} ${r.RunStatus || 'running'}: scanned ${bytes(r.BytesScanned)} of ${bytes(r.BytesTotal)}, sent ${bytes(r.BytesSent)}`);
    }
  }
  if (job.Status === 'InError') lines.push(`job is InError: ${job.ErrorCode || ''} ${job.StatusInfo || ''}`);
  if (job.EndTime) lines.push(`${job.EndTime}  job ${job.Status}`);
  return lines.join('\n');
}

function jobError(job) {
  if (job.Status !== 'InError' && !job.ErrorCode) return null;
  const info = parseJson(job.StatusInfo);
  const msg = (info && (info.error_msg || info.message)) || job.StatusInfo || 'The last run failed.';
  return h('div', { class: 'error-box', role: 'alert', id: 'job-error' },
    h('h3', {}, 'The job failed'),
    h('p', {}, h('strong', {}, job.ErrorCode || 'InError'), ': ', msg),
    h('p', { class: 'fix' }, h('strong', {}, 'Suggested fix: '), 'Fix the cause named above (most often: the agent went offline — check that ferry-agent runs on the source and reaches this server), then press Start: the job resumes where it stopped.'));
}

export async function jobPage(ctx) {
  const [id] = ctx.params;
  const head = h('div', { class: 'row-actions', id: 'job-actions' });
  const body = h('div', {});
  ctx.show(h('div', {}, pageHeader(`Replication job ${id}`, head), body));
  await ctx.live(body, async (el) => {
    const r = await call('smc', 'DescribeReplicationJobs', { 'JobId.1': id });
    const j = r.ReplicationJobs && r.ReplicationJobs.ReplicationJob && r.ReplicationJobs.ReplicationJob[0];
    if (!j) {
      fill(head);
      fill(el, h('p', { class: 'error-box', role: 'alert' }, `Job ${id} does not exist (deleted?). `, link('#/jobs', 'Back to the jobs')));
      return;
    }
    fill(head, jobActions(ctx, j, 'detail'));
    const cur = data.currentRun(j);
    const rs = data.runs(j);
    const last = cur || rs[rs.length - 1];
    if (j.Status === 'Running') samples.push(id, Number((cur && cur.Throughput) || 0));
    fill(
      el,
      jobError(j),
      section('Progress', h('div', { 'aria-live': 'polite', id: 'job-progress-region' },
        progressBar(j, 'job-progress'),
        facts([
          ['Status', h('span', { id: 'job-status' }, badge(j.Status), j.BusinessStatus ? ` ${j.BusinessStatus}` : '')],
          ['Throughput', h('span', { id: 'job-throughput' }, last && !last.EndTime ? rate(last.Throughput) : '—')],
          ['Time left (ETA)', h('span', { id: 'job-eta' }, last && !last.EndTime && last.Eta !== undefined ? duration(last.Eta) : '—')],
          ['Scanned', last ? `${bytes(last.BytesScanned)} of ${bytes(last.BytesTotal)}` : '—'],
          ['Sent', last ? bytes(last.BytesSent) : '—'],
          ['Skipped (zero / unchanged / already stored)', last ? `${bytes(last.BytesZero)} / ${bytes(last.BytesUnchanged)} / ${bytes(last.BytesDeduplicated)}` : '—'],
          ['Image', j.ImageId ? h('a', { href: '#/images', id: 'job-image' }, j.ImageId) : '—'],
        ]))),
      section('Throughput over time', lineChart(`Throughput of job ${id}`, samples.get(id), rate, 1 << 20)),
      section('Settings', facts([
        ['Name', j.Name],
        ['Source', link(`#/sources/${j.SourceId}`, j.SourceId)],
        ['Region', j.RegionId],
        ['Target', `${j.TargetType || 'Image'}${j.ImageName ? ` “${j.ImageName}”` : ''}`],
        ['Mode', j.RunOnce ? 'One-time' : `Incremental every ${j.Frequency} h, keep ${j.MaxNumberOfImageToKeep} images`],
        ['Network', j.NetMode === 2 ? `VPC ${j.VpcId || ''} ${j.VSwitchId || ''}` : 'Internet'],
        ['Transfer options', j.ReplicationParameters],
        ['Created', when(j.CreationTime)],
        ['Started', when(j.StartTime)],
        ['Ended', when(j.EndTime)],
        ['Scheduled start', when(j.ScheduledStartTime)],
        ['Valid until', when(j.ValidTime)],
      ])),
      section('Run history', table('Run history', [
        ['Run', (x) => x.RunId ?? '—'],
        ['Type', (x) => x.Type],
        ['Status', (x) => badge(x.RunStatus || (x.EndTime ? 'Finished' : 'Running'))],
        ['Started', (x) => when(x.StartTime)],
        ['Ended', (x) => when(x.EndTime)],
        ['Sent', (x) => bytes(x.BytesSent)],
        ['Image', (x) => (x.ImageId ? h('code', {}, x.ImageId) : '—')],
        ['Error', (x) => x.ErrorMessage || ''],
      ], [...rs].reverse(), 'No run yet: press Start.')),
      section('Job log', h('pre', { class: 'log', id: 'job-log', tabindex: '0', 'aria-label': 'Job log' }, runLog(j))),
    );
  });
  return null;
}
