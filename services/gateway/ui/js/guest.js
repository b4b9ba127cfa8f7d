// Guests: find a place by its id, see the nights free and the price for some
// dates, book (POST /reservations), watch the booking until it is CONFIRMED or
// REJECTED, list one's bookings and cancel one.
import { h, replace, route, link, show } from './dom.js';
import { t } from './i18n.js';
import { api, path } from './api.js';
import { current } from './session.js';
import {
  badge, dateTime, errorBox, field, flash, isoDate, loadPlace, money, newKey, nights, pagedList, poll,
  rememberedPlaces, section, table,
} from './view.js';

const FINAL = ['CONFIRMED', 'REJECTED', 'CANCELLED'];

// #/places: open a place by id; the places this browser has seen.
export function findPage(root) {
  const id = h('input', { name: 'place', required: true, maxlength: 128, dataset: { testid: 'place-id' } });
  const form = h('form', { class: 'row', on: { submit: (ev) => {
    ev.preventDefault();
    location.hash = route(['places', id.value.trim()]);
  } } }, field(t('guest.placeId'), id),
  h('button', { type: 'submit', class: 'primary', dataset: { testid: 'place-open' } }, t('guest.open')));
  const seen = rememberedPlaces();
  replace(root, h('h1', {}, t('guest.findTitle')),
    section(t('guest.find'), h('p', { class: 'muted' }, t('guest.findHint')), form),
    section(t('guest.recent'), seen.length
      ? h('ul', { class: 'plain' }, seen.map((p) => h('li', {}, link(['places', p], p))))
      : h('p', { class: 'muted' }, t('guest.noRecent'))));
}

// #/places/ID: the place, its availability and price for dates, and booking.
export async function placePage(root, { id }, page) {
  const place = await loadPlace(root, id, page);
  if (!place) return;
  const price = place.price && typeof place.price === 'object' ? place.price : null;

  const checkIn = h('input', { type: 'date', required: true, value: isoDate(30), dataset: { testid: 'check-in' } });
  const checkOut = h('input', { type: 'date', required: true, value: isoDate(31), dataset: { testid: 'check-out' } });
  const qty = h('input', { type: 'number', min: 1, max: 1000, required: true, value: 1, dataset: { testid: 'qty' } });
  const result = h('div', { dataset: { testid: 'quote' } });

  async function quote() {
    replace(result, h('p', { class: 'muted' }, t('loading')));
    const n = nights(checkIn.value, checkOut.value);
    if (n <= 0) return replace(result, errorBox({ message: t('guest.badDates') }));
    let nightsList;
    try {
      nightsList = (await api('GET', path('places', id, 'availability'),
        { query: { from: checkIn.value, to: checkOut.value } })).data;
    } catch (e) {
      return replace(result, errorBox(e));
    }
    if (!Array.isArray(nightsList)) nightsList = [];
    const want = Number(qty.value) || 1;
    const full = nightsList.filter((x) => !(Number(x && x.free) >= want));
    const amount = price && Number.isInteger(price.amount) ? n * want * price.amount : null;
    const book = h('button', { type: 'button', class: 'primary', dataset: { testid: 'book' },
      disabled: full.length > 0 || amount === null }, t('guest.book'));
    const bookProblem = h('div');
    book.addEventListener('click', async () => {
      const me = current();
      if (!me) {
        location.hash = route(['signin']) + '?next=' + encodeURIComponent(location.hash);
        return;
      }
      book.disabled = true;
      try {
        const res = await api('POST', '/reservations', {
          headers: { 'Idempotency-Key': newKey() },
          body: { placeId: id, userId: me.sub, checkIn: checkIn.value, checkOut: checkOut.value,
            qty: want, amount },
        });
        const bookingId = res.data && typeof res.data.id === 'string' ? res.data.id : '';
        flash(t('guest.booked'));
        location.hash = route(['bookings', bookingId]);
      } catch (e) {
        book.disabled = false;
        replace(bookProblem, errorBox(e));
      }
    });
    replace(result,
      table([
        { label: t('date'), cell: (x) => show(x.date) },
        { label: t('guest.free'), cell: (x) => show(x.free) },
        { label: t('rooms'), cell: (x) => show(x.rooms) },
      ], nightsList.map((x) => (x && typeof x === 'object' ? x : {})), { class: 'compact', dataset: { testid: 'nights' } }),
      amount === null
        ? h('p', { class: 'warn' }, t('guest.noPrice'))
        : h('p', { class: 'total' }, t('guest.total', { nights: n, qty: want }), ' ',
          h('strong', { dataset: { testid: 'total' } }, money(amount, price.currency))),
      full.length > 0 ? h('p', { class: 'warn' }, t('guest.full', { date: show(full[0].date) })) : null,
      book, bookProblem);
  }

  const form = h('form', { class: 'row', on: { submit: (ev) => { ev.preventDefault(); quote(); } } },
    field(t('checkIn'), checkIn), field(t('checkOut'), checkOut), field(t('qty'), qty),
    h('button', { type: 'submit', dataset: { testid: 'quote-submit' } }, t('guest.quote')));

  replace(root,
    h('h1', { dataset: { testid: 'place-name' } }, show(place.name) || id),
    h('dl', { class: 'facts' },
      h('dt', {}, t('guest.placeId')), h('dd', {}, show(place.id || id)),
      h('dt', {}, t('owner')), h('dd', {}, show(place.ownerId)),
      h('dt', {}, t('rooms')), h('dd', {}, show(place.rooms)),
      h('dt', {}, t('guest.price')), h('dd', { dataset: { testid: 'price' } },
        price ? money(price.amount, price.currency) : t('guest.noPriceShort'))),
    section(t('guest.when'), form, result));
}

