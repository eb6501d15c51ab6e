// The dashboard in a real browser (Debian's headless Chromium through playwright-core),
// against a running gateway with 3 demo-app instances. Run by tests/dashboard.rs,
// which passes: HG_ADMIN (http://127.0.0.1:PORT), HG_PROXY, HG_TOKEN, HG_CODE (a fresh
// one-time login code), HG_ARTIFACTS (where the screenshots go).
// Exit 0 when every step held and the pages logged no console error and no page error.
import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const { HG_ADMIN, HG_PROXY, HG_TOKEN, HG_CODE, HG_ARTIFACTS } = process.env;
for (const [k, v] of Object.entries({ HG_ADMIN, HG_PROXY, HG_TOKEN, HG_CODE, HG_ARTIFACTS })) {
  if (!v) { console.error(`test.mjs: ${k} is not set`); process.exit(2); }
}
const WAIT = 20_000;
const step = (s) => console.log(`step: ${s}`);
const problems = [];

const profile = mkdtempSync(join(tmpdir(), 'healgate-chromium-'));
let ctx;
// A bound on the whole run, whatever hangs.
const overall = setTimeout(async () => {
  console.error('test.mjs: gave up after 100 s');
  try { await ctx?.close(); } catch { /* closing anyway */ }
  rmSync(profile, { recursive: true, force: true });
  process.exit(3);
}, 100_000);

function watch(page, name) {
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`${name}: console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
}

async function cell(page, id, col) {
  return page.locator(`#instances tr[data-instance="${id}"] td[data-col="${col}"]`).innerText();
}

async function readyRows(page) {
  await page.waitForFunction(
    () => document.querySelectorAll('#instances tr[data-state="ready"]').length === 3,
    null, { timeout: WAIT });
  return page.evaluate(() => Object.fromEntries(
    [...document.querySelectorAll('#instances tr[data-instance]')].map((tr) => [
      tr.dataset.instance, tr.querySelector('td[data-col="pid"]').textContent])));
}

