// Activation codes: list, create (with the copyable agent command), disable, delete.

import { call, list } from './api.js';
import { h, fill, pageHeader, table, badge, when, act, confirmAction, dialog, field, input, copyable, section } from './ui.js';

/** `sha256:<hex>` of the server CA's DER encoding, which agents pin (fetched from the agent API). */
async function caFingerprint() {
  const resp = await fetch('/agent/v1/ca.pem', { credentials: 'same-origin' });
  if (!resp.ok) throw new Error(`cannot fetch the server CA (HTTP ${resp.status})`);
  const pem = await resp.text();
  const b64 = pem.split('-----BEGIN CERTIFICATE-----')[1]?.split('-----END')[0]?.replace(/\s+/g, '') || '';
  const der = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', der));
  return `sha256:${Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** The command that installs nothing but activates and runs the agent on a source server. */
export function agentCommand(code, fingerprint) {
  return `ferry-agent activate --server ${window.location.origin} --code ${code} --ca-fingerprint ${fingerprint} --run`;
}

export async function activationCodesPage(ctx) {
  const body = h('div', {});
  const result = h('div', { id: 'new-code' });
  const create = h('button', { type: 'button', class: 'primary', id: 'code-create' }, 'Create activation code');
  create.addEventListener('click', async () => {
    const name = input('Name', { id: 'code-name', value: 'migration-wave' });
    const count = input('Count', { type: 'number', min: '1', max: '1000', value: '10', id: 'code-count' });
    const ttl = input('TimeToLiveInDays', { type: 'number', min: '1', max: '90', value: '30', id: 'code-ttl' });
    const made = await dialog('Create activation code', () => [
      field('Name', name, '2–128 characters, starting with a letter.'),
      field('Servers it may register', count, '1–1000.'),
      field('Valid for (days)', ttl, '1–90.'),
    ], () => call('smc', 'CreateAccessToken', { Name: name.value.trim(), Count: count.value, TimeToLiveInDays: ttl.value }), 'Create');
    if (!made) return;
    let fp;
    try {
      fp = await caFingerprint();
    } catch (e) {
      fp = '<CA fingerprint: run `ferry server` to see it>';
    }
    const cmd = agentCommand(made.AccessTokenCode, fp);
    fill(result, section('Run this on each source server',
      h('p', {}, 'The code is shown only now. Install ', h('code', {}, 'ferry-agent'), ' on the source server (copy the binary from this Ferry release to /usr/local/bin), then run as root:'),
      copyable(cmd, 'agent command'),
      h('p', { class: 'hint' }, 'The agent pins this server’s CA by the fingerprint above, registers the server, and keeps running to heart-beat and replicate. For an offline disk image instead of the machine’s own disks, add --disk-image PATH.'),
      h('p', {}, 'Activation code ID: ', h('code', { id: 'new-code-id' }, made.AccessTokenId))));
    result.querySelector('button')?.focus();
  });
  ctx.show(h('div', {}, pageHeader('Activation codes', create), result, body));
  await ctx.live(body, async (el) => {
    const r = await call('smc', 'ListAccessTokens', {});
    fill(el, table('Activation codes', [
      ['Name', (t) => t.Name],
      ['ID', (t) => h('code', {}, t.AccessTokenId)],
      ['Status', (t) => badge(t.Status)],
      ['Used', (t) => `${t.RegisteredCount} of ${t.Count}`],
      ['Valid for', (t) => `${t.TimeToLiveInDays} days`],
      ['Created', (t) => when(t.CreationTime)],
      ['Actions', (t) => {
        const dis = h('button', { type: 'button', 'data-key': `disable-${t.AccessTokenId}` }, 'Disable');
        dis.disabled = t.Status === 'expired';
        dis.addEventListener('click', () => act(dis, `Activation code ${t.AccessTokenId} disabled`, () => call('smc', 'DisableAccessToken', { AccessTokenId: t.AccessTokenId })));
        const del = h('button', { type: 'button', class: 'danger', 'data-key': `delete-${t.AccessTokenId}` }, 'Delete');
        del.addEventListener('click', async () => {
          if (!(await confirmAction('Delete activation code', `Delete ${t.AccessTokenId}? Registered sources are not affected.`))) return;
          await act(del, `Activation code ${t.AccessTokenId} deleted`, () => call('smc', 'DeleteAccessToken', { AccessTokenId: t.AccessTokenId }));
        });
        return h('div', { class: 'row-actions' }, dis, del);
      }],
    ], list(r, 'AccessTokens', 'AccessToken'), 'No activation code yet.'));
  });
  return null;
}
