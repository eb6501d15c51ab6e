// A diagnose report (report.html, opened from disk) in headless Chromium through
// playwright-core. Run by tests/diagnose.rs, which passes HG_REPORT (the file),
// HG_HEADLINE (what report.json says) and HG_SCREENSHOT (where the PNG goes).
// Exit 0 when the page shows the headline and its timeline chart, logged no console
// error and no page error, and asked for nothing over the network.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const { HG_REPORT, HG_HEADLINE, HG_SCREENSHOT } = process.env;
for (const [k, v] of Object.entries({ HG_REPORT, HG_HEADLINE, HG_SCREENSHOT })) {
  if (!v) { console.error(`report.mjs: ${k} is not set`); process.exit(2); }
}
const problems = [];
const profile = mkdtempSync(join(tmpdir(), 'healgate-report-'));
let ctx;
const overall = setTimeout(async () => {
  console.error('report.mjs: gave up after 60 s');
  try { await ctx?.close(); } catch { /* closing anyway */ }
  rmSync(profile, { recursive: true, force: true });
  process.exit(3);
}, 60_000);

try {
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = await ctx.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) problems.push(`network request: ${r.url()}`);
  });
  const url = pathToFileURL(HG_REPORT).href;
  await page.goto(url, { waitUntil: 'load' });
  const headline = (await page.locator('#headline').innerText()).trim();
  if (headline !== HG_HEADLINE.trim()) problems.push(`headline ${JSON.stringify(headline)} is not ${JSON.stringify(HG_HEADLINE)}`);
  console.log(`headline: ${headline}`);
  await page.locator('#charts canvas').first().waitFor({ timeout: 10_000 });
  const findings = await page.locator('section.finding').count();
  if (findings < 1) problems.push('no finding shown');
  console.log(`findings shown: ${findings}`);
  await page.screenshot({ path: HG_SCREENSHOT, fullPage: false });
  console.log(`screenshot: ${HG_SCREENSHOT}`);
  // The raw evidence is one click away.
  await page.locator('details > summary', { hasText: 'access.jsonl' }).first().click();
  const raw = await page.locator('details[open] pre').first().innerText();
  if (!raw.includes('request_id')) problems.push('the access log slice did not open');
} catch (e) {
  problems.push(`failed: ${e.message}`);
} finally {
  try { await ctx?.close(); } catch { /* closing anyway */ }
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(overall);
}
if (problems.length) {
  for (const p of problems) console.error(p);
  process.exit(1);
}
