// The dashboard in a real browser (Debian's chromium through playwright-core),
// against a real controller and agents that tests/web/run.sh started.
// Environment: TW_URL (controller), TW_TOKEN_FILE, TW_POLICY (the applied demo
// policy, hosts' test URIs filled in), TW_ARTIFACTS (screenshots go there),
// TW_CHROMIUM (the browser executable).
// The tests run in order and share one page: each builds on the cluster state
// the one before left (token entered, apache-1 killed once, policy version 2).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const URL_BASE = process.env.TW_URL;
const TOKEN = fs.readFileSync(process.env.TW_TOKEN_FILE, 'utf8').trim();
const POLICY = fs.readFileSync(process.env.TW_POLICY, 'utf8');
const ARTIFACTS = process.env.TW_ARTIFACTS;
const KILLED = 'apache-1';

let browser;
let page;
const pageErrors = [];
const foreignRequests = [];

async function api(p) {
  const r = await fetch(URL_BASE + p, { cache: 'no-store' });
  assert.equal(r.status, 200, `GET ${p}`);
  return r.json();
}

// Retries `fn` until it stops throwing, or rethrows its last error.
async function eventually(fn, { timeout = 10000, interval = 100 } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, interval));
    }
  }
}

// What the page shows, read from its DOM in one go.
function pageView() {
  return page.evaluate(() => {
    const hosts = {};
    for (const card of document.querySelectorAll('#hosts article[data-host]')) {
      if (!card.dataset.host) continue;
      hosts[card.dataset.host] = {
        state: card.dataset.state,
        role: card.dataset.role,
        vms: [...card.querySelectorAll('li[data-vm]')].map((li) => li.dataset.vm).sort(),
      };
    }
    const vms = {};
    for (const li of document.querySelectorAll('#hosts li[data-vm]')) {
      vms[li.dataset.vm] = { state: li.dataset.state, health: li.dataset.health, tier: li.dataset.tier };
    }
    const tiers = {};
    for (const tr of document.querySelectorAll('#tiers tr[data-tier]')) {
      const cell = (c) => Number(tr.querySelector(`[data-col="${c}"]`).textContent);
      tiers[tr.dataset.tier] = { replicas: cell('desired'), running: cell('running'), healthy: cell('healthy') };
    }
    return { hosts, vms, tiers, n1: document.querySelector('#n1')?.textContent || '' };
  });
}

// What the API says, in the same shape.
async function apiView() {
  const [h, v, t, c] = await Promise.all([
    api('/api/v1/hosts'), api('/api/v1/vms'), api('/api/v1/tiers'), api('/api/v1/cluster'),
  ]);
  const hosts = {};
  for (const x of h.hosts) hosts[x.name] = { state: x.state, role: x.role, vms: [...x.vms].sort() };
  const vms = {};
  for (const x of v.vms) vms[x.name] = { state: x.state, health: x.health, tier: x.tier };
  const tiers = {};
  for (const x of t.tiers) tiers[x.name] = { replicas: x.replicas, running: x.running, healthy: x.healthy };
  return { hosts, vms, tiers, n1: c.n_plus_one.summary };
}

async function expectPageMatchesApi() {
  await eventually(async () => {
    const want = await apiView();
    const got = await pageView();
    assert.deepEqual(got.hosts, want.hosts);
    assert.deepEqual(got.vms, want.vms);
    assert.deepEqual(got.tiers, want.tiers);
    assert.ok(got.n1.includes(want.n1), `N+1 line "${got.n1}" shows "${want.n1}"`);
  });
}

const button = (name) => page.getByRole('button', { name, exact: true });

async function lastMessage() {
  return page.locator('#messages .message').last().textContent();
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.TW_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  // HTTPS with the cluster's own CA (run.sh), which this browser does not know.
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    ignoreHTTPSErrors: URL_BASE.startsWith('https:'),
  });
  page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  page.on('request', (r) => {
    if (!r.url().startsWith(URL_BASE) && !r.url().startsWith('data:')) foreignRequests.push(r.url());
  });
  await page.goto(URL_BASE + '/');
});

after(async () => {
  await browser?.close();
});

