// Sign in: a development token from POST /auth/dev-token (gateways with
// AUTH_DEV_TOKENS=1, as scripts/run starts them), or a token pasted from
// elsewhere. The token stays in sessionStorage.
import { h, replace, route } from './dom.js';
import { t } from './i18n.js';
import { api, ApiError } from './api.js';
import { store, current } from './session.js';
import { errorBox, field, section } from './view.js';
import { render } from './app.js';

const ROLES = ['guest', 'owner', 'admin'];

function done(query) {
  const next = query.get('next');
  location.hash = next && next.startsWith('#/') && !next.startsWith('#/signin') ? next : '#/';
  render();
}

export function signInPage(root, { query }) {
  const me = current();
  const sub = h('input', { name: 'sub', required: true, maxlength: 128, autocomplete: 'username',
    pattern: '[!-~]+', value: me ? me.sub : '', dataset: { testid: 'signin-sub' } });
  const boxes = ROLES.map((r) => h('input', { type: 'checkbox', name: 'role', value: r,
    checked: me ? me.roles.includes(r) : r === 'guest', dataset: { testid: 'role-' + r } }));
  const problem = h('div');
  const form = h('form', { class: 'stack', dataset: { testid: 'signin-form' }, on: { submit: async (ev) => {
    ev.preventDefault();
    replace(problem);
    const roles = boxes.filter((b) => b.checked).map((b) => b.value);
    if (roles.length === 0) return replace(problem, errorBox({ message: t('signin.noRole') }));
    try {
      const res = await api('POST', '/auth/dev-token', { body: { sub: sub.value.trim(), roles } });
      if (!res.data || typeof res.data.token !== 'string') throw new ApiError(500, t('err.500'), '');
      store(res.data.token);
      done(query);
    } catch (e) {
      replace(problem, errorBox(e.status === 404 ? { message: t('signin.noDevTokens') } : e));
    }
  } } },
  field(t('signin.sub'), sub, t('signin.subHint')),
  h('fieldset', {}, h('legend', {}, t('signin.roles')),
    ROLES.map((r, i) => h('label', { class: 'check' }, boxes[i], ' ', t('role.' + r)))),
  h('button', { type: 'submit', class: 'primary', dataset: { testid: 'signin-submit' } }, t('signin.get')),
  problem);

  const pasted = h('textarea', { rows: 3, spellcheck: 'false', dataset: { testid: 'signin-token' } });
  const pasteProblem = h('div');
  const paste = h('form', { class: 'stack', on: { submit: (ev) => {
    ev.preventDefault();
    store(pasted.value.trim());
    if (!current()) return replace(pasteProblem, errorBox({ message: t('signin.badToken') }));
    done(query);
  } } },
  field(t('signin.token'), pasted),
  h('button', { type: 'submit' }, t('signin.use')), pasteProblem);

  replace(root,
    h('h1', {}, t('signin.title')),
    section(t('signin.dev'), h('p', { class: 'muted' }, t('signin.devHint')), form),
    section(t('signin.paste'), paste),
    h('p', {}, h('a', { href: route(['places']) }, t('signin.browse'))));
}
