// The web UI in a real browser (Debian's chromium, headless, driven by
// playwright-core): the scenarios of docs/ui.md, one phase per run, against a
// gateway that the caller (tests/e2e/ui_test.cc) started with the other
// services. Every wait is for something on the page, with a timeout.
//
//   node ui_test.mjs PHASE --url http://127.0.0.1:PORT [--place ID] [--saga ID]
//   PHASE: book    an owner creates a place; a guest books it and sees
//                  CONFIRMED, books again and cancels; the owner sees the booking
//          stuck   (payment stopped) a guest books and sees PENDING; an operator
//                  finds the saga awaiting payment and compensates it, with a reason
//          settle  (payment back) the operator sees the saga COMPENSATED with the
//                  action in its timeline; the guest sees REJECTED
//          junk    API answers of the wrong shape (served by the browser in place
//                  of the API's): every page still draws, markup only as text
//
// Prints "RESULT key value" lines for the caller; exits 1 on the first failed
// check (with a screenshot failure-PHASE.png). Screenshots go to
// SAGA_UI_SHOTS (a directory) when set.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
const phase = args[0];
const opt = (name) => {
  const i = args.indexOf('--' + name);
  return i > 0 ? args[i + 1] : undefined;
};
const base = opt('url');
const shots = process.env.SAGA_UI_SHOTS || '';
const chromiumPath = process.env.SAGA_CHROMIUM || '/usr/bin/chromium';
const SETTLE_MS = 120_000;

let checks = 0;
function check(cond, what) {
  checks++;
  if (!cond) throw new Error('check failed: ' + what);
}