// Pins the read-only mode: without a token every action is disabled and a
// hint says why.
test('without a token the page is read-only', async () => {
  await page.locator('#hosts li[data-vm]').first().waitFor();
  await expectPageMatchesApi();
  const actions = page.locator('#hosts button.act');
  assert.ok((await actions.count()) >= 5, 'there are action buttons');
  for (const b of await actions.all()) assert.equal(await b.isDisabled(), true, await b.getAttribute('aria-label'));
  assert.equal(await button(`Kill vm ${KILLED}`).isDisabled(), true);
  assert.equal(await page.locator('#apply-open').isDisabled(), true);
  assert.match(await page.locator('#readonly-hint').textContent(), /API token/);
  assert.equal(await page.locator('#readonly-hint').isVisible(), true);
});

// Pins that hosts (state, role, VMs), VMs (state, health), tiers (desired,
// running, healthy) and the N+1 summary are those of the REST API.
test('hosts, VMs, tiers and N+1 match the API', async () => {
  await expectPageMatchesApi();
  const view = await pageView();
  assert.deepEqual(Object.keys(view.hosts).sort(), ['h1', 'h2', 'h3']);
  assert.equal(view.hosts.h3.role, 'spare');
  assert.equal(await page.locator('#hosts [data-host="h3"] .pill.role').textContent(), 'spare');
  assert.equal(Object.keys(view.vms).length, 5);
  assert.match(await page.locator('#overview .headline').textContent(), /All 5 VMs running/);
  assert.equal(await page.locator('#live').getAttribute('data-status'), 'live');
});

// Pins that a wrong token is refused by the controller and changes nothing.
test('a wrong token is refused and the page stays read-only', async () => {
  await page.fill('#token-input', 'not-the-token');
  await button('Unlock actions').click();
  await page.locator('#messages .message.error', { hasText: 'rejected' }).waitFor();
  assert.equal(await button(`Kill vm ${KILLED}`).isDisabled(), true);
});

// Pins that the right token enables actions and is kept for the tab
// (sessionStorage) across a reload.
test('the token enables actions and survives a reload', async () => {
  await page.fill('#token-input', TOKEN);
  await button('Unlock actions').click();
  await page.locator('#messages .message.ok', { hasText: 'Token accepted' }).waitFor();
  await eventually(async () => assert.equal(await button(`Kill vm ${KILLED}`).isEnabled(), true));
  await page.reload();
  await page.locator('#hosts li[data-vm]').first().waitFor();
  await eventually(async () => assert.equal(await button(`Kill vm ${KILLED}`).isEnabled(), true));
  assert.equal(await page.locator('#readonly-hint').isVisible(), false);
  assert.equal(await page.locator('#apply-open').isEnabled(), true);
});

// Pins the demo crash end to end: the kill button, the success message, the
// live feed (SSE) showing crash and restart, the VM running again with one
// restart, and the incident with its timeline, all without reloading.
test(`kill vm ${KILLED}: crash, restart and incident timeline appear live`, async (t) => {
  const before = (await api(`/api/v1/vms/${KILLED}`));
  assert.equal(before.state, 'running');
  // Record every state the page shows for the VM (it may be back within ms).
  await page.evaluate((vm) => {
    window.twSeen = [];
    const note = () => {
      const s = document.querySelector(`#hosts li[data-vm="${vm}"]`)?.dataset.state;
      if (s && window.twSeen[window.twSeen.length - 1] !== s) window.twSeen.push(s);
    };
    note();
    new MutationObserver(note).observe(document.getElementById('hosts'),
      { subtree: true, childList: true, attributes: true });
  }, KILLED);
  const clicked = Date.now();
  await button(`Kill vm ${KILLED}`).click();
  await page.locator('#messages .message.ok', { hasText: `vm '${KILLED}' killed` }).waitFor();

  // The live feed shows the crash and the restart, from the event stream.
  const feed = (kind) => page.locator(`#events li[data-subject="vm/${KILLED}"][data-kind="${kind}"]`);
  await feed('vm.kill_requested').first().waitFor({ timeout: 5000 });
  await feed('vm.crashed').first().waitFor({ timeout: 5000 });
  await feed('vm.restarted').first().waitFor({ timeout: 5000 });
  const feedMs = Date.now() - clicked;

  // Running again, one restart more, on the same host card.
  await eventually(async () => {
    const li = page.locator(`#hosts li[data-vm="${KILLED}"]`);
    assert.equal(await li.getAttribute('data-state'), 'running');
    assert.match(await li.textContent(), new RegExp(`${before.restarts + 1} restart`));
  }, { timeout: 5000 });
  const seen = await page.evaluate(() => window.twSeen);
  t.diagnostic(`states shown for ${KILLED}: ${seen.join(' → ')}; crash+restart in the feed after ${feedMs} ms`);
  assert.equal(seen[seen.length - 1], 'running');

  // The incident, as the API has it, and as the page shows it once opened.
  const incident = await eventually(async () => {
    const list = (await api('/api/v1/incidents')).incidents;
    const inc = list.filter((i) => i.subject === `vm/${KILLED}`).pop();
    assert.ok(inc, 'incident recorded');
    assert.equal(inc.open, false, 'incident closed once healthy');
    return inc;
  });
  const closedSeen = Date.now();
  const details = page.locator(`#incidents details.is-closed[data-incident="${incident.id}"]`);
  await details.waitFor({ timeout: 3000 });  // the page follows the API within about a second
  t.diagnostic(`closed incident shown ${Date.now() - closedSeen} ms after the API had it`);
  await details.locator('summary').click();
  await eventually(async () => assert.equal(await details.evaluate((d) => d.open), true));
  const steps = await details.locator('.timeline li[data-step]').evaluateAll((lis) => lis.map((li) => li.dataset.step));
  assert.deepEqual(steps, [...incident.steps.map((s) => s.step), 'closed']);
  for (const s of ['detected', 'restarted', 'started']) assert.ok(steps.includes(s), `step ${s} shown`);
  assert.equal(await details.locator('.timeline li[data-step="restarted"]').isVisible(), true);
  assert.match(await details.locator('.timeline li[data-step="restarted"] .delta').textContent(), /^\+\d+(\.\d)? m?s$/);
  assert.match(await details.locator('summary').textContent(), /closed.*vm\/apache-1.*took/s);
  await expectPageMatchesApi();
  // Re-rendering keeps the incident open.
  await page.waitForTimeout(600);
  assert.equal(await details.evaluate((d) => d.open), true);
});

