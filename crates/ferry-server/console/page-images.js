// Images (with their disks, digests, validation status and exports) and snapshots.

import { call, list } from './api.js';
import { h, fill, pageHeader, section, table, badge, bytes, when, act, confirmAction, dialog, field, input, select, notice } from './ui.js';
import * as data from './data.js';

async function launch(ctx, img) {
  const name = input('InstanceName', { value: `test-${(img.ImageName || img.ImageId).replace(/[^A-Za-z0-9-]/g, '-').slice(0, 40)}`, id: 'launch-name' });
  const type = input('InstanceType', { value: 'ecs.t1.small', id: 'launch-type' });
  const region = await data.regionId();
  const made = await dialog(`Launch a test instance from ${img.ImageId}`, () => [
    h('p', {}, 'A test instance boots a copy-on-write overlay of the image: the image itself is not changed.'),
    field('Instance name', name),
    field('Instance type', type, 'Sets CPUs and memory, e.g. ecs.t1.small.'),
  ], async () => {
    const r = await call('ecs', 'RunInstances', { RegionId: region, ImageId: img.ImageId, InstanceName: name.value.trim(), InstanceType: type.value.trim() });
    return list(r, 'InstanceIdSets', 'InstanceIdSet')[0] || true;
  }, 'Launch');
  if (typeof made === 'string') ctx.navigate(`/instances/${made}`);
}

async function exportImage(img) {
  const region = await data.regionId();
  const bucket = input('OSSBucket', { value: 'exports', required: true, id: 'export-bucket' });
  const prefix = input('OSSPrefix', { value: '', id: 'export-prefix' });
  const format = select('ImageFormat', [['raw', 'raw'], ['qcow2', 'qcow2'], ['vmdk', 'VMDK'], ['vhd', 'VHD'], ['vhdx', 'VHDX']], 'qcow2', { id: 'export-format' });
  await dialog(`Export ${img.ImageId}`, () => [
    h('p', {}, 'The export is written to the server’s bucket directory; its task appears under Export tasks.'),
    field('Bucket', bucket), field('Prefix', prefix, 'Optional, e.g. migrations/'), field('Format', format),
  ], async () => {
    const r = await call('ecs', 'ExportImage', { RegionId: region, ImageId: img.ImageId, OSSBucket: bucket.value.trim(), OSSPrefix: prefix.value.trim(), ImageFormat: format.value });
    notice(`Export task ${r.TaskId} started`);
  }, 'Export');
}

