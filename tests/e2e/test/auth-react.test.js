// @electric-sql/react's useShape with a bearer token, in headless Chromium
// (Debian's chromium driven by playwright-core), against shapesyncd with an
// HS256 secret and the table's `owner_id = auth.uid()` row-level security
// policy (docs/auth.md, issue 11). A small React app (react-dom, bundled here
// with esbuild from the installed packages) renders a user's todos with
// useShape; it fetches its token from the test's own "backend" (GET /token),
// as an app would. The first token expires while the shape is live: the
// sidecar answers 401, the client's onError fetches a fresh token and returns
// it as headers, and the stream resumes from its offset. Two users' pages run
// side by side in one browser context (one HTTP cache, the same first URL):
// each ends with exactly its own rows, and no committed render of either ever
// held another user's row.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { ROOT, startStack, freePort, waitFor } from '../lib/stack.js';
import { FAST_BACKOFF } from '../lib/procs.js';
import { signHS256, now } from '../lib/jwt.js';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SECRET = 'e2e-react-secret-at-least-32-bytes-long!';
const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';
const FIRST_TOKEN_S = 2;  // the first token of each user lives this long (leeway 1 s): it expires while live

const SETUP = String.raw`
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('request.jwt.claims', true)::json->>'sub', '')::uuid $$;
CREATE ROLE authenticated NOLOGIN;
GRANT USAGE ON SCHEMA auth TO authenticated;
GRANT EXECUTE ON FUNCTION auth.uid() TO authenticated;
GRANT authenticated TO shapesync_sidecar;
CREATE TABLE todos (id int PRIMARY KEY, owner_id uuid NOT NULL, title text);
ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_todos ON todos FOR SELECT TO authenticated USING (owner_id = auth.uid());
GRANT SELECT ON todos TO authenticated;
SELECT shapesync.track('todos');
INSERT INTO todos VALUES (1, '${A}', 'a one'), (2, '${A}', 'a two'), (3, '${B}', 'b three'), (4, '${B}', 'b four');
`;

// The browser app: useShape with a token from GET /token, refreshed in onError on a 401.
const APP = String.raw`
import React from 'react';
import { createRoot } from 'react-dom/client';
import { useShape } from '@electric-sql/react';

const q = new URLSearchParams(location.search);
const sub = q.get('sub');
const log = (window.__app = { renders: [], errors: [], tokens: 0, handles: [] });
let token = null;
async function fetchToken() {
  const r = await fetch('/token?sub=' + encodeURIComponent(sub));
  if (!r.ok) throw new Error('token endpoint: ' + r.status);
  log.tokens++;
  token = await r.text();
  return token;
}

function Todos() {
  const { data, isLoading, stream } = useShape({
    url: q.get('shapeUrl'),
    params: { table: 'todos' },
    headers: { Authorization: async () => 'Bearer ' + (token ?? (await fetchToken())) },
    backoffOptions: ${JSON.stringify(FAST_BACKOFF)},
    onError: async (e) => {
      log.errors.push(e.status ?? String(e));
      if (e.status === 401) return { headers: { Authorization: 'Bearer ' + (await fetchToken()) } };
      return undefined;
    },
  });
  React.useEffect(() => {
    log.renders.push(data.map((r) => ({ id: r.id, owner_id: r.owner_id })));
    if (stream.shapeHandle && log.handles[log.handles.length - 1] !== stream.shapeHandle) log.handles.push(stream.shapeHandle);
  }, [data, stream]);
  if (isLoading) return React.createElement('p', { id: 'loading' }, 'loading');
  return React.createElement('ul', { id: 'todos' },
    [...data].sort((x, y) => x.id - y.id).map((r) =>
      React.createElement('li', { key: r.id, 'data-id': r.id, 'data-owner': r.owner_id }, r.title)));
}

createRoot(document.getElementById('root')).render(React.createElement(Todos));
`;

let stack, server, browser, context, bundle;
let appUrl;
const issued = new Map();  // sub -> tokens issued by GET /token

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: apt-get install chromium (scripts/install-deps.sh)`);
  const built = await build({
    stdin: { contents: APP, resolveDir: join(ROOT, 'tests', 'e2e'), loader: 'js' },
    bundle: true, format: 'iife', platform: 'browser', write: false, logLevel: 'silent',
    define: { 'process.env.NODE_ENV': '"development"' },
  });
  bundle = built.outputFiles[0].text;
  stack = await startStack({
    setupSql: SETUP,
    insecure: false,
    longPollTimeoutMs: 1500,
    sidecarArgs: ['--jwt-secret', SECRET, '--jwt-leeway', '1'],
  });
  // The app's origin (another port than the sidecar's: CORS with Authorization, as in production)
  server = createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><meta charset="utf-8"><div id="root"></div><script src="/app.js"></script>');
    } else if (u.pathname === '/app.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(bundle);
    } else if (u.pathname === '/token') {
      // what an app's backend does once it knows who the user is
      const sub = u.searchParams.get('sub');
      const n = (issued.get(sub) ?? 0) + 1;
      issued.set(sub, n);
      const exp = now() + (n === 1 ? FIRST_TOKEN_S : 3600);
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end(signHS256({ sub, role: 'authenticated', exp }, SECRET));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  appUrl = `http://127.0.0.1:${port}/`;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  context = await browser.newContext();
});

