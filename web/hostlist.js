// The hosts section, at any cluster size (issue #16).
//
// Up to kCardsAll hosts every host is a card, as it always was. Above that
// the section would be thousands of cards, so hosts are grouped by state
// instead: one <details> per state, the groups that need a person (fenced,
// offline, suspect, ...) open and drawn as cards, the rest (online,
// maintenance) collapsed and drawn as small tiles, one per host. The filter
// box (host, VM or tier name) shows the matching hosts as cards, at any size.
//
// Nothing is re-rendered whole per event: a card is cached per host with the
// signature of what it shows (the host and its VMs) and rebuilt only when
// that changed; a tile is updated in place; a group's tiles are rebuilt only
// when who is in the group changes.
import { h } from './dom.js';
import { hostCard, unplacedCard, hostTone } from './render.js';

export const kCardsAll = 24;  // up to this many hosts: every host a card
const kMaxCards = 60;         // at most this many cards at once (matches, problem groups)
// Group order: what needs a person first.
const kGroupOrder = ['fenced', 'offline', 'suspect', 'unknown', 'maintenance', 'online'];
const kOpenByDefault = new Set(['fenced', 'offline', 'suspect', 'unknown']);

const cards = new Map();        // host name -> {sig, node}
const tiles = new Map();        // host name -> {sig, node}
const groups = new Map();       // state -> {node, body, members (signature)}
const userToggled = new Map();  // state -> open, once the operator opened or closed a group

// What a card shows changes when this does (not the heartbeat time).
function cardSig(host, vms, ctx) {
  const { last_heartbeat_ms: _beat, ...shown } = host;
  return JSON.stringify([shown, vms, ctx.readOnly, ctx.tierSig]);
}

function cardFor(host, ctx) {
  const vms = host.vms.map((n) => ctx.vmsByName.get(n)).filter(Boolean);
  const sig = cardSig(host, vms, ctx);
  const cached = cards.get(host.name);
  if (cached && cached.sig === sig) return cached.node;
  const node = hostCard(host, ctx);
  cards.set(host.name, { sig, node });
  return node;
}

function tileFor(host, onPick) {
  const tone = hostTone(host.state);
  const count = host.vms.length;
  const title = `${host.name} · ${host.state} · ${count} VM${count === 1 ? '' : 's'}${host.role === 'spare' ? ' · spare' : ''}`;
  const sig = `${tone}|${title}`;
  const cached = tiles.get(host.name);
  if (cached) {
    if (cached.sig !== sig) {
      cached.node.className = `tile ${tone}`;
      cached.node.title = title;
      cached.node.setAttribute('aria-label', title);
      cached.node.dataset.state = host.state;
      cached.sig = sig;
    }
    return cached.node;
  }
  const node = h('button', {
    type: 'button', class: `tile ${tone}`, title, 'aria-label': title,
    dataset: { host: host.name, state: host.state }, onclick: () => onPick(host.name),
  });
  tiles.set(host.name, { sig, node });
  return node;
}

// The VMs, hosts and tiers a filter text matches ('' matches nothing): a
// text that is exactly a host's or a VM's name matches only that one (web-1,
// not web-10 ... web-19); any other text matches names and tiers containing it.
export function matchFilter(query, hosts, vmsByName) {
  const q = query.trim().toLowerCase();
  if (!q) return null;
  const exact = hosts.some((x) => x.name.toLowerCase() === q) ||
    [...vmsByName.keys()].some((n) => n.toLowerCase() === q);
  const hostMatch = (name) => (exact ? name.toLowerCase() === q : name.toLowerCase().includes(q));
  const vmMatch = (v) => v && (exact ? v.name.toLowerCase() === q
    : v.name.toLowerCase().includes(q) || (v.tier || '').toLowerCase().includes(q));
  const hostsOut = [];
  const vmsOut = new Set();
  for (const host of hosts) {
    let hit = hostMatch(host.name);
    for (const n of host.vms) {
      if (vmMatch(vmsByName.get(n))) {
        vmsOut.add(n);
        hit = true;
      }
    }
    if (hit) hostsOut.push(host);
  }
  const onHosts = new Set(hosts.flatMap((x) => x.vms));
  const unplaced = [];
  for (const v of vmsByName.values()) {
    if (!onHosts.has(v.name) && vmMatch(v)) {
      unplaced.push(v);
      vmsOut.add(v.name);
    }
  }
  return { hosts: hostsOut, vms: vmsOut, unplaced };
}

function markMatches(node, vms) {
  for (const li of node.querySelectorAll('li.vm')) li.classList.toggle('match', vms.has(li.dataset.vm));
}

function more(n, what) {
  return h('p', { class: 'muted small more' }, `${n} more ${what} not shown: refine the filter`);
}

