// Operators (admin role): the saga explorer over the admin API
// (docs/admin.md): counts by state, step and awaited participant; the list
// with filters and cursor pages; one saga with its steps, its timeline drawn
// lane by lane, and the actions retry / compensate / abort / skip, each with
// a reason.
import { h, replace, route, link, show } from './dom.js';
import { t } from './i18n.js';
import { api, path } from './api.js';
import { badge, dateTime, errorBox, field, flash, objects, pagedList, poll, section, table } from './view.js';

const STATES = ['RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'FAILED', 'ABORTED'];
const TERMINAL = ['COMPLETED', 'COMPENSATED', 'ABORTED'];
const FILTERS = ['type', 'state', 'awaiting', 'createdFrom', 'createdTo', 'limit'];

function opsLink(filters) {
  const q = new URLSearchParams();
  for (const k of FILTERS) if (filters[k]) q.set(k, filters[k]);
  const s = q.toString();
  return route(['ops']) + (s ? '?' + s : '');
}

// ms since the epoch <-> the value of an <input type=datetime-local>.
function toLocalInput(ms) {
  const n = Number(ms);
  if (!ms || !Number.isFinite(n)) return '';
  const d = new Date(n - new Date(n).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}
function fromLocalInput(text) {
  const ms = text ? new Date(text).getTime() : NaN;
  return Number.isFinite(ms) ? String(ms) : '';
}

// #/ops?state=...: the counts, the filters and one page of sagas.
export function opsPage(root, { query }, page) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, query.get(k) || '']));
  const counts = h('div', { dataset: { testid: 'counts' } });
  const list = h('div');
  replace(root, h('h1', {}, t('ops.title')),
    section(t('ops.counts'), counts),
    section(t('ops.sagas'), filterForm(filters), list));
  showCounts(counts, filters, page);
  showList(list, filters, page);
}

function filterForm(filters) {
  const type = h('input', { list: 'saga-types', value: filters.type, dataset: { testid: 'f-type' } });
  const types = h('datalist', { id: 'saga-types' }, ['booking', 'seed-booking', 'cancellation'].map((v) => h('option', { value: v })));
  const state = h('select', { dataset: { testid: 'f-state' } }, h('option', { value: '' }, t('ops.any')),
    STATES.map((s) => h('option', { value: s, selected: filters.state === s }, t('status.' + s, {}, s))));
  const awaiting = h('input', { list: 'participants', value: filters.awaiting, dataset: { testid: 'f-awaiting' } });
  const participants = h('datalist', { id: 'participants' }, ['payment', 'inventory'].map((v) => h('option', { value: v })));
  const from = h('input', { type: 'datetime-local', value: toLocalInput(filters.createdFrom) });
  const to = h('input', { type: 'datetime-local', value: toLocalInput(filters.createdTo) });
  const limit = h('input', { type: 'number', min: 1, max: 1000, value: filters.limit || 20 });
  return h('form', { class: 'row filters', dataset: { testid: 'filters' }, on: { submit: (ev) => {
    ev.preventDefault();
    location.hash = opsLink({ type: type.value.trim(), state: state.value, awaiting: awaiting.value.trim(),
      createdFrom: fromLocalInput(from.value), createdTo: fromLocalInput(to.value), limit: limit.value });
  } } },
  field(t('ops.type'), type), types, field(t('ops.state'), state), field(t('ops.awaiting'), awaiting), participants,
  field(t('ops.createdFrom'), from), field(t('ops.createdTo'), to), field(t('ops.limit'), limit),
  h('button', { type: 'submit', class: 'primary', dataset: { testid: 'f-apply' } }, t('ops.apply')),
  h('a', { href: route(['ops']), class: 'btn' }, t('ops.clear')));
}

async function showCounts(el, filters, page) {
  let c;
  try {
    c = (await api('GET', '/admin/saga-counts')).data;
  } catch (e) {
    if (page.alive()) replace(el, errorBox(e));
    return;
  }
  if (!page.alive()) return;
  c = c && typeof c === 'object' ? c : {};
  const byState = c.byState && typeof c.byState === 'object' ? c.byState : {};
  replace(el,
    h('div', { class: 'chips' }, Object.entries(byState).map(([s, n]) =>
      h('a', { class: 'chip', href: opsLink({ ...filters, state: s }), dataset: { testid: 'count-' + s } },
        badge(s), ' ', h('strong', {}, show(n))))),
    h('div', { class: 'cols' },
      table([
        { label: t('ops.type'), cell: (r) => show(r.type) },
        { label: t('step'), cell: (r) => show(r.step) },
        { label: t('ops.state'), cell: (r) => badge(r.state) },
        { label: t('ops.count'), cell: (r) => link(['ops'], show(r.count), { href: opsLink({ ...filters, type: show(r.type), state: show(r.state) }) }) },
      ], objects(c.bySteps), { class: 'compact', dataset: { testid: 'by-steps' } }),
      table([
        { label: t('ops.awaiting'), cell: (r) => link(['ops'], show(r.participant), { href: opsLink({ ...filters, awaiting: show(r.participant) }) }) },
        { label: t('ops.count'), cell: (r) => show(r.count) },
      ], objects(c.byParticipant), { class: 'compact', dataset: { testid: 'by-participant' } })));
}

