// The console's only way to the server: the session endpoints under /console/api/ and the live event
// stream. Every action goes through POST /console/api/call, which answers exactly what the RPC API answers,
// so the console has no powers of its own: RAM decides what the signed-in user may do.
//
// Invariant: every state-changing request carries the session's CSRF token (X-CSRF-Token).

const BASE = '/console/api';
const CSRF_KEY = 'ferry.csrf';

/** An error answer of the API: its Code, Message, HTTP status and the whole envelope. */
export class ApiFailure extends Error {
  constructor(status, body) {
    const code = (body && (body.Code || body.code)) || `HTTP${status}`;
    const message = (body && (body.Message || body.message)) || 'the server gave no explanation';
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.apiMessage = message;
    this.requestId = body && (body.RequestId || body.requestId);
    this.body = body || {};
  }
}

let csrf = sessionStorage.getItem(CSRF_KEY) || '';
let onSignedOut = () => {};

/** Called with no argument when the session is gone (401 on a call): the app shows the sign-in page. */
export function setSignedOutHandler(f) {
  onSignedOut = f;
}

function setCsrf(token) {
  csrf = token || '';
  if (csrf) sessionStorage.setItem(CSRF_KEY, csrf);
  else sessionStorage.removeItem(CSRF_KEY);
}

async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  let resp;
  try {
    resp = await fetch(BASE + path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiFailure(0, {
      Code: 'NetworkError',
      Message: `cannot reach the Ferry server (${e.message})`,
    });
  }
  const text = await resp.text();
  let data = {};
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { Code: `HTTP${resp.status}`, Message: text.slice(0, 300) };
    }
  }
  if (!resp.ok) throw new ApiFailure(resp.status, data);
  return data;
}

/** Signs in; resolves to {userName, displayName, mfa, ...}. Rejects with ApiFailure (MFARequired, ...). */
export async function signIn(userName, password, mfaCode) {
  const body = { userName, password };
  if (mfaCode) body.mfaCode = mfaCode;
  const me = await request('POST', '/signin', body);
  setCsrf(me.csrfToken);
  return me;
}

export async function signOut() {
  try {
    await request('POST', '/signout', {});
  } finally {
    setCsrf('');
  }
}

/** The signed-in user, or null when there is no session. */
export async function me() {
  try {
    const who = await request('GET', '/me');
    if (who.csrfToken) setCsrf(who.csrfToken);
    return who;
  } catch (e) {
    if (e instanceof ApiFailure && (e.status === 401 || e.status === 403)) return null;
    throw e;
  }
}

/**
 * Calls an API action as the signed-in user. `params` are wire names (`SourceId.1`, `Tag.1.Key`); values are
 * sent as strings, and undefined/empty values are left out.
 */
export async function call(product, action, params = {}) {
  const flat = {};
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    flat[k] = typeof v === 'string' ? v : String(v);
  }
  try {
    return await request('POST', '/call', { product, action, params: flat });
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 401 && !String(e.code).startsWith('Invalid')) {
      onSignedOut();
    }
    throw e;
  }
}

/** Unwraps an API list (`{"SourceServers":{"SourceServer":[...]}}` -> the array). */
export function list(resp, outer, inner) {
  const o = resp && resp[outer];
  if (!o) return [];
  if (Array.isArray(o)) return o;
  return Array.isArray(o[inner]) ? o[inner] : [];
}

/**
 * Follows the server's event stream; `onChange(summary)` runs on each `changed` event. When the stream is
 * unavailable (a proxy that buffers, an old server) it falls back to polling every `pollMs`. Returns a stop
 * function.
 */
export function watch(onChange, onState, pollMs = 5000) {
  let es = null;
  let timer = null;
  let stopped = false;
  const poll = () => {
    if (timer || stopped) return;
    timer = setInterval(() => onChange(null), pollMs);
  };
  if (typeof EventSource === 'function') {
    es = new EventSource(BASE + '/events', { withCredentials: true });
    es.addEventListener('open', () => {
      onState('live');
      if (timer) {
        clearInterval(timer);
        timer = null;
      }
    });
    es.addEventListener('changed', (ev) => {
      let summary = null;
      try {
        summary = JSON.parse(ev.data);
      } catch {
        summary = null;
      }
      onChange(summary);
    });
    es.addEventListener('error', () => {
      onState('polling');
      poll();
    });
  } else {
    onState('polling');
    poll();
  }
  return () => {
    stopped = true;
    if (es) es.close();
    if (timer) clearInterval(timer);
  };
}
