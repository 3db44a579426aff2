// Views: each function turns API answers into DOM nodes. No state of its own;
// actions are passed in as callbacks (see app.js).
import { h, clock, duration, mib } from './dom.js';

// Colors of tiers, by tier order (stable while the policy stays).
const kTierColors = ['#3b6fb6', '#d9711c', '#3f9142', '#9b59b6', '#16a0a0', '#b8860b', '#d14d72', '#7a5c45'];

export function tierColor(tiersByName, tier) {
  const t = tiersByName.get(tier);
  const i = t ? (t.order - 1 + kTierColors.length) % kTierColors.length : kTierColors.length - 1;
  return kTierColors[i];
}

const kVmTone = {
  running: 'good', pending: 'busy', starting: 'busy', restarting: 'busy', migrating: 'busy',
  recovering: 'busy', crashed: 'bad', error: 'bad', fencing: 'bad', stopped: 'idle',
};
const kHostTone = {
  online: 'good', suspect: 'warn', unknown: 'warn', offline: 'bad', fenced: 'bad', maintenance: 'maint',
};
export const vmTone = (state) => kVmTone[state] || 'idle';
export const hostTone = (state) => kHostTone[state] || 'warn';

const pill = (tone, text, extra) => h('span', { class: `pill ${tone}${extra ? ` ${extra}` : ''}` }, text);

// An action button. Without a token it is disabled and says why.
function actionButton({ label, text, key, enabled, onClick, danger, readOnly }) {
  return h('button', {
    type: 'button',
    class: danger ? 'act danger' : 'act',
    'aria-label': label,
    title: readOnly ? `${label}: enter the API token first` : label,
    'aria-describedby': readOnly ? 'readonly-hint' : undefined,
    disabled: readOnly || !enabled,
    dataset: { key },
    onclick: onClick,
  }, text);
}

function healthBadge(health) {
  const tone = health === 'healthy' ? 'good' : health === 'unhealthy' ? 'bad' : 'idle';
  return h('span', { class: `health small ${tone}` }, health === 'healthy' ? '● healthy'
    : health === 'unhealthy' ? '● unhealthy' : '○ unknown health');
}

function vmItem(vm, ctx) {
  const color = tierColor(ctx.tiersByName, vm.tier);
  const ro = ctx.readOnly;
  const tone = vmTone(vm.state);
  const buttons = [
    actionButton({ label: `Kill vm ${vm.name}`, text: 'Kill', key: `kill:${vm.name}`, danger: true,
      enabled: vm.state === 'running' && !!vm.host, readOnly: ro,
      onClick: () => ctx.act('kill', 'vm', vm.name) }),
    actionButton({ label: `Restart vm ${vm.name}`, text: 'Restart', key: `restart:${vm.name}`,
      enabled: !!vm.host, readOnly: ro, onClick: () => ctx.act('restart', 'vm', vm.name) }),
  ];
  // Reset clears an `error` and the restart/relocation budgets: offered for a
  // VM in error, and for one that is down after spending its budgets.
  const spent = vm.restarts > 0 || vm.relocations > 0;
  if (vm.state === 'error' || (vm.state !== 'running' && spent)) {
    buttons.push(actionButton({ label: `Reset vm ${vm.name}`, text: 'Reset', key: `reset:${vm.name}`,
      enabled: true, readOnly: ro, onClick: () => ctx.act('reset', 'vm', vm.name) }));
  }
  const meta = [`epoch ${vm.epoch}`];
  if (vm.restarts) meta.push(`${vm.restarts} restart${vm.restarts === 1 ? '' : 's'}`);
  if (vm.relocations) meta.push(`${vm.relocations} relocation${vm.relocations === 1 ? '' : 's'}`);
  return h('li', {
    class: `vm ${tone}`, style: `--tier:${color}`,
    dataset: { vm: vm.name, state: vm.state, health: vm.health, tier: vm.tier },
  },
  h('div', { class: 'vm-line' },
    h('span', { class: 'vm-name', title: `tier ${vm.tier}` }, vm.name),
    vm.state === 'running' ? healthBadge(vm.health) : null,
    pill(tone, vm.state, 'vm-state')),
  vm.reason ? h('div', { class: 'reason small' }, vm.reason) : null,
  h('div', { class: 'vm-line small' }, h('span', { class: 'muted' }, meta.join(' · ')),
    h('span', { class: 'actions' }, buttons)));
}

