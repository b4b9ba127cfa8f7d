// The UI's shell: the language switch, who is signed in, the navigation by
// role, and the hash routes (#/places/ID, #/ops/sagas/ID, ...) to the pages.
import { h, replace, route } from './dom.js';
import { t, lang, setLang, translateStatic } from './i18n.js';
import { current, signOut } from './session.js';
import { errorBox } from './view.js';
import { signInPage } from './signin.js';
import { findPage, placePage, bookingPage, bookingsPage } from './guest.js';
import { ownerPage, ownerPlacePage } from './owner.js';
import { opsPage, sagaPage } from './ops.js';

// Pattern -> page. A page is (root, params, page) where page.alive() turns
// false once the user moved on (pollers stop then).
const ROUTES = [
  ['signin', signInPage, null],
  ['places', findPage, null],
  ['places/:id', placePage, null],
  ['bookings', bookingsPage, 'any'],
  ['bookings/:id', bookingPage, 'any'],
  ['owner', ownerPage, 'owner'],
  ['owner/places/:id', ownerPlacePage, 'owner'],
  ['ops', opsPage, 'admin'],
  ['ops/sagas/:id', sagaPage, 'admin'],
];

function home() {
  const me = current();
  if (!me) return 'signin';
  if (me.roles.includes('admin')) return 'ops';
  if (me.roles.includes('owner')) return 'owner';
  return 'places';
}

// The hash split into decoded parts and its query ('#/ops?state=FAILED').
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [pathPart, queryPart = ''] = raw.split('?');
  const parts = pathPart.split('/').filter((p) => p !== '').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { parts, query: new URLSearchParams(queryPart) };
}

function match(parts) {
  for (const [pattern, page, role] of ROUTES) {
    const want = pattern.split('/');
    if (want.length !== parts.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(':') ? ((params[w.slice(1)] = parts[i]), true) : w === parts[i])))
      return { page, role, params };
  }
  return null;
}

let generation = 0;

function renderNav() {
  const me = current();
  const items = [];
  if (me) {
    items.push(['places', 'nav.places'], ['bookings', 'nav.bookings']);
    if (me.roles.includes('owner') || me.roles.includes('admin')) items.push(['owner', 'nav.owner']);
    if (me.roles.includes('admin')) items.push(['ops', 'nav.ops']);
  }
  const here = parseHash().parts[0] || '';
  replace(document.getElementById('nav'),
    items.map(([to, key]) => h('a', { href: route([to]), class: here === to ? 'active' : null }, t(key))));
  const session = document.getElementById('session');
  if (me) {
    replace(session,
      h('span', { class: 'who', dataset: { testid: 'who' } }, me.sub, ' · ',
        me.roles.map((r) => t('role.' + r, {}, r)).join(', ')),
      h('button', {
        type: 'button', class: 'link', dataset: { testid: 'signout' },
        on: { click: () => { signOut(); location.hash = route(['signin']); render(); } },
      }, t('signin.out')));
  } else {
    replace(session, h('a', { href: route(['signin']) }, t('signin.title')));
  }
}

// A page that threw: its error on the page, and a bug (not an API error,
// which has a status) reported to the console too.
function failed(e, root, page) {
  if (e === null || typeof e !== 'object' || !('status' in e)) reportError(e);
  if (page.alive()) root.appendChild(errorBox(e));
}

export function render() {
  const page = { id: ++generation, alive: () => page.id === generation };
  document.documentElement.lang = lang();
  translateStatic();
  renderNav();
  const root = document.getElementById('app');
  const { parts, query } = parseHash();
  if (parts.length === 0) {
    location.replace(route([home()]));
    return;
  }
  const found = match(parts);
  if (!found) {
    replace(root, errorBox({ message: t('err.noPage') }));
    return;
  }
  const me = current();
  if (found.role && !me) {
    location.replace(route(['signin']) + '?next=' + encodeURIComponent(location.hash));
    return;
  }
  if (found.role && found.role !== 'any' && !me.roles.includes(found.role) && !me.roles.includes('admin')) {
    replace(root, errorBox({ message: t('err.needRole', { role: t('role.' + found.role) }) }));
    return;
  }
  replace(root);
  try {
    const done = found.page(root, { ...found.params, query }, page);
    if (done && typeof done.catch === 'function') done.catch((e) => failed(e, root, page));
  } catch (e) {
    failed(e, root, page);
  }
}

function start() {
  const select = document.getElementById('lang');
  select.value = lang();
  select.addEventListener('change', () => {
    setLang(select.value);
    render();
  });
  window.addEventListener('hashchange', render);
  render();
}

start();