function showList(el, filters, page) {
  const steps = (s) => (Array.isArray(s.steps) ? s.steps : []);
  pagedList(el, page,
    (pageToken) => api('GET', '/admin/sagas', { query: { ...filters, limit: filters.limit || 20, pageToken } }),
    (rows) => (rows.length === 0 ? h('p', { class: 'muted', dataset: { testid: 'no-sagas' } }, t('ops.none')) : table([
      { label: 'ID', cell: (s) => link(['ops', 'sagas', show(s.id)], show(s.id), { dataset: { testid: 'saga-link' } }) },
      { label: t('ops.type'), cell: (s) => show(s.type) },
      { label: t('ops.state'), cell: (s) => badge(s.state) },
      { label: t('step'), cell: (s) => { const st = steps(s)[s.currentStep]; return st && typeof st === 'object' ? show(st.name) : show(s.currentStep); } },
      { label: t('ops.awaiting'), cell: (s) => show(s.awaiting) },
      { label: t('ops.created'), cell: (s) => dateTime(s.createdMs) },
      { label: t('ops.error'), cell: (s) => h('span', { class: 'err-text' }, show(s.lastError)) },
    ], rows, { dataset: { testid: 'sagas' } })));
}

// What a timeline event looks like: its lane (the saga's own or its step's),
// its kind (colour) and a short mark.
function eventLook(e) {
  const ev = show(e.event);
  if (ev.startsWith('OPERATOR_')) return { lane: 'saga', kind: 'operator', mark: '⚑ ' + t('ops.act.' + ev.slice(9).toLowerCase(), {}, ev) };
  switch (ev) {
    case 'STARTED': return { lane: 'saga', kind: 'start', mark: '▶' };
    case 'CANCEL_REQUESTED': return { lane: 'saga', kind: 'warn', mark: '✋' };
    case 'EXPIRED': return { lane: 'saga', kind: 'error', mark: '⌛' };
    case 'INTERNAL_ERROR': return { lane: 'saga', kind: 'error', mark: '✗' };
    case 'STEP_SUCCEEDED': return { lane: 'step', kind: 'ok', mark: '✓' };
    case 'STEP_REFUSED': return { lane: 'step', kind: 'error', mark: '✗' };
    case 'STEP_RETRYABLE': return { lane: 'step', kind: 'warn', mark: '↻' };
    case 'STEP_TIMED_OUT': return { lane: 'step', kind: 'warn', mark: '⌛' };
    case 'RESENT': return { lane: 'step', kind: 'attempt', mark: '→' };
    case 'COMPENSATION_SUCCEEDED': return { lane: 'step', kind: 'comp', mark: '↺' };
    case 'COMPENSATION_FAILED': return { lane: 'step', kind: 'error', mark: '↺✗' };
    default: return { lane: 'step', kind: 'plain', mark: '•' };
  }
}

function describe(e) {
  const parts = [show(e.event), dateTime(e.atMs)];
  if (e.stepName) parts.push(t('step') + ': ' + show(e.stepName) + (e.stepStatus ? ' (' + show(e.stepStatus) + ')' : ''));
  if (e.attempt) parts.push(t('ops.attempt') + ' ' + show(e.attempt));
  if (e.state) parts.push(t('ops.state') + ': ' + show(e.state));
  if (e.error) parts.push(t('ops.error') + ': ' + show(e.error));
  if (e.actor) parts.push(t('ops.actor') + ': ' + show(e.actor));
  if (e.reason) parts.push(t('reason') + ': ' + show(e.reason));
  return parts.join('\n');
}

