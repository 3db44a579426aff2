// The dashboard at 1,000 hosts (issue #16), in a real browser, against the
// cluster tests/web/run_scale.sh started (bench/scale --serve: one real
// controller, 1,000 agents over HTTP). Environment: TW_URL, TW_HOSTS,
// TW_ARTIFACTS, TW_CHROMIUM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';

const URL_BASE = process.env.TW_URL;
const HOSTS = Number(process.env.TW_HOSTS || 1000);
const ARTIFACTS = process.env.TW_ARTIFACTS;

let browser;
let page;
const pageErrors = [];

async function api(p) {
  const r = await fetch(URL_BASE + p, { cache: 'no-store' });
  assert.equal(r.status, 200, `GET ${p}`);
  return r.json();
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.TW_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  await page.goto(URL_BASE + '/');
});

after(async () => {
  await browser?.close();
});

// Pins: the summary comes first and counts every host and VM; the hosts are
// grouped by state (online collapsed, as tiles), not a card per host: every
// host is in exactly one group.
test('summary first, hosts grouped', async () => {
  await page.locator('#overview .headline').waitFor();
  await page.waitForFunction((n) => document.querySelector('#overview .stats')?.textContent.includes(`/${n} hosts`),
    HOSTS, { timeout: 60000 });
  const stats = await page.locator('#overview .stats').textContent();
  assert.match(stats, new RegExp(`\\d+/${HOSTS}\\s*hosts online`));
  assert.match(stats, new RegExp(`${HOSTS * 2}/${HOSTS * 2}\\s*VMs running`));
  const online = page.locator('#hosts details.host-group[data-group="online"]');
  await online.waitFor({ state: 'attached' });
  assert.equal(await online.evaluate((d) => d.open), false, 'the online group starts collapsed');
  const counted = await page.evaluate(() => {
    let sum = 0;
    const seen = new Set();
    for (const g of document.querySelectorAll('#hosts details.host-group')) {
      sum += Number(g.querySelector('summary').textContent.match(/\((\d+)\)/)[1]);
      for (const x of g.querySelectorAll('[data-host]')) seen.add(x.dataset.host);
    }
    return { sum, seen: seen.size };
  });
  assert.equal(counted.sum, HOSTS, 'the groups hold every host once');
  assert.equal(counted.seen, HOSTS, 'a tile or a card per host');
  assert.ok((await page.locator('#hosts article.host').count()) <= 60 * 4, 'cards only for groups that need a person');
});

// Pins: the filter box finds one VM among 2,000: its host's card shows, with
// the VM marked; then the screenshot.
test('the filter finds one VM', async () => {
  const all = await api('/api/v1/vms?limit=5000');
  const target = all.vms[Math.floor(all.vms.length / 2)];
  assert.ok(target.host, 'the VM is placed');
  await page.locator('#host-filter').fill(target.name);
  const card = page.locator(`#hosts article.host[data-host="${target.host}"]`);
  await card.waitFor({ timeout: 10000 });
  const li = card.locator(`li[data-vm="${target.name}"]`);
  assert.equal(await li.count(), 1);
  assert.match(await li.getAttribute('class'), /\bmatch\b/);
  assert.match(await page.locator('#hosts-status').textContent(), /1 host and 1 VM match/);
  assert.ok((await page.locator('#hosts article.host').count()) <= 60, 'at most 60 cards');
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-1000.png'), fullPage: false });

  // Cleared: back to the groups.
  await page.locator('#host-filter').fill('');
  await page.locator('#hosts details.host-group[data-group="online"]').waitFor();
  assert.deepEqual(pageErrors, []);
});

// Pins: a tile opens its host (the filter shows it).
test('a tile shows its host', async () => {
  const online = page.locator('#hosts details.host-group[data-group="online"]');
  await online.locator('summary').click();
  const tile = online.locator('button.tile').nth(7);
  const host = await tile.getAttribute('data-host');
  await tile.click();
  await page.locator(`#hosts article.host[data-host="${host}"]`).waitFor({ timeout: 10000 });
  assert.equal(await page.locator('#host-filter').inputValue(), host);
  assert.deepEqual(pageErrors, []);
});
