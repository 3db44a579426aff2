// The tierwarden dashboard: the cluster as the controller sees it, live.
//
// How it stays current without polling: the server-sent event stream
// (/api/v1/events/stream) tells about every change; each event marks the
// resources it concerns as stale (a vm/ or host/ subject → vms, hosts, tiers,
// cluster; incident.* → incidents; policy.* → everything), and a scheduler
// re-reads only those, at most 4 times a second, one request at a time (the
// controller's HTTP server has a small thread pool shared with the agents'
// long polls). A full re-read every 30 s is only a safety net.
//
// At scale (more than kCardsAll hosts or kLargeVms VMs, issue #16) a VM
// event re-reads only the VMs it named (?names=), the full VM list is read
// in pages, refreshes come at most once a second, and the hosts are grouped
// (hostlist.js).
import * as api from './api.js';
import { startControllersLine } from './controllers.js';
import { h, replaceChildren, clock, duration } from './dom.js';
import {
  tiersTable, nPlusOne, overview, incidentItem, eventItem, planView,
} from './render.js';
import { renderHostList, kCardsAll } from './hostlist.js';
import { tierWarnings } from './warnings.js';

const $ = (id) => document.getElementById(id);

const kPaths = {
  cluster: '/api/v1/cluster',
  hosts: '/api/v1/hosts',
  tiers: '/api/v1/tiers',
  vms: '/api/v1/vms',
  incidents: '/api/v1/incidents',
};
const kAll = Object.keys(kPaths);
const kMinGapMs = 250;        // ≤ 4 refreshes per second
const kLargeGapMs = 1000;     // at scale: ≤ 1 per second
const kLargeVms = 500;
const kPageLimit = 5000;      // the API's largest page
const kMaxNamed = 500;        // more stale VMs than this: read them all
const kSafetyRefreshMs = 30000;
const kKeepEvents = 200;
const kShownClosedIncidents = 15;

const state = { cluster: null, hosts: null, tiers: null, vms: null, incidents: null };
const vmsByName = new Map();  // every VM, by name (kept current by per-VM reads at scale)
const staleVms = new Set();   // VMs an event named since the last read
let hostFilter = '';
const openIncidents = new Set();  // ids the operator expanded
let lastEventId = 0;

// ------------------------------------------------------------ refreshing ---

const stale = new Set();
let lastFlushMs = 0;
let flushTimer = null;
let flushing = false;
let followUpTimer = null;

function want(...what) {
  for (const w of what) stale.add(w);
  schedule();
}

function schedule() {
  if (flushTimer || flushing || !stale.size) return;
  const gap = large() ? kLargeGapMs : kMinGapMs;
  flushTimer = setTimeout(flush, Math.max(0, lastFlushMs + gap - Date.now()));
}

function large() {
  return (state.hosts?.hosts.length || 0) > kCardsAll || vmsByName.size > kLargeVms;
}

function setVms(list) {
  vmsByName.clear();
  for (const v of list) vmsByName.set(v.name, v);
  state.vms = { vms: list };
}