function capacityBar(label, used, total, fmt) {
  const pct = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  const free = Math.max(0, total - used);
  const text = total > 0 ? `${fmt(used)} / ${fmt(total)} · ${fmt(free)} free` : 'not reported yet';
  return h('div', { class: 'cap' },
    h('div', { class: 'cap-label small' }, h('span', {}, label), h('span', { class: 'muted' }, text)),
    h('div', { class: `bar${pct >= 90 ? ' full' : ''}`, role: 'img', 'aria-label': `${label}: ${text}` },
      h('span', { style: `width:${pct}%` })));
}

export function hostCard(host, ctx) {
  const tone = hostTone(host.state);
  const ro = ctx.readOnly;
  const vms = host.vms.map((n) => ctx.vmsByName.get(n)).filter(Boolean);
  const inMaintenance = host.state === 'maintenance';
  const hostButton = inMaintenance
    ? actionButton({ label: `Undrain host ${host.name}`, text: 'Undrain', key: `undrain:${host.name}`,
      enabled: true, readOnly: ro, onClick: () => ctx.act('undrain', 'host', host.name) })
    : actionButton({ label: `Drain host ${host.name}`, text: 'Drain', key: `drain:${host.name}`,
      enabled: host.state === 'online' || host.state === 'suspect', readOnly: ro,
      onClick: () => ctx.act('drain', 'host', host.name) });
  const since = host.state_since_ms ? `since ${clock(host.state_since_ms)}` : '';
  return h('article', {
    class: `host ${tone}`, 'aria-labelledby': `host-${host.name}`,
    dataset: { host: host.name, state: host.state, role: host.role },
  },
  h('header', { class: 'host-head' },
    h('h3', { id: `host-${host.name}` }, host.name),
    pill(tone, host.state, 'host-state'),
    host.role === 'spare' ? pill('role', 'spare') : null,
    h('span', { class: 'spacer' }),
    hostButton),
  h('p', { class: 'small muted host-since' }, [since, host.reason].filter(Boolean).join(' · ') || '\u00a0'),
  host.self_fence_reason
    ? h('p', { class: 'small reason self-fence' },
      `self-fenced ${host.self_fenced_ms ? clock(host.self_fenced_ms) : ''}: ${host.self_fence_reason}`)
    : null,
  capacityBar('CPUs', host.used.cpus, host.capacity.cpus, (n) => String(n)),
  capacityBar('Memory', host.used.memory_mib, host.capacity.memory_mib, mib),
  vms.length
    ? h('ul', { class: 'vms', 'aria-label': `VMs on host ${host.name}` }, vms.map((v) => vmItem(v, ctx)))
    : h('p', { class: 'empty small' }, host.role === 'spare' ? 'no VMs (standing by)' : 'no VMs'));
}

// VMs that no host holds (pending, or waiting for room).
export function unplacedCard(vms, ctx) {
  return h('article', { class: 'host unplaced', 'aria-labelledby': 'host-unplaced', dataset: { host: '' } },
    h('header', { class: 'host-head' }, h('h3', { id: 'host-unplaced' }, 'Not placed'),
      pill('busy', `${vms.length} VM${vms.length === 1 ? '' : 's'}`)),
    h('ul', { class: 'vms', 'aria-label': 'VMs on no host' }, vms.map((v) => vmItem(v, ctx))));
}