export async function imagesPage(ctx) {
  const body = h('div', {});
  const tasks = h('div', {});
  ctx.show(h('div', {}, pageHeader('Images'), body, section('Export tasks', tasks)));
  await ctx.live(body, async (el) => {
    const imgs = await data.images();
    fill(el, imgs.length ? imgs.map((img) => {
      const disks = list(img, 'DiskDeviceMappings', 'DiskDeviceMapping');
      const launchBtn = h('button', { type: 'button', class: 'primary', 'data-key': `launch-${img.ImageId}` }, 'Launch test instance');
      launchBtn.addEventListener('click', () => launch(ctx, img));
      const exportBtn = h('button', { type: 'button', 'data-key': `export-${img.ImageId}` }, 'Export');
      exportBtn.addEventListener('click', () => exportImage(img));
      const del = h('button', { type: 'button', class: 'danger', 'data-key': `delete-${img.ImageId}` }, 'Delete');
      del.addEventListener('click', async () => {
        if (!(await confirmAction('Delete image', `Delete image ${img.ImageId}?`))) return;
        const region = await data.regionId();
        await act(del, `Image ${img.ImageId} deleted`, () => call('ecs', 'DeleteImage', { RegionId: region, ImageId: img.ImageId }));
      });
      const ready = img.Status === 'Available';
      launchBtn.disabled = !ready;
      exportBtn.disabled = !ready;
      const validation = img.ValidationReport || img.Validation;
      return h('section', { class: 'card image-card', 'aria-label': `Image ${img.ImageName || img.ImageId}`, 'data-image': img.ImageId },
        h('h2', {}, img.ImageName || img.ImageId, ' ', badge(img.Status)),
        h('p', { class: 'muted' }, h('code', {}, img.ImageId), ` · ${img.OSName || img.Platform || 'unknown OS'} · ${img.Architecture || ''} · ${img.BootMode || ''} · ${img.Size} GiB · created `, when(img.CreationTime), ` · progress ${img.Progress}`),
        table(`Disks of ${img.ImageId}`, [
          ['Device', (d) => d.Device],
          ['Type', (d) => d.Type],
          ['Size', (d) => (d.SizeBytes ? bytes(d.SizeBytes) : `${d.Size} GiB`)],
          ['Format', (d) => d.Format],
          ['Snapshot', (d) => h('code', {}, d.SnapshotId || '—')],
          ['Digest check', (d) => (d.RootDigest ? h('span', { title: d.RootDigest }, 'built disk matches snapshot digest ', h('code', {}, String(d.RootDigest).slice(0, 12)), '…') : '—')],
        ], disks),
        h('h3', {}, 'Validation report'),
        validation
          ? h('pre', { class: 'log' }, typeof validation === 'string' ? validation : JSON.stringify(validation, null, 2))
          : h('p', { class: 'muted' }, 'No boot validation has been recorded for this image yet. Launch a test instance and read its console log to check it boots.'),
        h('div', { class: 'row-actions' }, launchBtn, exportBtn, del));
    }) : h('p', { class: 'empty' }, 'No image yet: images appear when a replication job finishes.'));
    return imgs.some((i) => i.Status === 'Creating' || i.Status === 'Waiting');
  });
  await ctx.live(tasks, async (el) => {
    const region = await data.regionId();
    const r = await call('ecs', 'DescribeTasks', { RegionId: region, TaskAction: 'ExportImage', PageSize: 50 });
    fill(el, table('Export tasks', [
      ['Task', (t) => h('code', {}, t.TaskId)],
      ['Status', (t) => badge(t.TaskStatus)],
      ['Progress', (t) => t.TaskProcess || '—'],
      ['Created', (t) => when(t.CreationTime)],
      ['Finished', (t) => when(t.FinishedTime)],
      ['Result', (t) => t.ErrorMessage || t.Result || ''],
    ], list(r, 'TaskSet', 'Task'), 'No export yet.'));
    return list(r, 'TaskSet', 'Task').some((t) => t.TaskStatus === 'Processing');
  });
  return null;
}

export async function snapshotsPage(ctx) {
  const body = h('div', {});
  ctx.show(h('div', {}, pageHeader('Snapshots'), h('p', { class: 'muted' }, 'One snapshot per disk and replication run: an immutable chunk index with a root digest. Images are built from them.'), body));
  await ctx.live(body, async (el) => {
    const snaps = await data.snapshots();
    const region = await data.regionId();
    fill(el, table('Snapshots', [
      ['Snapshot', (s) => h('code', {}, s.SnapshotId)],
      ['Name', (s) => s.SnapshotName],
      ['Status', (s) => badge(s.Status)],
      ['Disk', (s) => `${s.SourceDiskType} (${s.SizeBytes ? bytes(s.SizeBytes) : `${s.SourceDiskSize} GiB`})`],
      ['Job', (s) => (s.JobId ? h('a', { href: `#/jobs/${s.JobId}` }, s.JobId) : '—')],
      ['Used by', (s) => (s.Usage === 'image' ? 'an image' : 'nothing')],
      ['Root digest', (s) => (s.RootDigest ? h('code', { title: s.RootDigest }, `${String(s.RootDigest).slice(0, 16)}…`) : '—')],
      ['Created', (s) => when(s.CreationTime)],
      ['Actions', (s) => {
        const b = h('button', { type: 'button', class: 'danger', 'data-key': `delete-${s.SnapshotId}` }, 'Delete');
        b.addEventListener('click', async () => {
          if (!(await confirmAction('Delete snapshot', `Delete snapshot ${s.SnapshotId}?`))) return;
          await act(b, `Snapshot ${s.SnapshotId} deleted`, () => call('ecs', 'DeleteSnapshot', { RegionId: region, SnapshotId: s.SnapshotId }));
        });
        return b;
      }],
    ], snaps, 'No snapshot yet.'));
  });
  return null;
}