// Every VM, in pages of kPageLimit.
async function readAllVms() {
  const all = [];
  let after = '';
  for (;;) {
    const page = await api.get(`/api/v1/vms?limit=${kPageLimit}${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    all.push(...page.vms);
    if (!page.next) break;
    after = page.next;
  }
  staleVms.clear();
  setVms(all);
}

// Only the VMs events named; one that is gone was deleted.
async function readNamedVms() {
  const names = [...staleVms].sort();
  staleVms.clear();
  for (let i = 0; i < names.length; i += kMaxNamed) {
    const chunk = names.slice(i, i + kMaxNamed);
    const page = await api.get(`/api/v1/vms?names=${chunk.map(encodeURIComponent).join(',')}`);
    const found = new Map(page.vms.map((v) => [v.name, v]));
    for (const n of chunk) {
      if (found.has(n)) vmsByName.set(n, found.get(n));
      else vmsByName.delete(n);
    }
  }
  state.vms = { vms: [...vmsByName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)) };
}

async function read(w) {
  if (w === 'vms') {
    if (large() || !state.vms) await readAllVms();
    else setVms((await api.get(kPaths.vms)).vms);
    staleVms.clear();
  } else if (w === 'vm-names') {
    if (staleVms.size > kMaxNamed * 4) await readAllVms();
    else await readNamedVms();
  } else {
    state[w] = await api.get(kPaths[w]);
  }
}

async function flush() {
  flushTimer = null;
  flushing = true;
  lastFlushMs = Date.now();
  let what = kAll.filter((w) => stale.has(w));
  if (stale.has('vm-names') && !stale.has('vms')) what.push('vm-names');
  stale.clear();
  const changed = [];
  try {
    for (const w of what) {  // one at a time: see the note at the top
      await read(w);
      changed.push(w === 'vm-names' ? 'vms' : w);
    }
    setReachable(true);
  } catch (err) {
    for (const w of what) if (!changed.includes(w)) stale.add(w);
    setReachable(false, err.message, err.status);
    if (what.includes('vm-names')) stale.add('vms');  // the names read is lost: read them all
    lastFlushMs = Date.now() + 1000;  // back off a little while the controller is away
  } finally {
    flushing = false;
    render(changed);
    schedule();
  }
}

// Incident steps such as `started` are added by the controller's loop just
// after the event that caused them: read incidents once more a second later.
function wantIncidentsSoon() {
  want('incidents');
  clearTimeout(followUpTimer);
  followUpTimer = setTimeout(() => want('incidents'), 1000);
}

function onEvent(e) {
  if (e.id <= lastEventId) return;
  lastEventId = e.id;
  addEvents([e], true);
  const family = e.kind.split('.')[0];
  if (family === 'policy' || e.subject.startsWith('policy/')) {
    want(...kAll);
    return;
  }
  if (e.subject.startsWith('vm/')) {
    staleVms.add(e.subject.slice(3));
    want('vm-names', 'hosts', 'tiers', 'cluster');
  }
  else if (e.subject.startsWith('host/')) want('hosts', 'vms', 'cluster');
  else want('cluster');
  const subjectHasIncident = (state.incidents?.incidents || []).some((i) => i.open && i.subject === e.subject);
  if (family === 'incident' || subjectHasIncident) wantIncidentsSoon();
}

// --------------------------------------------------------------- drawing ---

function render(changed) {
  const has = (...w) => w.some((x) => changed.includes(x));
  if (has('hosts', 'vms', 'tiers')) renderHosts();
  if (has('tiers', 'cluster')) renderTiers();
  if (has('incidents')) renderIncidents();
  if (has('cluster', 'hosts', 'vms', 'incidents')) renderOverview();
}

function readOnly() {
  return api.role() !== 'operator';
}

function renderHosts() {
  if (!state.hosts || !state.vms) return;
  const tiers = state.tiers ? state.tiers.tiers : [];
  const ctx = {
    readOnly: readOnly(),
    vmsByName,
    tiersByName: new Map(tiers.map((t) => [t.name, t])),
    tierSig: tiers.map((t) => `${t.name}:${t.order}`).join(','),
    act,
  };
  $('hosts-status').textContent = renderHostList($('hosts'), state.hosts.hosts, ctx, hostFilter, pickHost);
}

// A tile was clicked: the filter shows that host.
function pickHost(name) {
  $('host-filter').value = name;
  hostFilter = name;
  renderHosts();
  $('hosts').querySelector(`[data-host="${CSS.escape(name)}"]`)?.scrollIntoView({ block: 'nearest' });
}

function renderTiers() {
  if (state.cluster) replaceChildren($('n1'), JSON.stringify(state.cluster.n_plus_one), () => nPlusOne(state.cluster));
  if (!state.tiers) return;
  const tiers = state.tiers.tiers;
  replaceChildren($('tiers'), JSON.stringify(tiers), () =>
    (tiers.length ? [tiersTable(tiers), tierWarnings(tiers)].filter(Boolean)
      : h('p', { class: 'empty' }, 'No tiers declared.')));
}

function renderOverview() {
  const data = {
    cluster: state.cluster,
    hosts: state.hosts?.hosts,
    vms: state.vms?.vms,
    incidents: state.incidents?.incidents,
  };
  const signature = JSON.stringify([
    (data.hosts || []).map((x) => x.state), (data.vms || []).map((v) => [v.state, v.health]),
    (data.incidents || []).filter((i) => i.open).length, data.cluster?.n_plus_one?.safe,
    data.cluster?.policy_version,
  ]);
  replaceChildren($('overview'), signature, () => overview(data));
  const tone = $('overview').querySelector('.headline')?.dataset.tone || '';
  document.title = `${tone === 'good' ? '' : '⚠ '}tierwarden`;
}

function renderIncidents() {
  if (!state.incidents) return;
  const all = state.incidents.incidents;
  const open = all.filter((i) => i.open).reverse();
  const closed = all.filter((i) => !i.open).reverse();
  const shown = closed.slice(0, kShownClosedIncidents);
  const now = Date.now();
  replaceChildren($('incidents'), JSON.stringify([all, [...openIncidents]]), () => {
    if (!all.length) return h('p', { class: 'empty' }, 'No incidents.');
    const nodes = [];
    nodes.push(h('h3', { class: 'sub' }, `Open (${open.length})`));
    nodes.push(open.length ? open.map((i) => incidentItem(i, openIncidents.has(i.id), now))
      : h('p', { class: 'empty small' }, 'None: everything recovered.'));
    if (closed.length) {
      nodes.push(h('h3', { class: 'sub' }, `Recent (${closed.length})`));
      nodes.push(shown.map((i) => incidentItem(i, openIncidents.has(i.id), now)));
      if (closed.length > shown.length) {
        nodes.push(h('p', { class: 'muted small' }, `${closed.length - shown.length} older not shown`));
      }
    }
    return nodes.flat();
  });
  tickIncidentAges();
}

// Open incidents show how long they have been open; this keeps that current.
function tickIncidentAges() {
  for (const el of document.querySelectorAll('.incident.is-open .inc-age')) {
    const opened = Number(el.dataset.opened);
    el.textContent = `${clock(opened)} · for ${duration(Date.now() - opened)}`;
  }
}

function addEvents(events, fresh) {
  const list = $('events');
  const nodes = events.map((e) => eventItem(e, fresh));
  list.prepend(...nodes.reverse());
  while (list.children.length > kKeepEvents) list.lastElementChild.remove();
  $('events-empty').hidden = list.children.length > 0;
}

function setReachable(ok, why, status) {
  const banner = $('unreachable');
  banner.hidden = ok;
  if (ok) return;
  banner.textContent = status === 401 || status === 403
    ? `The controller needs a viewer or operator token to show the cluster (${why}): enter one above.`
    : `Controller unreachable: ${why}. Retrying…`;
}

function setLive(status) {
  const el = $('live');
  el.dataset.status = status;
  el.textContent = { live: 'live', connecting: 'connecting…', reconnecting: 'reconnecting…' }[status] || status;
  el.title = status === 'live' ? 'Receiving events as they happen' : 'Event stream interrupted; it reconnects by itself';
}

// ---------------------------------------------------------- event stream ---

let stream = null;
let streamDropped = false;  // the token stream failed: re-read everything once it is back
function connect() {
  setLive(stream ? 'reconnecting' : 'connecting');
  if (api.token()) {
    // With a token: a fetch() stream (EventSource cannot send the header).
    const handle = api.openStream(lastEventId, {
      onOpen: () => {
        setLive('live');
        if (streamDropped) want(...kAll);
        streamDropped = false;
      },
      onEvent: (type, data) => {
        if (type !== 'event') return;
        try {
          onEvent(JSON.parse(data));
        } catch (err) {
          console.warn('bad event', err, data);
        }
      },
      onError: () => {
        streamDropped = true;
        setLive('reconnecting');
        if (stream === handle) setTimeout(connect, 2000);
      },
    });
    stream = handle;
    return;
  }
  let interrupted = false;
  // EventSource resumes by itself with Last-Event-ID after a drop; a new one
  // (after the browser gave up) resumes with ?since.
  const source = new EventSource(`/api/v1/events/stream?since=${lastEventId}`);
  stream = source;
  source.addEventListener('event', (m) => {
    try {
      onEvent(JSON.parse(m.data));
    } catch (err) {
      console.warn('bad event', err, m.data);
    }
  });
  source.addEventListener('open', () => {
    setLive('live');
    if (interrupted) want(...kAll);  // something may have changed while we were away
    interrupted = false;
  });
  source.addEventListener('error', () => {
    if (stream !== source) return;  // replaced (a token was given or dropped)
    interrupted = true;
    if (source.readyState === EventSource.CLOSED) {
      setLive('reconnecting');
      source.close();
      setTimeout(connect, 2000);
    } else {
      setLive('reconnecting');
    }
  });
}

// A token was given or forgotten: the stream (and the reads) use the new one.
function reconnect() {
  if (stream) stream.close();
  stream = null;
  connect();
  want(...kAll);
}

// -------------------------------------------------------------- messages ---

function message(kind, text) {
  const box = $('messages');
  const item = h('div', { class: `message ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', {}, text),
    h('button', { type: 'button', class: 'close', 'aria-label': 'Dismiss message', onclick: () => item.remove() }, '×'));
  box.append(item);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => item.remove(), kind === 'error' ? 20000 : 6000);
}

