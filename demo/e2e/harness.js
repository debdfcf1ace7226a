// The real stack for the browser tests and the benchmark: a throwaway
// PostgreSQL with the demo's schema and track_commit_timestamp on (so a test
// can read when each write committed), shapesyncd verifying HS256 tokens
// (tests/e2e/lib/procs.js), the built demo behind its server
// (server/serve.js: static files, tokens, /v1 proxied to shapesyncd), and
// Debian's Chromium driven by playwright-core. Everything is stopped by close().
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { ROOT, SIDECAR_ROLE } from '../../tests/e2e/lib/stack.js';
import { startCluster, startSidecar, workDir, cleanupAll } from '../../tests/e2e/lib/procs.js';
import { startDemoServer, DIST } from '../server/serve.js';

export const DEMO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
/** Screenshots and other artifacts (gitignored). */
export const OUT = process.env.SHAPESYNC_DEMO_OUT || join(DEMO, 'out');

export async function startDemo({ sidecarArgs = [] } = {}) {
  if (!existsSync(join(DIST, 'index.html'))) throw new Error(`${DIST} not built: npm run build -w demo`);
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: apt-get install chromium (scripts/install-deps.sh)`);
  mkdirSync(OUT, { recursive: true });
  const jwtSecret = randomBytes(32).toString('hex');
  const schema = readFileSync(join(ROOT, 'demo', 'db', 'schema.sql'), 'utf8');
  const work = workDir();
  let cluster, sidecar, server, browser;
  const stop = async () => {
    await browser?.close().catch(() => {});
    await server?.close();
    await sidecar?.stop();
    await cluster?.destroy();
    cleanupAll();
  };
  try {
    cluster = await startCluster({ work, setupSql: 'ALTER SYSTEM SET track_commit_timestamp = on;' });
    await cluster.stop();
    await cluster.start();
    await cluster.psql(`CREATE ROLE ${SIDECAR_ROLE} LOGIN; SELECT shapesync.grant_sidecar('${SIDECAR_ROLE}');
      ${schema}
      GRANT authenticated TO ${SIDECAR_ROLE};`);
    const u = new URL(cluster.dbUrl);
    u.username = SIDECAR_ROLE;
    sidecar = await startSidecar({ dbUrl: u.toString(), work, insecure: false, args: ['--jwt-secret', jwtSecret, ...sidecarArgs] });
    server = await startDemoServer({ sidecarUrl: sidecar.baseUrl, jwtSecret });
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  } catch (e) {
    await stop();
    throw e;
  }
  const contexts = [];

  /** A browser context for `user` with the demo open on `list`; every response body is kept. */
  async function openUser(user, { list = 'shared' } = {}) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
    contexts.push(context);
    const page = await context.newPage();
    const responses = [];
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('response', async (r) => {
      const entry = { url: r.url(), status: r.status(), body: '' };
      responses.push(entry);
      try {
        entry.body = await r.text();
      } catch { /* a live request cut short, a redirect */ }
    });
    await page.goto(`${server.url}/?user=${user}&list=${list}&instrument=1`);
    await waitForState(page, 'up-to-date');
    return { context, page, responses, errors, user };
  }

  return {
    cluster,
    sidecar,
    server,
    browser,
    openUser,
    psql: cluster.psql,
    /** When the last write of a todo committed (ms since the epoch, from track_commit_timestamp). */
    async commitTime(id) {
      const us = await cluster.psql(`SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint FROM todos WHERE id = '${id}'`);
      return Number(us) / 1000;
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => {});
      await stop();
    },
  };
}

/** Wait until the status badge says `state`. */
export function waitForState(page, state, timeout = 20_000) {
  return page.waitForSelector(`[data-testid="status"][data-state="${state}"]`, { timeout });
}

/** The todos the page shows: [{ id, title, done }] in display order. */
export function shownTodos(page) {
  return page.$$eval('[data-testid="todo"]', (lis) => lis.map((li) => ({ id: li.dataset.id, title: li.dataset.title, done: li.dataset.done === 'true' })));
}

/** The page's recorded events (instrument.ts). */
export function events(page) {
  return page.evaluate(() => window.__demo?.events ?? []);
}

/** A percentile of sorted numbers (nearest rank). */
export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
