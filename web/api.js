// The controller's REST API (docs/api.md), as the dashboard uses it.
// Reads are open; writes carry the operator's token, kept for this browser tab
// only (sessionStorage), never sent anywhere but this controller.

const kTokenKey = 'tierwarden.token';

export function token() {
  try {
    return sessionStorage.getItem(kTokenKey) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(kTokenKey, value);
    else sessionStorage.removeItem(kTokenKey);
  } catch {
    // Storage refused (private mode): the token then lives only until reload.
  }
}

// An API error as one line: the controller's `error` text, prefixed with
// file:line:column when it names an input position (policy errors).
export class ApiError extends Error {
  constructor(status, body) {
    const where = body && body.file
      ? `${body.file}${body.line ? `:${body.line}` : ''}${body.column ? `:${body.column}` : ''}: `
      : '';
    const text = (body && body.error) || `HTTP ${status}`;
    super(text.startsWith(where) ? text : where + text);
    this.status = status;
    this.body = body;
  }
}

async function parse(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { error: text.slice(0, 200) || response.statusText };
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export async function get(path) {
  return parse(await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } }));
}

export async function post(path, body) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${token()}` };
  const init = { method: 'POST', headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return parse(await fetch(path, init));
}

// Checks a token without changing anything: POST /api/v1/auth/check answers
// 204 for a valid token and 401 otherwise (docs/api.md). `host` is unused
// (kept for callers).
export async function checkToken(candidate, host) {  // eslint-disable-line no-unused-vars
  const r = await fetch('/api/v1/auth/check', {
    method: 'POST',
    cache: 'no-store',
    headers: { Authorization: `Bearer ${candidate}` },
  });
  return r.status !== 401;
}

// Every event since `since`, page by page; keeps only the newest `keep`.
export async function eventsSince(since, keep) {
  let cursor = since;
  let out = [];
  for (let page = 0; page < 20; ++page) {
    const j = await get(`/api/v1/events?since=${cursor}&limit=5000`);
    out = out.concat(j.events).slice(-keep);
    if (j.events.length < 5000 || j.last_id <= cursor) return { events: out, last_id: j.last_id };
    cursor = j.last_id;
  }
  return { events: out, last_id: cursor };
}