export function tiersTable(tiers) {
  const tiersByName = new Map(tiers.map((t) => [t.name, t]));
  return h('table', { class: 'tiers' },
    h('caption', { class: 'visually-hidden' }, 'Tiers: desired, running and healthy replicas'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Order'), h('th', { scope: 'col' }, 'Tier'),
      h('th', { scope: 'col', class: 'num' }, 'Desired'), h('th', { scope: 'col', class: 'num' }, 'Running'),
      h('th', { scope: 'col', class: 'num' }, 'Healthy'), h('th', { scope: 'col' }, 'After'),
      h('th', { scope: 'col', class: 'col-image' }, 'Image'))),
    h('tbody', {}, tiers.map((t) => {
      const ok = t.running >= t.replicas;
      const healthy = t.is_healthy ?? t.healthy >= t.replicas;
      return h('tr', { dataset: { tier: t.name } },
        h('td', { class: 'num' }, String(t.order)),
        h('th', { scope: 'row' }, h('span', { class: 'swatch', style: `--tier:${tierColor(tiersByName, t.name)}` }),
          t.name),
        h('td', { class: 'num', dataset: { col: 'desired' } }, String(t.replicas)),
        h('td', { class: `num ${ok ? '' : 'short'}`, dataset: { col: 'running' } }, String(t.running)),
        h('td', { class: `num ${healthy ? '' : 'short'}`, dataset: { col: 'healthy' } }, String(t.healthy)),
        h('td', {}, t.after.length ? t.after.join(', ') : '—'),
        h('td', { class: 'muted col-image' }, t.image));
    })));
}

export function nPlusOne(cluster) {
  const n1 = cluster && cluster.n_plus_one;
  if (!n1) return h('p', { class: 'n1 idle' }, 'N+1: unknown');
  const breaking = Object.entries(n1.breaking || {})
    .map(([host, vms]) => `losing ${host} strands ${vms.join(', ')}`);
  return h('p', { class: `n1 ${n1.safe ? 'good' : 'warn'}`, dataset: { safe: String(n1.safe) } },
    h('strong', {}, n1.safe ? '✓ ' : '⚠ '), n1.summary,
    breaking.length ? h('span', { class: 'small' }, ` (${breaking.join('; ')})`) : null);
}

// The first thing an operator reads: is everything fine, and if not, what.
export function overview({ cluster, hosts, vms, incidents }) {
  const hostList = hosts || [];
  const vmList = vms || [];
  const up = hostList.filter((x) => x.state === 'online').length;
  const active = hostList.filter((x) => x.state !== 'maintenance').length;
  const running = vmList.filter((v) => v.state === 'running').length;
  const healthy = vmList.filter((v) => v.state === 'running' && v.health !== 'unhealthy').length;
  const open = (incidents || []).filter((i) => i.open).length;
  const errors = vmList.filter((v) => v.state === 'error').length;
  const n1 = cluster && cluster.n_plus_one;
  const problems = [];
  const down = vmList.filter((v) => v.state !== 'running');
  if (down.length && down.length <= 3) problems.push(down.map((v) => `${v.name} ${v.state}`).join(', '));
  else if (down.length) problems.push(`${down.length} VMs not running`);
  if (healthy < running) problems.push(`${running - healthy} unhealthy`);
  if (up < active) problems.push(`${active - up} host${active - up === 1 ? '' : 's'} down`);
  if (open) problems.push(`${open} open incident${open === 1 ? '' : 's'}`);
  // Red when a person is needed: a VM in error or down with its budgets spent,
  // a host offline or fenced. Amber while the system is still healing.
  const stuck = vmList.some((v) => v.state !== 'running' && !v.host && v.relocations > 0);
  const tone = errors || stuck || hostList.some((x) => x.state === 'offline' || x.state === 'fenced') ? 'bad'
    : problems.length ? 'warn' : 'good';
  const headline = !hostList.length && !vmList.length ? 'No policy applied yet'
    : problems.length ? problems.join(' · ') : `All ${vmList.length} VMs running`;
  return [
    h('p', { class: `headline ${tone}`, dataset: { tone } }, headline),
    h('ul', { class: 'stats' },
      h('li', {}, h('strong', {}, `${up}/${hostList.length}`), ' hosts online'),
      h('li', {}, h('strong', {}, `${running}/${vmList.length}`), ' VMs running'),
      h('li', {}, h('strong', {}, String(open)), ' open incidents'),
      h('li', { class: n1 ? (n1.safe ? 'good' : 'warn') : '' }, h('strong', {}, n1 ? (n1.safe ? 'N+1 safe' : 'N+1 at risk') : 'N+1 ?')),
      cluster && cluster.policy_version ? h('li', { class: 'muted' }, `policy v${cluster.policy_version}`) : null),
  ];
}

