// RAM: users (access keys, policies, console password, MFA) and policies (with a validating JSON editor).

import { call, list } from './api.js';
import { h, fill, pageHeader, table, badge, when, act, confirmAction, dialog, field, input, select, copyable, facts, notice } from './ui.js';

async function userDetail(name, el) {
  const [keys, pols] = await Promise.all([
    call('ram', 'ListAccessKeys', { UserName: name }),
    call('ram', 'ListPoliciesForUser', { UserName: name }),
  ]);
  const out = h('div', { id: 'user-detail' });
  const newKey = h('button', { type: 'button', 'data-key': `newkey-${name}` }, 'Create access key');
  newKey.addEventListener('click', async () => {
    const r = await act(newKey, `Access key created for ${name}`, () => call('ram', 'CreateAccessKey', { UserName: name }));
    if (r && r.AccessKey) {
      await dialog('New access key', () => [h('p', {}, 'The secret is shown only now: store it safely.'), facts([['AccessKeyId', r.AccessKey.AccessKeyId]]), copyable(r.AccessKey.AccessKeySecret, 'access key secret')]);
      await userDetail(name, el);
    }
  });
  const attachBtn = h('button', { type: 'button', 'data-key': `attach-${name}` }, 'Attach policy');
  attachBtn.addEventListener('click', async () => {
    const all = await call('ram', 'ListPolicies', { MaxItems: 1000 });
    const pick = select('Policy', list(all, 'Policies', 'Policy').map((p) => [`${p.PolicyType}:${p.PolicyName}`, `${p.PolicyName} (${p.PolicyType})`]), '', { id: 'attach-policy' });
    const ok = await dialog(`Attach a policy to ${name}`, () => field('Policy', pick), () => {
      const [type, pname] = pick.value.split(':');
      return call('ram', 'AttachPolicyToUser', { PolicyType: type, PolicyName: pname, UserName: name });
    }, 'Attach');
    if (ok) await userDetail(name, el);
  });
  const password = h('button', { type: 'button', 'data-key': `password-${name}` }, 'Set console password');
  password.addEventListener('click', async () => {
    const pw = input('Password', { type: 'password', autocomplete: 'new-password', id: 'login-password' });
    const mfa = h('input', { type: 'checkbox', id: 'login-mfa' });
    await dialog(`Console password for ${name}`, () => [field('Password', pw, 'At least 8 characters; the user signs in with it.'), h('div', { class: 'field inline' }, mfa, h('label', { for: 'login-mfa' }, 'Require an MFA device'))],
      () => call('ram', 'CreateLoginProfile', { UserName: name, Password: pw.value, MFABindRequired: mfa.checked ? 'true' : 'false' }), 'Save');
  });
  const bindMfa = h('button', { type: 'button', 'data-key': `mfa-${name}` }, 'Bind MFA device');
  bindMfa.addEventListener('click', async () => {
    const dev = await act(bindMfa, 'Virtual MFA device created', () => call('ram', 'CreateVirtualMFADevice', { VirtualMFADeviceName: `${name}-mfa` }));
    if (!dev || !dev.VirtualMFADevice) return;
    const code1 = input('AuthenticationCode1', { inputmode: 'numeric', maxlength: '6', id: 'mfa-code1' });
    const code2 = input('AuthenticationCode2', { inputmode: 'numeric', maxlength: '6', id: 'mfa-code2' });
    const seed = dev.VirtualMFADevice.Base32StringSeed;
    await dialog(`Bind an MFA device to ${name}`, () => [
      h('p', {}, 'Add this secret to an authenticator app (TOTP, 30 s, 6 digits), then enter two consecutive codes.'),
      copyable(seed, 'MFA secret'),
      field('First code', code1), field('Next code', code2),
    ], () => call('ram', 'BindMFADevice', { SerialNumber: dev.VirtualMFADevice.SerialNumber, UserName: name, AuthenticationCode1: code1.value.trim(), AuthenticationCode2: code2.value.trim() }), 'Bind');
  });
  fill(out,
    h('h3', {}, `User ${name}`),
    h('div', { class: 'toolbar' }, newKey, attachBtn, password, bindMfa),
    h('h3', {}, 'Access keys'),
    table(`Access keys of ${name}`, [
      ['AccessKeyId', (k) => h('code', {}, k.AccessKeyId)],
      ['Status', (k) => badge(k.Status)],
      ['Created', (k) => when(k.CreateDate)],
      ['Actions', (k) => {
        const next = k.Status === 'Active' ? 'Inactive' : 'Active';
        const t = h('button', { type: 'button' }, next === 'Active' ? 'Enable' : 'Disable');
        t.addEventListener('click', async () => { if (await act(t, `Key ${k.AccessKeyId} ${next}`, () => call('ram', 'UpdateAccessKey', { UserName: name, UserAccessKeyId: k.AccessKeyId, Status: next }))) await userDetail(name, el); });
        const d = h('button', { type: 'button', class: 'danger' }, 'Delete');
        d.addEventListener('click', async () => { if (await confirmAction('Delete access key', `Delete ${k.AccessKeyId}?`) && await act(d, `Key ${k.AccessKeyId} deleted`, () => call('ram', 'DeleteAccessKey', { UserName: name, UserAccessKeyId: k.AccessKeyId }))) await userDetail(name, el); });
        return h('div', { class: 'row-actions' }, t, d);
      }],
    ], list(keys, 'AccessKeys', 'AccessKey'), 'No access key.'),
    h('h3', {}, 'Policies'),
    table(`Policies of ${name}`, [
      ['Policy', (p) => p.PolicyName],
      ['Type', (p) => p.PolicyType],
      ['Attached', (p) => when(p.AttachDate)],
      ['Actions', (p) => {
        const b = h('button', { type: 'button' }, 'Detach');
        b.addEventListener('click', async () => { if (await act(b, `${p.PolicyName} detached`, () => call('ram', 'DetachPolicyFromUser', { UserName: name, PolicyName: p.PolicyName, PolicyType: p.PolicyType }))) await userDetail(name, el); });
        return b;
      }],
    ], list(pols, 'Policies', 'Policy'), 'No policy: this user may do nothing.'));
  fill(el, out);
}

