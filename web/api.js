// The controller's REST API (docs/api.md), as the dashboard uses it.
// Every request carries the token given (operator: reads and actions; viewer:
// reads only), kept for this browser tab only (sessionStorage), never sent
// anywhere but this controller. Without one, reads work only on a controller
// that runs with --public-read.

const kTokenKey = 'tierwarden.token';
const kRoleKey = 'tierwarden.role';

export function token() {
  try {
    return sessionStorage.getItem(kTokenKey) || '';
  } catch {
    return '';
  }
}

// 'operator', 'viewer', or '' (no token).
export function role() {
  try {
    return (sessionStorage.getItem(kTokenKey) && sessionStorage.getItem(kRoleKey)) || '';
  } catch {
    return '';
  }
}

export function setToken(value, tokenRole) {
  try {
    if (value) {
      sessionStorage.setItem(kTokenKey, value);
      sessionStorage.setItem(kRoleKey, tokenRole || 'operator');
    } else {
      sessionStorage.removeItem(kTokenKey);
      sessionStorage.removeItem(kRoleKey);
    }
  } catch {
    // Storage refused (private mode): the token then lives only until reload.
  }
}

function authHeaders(headers) {
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  return headers;
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
  return parse(await fetch(path, { cache: 'no-store', headers: authHeaders({ Accept: 'application/json' }) }));
}

export async function post(path, body) {
  const headers = authHeaders({ Accept: 'application/json' });
  const init = { method: 'POST', headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return parse(await fetch(path, init));
}

// Checks a token without changing anything: POST /api/v1/auth/check answers
// 204 for the operator's token, 403 with {"role": "viewer"} for a viewer's
// (reads only), 401 (or 403 for an agent's token) otherwise (docs/api.md).
// Returns 'operator', 'viewer' or null. `host` is unused (kept for callers).
export async function checkToken(candidate, host) {  // eslint-disable-line no-unused-vars
  const r = await fetch('/api/v1/auth/check', {
    method: 'POST',
    cache: 'no-store',
    headers: { Authorization: `Bearer ${candidate}` },
  });
  if (r.status === 204) return 'operator';
  if (r.status === 403) {
    try {
      if ((await r.json()).role === 'viewer') return 'viewer';
    } catch {
      // not JSON: refused
    }
  }
  return null;
}

// The event stream with the token in its Authorization header, which
// EventSource cannot send: fetch() and a reader, parsed as server-sent events.
// Calls onOpen() once the controller answered 200, onEvent(type, data, id)
// per event, onError(err) once when it fails or ends (not after close()).
export function openStream(since, { onOpen, onEvent, onError }) {
  const abort = new AbortController();
  let closed = false;
  (async () => {
    const r = await fetch(`/api/v1/events/stream?since=${since}`, {
      cache: 'no-store',
      headers: authHeaders({ Accept: 'text/event-stream' }),
      signal: abort.signal,
    });
    if (!r.ok || !r.body) throw new ApiError(r.status, null);
    onOpen();
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the event stream ended');
      buf += decoder.decode(value, { stream: true }).replace(/\r/g, '');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let type = 'message';
        let id = null;
        const data = [];
        for (const line of block.split('\n')) {
          if (!line || line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let v = colon < 0 ? '' : line.slice(colon + 1);
          if (v.startsWith(' ')) v = v.slice(1);
          if (field === 'event') type = v;
          else if (field === 'data') data.push(v);
          else if (field === 'id') id = v;
        }
        if (data.length) onEvent(type, data.join('\n'), id);
      }
    }
  })().catch((err) => {
    if (!closed) onError(err);
  });
  return {
    close() {
      closed = true;
      abort.abort();
    },
  };
}

// The newest `keep` events, oldest first, and the newest id: one request
// (?tail=), whatever the log's length.
export async function latestEvents(keep) {
  const j = await get(`/api/v1/events?tail=${keep}`);
  return { events: j.events, last_id: j.last_id };
}
