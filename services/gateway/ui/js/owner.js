// Owners: create a place, their places (those this browser knows and those
// in their guest list: the API has no "places of an owner" list), a month's
// availability calendar per place, its rooms and price, and the guests'
// confirmed bookings (GET /owners/{id}/reservations).
import { h, replace, route, link, show } from './dom.js';
import { t, lang } from './i18n.js';
import { api, path } from './api.js';
import { current } from './session.js';
import {
  errorBox, field, flash, isoDate, loadPlace, minorPerUnit, money, pagedList, rememberPlace, rememberedPlaces,
  section, table,
} from './view.js';

// #/owner
export function ownerPage(root, _params, page) {
  const me = current();
  const places = h('div');
  const guests = h('div');
  replace(root, h('h1', {}, t('owner.title')), createPlaceForm(),
    section(t('owner.places'), places), section(t('owner.guests'), guests));

  const known = new Set(rememberedPlaces());
  const showPlaces = async () => {
    const rows = [];
    for (const id of known) {
      try {
        const p = (await api('GET', path('places', id))).data;
        if (p && typeof p === 'object' && (p.ownerId === me.sub || me.roles.includes('admin'))) rows.push(p);
      } catch {
        // a place that is gone or unreadable is just not listed
      }
    }
    if (!page.alive()) return;
    replace(places, rows.length === 0 ? h('p', { class: 'muted' }, t('owner.noPlaces')) : table([
      { label: t('owner.name'), cell: (p) => link(['owner', 'places', show(p.id)], show(p.name) || show(p.id)) },
      { label: t('guest.placeId'), cell: (p) => h('code', {}, show(p.id)) },
      { label: t('rooms'), cell: (p) => show(p.rooms) },
      { label: t('guest.price'), cell: (p) => (p.price ? money(p.price.amount, p.price.currency) : '') },
    ], rows, { dataset: { testid: 'owner-places' } }), openByIdForm());
  };
  const showGuests = () => pagedList(guests, page,
    (pageToken) => api('GET', path('owners', me.sub, 'reservations'), { query: { limit: 20, pageToken } }),
    (rows) => {
      let added = false;
      for (const b of rows) {
        if (typeof b.placeId === 'string' && !known.has(b.placeId)) {
          known.add(b.placeId);
          added = true;
        }
      }
      if (added) showPlaces();
      return rows.length === 0 ? h('p', { class: 'muted' }, t('owner.noGuests')) : table([
        { label: t('guest.booking'), cell: (b) => h('code', {}, show(b.reservationId)) },
        { label: t('guest.place'), cell: (b) => link(['owner', 'places', show(b.placeId)], show(b.placeId)) },
        { label: t('owner.guest'), cell: (b) => show(b.userId) },
        { label: t('checkIn'), cell: (b) => show(b.checkIn) },
        { label: t('checkOut'), cell: (b) => show(b.checkOut) },
        { label: t('qty'), cell: (b) => show(b.qty) },
        { label: t('status'), cell: (b) => show(b.status) },
      ], rows, { dataset: { testid: 'owner-guests' } });
    });
  showPlaces();
  showGuests();
}

function openByIdForm() {
  const id = h('input', { required: true, maxlength: 128, dataset: { testid: 'owner-open-id' } });
  return h('form', { class: 'row', on: { submit: (ev) => {
    ev.preventDefault();
    location.hash = route(['owner', 'places', id.value.trim()]);
  } } }, field(t('owner.openById'), id), h('button', { type: 'submit' }, t('guest.open')));
}

function createPlaceForm() {
  const name = h('input', { required: true, maxlength: 200, dataset: { testid: 'new-place-name' } });
  const rooms = h('input', { type: 'number', min: 0, max: 100000, value: 5, required: true, dataset: { testid: 'new-place-rooms' } });
  const price = h('input', { type: 'number', min: 0, step: 'any', value: 50000, required: true, dataset: { testid: 'new-place-price' } });
  const currency = h('input', { value: 'KRW', pattern: '[A-Z]{3}', maxlength: 3, size: 4, required: true });
  const problem = h('div');
  return section(t('owner.create'), h('form', { class: 'row', on: { submit: async (ev) => {
    ev.preventDefault();
    replace(problem);
    const amount = Math.round(Number(price.value) * minorPerUnit(currency.value));
    try {
      const res = await api('POST', '/places', { body: {
        name: name.value.trim(), rooms: Number(rooms.value), price: { amount, currency: currency.value },
      } });
      const id = res.data && typeof res.data.id === 'string' ? res.data.id : '';
      rememberPlace(id);
      flash(t('owner.created', { id }));
      location.hash = route(['owner', 'places', id]);
    } catch (e) {
      replace(problem, errorBox(e));
    }
  } } },
  field(t('owner.name'), name), field(t('rooms'), rooms), field(t('owner.nightly'), price), field(t('currency'), currency),
  h('button', { type: 'submit', class: 'primary', dataset: { testid: 'new-place-submit' } }, t('owner.createButton')), problem));
}

