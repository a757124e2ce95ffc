// The console's shell: session, hash router, navigation and live updates.
//
// Routes map `#/path/<id>` to a page module's render function. A page draws its frame once and registers
// live sections (ctx.live); when the server's event stream says something changed, only those sections are
// re-fetched and redrawn, and keyboard focus is put back on the same control, so updates never reload the
// page nor steal focus.

import * as api from './api.js';
import { h, fill, errorBox, announce } from './ui.js';
import { signinPage } from './page-signin.js';
import { overviewPage } from './page-overview.js';
import { sourcesPage, sourcePage } from './page-sources.js';
import { jobsPage, jobPage, jobWizardPage } from './page-jobs.js';
import { imagesPage, snapshotsPage } from './page-images.js';
import { instancesPage, instancePage } from './page-instances.js';
import { workgroupsPage } from './page-workgroups.js';
import { activationCodesPage } from './page-codes.js';
import { ramUsersPage, ramPoliciesPage } from './page-ram.js';
import { auditPage } from './page-audit.js';

const ROUTES = [
  [/^\/signin$/, signinPage, 'Sign in'],
  [/^\/overview$/, overviewPage, 'Overview'],
  [/^\/sources$/, sourcesPage, 'Source servers'],
  [/^\/sources\/([^/]+)$/, sourcePage, 'Source server'],
  [/^\/jobs$/, jobsPage, 'Replication jobs'],
  [/^\/jobs\/new$/, jobWizardPage, 'New replication job'],
  [/^\/jobs\/([^/]+)$/, jobPage, 'Replication job'],
  [/^\/images$/, imagesPage, 'Images'],
  [/^\/snapshots$/, snapshotsPage, 'Snapshots'],
  [/^\/instances$/, instancesPage, 'Instances'],
  [/^\/instances\/([^/]+)$/, instancePage, 'Instance'],
  [/^\/workgroups$/, workgroupsPage, 'Workgroups'],
  [/^\/activation-codes$/, activationCodesPage, 'Activation codes'],
  [/^\/ram\/users$/, ramUsersPage, 'RAM users'],
  [/^\/ram\/policies$/, ramPoliciesPage, 'RAM policies'],
  [/^\/audit$/, auditPage, 'Audit trail'],
];

const state = {
  me: null,
  lives: [],
  generation: 0,
  refreshing: false,
  pending: false,
  busy: false,
  firstRoute: true,
  stopWatch: null,
};