// YYYY-MM-DD, `days` from today (UTC).
function day(days) {
  const d = new Date();
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
const problems = [];  // uncaught page errors and CSP violations: none allowed

async function newPage(name) {
  const context = await browser.newContext({ viewport: { width: 1180, height: 760 }, locale: 'en-US' });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('pageerror', (e) => problems.push(`${name}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (/Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`${name}: ${m.text()}`);
  });
  page.on('dialog', (d) => d.accept());  // the guest's "cancel this booking?"
  return page;
}

// A screenshot of the viewport, or of the page's top `height` pixels.
async function shot(page, file, height = 0) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  const clip = height ? { x: 0, y: 0, width: page.viewportSize().width, height } : undefined;
  await page.screenshot({ path: join(shots, file), fullPage: Boolean(height), clip });
}

async function signIn(page, sub, roles, lang = 'en') {
  await page.goto(base + '/');  // redirected to /ui/, then to the sign-in page
  await page.waitForURL(/\/ui\/#\/signin/);
  await page.getByTestId('lang').selectOption(lang);
  await page.getByTestId('signin-sub').fill(sub);
  if (lang === 'ko') await shot(page, 'signin.png');
  for (const r of ['guest', 'owner', 'admin']) await page.getByTestId('role-' + r).setChecked(roles.includes(r));
  await page.getByTestId('signin-submit').click();
  await page.getByTestId('who').filter({ hasText: sub }).waitFor();
}

const status = (page, testid, value) =>
  page.locator(`[data-testid="${testid}"][data-status="${value}"]`);

// The guest books `nights` from `from` at `place`; returns the booking id once
// its page shows.
async function book(page, place, from, nights) {
  await page.goto(base + '/ui/#/places');
  await page.getByTestId('place-id').fill(place);
  await page.getByTestId('place-open').click();
  await page.getByTestId('place-name').waitFor();
  await page.getByTestId('check-in').fill(day(from));
  await page.getByTestId('check-out').fill(day(from + nights));
  await page.getByTestId('quote-submit').click();
  await page.getByTestId('total').waitFor();
  await page.getByTestId('book').click();
  await page.waitForURL(/#\/bookings\/r-/);
  await page.getByTestId('booking-status').waitFor();
  return decodeURIComponent(page.url().split('#/bookings/')[1]);
}

async function phaseBook() {
  // The UI's own answers: redirects, types, CSP, 404 for unknown files.
  const index = await fetch(base + '/ui/');
  check(index.status === 200, '/ui/ answers 200');
  check((index.headers.get('content-type') || '').startsWith('text/html'), '/ui/ is HTML');
  check((index.headers.get('content-security-policy') || '').includes("script-src 'self'"), 'the CSP');
  const js = await fetch(base + '/ui/js/app.js');
  check((js.headers.get('content-type') || '').startsWith('text/javascript'), 'app.js is JavaScript');
  check((await fetch(base + '/ui/nope.js')).status === 404, 'unknown files are 404');
  check((await fetch(base + '/ui/../CMakeLists.txt')).status === 404, 'no way out of /ui/');
  check((await fetch(base + '/ui/%2e%2e/%2e%2e/etc/passwd')).status === 404, 'no way out of /ui/ (encoded)');

  // The owner creates a place whose name looks like markup: shown as text.
  const owner = await newPage('owner');
  await signIn(owner, 'host-kim', ['owner']);
  await owner.waitForURL(/#\/owner$/);
  const name = 'Hanok <b>stay</b> & "garden"';
  await owner.getByTestId('new-place-name').fill(name);
  await owner.getByTestId('new-place-rooms').fill('3');
  await owner.getByTestId('new-place-price').fill('50000');
  await owner.getByTestId('new-place-submit').click();
  await owner.waitForURL(/#\/owner\/places\/p-/);
  const place = decodeURIComponent(owner.url().split('#/owner/places/')[1]);
  await owner.locator('h1').filter({ hasText: 'Hanok' }).waitFor();
  check((await owner.locator('h1').textContent()) === name, 'the name shows as text');
  check((await owner.locator('main b').count()) === 0, 'no markup from data');
  console.log('RESULT place ' + place);

  // The guest, in Korean: the sign-in page, then a booking that confirms.
  const guest = await newPage('guest');
  await signIn(guest, 'guest-lee', ['guest'], 'ko');
  await guest.locator('#nav a', { hasText: '숙소 찾기' }).waitFor();
  check((await guest.locator('h1').textContent()) === '숙소 찾기', 'the guest lands on the search, in Korean');
  const first = await book(guest, place, 3, 2);
  check((await guest.getByTestId('total').count()) === 0, 'on the booking page');
  await status(guest, 'booking-status', 'CONFIRMED').waitFor({ timeout: SETTLE_MS });
  await guest.locator('ol.history [data-status="PENDING"]').waitFor();  // it went PENDING -> CONFIRMED
  await guest.locator('ol.history [data-status="CONFIRMED"]').waitFor();
  await shot(guest, 'guest-booking.png');
  console.log('RESULT booking ' + first);
  // The language survives a reload (localStorage).
  await guest.reload();
  await guest.locator('#nav a', { hasText: '내 예약' }).waitFor();
  check((await guest.getByTestId('lang').inputValue()) === 'ko', 'Korean after a reload');
  // Errors in plain words: an unknown place.
  await guest.goto(base + '/ui/#/places/no-such-place');
  await guest.getByTestId('error').filter({ hasText: '찾을 수 없습니다' }).waitFor();

  // A second booking, cancelled from the list.
  const second = await book(guest, place, 10, 1);
  await status(guest, 'booking-status', 'CONFIRMED').waitFor({ timeout: SETTLE_MS });
  await guest.goto(base + '/ui/#/bookings');
  const row = guest.getByTestId('bookings').locator('tr', { hasText: second });
  await row.getByTestId('cancel').click();
  await guest.getByText('취소를 시작했습니다').first().waitFor();
  await guest.goto(base + '/ui/#/bookings/' + encodeURIComponent(second));
  await status(guest, 'booking-status', 'CANCELLED').waitFor({ timeout: SETTLE_MS });
  await guest.goto(base + '/ui/#/bookings');
  await guest.getByTestId('bookings').locator('tr', { hasText: first }).locator('[data-status="CONFIRMED"]').waitFor();
  await shot(guest, 'guest-bookings.png');
  console.log('RESULT cancelled ' + second);

  // The owner: the guest's booking in the guest list, and in the calendar.
  await owner.goto(base + '/ui/#/owner');
  await owner.getByTestId('owner-guests').locator('tr', { hasText: first }).waitFor();
  check((await owner.getByTestId('owner-guests').locator('tr', { hasText: second }).count()) === 0,
    'a cancelled booking leaves the guest list');
  await owner.getByTestId('owner-places').locator('tr', { hasText: place }).waitFor();
  await owner.goto(base + `/ui/#/owner/places/${encodeURIComponent(place)}?month=${day(3).slice(0, 7)}`);
  const cell = owner.getByTestId('day-' + day(3));
  await cell.locator('.booked').waitFor();
  check((await cell.locator('.free').textContent()) === '2/3', 'the night shows 2 of 3 rooms free');
  await shot(owner, 'owner-calendar.png');
  // Not an operator: the saga pages say so.
  await owner.goto(base + '/ui/#/ops');
  await owner.getByTestId('error').filter({ hasText: 'operator' }).waitFor();
}

async function phaseStuck(place) {
  const guest = await newPage('guest');
  await signIn(guest, 'guest-park', ['guest']);
  const id = await book(guest, place, 20, 1);
  await status(guest, 'booking-status', 'PENDING').waitFor();
  console.log('RESULT booking ' + id);

  const ops = await newPage('ops');
  await signIn(ops, 'ops', ['admin']);
  await ops.waitForURL(/#\/ops$/);
  // The saga page follows it until it waits for the payment service.
  await ops.goto(base + '/ui/#/ops/sagas/' + encodeURIComponent(id));
  await ops.getByTestId('saga-awaiting').filter({ hasText: 'payment' }).waitFor({ timeout: 60_000 });
  // In the explorer: counts, and the list filtered by the awaited participant.
  await ops.goto(base + '/ui/#/ops');
  await ops.getByTestId('by-participant').locator('tr', { hasText: 'payment' }).waitFor();
  await ops.getByTestId('f-awaiting').fill('payment');
  await ops.getByTestId('f-apply').click();
  await ops.waitForURL(/awaiting=payment/);
  const link = ops.getByTestId('sagas').getByTestId('saga-link').filter({ hasText: id });
  await link.waitFor();
  check((await ops.getByTestId('sagas').locator('tbody tr').count()) === 1, 'one saga awaits payment');
  await shot(ops, 'ops-list.png');
  await link.click();
  await ops.waitForURL(/#\/ops\/sagas\//);
  await status(ops, 'saga-state', 'RUNNING').waitFor();

  // Compensate: a reason is asked for, and required.
  await ops.getByTestId('act-compensate').click();
  const dialog = ops.getByTestId('reason-dialog');
  await dialog.waitFor();
  await ops.getByTestId('reason-confirm').click();
  await dialog.getByTestId('error').filter({ hasText: 'reason is required' }).waitFor();
  await ops.getByTestId('reason').fill('payment provider down');
  await ops.getByTestId('reason-confirm').click();
  await dialog.waitFor({ state: 'detached' });
  const entry = ops.getByTestId('timeline').locator('tr', { hasText: 'OPERATOR_COMPENSATE' });
  await entry.waitFor();
  check((await entry.textContent()).includes('payment provider down'), 'the reason in the timeline');
  check((await entry.textContent()).includes('ops'), 'who acted, in the timeline');
  await ops.getByTestId('timeline-drawing').locator('[data-event="OPERATOR_COMPENSATE"]').waitFor();
  await status(ops, 'saga-state', 'COMPENSATING').waitFor();
  // A refused action reads in plain words: retry does not apply while compensating.
  await ops.getByTestId('act-retry').click();
  await ops.getByTestId('reason').fill('try again');
  await ops.getByTestId('reason-confirm').click();
  await ops.getByTestId('reason-dialog').getByTestId('error').filter({ hasText: 'Not possible now' }).waitFor();
  await shot(ops, 'ops-refused.png');
  await ops.getByTestId('reason-cancel').click();
  console.log('RESULT saga ' + id);
}

async function phaseSettle(id) {
  const ops = await newPage('ops');
  await signIn(ops, 'ops', ['admin']);
  await ops.goto(base + '/ui/#/ops/sagas/' + encodeURIComponent(id));
  await status(ops, 'saga-state', 'COMPENSATED').waitFor({ timeout: SETTLE_MS });
  const drawing = ops.getByTestId('timeline-drawing');
  await drawing.locator('[data-event="OPERATOR_COMPENSATE"]').waitFor();
  await drawing.locator('[data-event="COMPENSATION_SUCCEEDED"]').first().waitFor();
  check(await ops.getByTestId('act-retry').isDisabled(), 'no action on a settled saga');
  await shot(ops, 'ops-saga.png', 1240);
  // Filters: by state (the only COMPENSATED saga), by creation time (none after now).
  await ops.goto(base + '/ui/#/ops');
  await ops.getByTestId('f-state').selectOption('COMPENSATED');
  await ops.getByTestId('f-apply').click();
  await ops.waitForURL(/state=COMPENSATED/);
  await ops.getByTestId('sagas').getByTestId('saga-link').filter({ hasText: id }).waitFor();
  check((await ops.getByTestId('sagas').locator('tbody tr').count()) === 1, 'one saga COMPENSATED');
  await ops.goto(base + `/ui/#/ops?createdFrom=${Date.now() + 3_600_000}`);
  await ops.getByTestId('no-sagas').waitFor();
  // Cursor pages: one saga a page; Next shows another, Previous the first again.
  await ops.goto(base + '/ui/#/ops?limit=1');
  const firstLink = ops.getByTestId('saga-link');
  await firstLink.waitFor();
  const firstId = await firstLink.textContent();
  await ops.getByTestId('page-next').click();
  await ops.getByTestId('saga-link').filter({ hasNotText: firstId }).waitFor();
  await ops.getByTestId('page-prev').click();
  await ops.getByTestId('saga-link').filter({ hasText: firstId }).waitFor();

  const guest = await newPage('guest');
  await signIn(guest, 'guest-park', ['guest']);
  await guest.goto(base + '/ui/#/bookings/' + encodeURIComponent(id));
  await status(guest, 'booking-status', 'REJECTED').waitFor({ timeout: SETTLE_MS });
}

// Answers of the wrong shape (fields missing, of other types, markup in
// text), served in place of the API's: every page still draws, as text.
async function phaseJunk() {
  const page = await newPage('junk');
  await signIn(page, 'ops', ['admin', 'owner']);
  const evil = '<img src=x onerror="window.__pwned=1">';
  const answers = {
    '/admin/sagas/junk': { id: evil, state: { a: 1 }, steps: 'nope', currentStep: 'x', awaiting: 42,
      createdMs: -1, data: evil, timelineDropped: 'many',
      timeline: [null, 5, { event: evil, step: 99, attempt: 'x', atMs: 'soon', error: evil },
        { event: 'OPERATOR_RETRY', actor: evil, reason: evil, step: -1 }] },
    '/admin/saga-counts': { byState: evil, bySteps: [1, null, { type: evil, count: {} }], byParticipant: 'x' },
    '/admin/sagas': [null, 1, 'x', { id: evil, steps: [null], currentStep: 0, createdMs: 'x', lastError: evil }],
    '/reservations/junk': { id: evil, status: [], history: 'x', steps: [null, { name: evil, status: evil }],
      amount: 'lots', currency: evil, placeId: evil, reason: evil },
    '/places/junk': { name: evil, ownerId: { x: 1 }, rooms: evil, price: { amount: 'x', currency: 'NOPE' } },
    '/places/junk/availability': 'not an array',
    '/owners/ops/reservations': { not: 'an array' },
  };
  await page.route((url) => url.pathname in answers, (route) =>
    route.fulfill({ json: answers[new URL(route.request().url()).pathname], headers: { 'Next-Page-Token': evil } }));
  const pages = [
    ['#/ops/sagas/junk', 'timeline'], ['#/ops', 'sagas'], ['#/bookings/junk', 'booking-status'],
    ['#/places/junk', 'place-name'], ['#/owner/places/junk', 'calendar'], ['#/owner', 'owner-places'],
  ];
  for (const [hash, testid] of pages) {
    await page.goto(base + '/ui/' + hash);
    await page.getByTestId(testid).first().waitFor();
    if (hash === '#/places/junk') {
      await page.getByTestId('quote-submit').click();
      await page.getByTestId('quote').locator('.warn').first().waitFor();  // no price: cannot book
    }
    check((await page.locator('main').textContent()).includes('onerror='), hash + ': markup shown as text');
    check((await page.locator('main img').count()) === 0, hash + ': no element from data');
    check((await page.evaluate(() => window.__pwned)) === undefined, hash + ': no script from data');
  }
}

const started = Date.now();
let failed = null;
try {
  if (!base) throw new Error('--url is required');
  if (phase === 'book') await phaseBook();
  else if (phase === 'stuck') await phaseStuck(opt('place'));
  else if (phase === 'settle') await phaseSettle(opt('saga'));
  else if (phase === 'junk') await phaseJunk();
  else throw new Error('unknown phase ' + phase);
  check(problems.length === 0, 'no page errors or CSP violations: ' + problems.join('; '));
} catch (e) {
  failed = e;
  for (const context of browser.contexts())
    for (const [i, p] of context.pages().entries())
      await p.screenshot({ path: join(shots || '.', `failure-${phase}-${i}.png`) }).catch(() => {});
}
await browser.close();
const seconds = ((Date.now() - started) / 1000).toFixed(1);
if (failed) {
  console.log(`ui ${phase}: FAILED after ${checks} checks, ${seconds} s: ${failed.stack || failed}`);
  if (problems.length) console.log('page problems: ' + problems.join('; '));
  process.exit(1);
}
console.log(`ui ${phase}: passed (${checks} checks and every wait), ${seconds} s`);
