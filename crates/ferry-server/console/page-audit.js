// The audit trail (ActionTrail LookupEvents): filters, free-text search within the loaded events, paging.

import { call } from './api.js';
import { h, fill, pageHeader, table, when, field, input, select, errorBox, badge } from './ui.js';

const KEYS = [['', 'No filter'], ['EventName', 'Action (EventName)'], ['User', 'User'], ['ServiceName', 'Service'], ['EventRW', 'Read/Write'], ['ResourceName', 'Resource'], ['EventAccessKeyId', 'Access key'], ['SourceIpAddress', 'Source IP'], ['EventType', 'Event type']];

function isoLocal(d) {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export async function auditPage(ctx) {
  const key = select('LookupKey', KEYS, '', { id: 'audit-key' });
  const value = input('LookupValue', { id: 'audit-value' });
  const days = select('Days', [['1', 'Last 24 hours'], ['7', 'Last 7 days'], ['30', 'Last 30 days']], '7', { id: 'audit-days' });
  const search = input('Search', { type: 'search', id: 'audit-search' });
  const results = h('div', { id: 'audit-results' });
  const more = h('button', { type: 'button', id: 'audit-more', hidden: true }, 'Older events');
  let events = [];
  let next = '';

  const render = () => {
    const q = search.value.trim().toLowerCase();
    const shown = q ? events.filter((e) => JSON.stringify(e).toLowerCase().includes(q)) : events;
    fill(results, h('p', { class: 'muted', role: 'status' }, `${shown.length} of ${events.length} loaded events shown.`), table('Audit events', [
      ['Time', (e) => when(e.eventTime)],
      ['Action', (e) => h('code', {}, e.eventName)],
      ['Service', (e) => e.serviceName],
      ['User', (e) => (e.userIdentity && (e.userIdentity.userName || e.userIdentity.principalId)) || '—'],
      ['Type', (e) => e.eventType],
      ['Result', (e) => (e.errorCode ? [badge('Failed'), ' ', e.errorCode] : badge('Finished'))],
      ['Source IP', (e) => e.sourceIpAddress || '—'],
    ], shown, 'No event matches.'));
    more.hidden = !next;
  };

  const load = async (append) => {
    const end = new Date();
    const start = new Date(end.getTime() - Number(days.value) * 86400e3);
    const params = { StartTime: isoLocal(start), EndTime: isoLocal(end), MaxResults: '50' };
    if (key.value && value.value.trim()) {
      params['LookupAttribute.1.Key'] = key.value;
      params['LookupAttribute.1.Value'] = value.value.trim();
    }
    if (append && next) params.NextToken = next;
    try {
      const r = await call('actiontrail', 'LookupEvents', params);
      const got = Array.isArray(r.Events) ? r.Events : [];
      events = append ? events.concat(got) : got;
      next = r.NextToken || '';
      render();
    } catch (e) {
      fill(results, errorBox(e, 'Could not load the audit trail'));
    }
  };

  const form = h('form', { class: 'toolbar', role: 'search', 'aria-label': 'Filter audit events' },
    field('Filter by', key), field('Value', value), field('Period', days),
    h('button', { type: 'submit', class: 'primary', id: 'audit-apply' }, 'Apply'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(false); });
  search.addEventListener('input', render);
  more.addEventListener('click', () => load(true));
  ctx.show(h('div', {}, pageHeader('Audit trail'), h('p', { class: 'muted' }, 'Every API call, console action and agent registration, newest first. The trail is append-only and hash-chained.'), form, field('Search the loaded events', search), results, more));
  await ctx.live(h('div', {}), async () => {
    // New events arrive all the time; reload only the first page, and only while nobody is paging.
    if (!next || events.length <= 50) await load(false);
  });
  return null;
}