export async function ramUsersPage(ctx) {
  const body = h('div', {});
  const detail = h('div', { class: 'card', hidden: true, id: 'user-panel', tabindex: '-1' });
  const create = h('button', { type: 'button', class: 'primary', id: 'user-create' }, 'Create user');
  create.addEventListener('click', async () => {
    const name = input('UserName', { required: true, id: 'user-name' });
    const display = input('DisplayName', { id: 'user-display' });
    await dialog('Create RAM user', () => [field('User name', name, '1–64 characters: letters, digits, . _ -'), field('Display name', display)],
      () => call('ram', 'CreateUser', { UserName: name.value.trim(), DisplayName: display.value.trim() }), 'Create');
  });
  ctx.show(h('div', {}, pageHeader('RAM users', create), body, detail));
  await ctx.live(body, async (el) => {
    const r = await call('ram', 'ListUsers', { MaxItems: 1000 });
    fill(el, table('RAM users', [
      ['User', (u) => u.UserName],
      ['Display name', (u) => u.DisplayName],
      ['Created', (u) => when(u.CreateDate)],
      ['Actions', (u) => {
        const b = h('button', { type: 'button', 'data-key': `manage-${u.UserName}` }, 'Manage');
        b.addEventListener('click', async () => {
          detail.hidden = false;
          await act(null, `Showing ${u.UserName}`, () => userDetail(u.UserName, detail));
          detail.focus();
        });
        const d = h('button', { type: 'button', class: 'danger', 'data-key': `delete-${u.UserName}` }, 'Delete');
        d.addEventListener('click', async () => {
          if (!(await confirmAction('Delete RAM user', `Delete ${u.UserName}? Detach its policies and delete its keys first.`))) return;
          await act(d, `User ${u.UserName} deleted`, () => call('ram', 'DeleteUser', { UserName: u.UserName }));
        });
        return h('div', { class: 'row-actions' }, b, d);
      }],
    ], list(r, 'Users', 'User'), 'No RAM user yet.'));
  });
  return null;
}

const ACTION_RE = /^(\*|[a-z0-9-]+:[A-Za-z0-9*?]+)$/i;

/** Checks a policy document the way the server will, to point at the problem before submitting. */
export function validatePolicy(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return [`Not valid JSON: ${e.message}`];
  }
  const problems = [];
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return ['The document must be a JSON object.'];
  if (doc.Version !== '1') problems.push('"Version" must be the string "1".');
  if (!Array.isArray(doc.Statement) || !doc.Statement.length) problems.push('"Statement" must be a non-empty list.');
  (Array.isArray(doc.Statement) ? doc.Statement : []).forEach((st, i) => {
    const n = `Statement ${i + 1}`;
    if (!st || typeof st !== 'object') { problems.push(`${n} must be an object.`); return; }
    if (st.Effect !== 'Allow' && st.Effect !== 'Deny') problems.push(`${n}: "Effect" must be "Allow" or "Deny".`);
    const actions = typeof st.Action === 'string' ? [st.Action] : st.Action;
    if (!Array.isArray(actions) || !actions.length) problems.push(`${n}: "Action" must be a string or a non-empty list.`);
    else actions.filter((a) => typeof a !== 'string' || !ACTION_RE.test(a)).forEach((a) => problems.push(`${n}: action ${JSON.stringify(a)} must look like "smc:StartReplicationJob" or "smc:*".`));
    const res = typeof st.Resource === 'string' ? [st.Resource] : st.Resource;
    if (!Array.isArray(res) || !res.length || res.some((r) => typeof r !== 'string')) problems.push(`${n}: "Resource" must be a string or a non-empty list of strings ("*" or acs:… ARNs).`);
    if (st.Condition !== undefined && (typeof st.Condition !== 'object' || Array.isArray(st.Condition))) problems.push(`${n}: "Condition" must be an object.`);
  });
  return problems;
}