// --------------------------------------------------------------- actions ---

const kActionWants = {
  vm: ['vms', 'hosts', 'tiers', 'incidents'],
  host: ['hosts', 'vms', 'cluster'],
};

async function act(action, kind, name) {
  const button = document.querySelector(`[data-key="${CSS.escape(`${action}:${name}`)}"]`);
  if (button) button.disabled = true;
  try {
    const r = await api.post(`/api/v1/${kind}s/${encodeURIComponent(name)}/${action}`);
    message('ok', r?.message || `${action} of ${kind} '${name}' requested`);
  } catch (err) {
    message('error', `${action} ${kind} ${name}: ${err.message}`);
    if (err.status === 401) lock('The controller refused the token; enter it again.');
  } finally {
    if (button) button.disabled = false;
    want(...kActionWants[kind]);
  }
}

// ----------------------------------------------------------------- token ---

function updateTokenUi() {
  const ro = readOnly();
  $('token-form').hidden = !ro;  // a viewer may still enter the operator's token
  $('token-on').hidden = !api.token();
  $('token-role').textContent = ro ? 'viewer: read-only' : 'actions enabled';
  $('readonly-hint').hidden = !ro;
  $('apply-open').disabled = ro;
  document.body.classList.toggle('read-only', ro);
  renderHosts();
}

