// Small DOM and formatting helpers: elements are built with h() (text is
// always set as text, never parsed as HTML), and formatters turn the API's
// milliseconds into what an operator reads.

// h('li', {class: 'vm', dataset: {vm: 'web-1'}, onclick: fn}, 'text', childNode, [more])
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') el.setAttribute('style', v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// Replaces the children of `container` with `nodes`, keeping keyboard focus on
// the element with the same data-key, and skipping the work when `signature`
// (what the nodes were built from) has not changed.
export function replaceChildren(container, signature, build) {
  if (signature !== undefined && container.dataset.signature === signature) return false;
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key : undefined;
  const nodes = build();
  container.replaceChildren(...(Array.isArray(nodes) ? nodes : [nodes]));
  if (signature !== undefined) container.dataset.signature = signature;
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
  return true;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

// 14:03:07 (local time); with ms: 14:03:07.123
export function clock(ms, withMs = false) {
  if (!ms) return '—';
  const d = new Date(ms);
  const base = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withMs ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}

// 85 ms, 1.2 s, 2 m 05 s, 3 h 10 m
export function duration(ms) {
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} m ${pad(Math.floor((ms % 60000) / 1000))} s`;
  return `${Math.floor(ms / 3600000)} h ${pad(Math.floor((ms % 3600000) / 60000))} m`;
}

export function mib(n) {
  if (n >= 1024) return `${(n / 1024).toFixed(n % 1024 === 0 ? 0 : 1)} GiB`;
  return `${n} MiB`;
}