const TEMPLATE = JSON.stringify({ Version: '1', Statement: [{ Effect: 'Allow', Action: ['smc:Describe*', 'smc:ListAccessTokens'], Resource: '*' }] }, null, 2);

async function policyEditor(existing) {
  const name = input('PolicyName', { id: 'policy-name', value: existing ? existing.PolicyName : '', readonly: Boolean(existing) });
  const desc = input('Description', { id: 'policy-desc', value: existing ? existing.Description || '' : '' });
  const doc = h('textarea', { id: 'policy-doc', name: 'PolicyDocument', spellcheck: 'false' });
  doc.value = existing ? existing.document : TEMPLATE;
  const problems = h('div', { id: 'policy-problems', 'aria-live': 'polite' });
  const check = () => {
    const p = validatePolicy(doc.value);
    fill(problems, p.length ? h('ul', { class: 'error-box' }, p.map((x) => h('li', {}, x))) : h('p', { class: 'notice tone-ok' }, 'The document is valid.'));
    return p;
  };
  doc.addEventListener('input', check);
  const ok = await dialog(existing ? `Edit ${existing.PolicyName}` : 'Create policy', () => {
    const parts = [field('Policy name', name), field('Description', desc), field('Policy document (JSON)', doc, 'Version "1"; Statement: [{Effect, Action, Resource, Condition?}]. Checked as you type.'), problems];
    setTimeout(check, 0);
    return parts;
  }, async () => {
    if (check().length) return false;
    if (existing) return call('ram', 'CreatePolicyVersion', { PolicyName: existing.PolicyName, PolicyDocument: doc.value, SetAsDefault: 'true' });
    return call('ram', 'CreatePolicy', { PolicyName: name.value.trim(), Description: desc.value.trim(), PolicyDocument: doc.value });
  }, existing ? 'Save new version' : 'Create');
  if (ok) notice(existing ? 'Policy updated' : 'Policy created');
}

export async function ramPoliciesPage(ctx) {
  const body = h('div', {});
  const create = h('button', { type: 'button', class: 'primary', id: 'policy-create' }, 'Create policy');
  create.addEventListener('click', () => policyEditor(null));
  ctx.show(h('div', {}, pageHeader('RAM policies', create), body));
  await ctx.live(body, async (el) => {
    const r = await call('ram', 'ListPolicies', { MaxItems: 1000 });
    fill(el, table('RAM policies', [
      ['Policy', (p) => p.PolicyName],
      ['Type', (p) => p.PolicyType],
      ['Description', (p) => p.Description],
      ['Attachments', (p) => (p.AttachmentCount ?? '—')],
      ['Actions', (p) => {
        const view = h('button', { type: 'button', 'data-key': `view-${p.PolicyType}-${p.PolicyName}` }, p.PolicyType === 'Custom' ? 'Edit' : 'View');
        view.addEventListener('click', async () => {
          const got = await act(view, `Loaded ${p.PolicyName}`, () => call('ram', 'GetPolicy', { PolicyName: p.PolicyName, PolicyType: p.PolicyType }));
          if (!got) return;
          const text = (got.DefaultPolicyVersion && got.DefaultPolicyVersion.PolicyDocument) || '{}';
          let pretty = text;
          try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch { pretty = text; }
          if (p.PolicyType === 'Custom') await policyEditor({ PolicyName: p.PolicyName, Description: p.Description, document: pretty });
          else await dialog(`${p.PolicyName} (system policy)`, () => h('pre', { class: 'log' }, pretty));
        });
        const parts = [view];
        if (p.PolicyType === 'Custom') {
          const d = h('button', { type: 'button', class: 'danger', 'data-key': `delete-${p.PolicyName}` }, 'Delete');
          d.addEventListener('click', async () => {
            if (!(await confirmAction('Delete policy', `Delete ${p.PolicyName}? Detach it everywhere first.`))) return;
            await act(d, `Policy ${p.PolicyName} deleted`, () => call('ram', 'DeletePolicy', { PolicyName: p.PolicyName }));
          });
          parts.push(d);
        }
        return h('div', { class: 'row-actions' }, parts);
      }],
    ], list(r, 'Policies', 'Policy'), 'No policy.'));
  });
  return null;
}