export function incidentItem(inc, isOpen, now) {
  const end = inc.open ? now : inc.closed_ms;
  const steps = inc.steps || [];
  return h('details', {
    class: `incident ${inc.open ? 'is-open' : 'is-closed'}`, open: isOpen,
    dataset: { incident: String(inc.id), subject: inc.subject, kind: inc.kind },
  },
  h('summary', {},
    pill(inc.open ? 'bad' : 'good', inc.open ? 'open' : 'closed'),
    h('span', { class: 'inc-subject' }, inc.subject),
    h('span', { class: 'inc-summary' }, inc.summary),
    h('span', { class: 'muted small inc-age', dataset: { opened: String(inc.opened_ms) } },
      `${clock(inc.opened_ms)} · ${inc.open ? 'for ' : 'took '}${duration(end - inc.opened_ms)}`)),
  h('ol', { class: 'timeline', 'aria-label': `Timeline of ${inc.subject}` }, steps.map((s, i) => h('li', {
    dataset: { step: s.step },
  },
  h('span', { class: 'step' }, s.step),
  h('time', { datetime: new Date(s.t_ms).toISOString() }, clock(s.t_ms, true)),
  h('span', { class: 'delta' }, i === 0 ? 'start' : `+${duration(s.t_ms - steps[i - 1].t_ms)}`),
  s.detail ? h('span', { class: 'detail' }, s.detail) : null)),
  !inc.open ? h('li', { class: 'closed-step', dataset: { step: 'closed' } },
    h('span', { class: 'step' }, 'closed'), h('time', {}, clock(inc.closed_ms, true)),
    h('span', { class: 'delta' }, `total ${duration(inc.closed_ms - inc.opened_ms)}`)) : null));
}

export function eventItem(e, fresh) {
  return h('li', { class: `event ${e.level}${fresh ? ' fresh' : ''}`, dataset: { id: String(e.id), kind: e.kind, subject: e.subject } },
    h('time', { datetime: new Date(e.t_ms).toISOString() }, clock(e.t_ms, true)),
    h('span', { class: 'ev-kind' }, e.kind),
    h('span', { class: 'ev-msg' }, e.message));
}

// The plan of a dry run: what would happen to every VM.
export function planView(result) {
  const plan = (result.plan && result.plan.vms) || [];
  const counts = {};
  for (const p of plan) counts[p.action] = (counts[p.action] || 0) + 1;
  const n1 = result.plan && result.plan.n_plus_one;
  return [
    h('p', { class: 'plan-summary' }, result.changed ? 'This changes the cluster: ' : 'No change: ',
      Object.entries(counts).map(([a, n]) => `${n} ${a}`).join(', ') || 'no VMs'),
    n1 ? h('p', { class: `n1 ${n1.safe ? 'good' : 'warn'}` }, h('strong', {}, n1.safe ? '✓ ' : '⚠ '), n1.summary) : null,
    (result.warnings || []).length
      ? h('ul', { class: 'warnings' }, result.warnings.map((w) => h('li', {}, w))) : null,
    h('table', { class: 'plan' },
      h('caption', { class: 'visually-hidden' }, 'Plan: what happens to each VM'),
      h('thead', {}, h('tr', {}, ['VM', 'Tier', 'Host', 'Action', 'Reason'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, plan.map((p) => h('tr', { class: `plan-${p.action}`, dataset: { vm: p.vm, action: p.action } },
        h('td', {}, p.vm), h('td', {}, p.tier), h('td', {}, p.host || '—'),
        h('td', {}, h('span', { class: `pill ${p.action === 'delete' ? 'bad' : p.action === 'keep' ? 'idle' : p.action === 'pending' ? 'warn' : 'busy'}` }, p.action)),
        h('td', { class: 'small' }, p.reason || ''))))),
  ];
}
