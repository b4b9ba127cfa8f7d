// The signed-in caller: a bearer token kept in sessionStorage (gone when the
// tab closes), with the subject and roles read from its payload for display
// and navigation only (the gateway verifies the token on every call).

const KEY = 'saga.token';

function decodePayload(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) =>
      c.charCodeAt(0));
    const payload = JSON.parse(new TextDecoder().decode(bytes));
    return payload && typeof payload === 'object' ? payload : null;
  } catch {
    return null;
  }
}

// {token, sub, roles, exp} or null when nobody is signed in (or the stored
// token is unreadable or expired).
export function current() {
  const token = sessionStorage.getItem(KEY);
  if (!token) return null;
  const payload = decodePayload(token);
  if (!payload || typeof payload.sub !== 'string') return null;
  const exp = Number(payload.exp);
  if (Number.isFinite(exp) && exp * 1000 < Date.now()) return null;
  const roles = Array.isArray(payload.roles) ? payload.roles.filter((r) => typeof r === 'string') : [];
  return { token, sub: payload.sub, roles, exp };
}

export function hasRole(role) {
  const me = current();
  return Boolean(me && me.roles.includes(role));
}

export function store(token) {
  sessionStorage.setItem(KEY, token);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}
