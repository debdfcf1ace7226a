// The dashboard (GET /dashboard) in headless Chromium (Debian's chromium driven by
// playwright-core) against real sidecars on a real database: it renders, a
// burst of writes changes its numbers and charts within two seconds, a
// stopped sidecar shows up as a problem (another sidecar's check() row, then
// the page's own sidecar unreachable). Screenshots are saved under
// tests/e2e/out/ (or $SHAPESYNC_E2E_OUT) and checked to be non-blank.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { ROOT, SIDECAR_ROLE, waitFor } from '../lib/stack.js';
import { startCluster, startSidecar, workDir, cleanupAll } from '../lib/procs.js';
import { rawShape, readSse } from '../lib/shape-helpers.js';
import { decodePng, colourStats } from '../lib/png.js';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const OUT = process.env.SHAPESYNC_E2E_OUT || join(ROOT, 'tests', 'e2e', 'out');
const TOKEN = 'dashboard-token-e2e';
let cluster, a, b, browser, page, sse;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: apt-get install chromium (scripts/install-deps.sh)`);
  const work = workDir();
  cluster = await startCluster({
    work,
    setupSql: `
      CREATE TABLE items (id int PRIMARY KEY, title text);
      INSERT INTO items VALUES (1, 'one');
      SELECT shapesync.track('items');
      CREATE ROLE ${SIDECAR_ROLE} LOGIN;
      SELECT shapesync.grant_sidecar('${SIDECAR_ROLE}');
      ALTER SYSTEM SET shapesync.alert_consumer_stale = '3s';
      SELECT pg_reload_conf();
    `,
  });
  const u = new URL(cluster.dbUrl);
  u.username = SIDECAR_ROLE;
  const common = { dbUrl: u.toString(), work, longPollTimeoutMs: 5000 };
  // a: serves the page (token on); b: another sidecar on the same database
  a = await startSidecar({ ...common, name: 'a', args: ['--metrics-token', TOKEN, '--report-interval', '1000'] });
  b = await startSidecar({ ...common, name: 'b', args: ['--report-interval', '1000'] });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  mkdirSync(OUT, { recursive: true });
});

after(async () => {
  sse?.ctrl.abort();
  await browser?.close().catch(() => {});
  await a?.stop();
  await b?.stop();
  await cluster?.destroy();
  cleanupAll();
});

const legends = () => page.$$eval('#charts section', (ss) =>
  Object.fromEntries(ss.map((s) => [s.querySelector('h2').firstChild.textContent, s.querySelector('h2 span').textContent])));
const canvases = () => page.$$eval('#charts canvas', (cs) => cs.map((c) => c.toDataURL()));
const problems = () => page.$$eval('#problems li', (lis) => lis.map((li) => ({ cls: li.className, text: li.textContent })));
// the first number in a legend ("changes/s 42" → 42; "—" → null)
const num = (s) => {
  const m = /(-?[\d.,]+)/.exec(s ?? '');
  return m ? Number(m[1].replace(/,/g, '')) : null;
};

async function screenshot(t, name) {
  const path = join(OUT, `dashboard-${name}-${process.pid}.png`);
  await page.screenshot({ path, fullPage: true });
  const img = decodePng(readFileSync(path));
  const stats = colourStats(img);
  t.diagnostic(`screenshot ${path}: ${img.width}x${img.height}, ${stats.distinct} colours, ` +
    `dominant ${(stats.dominantShare * 100).toFixed(1)}%`);
  console.log(`dashboard screenshot: ${path}`);
  assert.ok(img.width >= 800 && img.height >= 600, 'a full page');
  assert.ok(stats.distinct >= 16, `not blank: ${stats.distinct} distinct colours`);
  assert.ok(stats.dominantShare < 0.97, `not a single colour: ${stats.dominantShare}`);
  return path;
}

test('the page renders against the real sidecar: status, problems, shapes and both consumers', async (t) => {
  // a shape with a live SSE client on sidecar a, so there are deliveries to chart
  const p = await rawShape({ shapeUrl: a.shapeUrl }, 'table=items');
  const ctrl = new AbortController();
  const res = await fetch(`${a.shapeUrl}?table=items&handle=${encodeURIComponent(p.handle)}&offset=${p.offset}` +
    '&live=true&live_sse=true', { signal: ctrl.signal });
  assert.equal(res.status, 200);
  sse = { ctrl, done: readSse(res, { timeoutMs: 120_000 }).catch(() => {}) };

  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${a.baseUrl}/dashboard?token=${TOKEN}`);
  await page.waitForFunction(() => /^updated/.test(document.getElementById('status').textContent), null, { timeout: 10_000 });
  // both sidecars, with their live reports (address, version)
  await page.waitForFunction((ports) => {
    const rows = [...document.querySelectorAll('#consumers tbody tr')].map((tr) => tr.textContent);
    return rows.length === 2 && ports.every((p) => rows.some((r) => r.includes(`127.0.0.1:${p}0.2.0`)));
  }, [a.port, b.port], { timeout: 10_000 });
  await page.waitForFunction(() => [...document.querySelectorAll('#shapes tbody td')].some((td) => td.textContent === 'public.items'),
    null, { timeout: 10_000 });
  const probs = await problems();
  assert.ok(probs.length >= 1 && !probs.some((x) => /sidecar_unreachable/.test(x.text)), JSON.stringify(probs));
  const l = await legends();
  assert.deepEqual(Object.keys(l), ['Lag', 'Changes / s', 'Deliveries / s', 'Live clients', 'Commit-to-send latency']);
  assert.ok(Number(/sse (\d+)/.exec(l['Live clients'])?.[1]) >= 1, `live clients legend: ${l['Live clients']}`);
  assert.deepEqual(errors, [], 'no script error');
});