function groupFor(state, members, count) {
  let g = groups.get(state);
  if (!g) {
    const summary = h('summary', {});
    const body = h('div', { class: 'group-body' });
    const node = h('details', { class: `host-group ${hostTone(state)}`, dataset: { group: state } }, summary, body);
    node.addEventListener('toggle', () => {
      if (node.dataset.programmatic === '1') return;
      userToggled.set(state, node.open);
    });
    g = { node, summary, body, members: '' };
    groups.set(state, g);
  }
  const want = userToggled.has(state) ? userToggled.get(state) : kOpenByDefault.has(state);
  if (g.node.open !== want) {
    g.node.dataset.programmatic = '1';
    g.node.open = want;
    setTimeout(() => { g.node.dataset.programmatic = ''; }, 0);
  }
  g.summary.textContent = `${state} (${count})`;
  return g;
}

// Draws the hosts into `container`. ctx: {readOnly, vmsByName, tiersByName,
// tierSig, act}; `filter`: the filter box's text; `onPick(name)`: a tile was
// clicked (the filter shows that host).
export function renderHostList(container, hosts, ctx, filter, onPick) {
  const status = [];
  const matched = matchFilter(filter, hosts, ctx.vmsByName);
  let nodes;
  if (matched) {
    nodes = matched.hosts.slice(0, kMaxCards).map((x) => {
      const node = cardFor(x, ctx);
      markMatches(node, matched.vms);
      return node;
    });
    if (matched.hosts.length > kMaxCards) nodes.push(more(matched.hosts.length - kMaxCards, 'hosts'));
    if (matched.unplaced.length) nodes.push(unplacedCard(matched.unplaced.slice(0, kMaxCards), ctx));
    status.push(`${matched.hosts.length} host${matched.hosts.length === 1 ? '' : 's'} and ` +
      `${matched.vms.size} VM${matched.vms.size === 1 ? '' : 's'} match`);
    if (!matched.hosts.length && !matched.unplaced.length) nodes.push(h('p', { class: 'empty' }, 'Nothing matches the filter.'));
  } else if (hosts.length <= kCardsAll) {
    nodes = hosts.map((x) => {
      const node = cardFor(x, ctx);
      markMatches(node, new Set());
      return node;
    });
    const unplaced = unplacedOf(hosts, ctx.vmsByName);
    if (unplaced.length) nodes.push(unplacedCard(unplaced, ctx));
    if (!nodes.length) nodes.push(h('p', { class: 'empty' }, 'No hosts declared: apply a policy.'));
  } else {
    nodes = [];
    const byState = new Map();
    for (const x of hosts) {
      const key = kGroupOrder.includes(x.state) ? x.state : 'unknown';
      if (!byState.has(key)) byState.set(key, []);
      byState.get(key).push(x);
    }
    for (const state of kGroupOrder) {
      const members = byState.get(state);
      if (!members) continue;
      const g = groupFor(state, members, members.length);
      const asCards = kOpenByDefault.has(state) && members.length <= kMaxCards;
      const sig = `${asCards ? 'cards' : 'tiles'}:${members.map((x) => x.name).join(',')}`;
      if (asCards) {
        const shown = members.map((x) => cardFor(x, ctx));
        if (g.members !== sig || shown.some((n, i) => g.body.children[i] !== n)) g.body.replaceChildren(...shown);
      } else {
        const shown = members.map((x) => tileFor(x, onPick));  // updated in place
        if (g.members !== sig) g.body.replaceChildren(h('div', { class: 'tiles' }, shown));
      }
      g.members = sig;
      nodes.push(g.node);
    }
    const unplaced = unplacedOf(hosts, ctx.vmsByName);
    if (unplaced.length) {
      nodes.push(unplacedCard(unplaced.slice(0, kMaxCards), ctx));
      if (unplaced.length > kMaxCards) nodes.push(more(unplaced.length - kMaxCards, 'unplaced VMs'));
    }
    status.push(`${hosts.length} hosts, grouped by state: click a tile or filter to see a host`);
  }
  // Only what moved is touched: the same nodes in the same order stay.
  const same = nodes.length === container.children.length && nodes.every((n, i) => container.children[i] === n);
  if (!same) {
    const active = document.activeElement;
    container.replaceChildren(...nodes);
    if (active && active.isConnected) active.focus();
  }
  // Forget cards and tiles of hosts no longer declared.
  const names = new Set(hosts.map((x) => x.name));
  for (const m of [cards, tiles]) for (const k of m.keys()) if (!names.has(k)) m.delete(k);
  return status.join('');
}

function unplacedOf(hosts, vmsByName) {
  const onHosts = new Set(hosts.flatMap((x) => x.vms));
  const out = [];
  for (const v of vmsByName.values()) if (!onHosts.has(v.name)) out.push(v);
  return out;
}
