// A read-only view of the cluster from the REST API. (The full dashboard with
// live events and operator actions replaces this in its own issue.)
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
let lastEvent = 0;

async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

async function refresh() {
  try {
    const [hosts, tiers, vms, events] = await Promise.all([
      getJson('/api/v1/hosts'), getJson('/api/v1/tiers'), getJson('/api/v1/vms'),
      getJson(`/api/v1/events?since=${lastEvent}`),
    ]);
    const byName = Object.fromEntries(vms.vms.map((v) => [v.name, v]));
    $('hosts').innerHTML = hosts.hosts.map((h) => `
      <article class="host ${esc(h.state)}" aria-label="host ${esc(h.name)}">
        <strong>${esc(h.name)}</strong> <small>${esc(h.role)} · ${esc(h.state)}</small>
        <div><small>${h.used.memory_mib}/${h.capacity.memory_mib} MiB · ${h.used.cpus}/${h.capacity.cpus} vCPU</small></div>
        ${h.vms.map((n) => { const v = byName[n] || {}; return `<span class="vm ${esc(v.state)}">${esc(n)} · ${esc(v.state)} · ${esc(v.health)}</span>`; }).join('')}
      </article>`).join('');
    $('tiers').innerHTML = '<tr><th>tier</th><th>desired</th><th>running</th><th>healthy</th><th>after</th></tr>' +
      tiers.tiers.map((t) => `<tr><td>${esc(t.name)}</td><td>${t.replicas}</td><td>${t.running}</td><td>${t.healthy}</td><td>${esc(t.after.join(', '))}</td></tr>`).join('');
    for (const e of events.events) {
      const li = document.createElement('li');
      li.className = e.level;
      li.textContent = `${new Date(e.t_ms).toISOString().slice(11, 23)} ${e.message}`;
      $('events').prepend(li);
    }
    lastEvent = events.last_id;
    const pending = vms.vms.filter((v) => v.state !== 'running').length;
    $('summary').textContent = `${hosts.hosts.length} hosts · ${vms.vms.length} VMs · ${pending} not running`;
  } catch (err) {
    $('summary').textContent = `controller unreachable: ${err.message}`;
  }
}

refresh();
setInterval(refresh, 1000);