test('a burst of writes changes the numbers and the charts within two seconds', async (t) => {
  // quiet first: the changes and deliveries rates read 0
  await waitFor(async () => {
    const l = await legends();
    return num(l['Changes / s']) === 0 && num(l['Deliveries / s']) === 0;
  }, { timeoutMs: 15_000, what: 'quiet rates on the page' });
  const before = await canvases();
  const inserts = Array.from({ length: 40 }, (_, i) => `INSERT INTO items VALUES (${1000 + i}, 'burst ${i}');`).join('\n');
  await cluster.psql(inserts);
  const t0 = Date.now();
  let seen;
  await waitFor(async () => {
    const l = await legends();
    const c = await canvases();
    if (num(l['Changes / s']) > 0 && num(l['Deliveries / s']) > 0 && c[1] !== before[1] && c[2] !== before[2]) {
      seen = { l, at: Date.now() - t0 };
      return true;
    }
    return false;
  }, { timeoutMs: 5_000, intervalMs: 50, what: 'the burst on the page' });
  t.diagnostic(`burst visible after ${seen.at} ms: ${JSON.stringify(seen.l)}`);
  assert.ok(seen.at <= 2000, `the page showed the burst after ${seen.at} ms`);
  // the latency chart has a p50 from the histogram's buckets
  await waitFor(async () => num((await legends())['Commit-to-send latency']) > 0,
    { timeoutMs: 3_000, what: 'a commit-to-send latency on the page' });
  await screenshot(t, 'burst');
});

test('a stopped sidecar shows up as a problem: another one in check(), the page\'s own as unreachable', async (t) => {
  b.kill('SIGKILL');
  await b.exited;
  await page.waitForFunction((port) => [...document.querySelectorAll('#problems li')]
    .some((li) => li.textContent.includes('consumer_stale') && li.textContent.includes(`:${port}`)),
  b.port, { timeout: 20_000 });
  a.kill('SIGKILL');
  await a.exited;
  await page.waitForFunction(() => [...document.querySelectorAll('#problems li.critical')]
    .some((li) => li.textContent.includes('sidecar_unreachable')), null, { timeout: 5_000 });
  assert.match(await page.textContent('#status'), /^update failed/);
  await screenshot(t, 'stopped');
});
