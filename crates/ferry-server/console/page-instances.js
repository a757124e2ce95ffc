// Instances: status, start/stop/delete, the serial console log and validation checks.

import { call } from './api.js';
import { h, fill, pageHeader, section, table, badge, when, facts, link, act, confirmAction } from './ui.js';
import * as data from './data.js';

/** Instance states on the way to another (the page follows them until they settle). */
const TRANSITIONS = ['Pending', 'Starting', 'Stopping'];

function actions(ctx, i, where) {
  const out = [];
  const mk = (label, cls, fn) => {
    const b = h('button', { type: 'button', class: cls, 'data-key': `${label}-${i.InstanceId}-${where}` }, label);
    b.addEventListener('click', () => fn(b));
    out.push(b);
  };
  if (i.Status === 'Stopped') mk('Start', 'primary', (b) => act(b, `Instance ${i.InstanceId} starting`, () => call('ecs', 'StartInstance', { InstanceId: i.InstanceId })));
  if (i.Status === 'Running') mk('Stop', '', (b) => act(b, `Instance ${i.InstanceId} stopping`, () => call('ecs', 'StopInstance', { InstanceId: i.InstanceId })));
  mk('Delete', 'danger', async (b) => {
    if (!(await confirmAction('Delete instance', `Delete instance ${i.InstanceId}? Its overlay disk is removed; the image stays.`))) return;
    const done = await act(b, `Instance ${i.InstanceId} deleted`, () => call('ecs', 'DeleteInstance', { InstanceId: i.InstanceId, Force: 'true' }));
    if (done && where === 'detail') ctx.navigate('/instances');
  });
  return h('div', { class: 'row-actions' }, out);
}

export async function instancesPage(ctx) {
  const body = h('div', {});
  ctx.show(h('div', {}, pageHeader('Instances', h('a', { class: 'button', href: '#/images' }, 'Launch from an image')), body));
  await ctx.live(body, async (el) => {
    const items = await data.instances();
    fill(el, table('Instances', [
      ['Name', (i) => link(`#/instances/${i.InstanceId}`, i.InstanceName || i.InstanceId)],
      ['ID', (i) => h('code', {}, i.InstanceId)],
      ['Status', (i) => badge(i.Status)],
      ['Image', (i) => h('code', {}, i.ImageId)],
      ['Size', (i) => `${i.Cpu} vCPU, ${i.Memory} MiB`],
      ['Created', (i) => when(i.CreationTime)],
      ['Actions', (i) => actions(ctx, i, 'list')],
    ], items, 'No instance yet: launch a test instance from an image.'));
    return items.some((i) => TRANSITIONS.includes(i.Status));
  });
  return null;
}

function decodeBase64(text) {
  try {
    const bin = atob(text || '');
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  } catch {
    return '(the console output could not be decoded)';
  }
}

export async function instancePage(ctx) {
  const [id] = ctx.params;
  const head = h('div', {});
  const body = h('div', {});
  const log = h('div', {});
  ctx.show(h('div', {}, pageHeader(`Instance ${id}`, head), body, section('Console log', log)));
  await ctx.live(body, async (el) => {
    const region = await data.regionId();
    const r = await call('ecs', 'DescribeInstances', { RegionId: region, InstanceIds: JSON.stringify([id]) });
    const i = r.Instances && r.Instances.Instance && r.Instances.Instance[0];
    if (!i) {
      fill(head);
      fill(el, h('p', { class: 'error-box', role: 'alert' }, `Instance ${id} does not exist (deleted?). `, link('#/instances', 'Back to the instances')));
      return;
    }
    fill(head, actions(ctx, i, 'detail'));
    const checks = Array.isArray(i.ValidationChecks) ? i.ValidationChecks : null;
    fill(el,
      section('Status', facts([
        ['Name', i.InstanceName],
        ['Status', h('span', { id: 'instance-status' }, badge(i.Status))],
        ['Image', h('code', {}, i.ImageId)],
        ['Type', `${i.InstanceType} (${i.Cpu} vCPU, ${i.Memory} MiB)`],
        ['Operating system', i.OSName],
        ['Created', when(i.CreationTime)],
        ['Started', when(i.StartTime)],
      ])),
      section('Validation checks', checks
        ? table('Validation checks', [['Check', (c) => c.Name || c.name], ['Result', (c) => badge((c.Passed ?? c.passed) ? 'Passed' : 'Failed')], ['Details', (c) => c.Detail || c.reason || '']], checks)
        : h('p', { class: 'muted' }, 'No validation checks have been recorded for this instance yet: read the console log below to see whether the guest booted.')));
    return TRANSITIONS.includes(i.Status);
  });
  await ctx.live(log, async (el) => {
    const r = await call('ecs', 'GetInstanceConsoleOutput', { RegionId: await data.regionId(), InstanceId: id });
    const text = decodeBase64(r.ConsoleOutput);
    fill(el, h('p', { class: 'muted' }, 'Last update: ', when(r.LastUpdateTime)), h('pre', { class: 'log', id: 'console-log', tabindex: '0', 'aria-label': 'Serial console output' }, text || '(no output yet)'));
    // A running guest keeps writing to its console: follow it.
    return true;
  });
  return null;
}