// The timeline as lanes: one for the saga, one per step; each entry a mark
// in its lane, in time order from left to right.
function timelineDrawing(saga, entries) {
  const steps = objects(saga.steps);
  const cells = [];
  const lanes = [{ label: t('ops.sagaLane'), sub: '' }].concat(steps.map((s) => ({
    label: show(s.name),
    sub: t('ops.laneSub', { attempts: show(s.attempts ?? 0), comps: show(s.compensationAttempts ?? 0) }),
    status: s.status,
  })));
  lanes.forEach((lane, row) => cells.push(h('div', { class: 'lane-label', style: null, dataset: { row: String(row + 1) } },
    h('strong', {}, lane.label), lane.status ? [' ', badge(lane.status)] : null, lane.sub ? h('small', {}, lane.sub) : null)));
  entries.forEach((e, col) => {
    const look = eventLook(e);
    const stepRow = Number.isInteger(e.step) && e.step >= 0 && e.step < steps.length ? e.step + 2 : 1;
    const row = look.lane === 'saga' ? 1 : stepRow;
    cells.push(h('div', { class: 'mark ' + look.kind, title: describe(e), tabindex: 0,
      dataset: { row: String(row), col: String(col + 2), event: show(e.event) } },
    h('span', {}, look.mark), e.attempt > 1 && look.lane === 'step' ? h('sup', {}, '#' + show(e.attempt)) : null));
  });
  const grid = h('div', { class: 'lanes', dataset: { testid: 'timeline-drawing', cols: String(entries.length) } }, cells);
  // Grid positions from data attributes (style attributes would need
  // 'unsafe-inline' under the page's CSP; CSSOM assignments do not).
  for (const c of grid.children) {
    c.style.gridRow = c.dataset.row;
    if (c.dataset.col) c.style.gridColumn = c.dataset.col;
  }
  grid.style.gridTemplateColumns = `minmax(9em, max-content) repeat(${entries.length}, minmax(2.4em, max-content))`;
  grid.style.gridTemplateRows = `repeat(${lanes.length}, auto)`;
  return h('div', {},
    h('div', { class: 'lanes-scroll' }, grid),
    h('p', { class: 'legend' },
      ['start', 'ok', 'attempt', 'warn', 'error', 'comp', 'operator'].map((k) =>
        h('span', { class: 'mark ' + k }, t('ops.kind.' + k)))));
}

// #/ops/sagas/ID: one saga, polled while it is not settled.
export function sagaPage(root, { id }, page) {
  const head = h('div');
  const actions = h('div');
  const body = h('div');
  replace(root, h('h1', {}, t('ops.saga'), ' ', h('code', { dataset: { testid: 'saga-id' } }, id)),
    h('p', {}, h('a', { href: route(['ops']) }, '‹ ', t('ops.back'))), head, actions, body);
  let last = '';
  let lastState = '';
  const load = async () => {
    let s;
    try {
      s = (await api('GET', path('admin', 'sagas', id))).data;
    } catch (e) {
      if (page.alive()) replace(head, errorBox(e));
      return e.status !== 404 && e.status !== 403 && e.status !== 401;
    }
    if (!page.alive()) return false;
    if (!s || typeof s !== 'object') s = {};
    const snapshot = JSON.stringify(s);
    if (snapshot === last) return !TERMINAL.includes(lastState);
    last = snapshot;
    lastState = show(s.state);
    const steps = objects(s.steps);
    const timeline = objects(s.timeline);
    const current = steps[s.currentStep];
    replace(head, h('dl', { class: 'facts' },
      h('dt', {}, t('ops.state')), h('dd', {}, badge(s.state, { dataset: { testid: 'saga-state' } }),
        TERMINAL.includes(lastState) ? null : h('span', { class: 'spinner', title: t('guest.watching') })),
      h('dt', {}, t('ops.type')), h('dd', {}, show(s.type), s.version ? ' v' + show(s.version) : ''),
      h('dt', {}, t('step')), h('dd', {}, current ? show(current.name) : show(s.currentStep)),
      h('dt', {}, t('ops.awaiting')), h('dd', { dataset: { testid: 'saga-awaiting' } }, show(s.awaiting) || '—'),
      h('dt', {}, t('ops.created')), h('dd', {}, dateTime(s.createdMs)),
      h('dt', {}, t('ops.updated')), h('dd', {}, dateTime(s.updatedMs)),
      s.lastError ? [h('dt', {}, t('ops.error')), h('dd', { class: 'err-text' }, show(s.lastError))] : null,
      s.cancelRequested ? [h('dt', {}, t('ops.cancelRequested')), h('dd', {}, '✓')] : null));
    replace(actions, actionBar(id, lastState, load));
    replace(body,
      section(t('ops.timeline'),
        Number(s.timelineDropped) > 0 ? h('p', { class: 'warn' }, t('ops.dropped', { n: show(s.timelineDropped) })) : null,
        timelineDrawing(s, timeline)),
      section(t('steps'), table([
        { label: '#', cell: (_x, i) => show(i) },
        { label: t('step'), cell: (x) => show(x.name) },
        { label: t('status'), cell: (x) => badge(x.status) },
        { label: t('ops.attempts'), cell: (x) => show(x.attempts) },
        { label: t('ops.compAttempts'), cell: (x) => show(x.compensationAttempts) },
        { label: t('ops.started'), cell: (x) => dateTime(x.startedMs) },
        { label: t('ops.finished'), cell: (x) => dateTime(x.finishedMs) },
        { label: t('ops.compensated'), cell: (x) => dateTime(x.compensatedMs) },
        { label: t('ops.error'), cell: (x) => h('span', { class: 'err-text' }, show(x.lastError)) },
      ], steps, { dataset: { testid: 'steps' } })),
      section(t('ops.entries'),
        table([
          { label: t('ops.when'), cell: (e) => dateTime(e.atMs) },
          { label: t('ops.event'), cell: (e) => h('span', { class: 'event ' + eventLook(e).kind }, show(e.event)) },
          { label: t('step'), cell: (e) => show(e.stepName) },
          { label: t('ops.stepStatus'), cell: (e) => (e.stepStatus ? badge(e.stepStatus) : '') },
          { label: t('ops.attempt'), cell: (e) => show(e.attempt) },
          { label: t('ops.state'), cell: (e) => badge(e.state) },
          { label: t('ops.error'), cell: (e) => h('span', { class: 'err-text' }, show(e.error)) },
          { label: t('ops.actor'), cell: (e) => show(e.actor) },
          { label: t('reason'), cell: (e) => h('span', { class: 'wrap' }, show(e.reason)) },
        ], timeline, { dataset: { testid: 'timeline' } })),
      section(t('ops.data'), h('pre', { class: 'data' }, JSON.stringify(s.data ?? null, null, 2))));
    return !TERMINAL.includes(lastState);
  };
  poll(page, load, 1500);
}