// Pins host actions: drain of the (empty) spare puts it in maintenance,
// undrain returns it; each shows a success message.
test('drain and undrain the spare host h3', async () => {
  await button('Drain host h3').click();
  await eventually(async () => assert.match(await lastMessage(), /drain of host 'h3' started/));
  await eventually(async () =>
    assert.equal(await page.locator('#hosts [data-host="h3"]').getAttribute('data-state'), 'maintenance'));
  await button('Undrain host h3').click();
  await eventually(async () => assert.match(await lastMessage(), /host 'h3' returned to service/));
  await eventually(async () =>
    assert.equal(await page.locator('#hosts [data-host="h3"]').getAttribute('data-state'), 'online'));
});

// Pins that a refused policy shows the controller's error with
// file:line:column, and that nothing can be confirmed.
test('a broken policy shows file:line:column in the apply dialog', async () => {
  await page.locator('#apply-open').click();
  assert.equal(await page.locator('#apply-dialog').evaluate((d) => d.open), true);
  await page.fill('#apply-name', 'broken.yaml');
  await page.fill('#apply-content', 'tiers:\n  - name: web\n    image: tiny-web\n    replicas: lots\n');
  await button('Plan (dry run)').click();
  const err = page.locator('#apply-result .error');
  await err.waitFor();
  assert.match(await err.textContent(), /broken\.yaml:4:\d+: /);
  assert.equal(await button('Confirm and apply').isDisabled(), true);
});

// Pins the apply flow: the dry run shows the plan table and the N+1 summary
// and changes nothing; Confirm applies it and the new VM shows up.
test('dry run shows the plan, confirm applies it', async () => {
  const version = (await api('/api/v1/cluster')).policy_version;
  const replicas = /name: apache\n(?:\s+\w+:.*\n)*?\s+replicas: (\d+)/;
  const n = Number(POLICY.match(replicas)[1]);
  const added = `apache-${n + 1}`;
  const edited = POLICY.replace(replicas, (m, r) => m.slice(0, -r.length) + String(n + 1));
  await page.fill('#apply-name', path.basename(process.env.TW_POLICY));
  await page.fill('#apply-content', edited);
  await button('Plan (dry run)').click();
  const row = page.locator(`#apply-result tr[data-vm="${added}"]`);
  await row.waitFor();
  assert.equal(await row.getAttribute('data-action'), 'create');
  assert.match(await page.locator('#apply-result .n1').textContent(), /N\+1/);
  assert.equal(await page.locator('#apply-result tr[data-vm="apache-1"]').getAttribute('data-action'), 'keep');
  assert.equal((await api('/api/v1/cluster')).policy_version, version, 'a dry run changes nothing');
  await button('Confirm and apply').click();
  await eventually(async () => assert.match(await lastMessage(), new RegExp(`Policy applied: version ${version + 1}`)));
  assert.equal(await page.locator('#apply-dialog').evaluate((d) => d.open), false);
  await eventually(async () =>
    assert.equal(await page.locator(`#hosts li[data-vm="${added}"]`).getAttribute('data-state'), 'running'),
  { timeout: 15000 });
  await expectPageMatchesApi();
});

