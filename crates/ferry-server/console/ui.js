// Small DOM helpers shared by the pages: an element builder, tables, dialogs, formatting, the error panel
// with suggested fixes, and the live-region announcer.
//
// Invariants: text always goes in as text nodes (never innerHTML), so API data cannot inject markup; no
// inline styles (the CSP forbids them): looks come from classes in app.css.

import { ApiFailure } from './api.js';

/** Creates an element: h('button', {class: 'x', onclick: f}, 'text', child, [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = Boolean(v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let idCounter = 0;
/** A unique element id, for label/for and aria-describedby pairs. */
export function uid(prefix = 'f') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field. `control` is an input/select/textarea element; `hint` is optional help text. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid('field');
  const parts = [h('label', { for: control.id }, label), control];
  if (hint) {
    const hid = uid('hint');
    control.setAttribute('aria-describedby', hid);
    parts.push(h('p', { class: 'hint', id: hid }, hint));
  }
  return h('div', { class: 'field' }, parts);
}

export function input(name, attrs = {}) {
  return h('input', { name, type: 'text', ...attrs });
}

export function select(name, options, value, attrs = {}) {
  return h(
    'select',
    { name, ...attrs },
    options.map((o) => {
      const [v, text] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: String(v) === String(value) }, text);
    }),
  );
}

/** A page heading with optional actions to its right. */
export function pageHeader(title, ...actions) {
  return h('div', { class: 'page-header' }, h('h1', { id: 'page-title', tabindex: '-1' }, title), h('div', { class: 'actions' }, actions));
}

export function section(title, ...body) {
  const id = uid('sec');
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), body);
}

/**
 * A table: columns are [header, (row) => cell content]. Empty lists show `empty`. Wrapped in a scroll box
 * so wide tables stay usable on a phone.
 */
export function table(caption, columns, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h(
    'div',
    { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h(
      'table',
      {},
      h('caption', { class: 'sr-only' }, caption),
      h('thead', {}, h('tr', {}, columns.map(([head]) => h('th', { scope: 'col' }, head)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map(([, cell]) => h('td', {}, cell(r)))))),
    ),
  );
}

/** A definition list from [term, value] pairs (values may be nodes). */
export function facts(pairs) {
  return h(
    'dl',
    { class: 'facts' },
    pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v === undefined || v === null || v === '' ? '—' : v)]),
  );
}

const STATUS_TONE = {
  Available: 'ok', Running: 'info', InUse: 'info', Finished: 'ok', Completed: 'ok', Active: 'ok',
  accomplished: 'ok', Ready: 'neutral', Waiting: 'info', Stopped: 'neutral', NotStarted: 'neutral',
  InProgress: 'info', Cutover: 'info', InError: 'bad', Unavailable: 'bad', Expired: 'warn', Deleting: 'warn',
  CreateFailed: 'bad', Failed: 'bad', Creating: 'info', Processing: 'info', Inactive: 'warn',
  activated: 'ok', unactivated: 'neutral', expired: 'warn', Pending: 'info', Starting: 'info', Stopping: 'info',
};

/** A status badge: colour plus the word itself, so colour is never the only signal. */
export function badge(status) {
  const s = status || 'unknown';
  return h('span', { class: `badge tone-${STATUS_TONE[s] || 'neutral'}` }, s);
}

export function link(href, text) {
  return h('a', { href }, text);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
export function bytes(n) {
  if (n === undefined || n === null || Number.isNaN(Number(n))) return '—';
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${UNITS[i]}`;
}

export function rate(bps) {
  if (!bps) return '0 B/s';
  return `${bytes(bps)}/s`;
}

export function duration(secs) {
  if (secs === undefined || secs === null || Number.isNaN(Number(secs))) return '—';
  let s = Math.max(0, Math.round(Number(secs)));
  const hh = Math.floor(s / 3600);
  s -= hh * 3600;
  const mm = Math.floor(s / 60);
  s -= mm * 60;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${s} s`;
  return `${s} s`;
}

/** An API time (UTC ISO) as a <time> element in the reader's locale. */
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return h('time', { datetime: iso, title: iso }, d.toLocaleString());
}

export function ago(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const text = s < 5 ? 'just now' : s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
  return h('time', { datetime: iso, title: d.toLocaleString() }, text);
}