function bookingFacts(b) {
  return h('dl', { class: 'facts' },
    h('dt', {}, t('guest.place')), h('dd', {}, b.placeId ? link(['places', b.placeId], show(b.placeId)) : ''),
    h('dt', {}, t('checkIn')), h('dd', {}, show(b.checkIn)),
    h('dt', {}, t('checkOut')), h('dd', {}, show(b.checkOut)),
    h('dt', {}, t('qty')), h('dd', {}, show(b.qty)),
    h('dt', {}, t('amount')), h('dd', {}, money(b.amount, b.currency)),
    b.refundAmount !== undefined ? [h('dt', {}, t('guest.refund')), h('dd', {}, money(b.refundAmount, b.currency))] : null,
    b.reason ? [h('dt', {}, t('reason')), h('dd', { dataset: { testid: 'booking-reason' } }, show(b.reason))] : null);
}

function cancelButton(b, after) {
  if (!['PENDING', 'CONFIRMED'].includes(b.status)) return null;
  const problem = h('span');
  const button = h('button', { type: 'button', class: 'danger', dataset: { testid: 'cancel' } }, t('guest.cancel'));
  button.addEventListener('click', async () => {
    if (!window.confirm(t('guest.cancelConfirm'))) return;
    button.disabled = true;
    try {
      const res = await api('POST', path('reservations', b.id, 'cancel'), { headers: { 'Idempotency-Key': newKey() } });
      const refund = res.data && res.data.refundAmount;
      flash(refund !== undefined ? t('guest.cancelledRefund', { amount: money(refund, b.currency) }) : t('guest.cancelled'));
      after();
    } catch (e) {
      button.disabled = false;
      replace(problem, errorBox(e));
    }
  });
  return h('span', { class: 'inline' }, button, problem);
}

// #/bookings/ID: the booking, polled every second until it settles.
export function bookingPage(root, { id }, page) {
  const status = h('div');
  const body = h('div');
  replace(root, h('h1', {}, t('guest.booking'), ' ', h('code', {}, id)), status, body);
  let last = '';
  const tick = async () => {
    let b;
    try {
      b = (await api('GET', path('reservations', id))).data;
    } catch (e) {
      if (page.alive()) replace(status, errorBox(e));
      return e.status !== 404 && e.status !== 403 && e.status !== 401;
    }
    if (!page.alive() || !b || typeof b !== 'object') return false;
    const st = show(b.status);
    replace(status, h('p', { class: 'status-line' }, t('status'), ' ',
      badge(st, { dataset: { testid: 'booking-status' } }),
      FINAL.includes(st) ? null : h('span', { class: 'spinner', title: t('guest.watching') })));
    const snapshot = JSON.stringify(b);
    if (snapshot !== last) {
      last = snapshot;
      const history = Array.isArray(b.history) ? b.history : [];
      const steps = Array.isArray(b.steps) ? b.steps : [];
      replace(body,
        bookingFacts(b),
        cancelButton(b, () => { last = ''; tick(); }),
        history.length ? section(t('guest.history'), h('ol', { class: 'history' },
          history.map((x) => h('li', {}, badge(x && x.status), ' ', dateTime(x && x.atMs))))) : null,
        steps.length ? section(t('steps'), table([
          { label: t('step'), cell: (s) => show(s.name) },
          { label: t('status'), cell: (s) => badge(s.status) },
        ], steps.map((s) => (s && typeof s === 'object' ? s : {})))) : null);
    }
    return !FINAL.includes(st);
  };
  poll(page, tick, 1000);
}

// #/bookings: the caller's bookings, a page at a time.
export function bookingsPage(root, _params, page) {
  const list = h('div');
  replace(root, h('h1', {}, t('guest.myBookings')), list);
  pagedList(list, page, (pageToken) => api('GET', '/reservations', { query: { limit: 20, pageToken } }),
    (rows, reload) => (rows.length === 0 ? h('p', { class: 'muted' }, t('guest.noBookings')) : table([
      { label: t('guest.booking'), cell: (b) => link(['bookings', show(b.id)], show(b.id)) },
      { label: t('guest.place'), cell: (b) => show(b.placeId) },
      { label: t('checkIn'), cell: (b) => show(b.checkIn) },
      { label: t('checkOut'), cell: (b) => show(b.checkOut) },
      { label: t('qty'), cell: (b) => show(b.qty) },
      { label: t('amount'), cell: (b) => money(b.amount, b.currency) },
      { label: t('status'), cell: (b) => badge(b.status) },
      { label: '', cell: (b) => cancelButton(b, reload) },
    ], rows, { dataset: { testid: 'bookings' } })));
}