function lock(why) {
  const had = api.token();
  api.setToken('');
  updateTokenUi();
  if (had) reconnect();
  if (why) message('error', why);
}

async function unlock(ev) {
  ev.preventDefault();
  const input = $('token-input');
  const candidate = input.value.trim();
  if (!candidate) return;
  let tokenRole = null;
  try {
    tokenRole = await api.checkToken(candidate, state.hosts?.hosts[0]?.name);
    if (!tokenRole) {
      message('error', 'Token rejected by the controller (401): actions stay disabled.');
      input.select();
      return;
    }
  } catch (err) {
    message('error', `Cannot check the token: ${err.message}`);
    return;
  }
  api.setToken(candidate, tokenRole);
  input.value = '';
  updateTokenUi();
  reconnect();
  message('ok', tokenRole === 'operator'
    ? 'Token accepted: actions enabled for this tab.'
    : 'Viewer token accepted: the page reads with it; actions need the operator token.');
}

// ---------------------------------------------------------- apply policy ---

let planned = null;  // {name, content} of the last successful dry run

function applyFiles() {
  const name = $('apply-name').value.trim();
  const content = $('apply-content').value;
  return { name, content };
}

function showApplyResult(nodes) {
  replaceChildren($('apply-result'), undefined, () => nodes);
}