const ACTIONS = ['retry', 'compensate', 'abort', 'skip'];

function actionBar(id, state, reload) {
  const settled = TERMINAL.includes(state);
  return h('div', { class: 'actions', dataset: { testid: 'actions' } },
    ACTIONS.map((a) => h('button', { type: 'button', class: a === 'abort' ? 'danger' : '', disabled: settled,
      title: t('ops.help.' + a), dataset: { testid: 'act-' + a },
      on: { click: () => askReason(id, a, reload) } }, t('ops.act.' + a))),
    settled ? h('span', { class: 'muted' }, t('ops.settled')) : null);
}

// A modal dialog asking the reason for `action`; sends it on confirmation.
function askReason(id, action, reload) {
  const reason = h('textarea', { maxlength: 500, rows: 3, dataset: { testid: 'reason' } });
  const problem = h('div');
  const send = h('button', { type: 'submit', class: 'primary', dataset: { testid: 'reason-confirm' } }, t('ops.act.' + action));
  const dialog = h('dialog', { class: 'modal', dataset: { testid: 'reason-dialog' } });
  const form = h('form', { class: 'stack', on: { submit: async (ev) => {
    ev.preventDefault();
    const why = reason.value.trim();
    if (!why) return replace(problem, errorBox({ message: t('ops.needReason') }));
    send.disabled = true;
    try {
      const res = await api('POST', path('admin', 'sagas', id, action), { body: { reason: why } });
      dialog.close();
      flash(t('ops.done', { action: t('ops.act.' + action), state: t('status.' + show(res.data && res.data.state), {}, show(res.data && res.data.state)) }));
      reload();
    } catch (e) {
      send.disabled = false;
      replace(problem, errorBox(e));
    }
  } } },
  h('h2', {}, t('ops.confirmTitle', { action: t('ops.act.' + action) })),
  h('p', {}, t('ops.help.' + action)),
  h('p', {}, h('code', {}, id)),
  field(t('ops.reasonLabel'), reason, t('ops.reasonHint')),
  h('div', { class: 'row' }, send,
    h('button', { type: 'button', dataset: { testid: 'reason-cancel' }, on: { click: () => dialog.close() } }, t('cancel'))),
  problem);
  dialog.appendChild(form);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.appendChild(dialog);
  dialog.showModal();
  reason.focus();
}
