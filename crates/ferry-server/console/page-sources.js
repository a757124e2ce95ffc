// Source servers: the list (state, heartbeat) and one source's inventory, disks and partitions, network,
// precheck results and last heartbeat.

import { call } from './api.js';
import { h, fill, pageHeader, section, table, badge, bytes, ago, when, facts, link, parseJson, act, confirmAction, dialog, field, input } from './ui.js';
import * as data from './data.js';

export async function sourcesPage(ctx) {
  const body = h('div', {});
  ctx.show(h('div', {}, pageHeader('Source servers', h('a', { class: 'button', href: '#/activation-codes' }, 'Add a source (activation code)')), body));
  await ctx.live(body, async (el) => {
    const srcs = await data.sources();
    fill(
      el,
      table('Source servers', [
        ['Name', (s) => link(`#/sources/${s.SourceId}`, s.Name || s.SourceId)],
        ['ID', (s) => h('code', {}, s.SourceId)],
        ['State', (s) => badge(s.State)],
        ['Platform', (s) => [s.Platform || '—', s.Architecture ? ` (${s.Architecture})` : '']],
        ['System disk', (s) => (s.SystemDiskSize ? `${s.SystemDiskSize} GiB` : '—')],
        ['Last heartbeat', (s) => ago(s.HeartbeatTime)],
        ['Job', (s) => (s.JobId ? link(`#/jobs/${s.JobId}`, s.JobId) : '—')],
      ], srcs, 'No source server yet: create an activation code and run the agent command it gives on a server.'),
    );
  });
  return null;
}

function prechecksTable(text) {
  const checks = parseJson(text);
  if (!Array.isArray(checks) || !checks.length) return h('p', { class: 'empty' }, 'The agent has not reported prechecks yet.');
  return table('Precheck results', [
    ['Check', (c) => c.name],
    ['Result', (c) => badge(c.passed ? 'Passed' : 'Failed')],
    ['Why / what to do', (c) => c.reason],
  ], checks);
}

export async function sourcePage(ctx) {
  const [id] = ctx.params;
  const body = h('div', {});
  const actions = h('div', { class: 'row-actions' });
  ctx.show(h('div', {}, pageHeader(`Source server ${id}`, actions), body));
  const rename = h('button', { type: 'button' }, 'Rename');
  rename.addEventListener('click', async () => {
    const name = input('Name', { required: true });
    const ok = await dialog('Rename source server', () => field('New name', name, '2–128 characters, starting with a letter.'), () => call('smc', 'ModifySourceServerAttribute', { SourceId: id, Name: name.value }), 'Rename');
    if (ok) ctx.navigate(`/sources/${id}`);
  });
  const del = h('button', { type: 'button', class: 'danger' }, 'Delete');
  del.addEventListener('click', async () => {
    if (!(await confirmAction('Delete source server', `Delete ${id}? Its agent must be activated again to migrate it later.`))) return;
    const done = await act(del, 'Source server deleted', () => call('smc', 'DeleteSourceServer', { SourceId: id }));
    if (done) ctx.navigate('/sources');
  });
  const newJob = h('a', { class: 'button', href: `#/jobs/new?source=${encodeURIComponent(id)}` }, 'New replication job');
  fill(actions, newJob, rename, del);
  await ctx.live(body, async (el) => {
    const r = await call('smc', 'DescribeSourceServers', { 'SourceId.1': id });
    const s = (r.SourceServers && r.SourceServers.SourceServer && r.SourceServers.SourceServer[0]) || null;
    if (!s) {
      fill(el, h('p', { class: 'error-box', role: 'alert' }, `Source server ${id} does not exist (deleted?). `, link('#/sources', 'Back to the list')));
      return;
    }
    const inv = parseJson(s.Inventory) || {};
    const disks = Array.isArray(inv.disks) ? inv.disks : [];
    const nets = Array.isArray(inv.network) ? inv.network : [];
    fill(
      el,
      section('Summary', facts([
        ['Name', s.Name],
        ['State', badge(s.State)],
        s.ErrorCode ? ['Problem', h('strong', {}, s.ErrorCode)] : null,
        s.StatusInfo ? ['Status info', s.StatusInfo] : null,
        ['Last heartbeat', h('span', { id: 'heartbeat' }, ago(s.HeartbeatTime))],
        ['Heartbeat every', s.HeartbeatRate ? `${s.HeartbeatRate} s` : '—'],
        ['Registered', when(s.CreationTime)],
        ['Agent version', s.AgentVersion],
        ['Current job', s.JobId ? link(`#/jobs/${s.JobId}`, s.JobId) : 'none'],
        ['Description', s.Description],
      ])),
      section('Inventory', facts([
        ['Host name', inv.hostname],
        ['Operating system', (inv.os && (inv.os.pretty_name || inv.os.name)) || s.Platform],
        ['Kernel', inv.kernel],
        ['Architecture', inv.architecture || s.Architecture],
        ['Boot mode', inv.boot_mode],
        ['CPUs', inv.cpus],
        ['Memory', inv.memory_bytes ? bytes(inv.memory_bytes) : undefined],
        ['DNS servers', (inv.dns || []).join(', ')],
        ['Gateway', inv.gateway],
      ])),
      section('Disks and partitions', disks.length
        ? disks.map((d) => h('div', {},
            h('h3', {}, `Disk ${d.index}${d.index === 0 ? ' (system)' : ''}: ${d.path || ''} — ${bytes(d.size_bytes)}`, d.partition_table ? ` — ${String(d.partition_table).toUpperCase()}` : ''),
            table(`Partitions of disk ${d.index}`, [
              ['#', (p) => p.number],
              ['Size', (p) => bytes(p.size_bytes)],
              ['Start', (p) => bytes(p.start_bytes)],
              ['Filesystem', (p) => (p.filesystem ? p.filesystem.fs_type : '—')],
              ['Mount point', (p) => (p.filesystem && p.filesystem.mount_point) || '—'],
              ['UUID', (p) => (p.filesystem && p.filesystem.uuid) || p.part_uuid || '—'],
              ['Boot', (p) => (p.bootable ? 'yes' : '')],
            ], d.partitions || [], d.filesystem ? `No partition table: the whole disk holds ${d.filesystem.fs_type}.` : 'No partitions found (raw disk).')))
        : h('p', { class: 'empty' }, 'No inventory reported yet.')),
      section('Network', table('Network interfaces', [
        ['Interface', (n) => n.name],
        ['MAC', (n) => n.mac || '—'],
        ['Addresses', (n) => (n.addresses || []).join(', ') || '—'],
        ['Configuration', (n) => [n.config || 'unknown', n.config_source ? ` (${n.config_source})` : '']],
        ['MTU', (n) => n.mtu || '—'],
      ], nets, 'No network interfaces reported.')),
      section('Prechecks', prechecksTable(s.Prechecks)),
    );
  });
  return null;
}