after(async () => {
  await context?.close().catch(() => {});
  await browser?.close().catch(() => {});
  if (server) {
    server.closeAllConnections?.();
    await new Promise((r) => server.close(r));
  }
  await stack?.stop();
});

/** What PostgreSQL returns to `sub` as the token's role with its claims. */
async function rowsAs(sub) {
  const claims = JSON.stringify({ sub, role: 'authenticated' });
  const out = await stack.psql(`BEGIN; SET LOCAL ROLE authenticated;
    SELECT set_config('request.jwt.claims', '${claims}', true) IS NULL;
    SELECT coalesce(json_agg(json_build_object('id', id, 'owner_id', owner_id) ORDER BY id), '[]') FROM todos; COMMIT;`);
  return JSON.parse(out.split('\n').filter((l) => l.startsWith('[')).pop());
}
const shown = (page) => page.$$eval('#todos li', (lis) => lis.map((li) => ({ id: Number(li.dataset.id), owner_id: li.dataset.owner })));
const appLog = (page) => page.evaluate(() => window.__app);

async function openAs(sub) {
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  await page.goto(`${appUrl}?sub=${sub}&shapeUrl=${encodeURIComponent(stack.shapeUrl)}`);
  return { page, problems };
}

async function assertShowsOwnRows(p, sub, what) {
  let last;
  try {
    await waitFor(async () => {
      last = { page: await shown(p.page), db: await rowsAs(sub) };
      return last.db.length > 0 && isDeepStrictEqual(last.page, last.db);
    }, { timeoutMs: 15_000, intervalMs: 100, what });
  } catch (e) {
    const log = await appLog(p.page).catch(() => null);
    assert.deepEqual(last?.page, last?.db, `${what}: ${e.message}; app: ${JSON.stringify(log?.errors)}; page errors: ` +
      `${p.problems.join('; ')}\n${stack.sidecarLog()}`);
  }
}

test('useShape with a token: each user sees exactly their rows; an expired token is refreshed through onError', async () => {
  const a = await openAs(A);
  const b = await openAs(B);
  await assertShowsOwnRows(a, A, "A's snapshot");
  await assertShowsOwnRows(b, B, "B's snapshot");
  const handleA = (await appLog(a.page)).handles[0];
  assert.ok(handleA, 'A has a shape handle');

  // Both first tokens expire while the pages wait on live requests: the next
  // live request of each is answered 401, and onError brings a fresh token.
  await waitFor(async () => (await appLog(a.page)).errors.includes(401) && (await appLog(b.page)).errors.includes(401),
    { timeoutMs: 15_000, intervalMs: 200, what: 'a 401 in both pages (the first tokens expired)' });

  // Changes after the refresh: inserts for both, a move-in (B's row given to
  // A), a move-out (A's row given to B), an update of A's row.
  await stack.psql(`INSERT INTO todos VALUES (10, '${A}', 'a ten'), (11, '${B}', 'b eleven');
    UPDATE todos SET owner_id = '${A}' WHERE id = 3;
    UPDATE todos SET owner_id = '${B}' WHERE id = 1;
    UPDATE todos SET title = 'a two, edited' WHERE id = 2;`);
  await assertShowsOwnRows(a, A, "A's rows after the refresh");
  await assertShowsOwnRows(b, B, "B's rows after the refresh");
  assert.deepEqual((await shown(a.page)).map((r) => r.id), [2, 3, 10]);
  assert.equal(await a.page.textContent('#todos li[data-id="2"]'), 'a two, edited');
  assert.deepEqual((await shown(b.page)).map((r) => r.id), [1, 4, 11]);

  for (const [p, sub] of [[a, A], [b, B]]) {
    const log = await appLog(p.page);
    assert.equal(p.problems.length, 0, `page errors: ${p.problems.join('; ')}`);
    assert.ok(log.tokens >= 2, `a fresh token was fetched (${log.tokens} token(s))`);
    assert.deepEqual([...new Set(log.errors)], [401], `only 401s reached onError: ${JSON.stringify(log.errors)}`);
    assert.equal(log.handles.length, 1, `one shape handle throughout (no re-sync after the refresh): ${log.handles}`);
    // never another user's row, in any committed render
    const foreign = log.renders.flat().filter((r) => r.owner_id !== sub);
    assert.deepEqual(foreign, [], `a render held another user's row`);
  }
  assert.ok(issued.get(A) >= 2 && issued.get(B) >= 2, `tokens issued: ${JSON.stringify([...issued])}`);
  await a.page.close();
  await b.page.close();
});
