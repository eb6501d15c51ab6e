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