/** Parses JSON text fields of the API (Inventory, SystemInfo, ...); null when absent or malformed. */
export function parseJson(text) {
  if (!text || typeof text !== 'string') return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// What to do next for the codes people meet most. The API's own Message already says what happened (and
// often what to do); this adds the console-side step.
const FIXES = {
  'Forbidden.RAM': 'Your RAM user is not allowed to do this. Ask an administrator to attach a policy that allows the action shown (for example AliyunSMCFullAccess), then try again.',
  NoPermission: 'Your RAM user is not allowed to do this. Ask an administrator for a policy that allows it.',
  'Forbidden.Unauthorized': 'Your RAM user may not read this. Ask an administrator for a read-only policy for this service.',
  InvalidCredentials: 'Check the user name and password. Passwords are set by an administrator on the RAM users page.',
  MFARequired: 'Enter the 6-digit code from your authenticator app.',
  InvalidMFACode: 'Enter the current 6-digit code from your authenticator app; check that this device’s clock is correct.',
  LoginLocked: 'Too many failed sign-ins: wait a few minutes before trying again, or ask an administrator.',
  SessionExpired: 'Your session ended. Sign in again.',
  'SourceServerState.Invalid': 'The source server is not in a state that allows this. Check on the Source servers page that its agent is online (ferry-agent running and able to reach this server).',
  'SourceServer.Offline': 'Start ferry-agent on the source server (it must reach this server over HTTPS), then retry.',
  'ReplicationJob.InvalidStatus': 'The job is in a status that does not allow this action. Wait for the current step to finish, or stop the job first.',
  'ReplicationJob.InvalidBusinessStatus': 'Cut over only while the incremental job is Waiting between runs.',
  'ReplicationJobName.Duplicate': 'Choose another job name: names are unique.',
  'SourceServer.WithRunningReplicationJob': 'Stop and delete the source’s replication job first (or delete with Force).',
  'ReplicationJob.Related': 'Delete the replication job of this source first (or delete with Force).',
  MissingParameter: 'Fill in the required field named in the message.',
  InvalidParameter: 'Correct the field named in the message and submit again.',
  MalformedPolicyDocument: 'Fix the policy document: it must be JSON with "Version": "1" and a "Statement" list of {Effect, Action, Resource}.',
  'EntityAlreadyExists.User': 'Pick another user name.',
  'EntityAlreadyExists.Policy': 'Pick another policy name, or edit the existing policy.',
  'EntityNotExist.User': 'The user no longer exists: reload the list.',
  IncorrectInstanceStatus: 'The instance is not in a state that allows this: stop it first, or wait until it is Running.',
  ImageUsingByInstance: 'Delete the instances launched from this image first (or use Force).',
  SnapshotCreatedImage: 'Delete the images built from this snapshot first.',
  'InvalidAccessTokenId.NotFound': 'The activation code is gone: reload the list.',
  NetworkError: 'Check that the Ferry server is running and reachable, then retry.',
  InternalError: 'The server failed unexpectedly. Retry; if it persists, look at the server log for this RequestId.',
  Throttling: 'Too many requests: wait a moment and retry.',
};

/** The suggested fix for an API failure. */
export function suggestedFix(err) {
  if (!(err instanceof ApiFailure)) return 'Reload the page; if the problem persists, check the browser console.';
  const code = err.code || '';
  if (FIXES[code]) return FIXES[code];
  const prefix = Object.keys(FIXES).find((k) => code.startsWith(`${k}.`));
  if (prefix) return FIXES[prefix];
  if (err.status === 403) return FIXES['Forbidden.RAM'];
  if (err.status >= 500) return FIXES.InternalError;
  return 'Check the values you entered against the message above, then retry.';
}

/** The error panel: the API's Code and Message, the RAM denial detail if any, and a suggested fix. */
export function errorBox(err, title = 'The request failed') {
  const isApi = err instanceof ApiFailure;
  const detail = isApi && err.body && err.body.AccessDeniedDetail;
  return h(
    'div',
    { class: 'error-box', role: 'alert' },
    h('h3', {}, title),
    h('p', {}, h('strong', { class: 'error-code' }, isApi ? err.code : 'Error'), ': ', h('span', { class: 'error-message' }, isApi ? err.apiMessage : String(err && err.message ? err.message : err))),
    detail
      ? h(
          'p',
          { class: 'denied-detail' },
          `Denied action: ${detail.AuthAction || '?'}`,
          detail.NoPermissionType ? ` (${detail.NoPermissionType})` : '',
          detail.AuthPrincipalDisplayName ? ` for ${detail.AuthPrincipalDisplayName}` : '',
        )
      : null,
    h('p', { class: 'fix' }, h('strong', {}, 'Suggested fix: '), suggestedFix(err)),
    isApi && err.requestId ? h('p', { class: 'request-id' }, `RequestId ${err.requestId}`) : null,
  );
}

/**
 * Tells the shell that this tab changed something, so the page's live sections are re-read at once (the
 * server's event stream only reports jobs, runs, sources and instances, not e.g. RAM policies).
 */
export function changed() {
  window.dispatchEvent(new CustomEvent('ferry:changed'));
}

let liveRegion = null;
/** Says `text` to screen-reader users (polite) without moving focus. */
export function announce(text) {
  if (!liveRegion) liveRegion = document.getElementById('live');
  if (!liveRegion) return;
  liveRegion.textContent = '';
  setTimeout(() => {
    liveRegion.textContent = text;
  }, 30);
}

/** A transient status message in the page's notice area (also announced). */
export function notice(text, tone = 'ok') {
  const area = document.getElementById('notices');
  if (!area) return;
  const n = h('p', { class: `notice tone-${tone}` }, text);
  area.replaceChildren(n);
  announce(text);
  setTimeout(() => {
    if (n.isConnected) n.remove();
  }, 8000);
}

/**
 * A modal dialog (native <dialog>: focus moves in, Escape closes, focus returns to the opener).
 * `build(close)` returns the body; `onSubmit(form)` may throw an ApiFailure, which is shown in the dialog.
 * Resolves with onSubmit's result, or undefined when cancelled.
 */
export function dialog(title, build, onSubmit, submitText = 'Save') {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const titleId = uid('dlg');
    const errors = h('div', { class: 'dialog-errors' });
    const form = h('form', { method: 'dialog', novalidate: true });
    const dlg = h('dialog', { 'aria-labelledby': titleId, class: 'dialog' }, form);
    const close = (value) => {
      dlg.close();
      dlg.remove();
      if (opener && opener.focus) opener.focus();
      resolve(value);
    };
    const submit = h('button', { type: 'submit', class: 'primary' }, submitText);
    fill(
      form,
      h('h2', { id: titleId }, title),
      build(close),
      errors,
      h('div', { class: 'dialog-actions' }, h('button', { type: 'button', onclick: () => close(undefined) }, onSubmit ? 'Cancel' : 'Close'), onSubmit ? submit : null),
    );
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (!onSubmit) return close(undefined);
      submit.disabled = true;
      errors.replaceChildren();
      try {
        const out = await onSubmit(form);
        if (out !== false) {
          close(out === undefined ? true : out);
          changed();
        }
      } catch (e) {
        errors.replaceChildren(errorBox(e));
      } finally {
        submit.disabled = false;
      }
      return undefined;
    });
    dlg.addEventListener('cancel', (ev) => {
      ev.preventDefault();
      close(undefined);
    });
    document.body.appendChild(dlg);
    dlg.showModal();
    const first = form.querySelector('input, select, textarea, button');
    if (first) first.focus();
  });
}

/** Asks for confirmation of a destructive action. */
export async function confirmAction(title, text, verb = 'Delete') {
  const ok = await dialog(title, () => h('p', {}, text), async () => true, verb);
  return ok === true;
}

/** Runs an action from a button: disables it meanwhile, reports success or the error panel. */
export async function act(button, what, fn, errorTarget) {
  if (button) button.disabled = true;
  try {
    const out = await fn();
    notice(what);
    changed();
    return out;
  } catch (e) {
    const target = errorTarget || document.getElementById('notices');
    if (target) target.replaceChildren(errorBox(e, `Could not ${what.charAt(0).toLowerCase()}${what.slice(1)}`));
    announce(`Failed: ${e.message}`);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** A read-only code block with a Copy button (clipboard API, with a selection fallback). */
export function copyable(text, label) {
  const code = h('code', { class: 'copy-text' }, text);
  const btn = h('button', { type: 'button', class: 'copy', 'aria-label': `Copy ${label}` }, 'Copy');
  btn.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      notice(`${label} copied to the clipboard`);
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      notice(`Press Ctrl+C to copy the selected ${label}`, 'warn');
    }
  });
  return h('div', { class: 'copyable' }, h('pre', {}, code), btn);
}
