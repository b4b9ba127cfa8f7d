// Pieces every page uses: errors in plain words, status badges, money and
// time formats, form fields, and polling that stops with its page.
import { h, replace, show } from './dom.js';
import { t, lang } from './i18n.js';
import { api, path } from './api.js';

// A problem as a person reads it: what it means, then the server's words.
export function errorBox(err, props = {}) {
  const message = err && err.message ? err.message : t('err.other', { status: '?' });
  return h(
    'div',
    { class: 'error', role: 'alert', dataset: { testid: 'error' }, ...props },
    h('strong', {}, message),
    err && err.detail ? h('div', { class: 'detail' }, t('err.detail'), ' ', err.detail) : null,
  );
}

const notice = () => document.getElementById('notice');
let noticeTimer = 0;
// A short message at the top of the page (kind: 'ok' or 'error').
export function flash(message, kind = 'ok') {
  const el = notice();
  el.textContent = message;
  el.className = 'notice ' + kind;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (el.hidden = true), 6000);
}

const STATUS_CLASS = {
  PENDING: 'wait', RUNNING: 'wait', CANCELLING: 'wait', COMPENSATING: 'warn',
  CONFIRMED: 'ok', COMPLETED: 'ok', SUCCEEDED: 'ok', APPROVED: 'ok',
  REJECTED: 'bad', FAILED: 'bad', ABORTED: 'bad', CANCELLED: 'muted', COMPENSATED: 'muted',
  COMPENSATION_SKIPPED: 'muted', REFUNDED: 'muted',
};
// A status as a coloured badge, its text translated when known.
export function badge(status, props = {}) {
  const s = show(status);
  return h('span', { class: 'badge ' + (STATUS_CLASS[s] || 'plain'), ...props,
    dataset: { status: s, ...(props.dataset || {}) } }, t('status.' + s, {}, s));
}

// Minor units in `currency` (ISO 4217) as text: 5000 KRW -> ₩5,000.
export function money(amount, currency) {
  if (typeof amount !== 'number' || !Number.isFinite(amount)) return '';
  const cur = typeof currency === 'string' && /^[A-Z]{3}$/.test(currency) ? currency : null;
  if (!cur) return amount.toLocaleString(lang());
  try {
    const f = new Intl.NumberFormat(lang(), { style: 'currency', currency: cur });
    const digits = f.resolvedOptions().maximumFractionDigits;
    return f.format(amount / 10 ** digits);
  } catch {
    return amount.toLocaleString(lang()) + ' ' + cur;
  }
}
// How many minor units make one unit of `currency` (KRW 1, EUR 100).
export function minorPerUnit(currency) {
  try {
    const f = new Intl.NumberFormat('en', { style: 'currency', currency });
    return 10 ** f.resolvedOptions().maximumFractionDigits;
  } catch {
    return 1;
  }
}

// Milliseconds since the epoch as local date and time; '' for 0 or junk.
export function dateTime(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms <= 0) return '';
  return new Date(ms).toLocaleString(lang(), { dateStyle: 'medium', timeStyle: 'medium' });
}

// YYYY-MM-DD of today plus `days` (local).
export function isoDate(days = 0, from = new Date()) {
  const d = new Date(from.getFullYear(), from.getMonth(), from.getDate() + days);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}
// Nights between two YYYY-MM-DD dates.
export function nights(from, to) {
  const a = Date.parse(from + 'T00:00:00Z');
  const b = Date.parse(to + 'T00:00:00Z');
  return Number.isFinite(a) && Number.isFinite(b) ? Math.round((b - a) / 86400000) : 0;
}

// A labelled form field around `input`.
export function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'label' }, label), input,
    hint ? h('small', {}, hint) : null);
}

// A section with a heading.
export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

// A table: columns [{label, cell: (row) => node|text}], rows.
// Wide tables scroll sideways on their own.
export function table(columns, rows, props = {}) {
  return h('div', { class: 'table-scroll' }, h('table', props,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
    h('tbody', {}, rows.map((row, i) => h('tr', {}, columns.map((c) => h('td', {}, c.cell(row, i))))))));
}

// Calls `tick` now and then every `ms` until `page.alive()` is false or tick
// returns false. Never two ticks at once.
export function poll(page, tick, ms) {
  const run = async () => {
    if (!page.alive()) return;
    let again = true;
    try {
      again = (await tick()) !== false;
    } catch (e) {
      reportError(e);  // a bug, not an API error (tick shows those): to the console, keep watching
    }
    if (again && page.alive()) setTimeout(run, ms);
  };
  run();
}

// A fresh idempotency key for one user action.
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
    b.toString(16).padStart(2, '0')).join('');
}

// Places this browser has seen (opened or created), newest first, at most 20.
export function rememberedPlaces() {
  try {
    const list = JSON.parse(localStorage.getItem('saga.places') || '[]');
    return Array.isArray(list) ? list.filter((x) => typeof x === 'string') : [];
  } catch {
    return [];
  }
}
export function rememberPlace(id) {
  const list = [id, ...rememberedPlaces().filter((x) => x !== id)].slice(0, 20);
  localStorage.setItem('saga.places', JSON.stringify(list));
}

// `x` as an array of objects: anything else in it becomes {}.
export function objects(x) {
  return (Array.isArray(x) ? x : []).map((r) => (r && typeof r === 'object' ? r : {}));
}

// A list read a page at a time through its cursor (the Next-Page-Token
// header, sent back as pageToken): fetchPage(pageToken) calls the API,
// draw(rows, reload) builds the list; Previous and Next below it. Returns the
// function that reloads the current page.
export function pagedList(el, page, fetchPage, draw) {
  const tokens = [''];
  const load = async () => {
    replace(el, h('p', { class: 'muted' }, t('loading')));
    let res;
    try {
      res = await fetchPage(tokens[tokens.length - 1]);
    } catch (e) {
      if (page.alive()) replace(el, errorBox(e));
      return;
    }
    if (!page.alive()) return;
    const next = res.headers.get('Next-Page-Token');
    const go = (fn) => () => { fn(); load(); };
    replace(el, draw(objects(res.data), load), h('div', { class: 'pager' },
      h('span', { class: 'muted' }, t('page', { n: tokens.length })),
      tokens.length > 1 ? h('button', { type: 'button', dataset: { testid: 'page-prev' },
        on: { click: go(() => tokens.pop()) } }, t('prev')) : null,
      next ? h('button', { type: 'button', dataset: { testid: 'page-next' },
        on: { click: go(() => tokens.push(next)) } }, t('next')) : null));
  };
  load();
  return load;
}

// The place `id` for a page about it (remembered in this browser), or null
// after showing why it could not be read.
export async function loadPlace(root, id, page) {
  replace(root, h('p', { class: 'muted' }, t('loading')));
  let place;
  try {
    place = (await api('GET', path('places', id))).data;
  } catch (e) {
    if (page.alive()) replace(root, h('h1', {}, id), errorBox(e));
    return null;
  }
  if (!page.alive()) return null;
  rememberPlace(id);
  return place && typeof place === 'object' ? place : {};
}
