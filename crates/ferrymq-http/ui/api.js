// Talks to the public management API. Credentials live in sessionStorage (gone
// when the tab closes) and travel in an Authorization header, never in a cookie.
const KEY = 'ferrymq.credentials';

/** An API refusal, with the broker's reason in words. */
export class ApiError extends Error {
  constructor(status, error, reason) {
    super(reason || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }
}

function encodeCredentials(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

export const session = {
  get user() { return sessionStorage.getItem(KEY + '.user'); },
  get token() { return sessionStorage.getItem(KEY); },
  save(user, password) {
    sessionStorage.setItem(KEY, encodeCredentials(user, password));
    sessionStorage.setItem(KEY + '.user', user);
  },
  clear() { sessionStorage.removeItem(KEY); sessionStorage.removeItem(KEY + '.user'); },
};

let onUnauthorized = () => {};
/** Called when a request comes back 401 after login (password changed, user deleted). */
export function whenUnauthorized(f) { onUnauthorized = f; }

/** One API request; resolves to the parsed JSON (or null), rejects with ApiError. */
export async function api(method, path, body, token = session.token) {
  const headers = { 'x-ferrymq-ui': '1' };
  if (token) headers.authorization = 'Basic ' + token;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'The broker did not answer: is it running? (' + e.message + ')');
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    if (r.status === 401 && token === session.token && session.token) onUnauthorized();
    const reason = data && typeof data === 'object' ? data.reason : data;
    throw new ApiError(r.status, data && data.error, reason || r.statusText);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const put = (path, body) => api('PUT', path, body ?? {});
export const post = (path, body) => api('POST', path, body ?? {});
export const del = (path) => api('DELETE', path);

/** Checks credentials against /api/whoami without keeping them. */
export function whoami(user, password) {
  return api('GET', '/api/whoami', undefined, encodeCredentials(user, password));
}

/** Percent-encodes one path segment (vhost "/" becomes %2F). */
export const seg = (s) => encodeURIComponent(s);
