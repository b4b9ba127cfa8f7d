// Calls to the gateway's API: JSON in and out, the bearer token on every call,
// and failures (problem details, network errors) as ApiError with a message
// in plain words.
import { current } from './session.js';
import { t } from './i18n.js';

export class ApiError extends Error {
  // status: the HTTP status (0: no answer); detail: the server's own words.
  constructor(status, message, detail, retryAfter) {
    super(message);
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

// What a failed call means to a person, by status.
function plainMessage(status, retryAfter) {
  const known = [400, 401, 403, 404, 409, 415, 422, 429, 500, 502, 503, 504];
  const key = known.includes(status) ? `err.${status}` : status >= 500 ? 'err.500' : 'err.other';
  let text = t(key, { status });
  if (retryAfter) text += ' ' + t('err.retryAfter', { seconds: retryAfter });
  return text;
}

// Sends one request. `body` (an object) goes as JSON. Resolves to
// {status, data, headers} for 2xx; rejects with ApiError otherwise.
export async function api(method, path, { body, headers = {}, query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query))
      if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
    const qs = params.toString();
    if (qs) url += '?' + qs;
  }
  const h = { Accept: 'application/json', ...headers };
  const me = current();
  if (me) h.Authorization = 'Bearer ' + me.token;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(url, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, t('err.network'), String(e && e.message ? e.message : e));
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (res.ok) return { status: res.status, data, headers: res.headers };
  const retryAfter = res.headers.get('Retry-After') || undefined;
  const detail =
    data && typeof data === 'object' && typeof data.detail === 'string'
      ? data.detail
      : typeof data === 'string' && (res.headers.get('Content-Type') || '').startsWith('text/plain')
        ? data.slice(0, 300)
        : '';
  throw new ApiError(res.status, plainMessage(res.status, retryAfter), detail, retryAfter);
}

// The encoded path for parts: api path('places', id, 'availability').
export function path(...parts) {
  return '/' + parts.map((p) => encodeURIComponent(String(p))).join('/');
}