// #/owner/places/ID: the place, its rooms and price, and a month's calendar.
export async function ownerPlacePage(root, { id, query }, page) {
  const place = await loadPlace(root, id, page);
  if (!place) return;
  const month = /^\d{4}-\d{2}$/.test(query.get('month') || '') ? query.get('month') : isoDate(0).slice(0, 7);
  const calendar = h('div', { dataset: { testid: 'calendar' } });
  replace(root,
    h('h1', {}, show(place.name) || id),
    h('p', {}, h('code', {}, id), ' · ', link(['places', id], t('owner.guestView'))),
    h('div', { class: 'cols' }, roomsForm(id, place), priceForm(id, place)),
    section(t('owner.calendar'), calendar));
  drawMonth(calendar, id, month, page);
}

function roomsForm(id, place) {
  const rooms = h('input', { type: 'number', min: 0, max: 100000, value: Number(place.rooms) || 0, required: true });
  const problem = h('div');
  return section(t('rooms'), h('form', { class: 'row', on: { submit: async (ev) => {
    ev.preventDefault();
    try {
      await api('PUT', path('places', id, 'rooms'), { body: { rooms: Number(rooms.value) } });
      flash(t('owner.saved'));
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    } catch (e) {
      replace(problem, errorBox(e));
    }
  } } }, field(t('owner.roomsPerNight'), rooms), h('button', { type: 'submit' }, t('save')), problem));
}

function priceForm(id, place) {
  const cur = place.price && typeof place.price.currency === 'string' ? place.price.currency : 'KRW';
  const per = minorPerUnit(cur);
  const amount = h('input', { type: 'number', min: 0, step: 'any', required: true,
    value: place.price && Number.isInteger(place.price.amount) ? place.price.amount / per : '' });
  const currency = h('input', { value: cur, pattern: '[A-Z]{3}', maxlength: 3, size: 4, required: true });
  const problem = h('div');
  return section(t('guest.price'), h('form', { class: 'row', on: { submit: async (ev) => {
    ev.preventDefault();
    try {
      await api('PUT', path('places', id, 'price'), { body: {
        amount: Math.round(Number(amount.value) * minorPerUnit(currency.value)), currency: currency.value } });
      flash(t('owner.saved'));
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    } catch (e) {
      replace(problem, errorBox(e));
    }
  } } }, field(t('owner.nightly'), amount), field(t('currency'), currency), h('button', { type: 'submit' }, t('save')), problem));
}

// The month (YYYY-MM) as a grid of days: free / rooms, held and confirmed.
async function drawMonth(el, id, month, page) {
  const [y, m] = month.split('-').map(Number);
  const first = new Date(y, m - 1, 1);
  const from = isoDate(0, first);
  const to = isoDate(0, new Date(y, m, 1));
  const shift = (n) => isoDate(0, new Date(y, m - 1 + n, 1)).slice(0, 7);
  const title = first.toLocaleDateString(lang(), { year: 'numeric', month: 'long' });
  const nav = h('div', { class: 'pager' },
    h('a', { href: route(['owner', 'places', id]) + '?month=' + shift(-1), class: 'btn' }, '‹ ', t('prev')),
    h('strong', { dataset: { testid: 'calendar-month' } }, title),
    h('a', { href: route(['owner', 'places', id]) + '?month=' + shift(1), class: 'btn' }, t('next'), ' ›'));
  replace(el, nav, h('p', { class: 'muted' }, t('loading')));
  let days;
  try {
    days = (await api('GET', path('places', id, 'availability'), { query: { from, to } })).data;
  } catch (e) {
    if (page.alive()) replace(el, nav, errorBox(e));
    return;
  }
  if (!page.alive()) return;
  const byDate = new Map((Array.isArray(days) ? days : []).filter((d) => d && typeof d === 'object').map((d) => [d.date, d]));
  const weekdays = [];
  for (let i = 0; i < 7; i++)  // Monday first
    weekdays.push(h('div', { class: 'dow' }, new Date(2024, 0, 1 + i).toLocaleDateString(lang(), { weekday: 'short' })));
  const cells = [];
  for (let i = 0; i < (first.getDay() + 6) % 7; i++) cells.push(h('div', { class: 'day empty' }));
  for (let d = new Date(first); d.getMonth() === m - 1; d.setDate(d.getDate() + 1)) {
    const date = isoDate(0, d);
    const n = byDate.get(date) || {};
    const rooms = Number(n.rooms) || 0;
    const used = (Number(n.held) || 0) + (Number(n.confirmed) || 0);
    const level = rooms === 0 ? 'closed' : used === 0 ? 'free' : used >= rooms ? 'full' : 'some';
    cells.push(h('div', { class: 'day ' + level, dataset: { date, testid: 'day-' + date },
      title: t('owner.dayTitle', { date, free: show(n.free), rooms: show(n.rooms), held: show(n.held), confirmed: show(n.confirmed) }) },
    h('span', { class: 'num' }, String(d.getDate())),
    h('span', { class: 'free' }, `${show(n.free)}/${show(n.rooms)}`),
    Number(n.confirmed) ? h('span', { class: 'booked' }, t('owner.booked', { n: show(n.confirmed) })) : null,
    Number(n.held) ? h('span', { class: 'held' }, t('owner.held', { n: show(n.held) })) : null));
  }
  replace(el, nav, h('div', { class: 'calendar' }, weekdays, cells),
    h('p', { class: 'legend' },
      h('span', { class: 'day free' }, t('owner.legendFree')), h('span', { class: 'day some' }, t('owner.legendSome')),
      h('span', { class: 'day full' }, t('owner.legendFull')), h('span', { class: 'day closed' }, t('owner.legendClosed'))));
}
