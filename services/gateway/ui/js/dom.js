// Building the DOM without HTML strings: every text goes in as a text node
// (textContent), so nothing the API sends can become markup.

// h('a', {href: '#/x', class: 'btn', on: {click: fn}, dataset: {testid: 'x'}}, 'text', child, ...)
// Props: class, text, on (events), dataset, and any attribute (set with
// setAttribute; true sets it empty, false/null/undefined leaves it out).
// Children: nodes, strings and numbers (as text), arrays (flattened); null,
// undefined and false are skipped.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = String(value);
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value') el.value = String(value);
    else if (key === 'checked' || key === 'disabled' || key === 'selected') el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

// Replaces the children of `el` with `children`.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A hash link to one of the UI's pages: each path part is encoded, so an id
// with '/' or '#' stays one part.
export function link(parts, text, props = {}) {
  return h('a', { href: route(parts), ...props }, text);
}
export function route(parts) {
  return '#/' + parts.map((p) => encodeURIComponent(String(p))).join('/');
}

// Any value as display text: strings as they are, the rest as JSON.
export function show(value) {
  if (value === undefined || value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