// Pins the live feed's resilience: when the controller restarts, the page says
// so, the event stream reconnects by itself, resumes after the last event it
// saw (Last-Event-ID) so that no event is missed, and the page catches up.
test('the event stream reconnects after a controller restart and misses no event', async (t) => {
  const live = () => page.locator('#live').getAttribute('data-status');
  assert.equal(await live(), 'live');
  process.kill(Number(fs.readFileSync(process.env.TW_CONTROLLER_PID_FILE, 'utf8')), 'SIGTERM');
  await eventually(async () => assert.notEqual(await live(), 'live'), { timeout: 10000, interval: 20 });
  await eventually(async () => assert.equal((await fetch(`${URL_BASE}/api/v1/cluster`)).status, 200),
    { timeout: 20000 });
  // An event right after the restart, likely before the page is back.
  const r = await fetch(`${URL_BASE}/api/v1/vms/mysql-1/restart`,
    { method: 'POST', body: '', headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 202, await r.text());
  t.diagnostic(`stream status when the restart was requested: ${await live()}`);
  await eventually(async () => assert.equal(await live(), 'live'), { timeout: 20000 });
  await page.locator('#events li[data-subject="vm/mysql-1"][data-kind="vm.restart_requested"]').first()
    .waitFor({ timeout: 5000 });
  await eventually(async () => {
    const shown = await page.locator('#events li[data-id]').evaluateAll((lis) => lis.map((li) => Number(li.dataset.id)));
    const since = Math.min(...shown) - 1;
    const all = (await api(`/api/v1/events?since=${since}&limit=5000`)).events.map((e) => e.id);
    const have = new Set(shown);
    assert.deepEqual(all.filter((id) => !have.has(id)), [], 'events missing from the feed');
    assert.equal(shown.length, new Set(shown).size, 'no event shown twice');
  });
  await expectPageMatchesApi();
});

// Pins the tier warnings under the tiers table (web/warnings.js): a tier's
// backup_warnings, as GET /api/v1/tiers answers them, show one line each,
// named by tier. The answer is edited on its way to the page (a real stale
// backup needs 2 × backup.every, at least 2 minutes); the real answer shows
// no backup warning.
test('backup warnings of a tier show under the tiers table', async () => {
  const backupWarnings = page.locator('#tiers .tier-warnings li[data-kind="backup"]');
  assert.equal(await backupWarnings.count(), 0);
  const warning = "the last good backup of vm 'mysql-1' is 2h 1m old (every 1h 0m)";
  await page.route('**/api/v1/tiers', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    for (const t of body.tiers) if (t.name === 'mysql') t.backup_warnings = [warning];
    await route.fulfill({ response, json: body });
  });
  try {
    await page.reload();
    const li = page.locator('#tiers .tier-warnings li[data-tier="mysql"][data-kind="backup"]');
    await li.waitFor();
    assert.equal(await li.textContent(), `⚠ mysql: ${warning}`);
  } finally {
    await page.unroute('**/api/v1/tiers');
  }
  await page.reload();
  await page.locator('#tiers tr[data-tier="mysql"]').waitFor();
  assert.equal(await backupWarnings.count(), 0);
});

// Pins the layout: the 1280×800 screenshot, then a phone-width screen with
// one column and no sideways scrolling; no request left this controller.
test('screenshots; phone width has no sideways scroll; no foreign requests', async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const details = page.locator(`#incidents details[data-subject="vm/${KILLED}"]`).first();
  if (!(await details.evaluate((d) => d.open))) await details.locator('summary').click();
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png') });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `page is ${width}px wide at 390px`);
  const columns = await page.evaluate(() => getComputedStyle(document.querySelector('.layout')).gridTemplateColumns.split(' ').length);
  assert.equal(columns, 1);
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  assert.deepEqual(foreignRequests, []);
  // The browser itself logs refused requests (the wrong token, the broken
  // policy) and the stream cut by the restart; anything else is the page's fault.
  assert.deepEqual(pageErrors.filter((e) => !/^Failed to load resource: /.test(e)), []);
});
