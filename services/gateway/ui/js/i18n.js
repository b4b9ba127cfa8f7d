// Korean and English labels (i18n/ko.json and i18n/en.json, the same keys in
// both). The choice is kept in localStorage ('saga.lang'); the first visit
// follows the browser's language.
import en from './i18n/en.json' with { type: 'json' };
import ko from './i18n/ko.json' with { type: 'json' };

const STORE = 'saga.lang';

const DICTS = { en, ko };

export function lang() {
  const stored = localStorage.getItem(STORE);
  if (stored && DICTS[stored]) return stored;
  return (navigator.language || '').toLowerCase().startsWith('ko') ? 'ko' : 'en';
}

export function setLang(code) {
  if (DICTS[code]) localStorage.setItem(STORE, code);
}

// The label `key` in the current language with {name} replaced from `vars`;
// `fallback` (or the English label, or the key) when it has none.
export function t(key, vars = {}, fallback) {
  const text = DICTS[lang()][key] ?? (fallback !== undefined ? fallback : en[key] ?? key);
  return String(text).replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

// Translates the page's fixed elements marked data-i18n.
export function translateStatic() {
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}