async function main() {
  mkdirSync(HG_ARTIFACTS, { recursive: true });
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1000 },
    colorScheme: 'light',
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  watch(page, 'desktop');

  step('open the one-time link');
  await page.goto(`${HG_ADMIN}/#login=${HG_CODE}`);
  await page.locator('#main').waitFor({ state: 'visible', timeout: WAIT });
  const after = await page.evaluate(() => ({ hash: location.hash, href: location.href, token: sessionStorage.getItem('healgate.token') }));
  if (after.hash !== '') throw new Error(`the login fragment is still in the address: ${after.href}`);
  if (after.token !== HG_TOKEN) throw new Error('the token from the login code is not the admin token');
  const again = await fetch(`${HG_ADMIN}/api/v1/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ code: HG_CODE }),
  });
  if (again.status !== 401) throw new Error(`a used code was accepted again: ${again.status}`);

  step('three ready instances');
  const pids = await readyRows(page);
  console.log(`  pids: ${JSON.stringify(pids)}`);
  await page.locator('#tiles .tile[data-app="demo"]').waitFor({ timeout: WAIT });

  step('crash an instance through the gateway');
  await page.evaluate(() => {
    window.__states = {};
    new MutationObserver(() => {
      for (const tr of document.querySelectorAll('#instances tr[data-instance]')) {
        const seen = (window.__states[tr.dataset.instance] ||= []);
        if (seen[seen.length - 1] !== tr.dataset.state) seen.push(tr.dataset.state);
      }
    }).observe(document.querySelector('#instances tbody'), { subtree: true, attributes: true, attributeFilter: ['data-state'] });
  });
  const crash = await fetch(`${HG_PROXY}/crash`);
  console.log(`  /crash answered ${crash.status}`);
  const exited = page.locator('#events li[data-kind="instance_exited"]').first();
  await exited.waitFor({ timeout: WAIT });
  const crashed = await exited.getAttribute('data-instance');
  console.log(`  event feed: ${await exited.innerText()}`);
  if (!(crashed in pids)) throw new Error(`the exit names an unknown instance ${crashed}`);
  await page.waitForFunction(({ id, old }) => {
    const tr = document.querySelector(`#instances tr[data-instance="${id}"]`);
    const c = (k) => tr.querySelector(`td[data-col="${k}"]`).textContent;
    return tr && c('pid') !== old && c('restarts') === '1' && /crash requested/.test(c('exit'));
  }, { id: crashed, old: pids[crashed] }, { timeout: WAIT });
  console.log(`  ${crashed}: pid ${pids[crashed]} -> ${await cell(page, crashed, 'pid')}, states seen ${JSON.stringify(await page.evaluate((id) => window.__states[id] || [], crashed))}, last exit "${await cell(page, crashed, 'exit')}"`);

  step('recycle an instance from its button');
  const target = Object.keys(pids).find((id) => id !== crashed);
  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await page.locator(`#instances tr[data-instance="${target}"] button.recycle`).click();
  await page.waitForFunction(({ id, old }) => {
    const td = document.querySelector(`#instances tr[data-instance="${id}"] td[data-col="pid"]`);
    return td && td.textContent !== old && td.textContent !== '–';
  }, { id: target, old: pids[target] }, { timeout: WAIT });
  if (!asked.includes(target)) throw new Error(`the recycle was not confirmed first (dialog: ${JSON.stringify(asked)})`);
  await page.locator(`#events li[data-kind="instance_recycled"][data-instance="${target}"]`).first().waitFor({ timeout: WAIT });
  console.log(`  ${target}: pid ${pids[target]} -> ${await cell(page, target, 'pid')} (confirm said: ${JSON.stringify(asked.split('\n')[0])})`);
  await readyRows(page);

  step('diagnose now: a report in the list, opened with the token');
  await page.locator('#diagnose').click();
  const bundle = page.locator('#diagnostics li[data-bundle] button', { hasText: 'open report' }).first();
  await bundle.waitFor({ timeout: 60_000 });
  const [tab] = await Promise.all([page.context().waitForEvent('page', { timeout: WAIT }), bundle.click()]);
  await tab.waitForLoadState();
  const shown = (await tab.locator('#headline').innerText()).trim();
  if (!shown) throw new Error('the report opened from the dashboard shows no headline');
  console.log(`  report: ${shown.slice(0, 120)}`);
  await tab.close();

  step('the gateway and every instance process tree');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#procs tbody tr')].map((tr) => tr.firstChild.textContent);
    return rows.includes('gateway') && ['demo#1', 'demo#2', 'demo#3'].every((id) => rows.includes(id));
  }, null, { timeout: WAIT });
  const envText = await page.locator('#env').innerText();
  if (!/max connections/.test(envText)) throw new Error(`no gateway facts: ${envText}`);

  step('screenshots');
  await page.waitForTimeout(2500); // one more poll: rates and states settle
  await page.screenshot({ path: join(HG_ARTIFACTS, 'dashboard.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: join(HG_ARTIFACTS, 'dashboard-dark.png'), fullPage: true });

  step('phone width, logging in with the token form');
  const phone = await ctx.newPage();
  watch(phone, 'phone');
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(`${HG_ADMIN}/`);
  await phone.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
  await phone.fill('#token', HG_TOKEN);
  await phone.click('#login-form button[type="submit"]');
  await readyRows(phone);
  await phone.waitForTimeout(2500);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) problems.push(`phone: the page is ${overflow}px wider than the screen`);
  await phone.screenshot({ path: join(HG_ARTIFACTS, 'dashboard-phone.png'), fullPage: true });
  await phone.close();

  step('charts, incidents, health and the log tail, from fakes in the shape of the API contract');
  const fake = await ctx.newPage();
  watch(fake, 'contract');
  await contractFakes(fake);
  await fake.goto(`${HG_ADMIN}/`);
  await fake.fill('#token', HG_TOKEN);
  await fake.click('#login-form button[type="submit"]');
  await fake.locator('.chart .uplot').nth(3).waitFor({ timeout: WAIT });
  await fake.locator('#marks li').first().waitFor({ timeout: WAIT });
  await fake.locator('#incidents li[data-incident]').first().waitFor({ timeout: WAIT });
  await fake.waitForFunction(() => /crash requested/.test(document.querySelector('#logs').textContent), null, { timeout: WAIT });
  await fake.waitForFunction(() => /status 500/.test(document.querySelector('#instances td[data-col="health"]').textContent), null, { timeout: WAIT });
  const tile = fake.locator('#tiles .tile[data-app="demo"]');
  await fake.waitForFunction((t) => /p95 \d/.test(t.textContent) && /outage <b>/.test(t.textContent), await tile.elementHandle(), { timeout: WAIT })
    .catch(async () => problems.push(`contract: the tile shows no p95 or no open incident: ${await tile.innerText()}`));
  const logs = await fake.locator('#logs').innerText();
  if (!logs.includes('<script>alert(1)</script>')) problems.push(`contract: app output is not shown as text: ${logs}`);
  await fake.locator('#instances tr[data-instance] button.more').first().click();
  await fake.screenshot({ path: join(HG_ARTIFACTS, 'dashboard-charts.png'), fullPage: true });
}

// Routes the lead builds (history, incidents, logs; health and rotation in status),
// answered here with data in the contract's shape; the page is told they exist.
async function contractFakes(page) {
  const now = Math.floor(Date.now() / 1000);
  const t = Array.from({ length: 900 }, (_, i) => now - 899 + i);
  const wave = (base, amp, k) => t.map((_, i) => Math.max(0, Math.round(base + amp * Math.sin(i / k))));
  const history = {
    app: 'demo', instance: null, res: '1s', step_s: 1, t,
    requests: wave(40, 15, 40),
    errors: { connection_refused: t.map((_, i) => (i > 600 && i < 606 ? 3 : 0)), app_5xx: wave(1, 1, 9) },
    p50_ms: wave(12, 3, 30), p95_ms: wave(45, 10, 30), p99_ms: t.map((_, i) => (i % 97 === 0 ? null : 90 + (i % 13))),
    inflight: wave(2, 1, 20), queue: t.map(() => 0), memory_bytes: wave(64e6, 4e6, 80), cpu_pct: wave(6, 3, 25),
    restarts: t.map((_, i) => (i === 600 ? 1 : 0)),
    instances: Object.fromEntries(['demo#1', 'demo#2', 'demo#3'].map((id, n) => [id, { memory_bytes: wave(20e6 + n * 2e6, 1e6, 60 + n), cpu_pct: wave(2 + n, 1, 20 + n) }])),
    marks: [
      { t: now - 299, kind: 'restart', instance: 'demo#2', text: 'exited with code 1: RuntimeError: crash requested' },
      { t: now - 120, kind: 'recycle', instance: 'demo#1', text: 'from the dashboard' },
      { t: now - 60, kind: 'scale', instance: null, text: '3 → 3' },
    ],
  };
  const opened = new Date((now - 300) * 1000).toISOString();
  const incidents = { incidents: [{
    id: 1, app: 'demo', cause: 'error_rate', title: 'demo: 502 outage <b>not markup</b>', started: opened, ended: null, requests_affected: 17,
    timeline: [{ ts: opened, kind: 'incident_opened', app: 'demo', instance: 'demo#2', reason: 'error rate 12 % over 10 s' }],
  }] };
  const sse = ['starting <script>alert(1)</script>', 'Traceback (most recent call last):', 'RuntimeError: crash requested via /crash']
    .map((text, n) => `data: ${JSON.stringify({ ts: opened, app: 'demo', instance: 'demo#2', stream: n ? 'stderr' : 'stdout', text })}\n\n`).join('');
  await page.route(/\/$/, async (route) => {
    const resp = await route.fetch();
    const html = (await resp.text()).replace(/name="healgate-api" content="[^"]*"/, 'name="healgate-api" content="history incidents logs"');
    await route.fulfill({ response: resp, body: html });
  });
  await page.route(/\/api\/v1\/status$/, async (route) => {
    const resp = await route.fetch();
    const st = await resp.json();
    st.incidents_open = 1;
    for (const i of st.apps[0].instances) {
      i.health = [{ ts: opened, ok: true }, { ts: opened, ok: false, reason: 'refused' }, { ts: opened, ok: false, reason: 'status 500' }];
      i.rotation = [{ ts: opened, in: false, why: '2 failed health checks' }, { ts: opened, in: true, why: 'healthy again' }];
    }
    await route.fulfill({ response: resp, json: st });
  });
  await page.route(/\/api\/v1\/history\?/, (route) => route.fulfill({ json: history }));
  await page.route(/\/api\/v1\/incidents$/, (route) => route.fulfill({ json: incidents }));
  await page.route(/\/api\/v1\/logs\?/, (route) => route.fulfill({ contentType: 'text/event-stream', body: sse }));
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
}
for (const p of problems) console.error(`FAILED: ${p}`);
try { await ctx?.close(); } catch { /* closing anyway */ }
rmSync(profile, { recursive: true, force: true });
clearTimeout(overall);
console.log(failed || problems.length ? 'dashboard test: FAILED' : 'dashboard test: ok');
process.exit(failed || problems.length ? 1 : 0);