async function planPolicy() {
  const file = applyFiles();
  planned = null;
  $('apply-confirm').disabled = true;
  if (!file.name || file.name.includes('/')) {
    showApplyResult(h('p', { class: 'error', role: 'alert' }, 'Give the file a base name such as web.yaml.'));
    return;
  }
  $('apply-plan').disabled = true;
  try {
    const r = await api.post('/api/v1/policies?dry_run=1', { files: [file] });
    planned = file;
    showApplyResult(planView(r));
    $('apply-confirm').disabled = false;
  } catch (err) {
    showApplyResult(h('p', { class: 'error', role: 'alert', dataset: { status: String(err.status || '') } },
      h('strong', {}, 'Refused: '), err.message));
    if (err.status === 401) lock('The controller refused the token; enter it again.');
  } finally {
    $('apply-plan').disabled = false;
  }
}

async function confirmPolicy() {
  if (!planned) return;
  $('apply-confirm').disabled = true;
  try {
    const r = await api.post('/api/v1/policies', { files: [planned] });
    const text = r.changed ? `Policy applied: version ${r.version}.` : 'Policy applied: nothing changed.';
    message('ok', text);
    planned = null;
    $('apply-dialog').close();
    showApplyResult([]);
    want(...kAll);
  } catch (err) {
    showApplyResult(h('p', { class: 'error', role: 'alert' }, h('strong', {}, 'Refused: '), err.message));
  }
}

function setupApplyDialog() {
  const dialog = $('apply-dialog');
  $('apply-open').addEventListener('click', () => {
    dialog.showModal();
    $('apply-content').focus();
  });
  $('apply-close').addEventListener('click', () => dialog.close());
  $('apply-file').addEventListener('change', async (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    $('apply-name').value = f.name;
    $('apply-content').value = await f.text();
    invalidatePlan();
  });
  const invalidatePlan = () => {
    if (planned) showApplyResult(h('p', { class: 'muted' }, 'Changed since the plan: plan again before applying.'));
    planned = null;
    $('apply-confirm').disabled = true;
  };
  $('apply-content').addEventListener('input', invalidatePlan);
  $('apply-name').addEventListener('input', invalidatePlan);
  $('apply-plan').addEventListener('click', planPolicy);
  $('apply-confirm').addEventListener('click', confirmPolicy);
}

// ----------------------------------------------------------------- start ---

async function start() {
  $('token-form').addEventListener('submit', unlock);
  $('token-lock').addEventListener('click', () => {
    lock();
    message('ok', 'Token forgotten: the page is read-only.');
  });
  $('incidents').addEventListener('toggle', (ev) => {
    const id = Number(ev.target.dataset?.incident);
    if (!id) return;
    if (ev.target.open) openIncidents.add(id);
    else openIncidents.delete(id);
    $('incidents').dataset.signature = '';  // the open state is part of what is drawn
  }, true);
  setupApplyDialog();
  let filterTimer = null;
  $('host-filter').addEventListener('input', (ev) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      hostFilter = ev.target.value;
      renderHosts();
    }, 120);
  });
  updateTokenUi();
  setLive('connecting');
  try {
    const recent = await api.latestEvents(kKeepEvents);
    lastEventId = recent.last_id;
    addEvents(recent.events, false);
    setReachable(true);
  } catch (err) {
    setReachable(false, err.message, err.status);
  }
  connect();
  want(...kAll);
  setInterval(() => want(...kAll), kSafetyRefreshMs);
  setInterval(tickIncidentAges, 1000);
  startControllersLine($('controllers'));
}

start();