function currentPath() {
  const raw = window.location.hash.replace(/^#/, '') || '/overview';
  return raw.split('?')[0];
}

/** Query parameters after `?` in the hash (#/audit?EventName=X). */
export function hashQuery() {
  const q = window.location.hash.split('?')[1] || '';
  return new URLSearchParams(q);
}

export function navigate(path) {
  if (window.location.hash === `#${path}`) route();
  else window.location.hash = `#${path}`;
}

function setWho() {
  const who = document.getElementById('who');
  if (!state.me) {
    fill(who);
    return;
  }
  const out = h('button', { type: 'button', id: 'signout' }, 'Sign out');
  out.addEventListener('click', async () => {
    try {
      await api.signOut();
    } catch {
      // Signing out of a session the server already dropped is still signing out.
    }
    state.me = null;
    stopLive();
    setWho();
    navigate('/signin');
  });
  fill(who, h('span', { class: 'who-name' }, 'Signed in as ', h('strong', { id: 'who-user' }, state.me.displayName || state.me.userName)), out);
}

function markNav(path) {
  for (const a of document.querySelectorAll('#nav a')) {
    const target = a.getAttribute('href').slice(1);
    if (path === target || path.startsWith(`${target}/`)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function startLive() {
  if (state.stopWatch) return;
  const label = document.getElementById('live-state');
  state.stopWatch = api.watch(
    (summary) => {
      if (summary) state.busy = isBusy(summary);
      refreshLive();
    },
    (mode) => {
      label.textContent = mode === 'live' ? 'Live' : 'Polling';
      label.title = mode === 'live' ? 'Updates arrive as they happen' : 'Live updates unavailable: refreshing every few seconds';
    },
  );
}

/**
 * Whether work is in flight. The event stream reports changes of counts per status, which a running job's
 * progress (bytes, throughput, ETA) does not change: while something runs, the live sections are also
 * re-read every BUSY_POLL_MS so progress moves smoothly.
 */
function isBusy(summary) {
  const count = (group, names) => names.reduce((n, k) => n + Number((summary[group] || {})[k] || 0), 0);
  return count('jobs', ['Running']) + count('runs', ['Running', 'Syncing', 'Processing']) + count('instances', ['Pending', 'Starting', 'Stopping']) > 0;
}

const BUSY_POLL_MS = 2000;

function stopLive() {
  if (state.stopWatch) state.stopWatch();
  state.stopWatch = null;
  state.busy = false;
  document.getElementById('live-state').textContent = '';
}

/** Re-runs the current page's live sections; coalesces bursts of events into one refresh at a time. */
async function refreshLive() {
  if (state.refreshing) {
    state.pending = true;
    return;
  }
  if (document.querySelector('dialog[open]')) return;
  state.refreshing = true;
  const gen = state.generation;
  try {
    const active = document.activeElement;
    const key = active && (active.dataset.key || active.id);
    for (const l of state.lives) {
      if (gen !== state.generation) break;
      await l.run();
    }
    if (key && gen === state.generation && document.activeElement === document.body) {
      const again = document.querySelector(`[data-key="${CSS.escape(key)}"]`) || document.getElementById(key);
      if (again) again.focus();
    }
  } finally {
    state.refreshing = false;
    if (state.pending) {
      state.pending = false;
      setTimeout(refreshLive, 250);
    }
  }
}

async function route() {
  const path = currentPath();
  state.generation += 1;
  const gen = state.generation;
  state.lives = [];
  const nav = document.getElementById('nav');
  nav.classList.remove('open');
  document.getElementById('nav-toggle').setAttribute('aria-expanded', 'false');
  document.getElementById('notices').replaceChildren();

  if (!state.me && path !== '/signin') {
    state.me = await api.me().catch(() => null);
    setWho();
    if (!state.me) {
      sessionStorage.setItem('ferry.after', path);
      navigate('/signin');
      return;
    }
  }
  if (state.me) startLive();

  const match = ROUTES.map(([re, page, title]) => [re.exec(path), page, title]).find(([m]) => m);
  const pageEl = document.getElementById('page');
  markNav(path);
  if (!match) {
    document.title = 'Not found · Ferry console';
    fill(pageEl, h('h1', { id: 'page-title', tabindex: '-1' }, 'Page not found'), h('p', {}, 'There is no page at ', h('code', {}, path), '. ', h('a', { href: '#/overview' }, 'Go to the overview'), '.'));
    return;
  }
  const [m, page, title] = match;
  document.title = `${title} · Ferry console`;
  const ctx = {
    params: m.slice(1).map(decodeURIComponent),
    me: state.me,
    navigate,
    onSignedIn: (me) => {
      state.me = me;
      setWho();
      const after = sessionStorage.getItem('ferry.after') || '/overview';
      sessionStorage.removeItem('ferry.after');
      navigate(after === '/signin' ? '/overview' : after);
    },
    /** Shows the page's frame now (before its live sections have loaded). */
    show(node) {
      if (gen === state.generation) fill(pageEl, node);
    },
    /**
     * Registers a live section: `fn(el)` fills `el` now and again on every change; it returns true while
     * the section shows work in flight, to be polled until that settles.
     */
    live(el, fn) {
      const entry = {
        busy: false,
        run: async () => {
          try {
            // A section returns true while it shows work in flight that the event stream may not report
            // (an export task, an instance booting): it is then re-read every BUSY_POLL_MS.
            entry.busy = (await fn(el)) === true;
          } catch (e) {
            entry.busy = false;
            fill(el, errorBox(e, 'Could not load this section'));
          }
        },
      };
      if (gen === state.generation) state.lives.push(entry);
      if (!el.firstChild) fill(el, h('p', { class: 'loading', role: 'status' }, 'Loading…'));
      return entry.run();
    },
  };
  fill(pageEl, h('p', { class: 'loading' }, 'Loading…'));
  try {
    const content = await page(ctx);
    if (gen !== state.generation) return;
    if (content) fill(pageEl, content);
  } catch (e) {
    if (gen !== state.generation) return;
    fill(pageEl, h('h1', { id: 'page-title', tabindex: '-1' }, title), errorBox(e, `Could not show ${title.toLowerCase()}`));
  }
  // After an in-app navigation, focus goes to the new page's heading (as a page load would reset it); on
  // the first load it stays at the document start, so the first Tab reaches the skip link.
  const heading = document.getElementById('page-title');
  if (heading && path !== '/signin' && !state.firstRoute) heading.focus({ preventScroll: true });
  state.firstRoute = false;
  announce(`${title} page loaded`);
}

function boot() {
  api.setSignedOutHandler(() => {
    state.me = null;
    stopLive();
    setWho();
    sessionStorage.setItem('ferry.after', currentPath());
    navigate('/signin');
  });
  const toggle = document.getElementById('nav-toggle');
  const nav = document.getElementById('nav');
  toggle.addEventListener('click', () => {
    const open = !nav.classList.contains('open');
    nav.classList.toggle('open', open);
    toggle.setAttribute('aria-expanded', String(open));
    if (open) nav.querySelector('a').focus();
  });
  nav.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && nav.classList.contains('open')) {
      nav.classList.remove('open');
      toggle.setAttribute('aria-expanded', 'false');
      toggle.focus();
    }
  });
  window.addEventListener('hashchange', route);
  window.addEventListener('ferry:changed', () => refreshLive());
  // The skip link moves focus to the content without touching the hash, which is the router's.
  document.querySelector('.skip-link').addEventListener('click', (ev) => {
    ev.preventDefault();
    document.getElementById('main').focus();
  });
  setInterval(() => {
    const busy = state.busy || state.lives.some((l) => l.busy);
    if (busy && state.me && document.visibilityState === 'visible') refreshLive();
  }, BUSY_POLL_MS);
  route();
}

boot();
