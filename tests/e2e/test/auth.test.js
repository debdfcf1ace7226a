// Shape authorization end to end (docs/auth.md, issue 11): a real PostgreSQL
// with an `owner_id = auth.uid()` row-level security policy, shapesyncd with
// an HS256 secret and an RSA public key, and the official client. User A never
// sees user B's rows (snapshot, live insert/update, move-in, move-out, PK
// change, subsets, SSE, a cache in front), and A's rows always equal what
// PostgreSQL itself returns to A (SET ROLE + request.jwt.claims). Forged,
// expired and misdirected tokens are refused with 401; roles, columns and
// shapes the token may not have with 403.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { ShapeStream, Shape } from '@electric-sql/client';
import { startStack, waitFor } from '../lib/stack.js';
import { startNginx, nginxBinary, getRaw, startSidecar, FAST_BACKOFF } from '../lib/procs.js';
import { readSse, isControl } from '../lib/shape-helpers.js';
import { signHS256, signRS256, rsaKeyPair, unsigned, now } from '../lib/jwt.js';
import { writeFile } from 'node:fs/promises';

const SECRET = 'e2e-secret-that-is-at-least-32-bytes-long!';
const AUD = 'shapesync-e2e';
const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';

const SETUP = String.raw`
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('request.jwt.claims', true)::json->>'sub', '')::uuid $$;
CREATE ROLE authenticated NOLOGIN;
CREATE ROLE outsider NOLOGIN;            -- the sidecar is not a member of it
GRANT USAGE ON SCHEMA auth TO authenticated;
GRANT EXECUTE ON FUNCTION auth.uid() TO authenticated;
GRANT authenticated TO shapesync_sidecar;
CREATE TABLE todos (id int PRIMARY KEY, owner_id uuid NOT NULL, title text, secret text);
ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_todos ON todos FOR SELECT TO authenticated USING (owner_id = auth.uid());
GRANT SELECT (id, owner_id, title) ON todos TO authenticated;   -- not "secret"
SELECT shapesync.track('todos');
INSERT INTO todos VALUES
  (1, '${A}', 'a one', 's1'), (2, '${A}', 'a two', 's2'),
  (3, '${B}', 'b three', 's3'), (4, '${B}', 'b four', 's4');
`;

const rsa = rsaKeyPair();
let stack;
let nginx;

const claimsOf = (sub, extra = {}) => ({ sub, role: 'authenticated', aud: AUD, exp: now() + 3600, ...extra });
const tokenOf = (sub, extra) => signHS256(claimsOf(sub, extra), SECRET);
const bearer = (t) => ({ headers: { Authorization: `Bearer ${t}` } });
const get = (query, token, init = {}) =>
  getRaw(stack.shapeUrl, query, token ? { ...init, headers: { ...(init.headers ?? {}), Authorization: `Bearer ${token}` } } : init);

/** What PostgreSQL returns to `sub` as the token's role with its claims (RLS and column grants applied). */
async function rowsAs(sub) {
  const claims = JSON.stringify({ sub, role: 'authenticated' }).replace(/'/g, "''");
  const out = await stack.psql(`BEGIN; SET LOCAL ROLE authenticated;
    SELECT set_config('request.jwt.claims', '${claims}', true) IS NULL;
    SELECT coalesce(json_agg(q ORDER BY q.id), '[]'::json) FROM (SELECT id, owner_id, title FROM todos) q; COMMIT;`);
  return JSON.parse(out.trim().split('\n').filter((l) => l.startsWith('[')).pop());
}
const keyed = (rows) => Object.fromEntries([...rows].map((r) => [String(r.id), { id: Number(r.id), owner_id: r.owner_id, title: r.title }]));

/** Follow todos with the official client as `sub`; records every message. */
function followAs(sub, { token = () => tokenOf(sub), params = {}, onError } = {}) {
  const ac = new AbortController();
  const errors = [];
  const messages = [];
  const stream = new ShapeStream({
    url: stack.shapeUrl,
    params: { table: 'todos', ...params },
    headers: { Authorization: () => `Bearer ${token()}` },
    signal: ac.signal,
    backoffOptions: FAST_BACKOFF,
    onError: onError ?? ((e) => { errors.push(e); }),
  });
  const shape = new Shape(stream);
  const unsubscribe = stream.subscribe((msgs) => messages.push(...msgs), (e) => errors.push(e));
  return {
    stream, shape, errors, messages,
    close() { unsubscribe(); ac.abort(); shape.unsubscribeAll(); stream.unsubscribeAll(); },
  };
}

/** Wait until the client's rows equal PostgreSQL's for `sub`. */
async function assertRowsAs(f, sub, what) {
  let last;
  try {
    await waitFor(async () => {
      last = { client: keyed(f.shape.currentRows), db: keyed(await rowsAs(sub)) };
      return isDeepStrictEqual(last.client, last.db);
    }, { timeoutMs: 15_000, intervalMs: 100, what });
  } catch (e) {
    assert.deepEqual(last?.client, last?.db, `${what}: ${e.message}; errors: ${f.errors.map(String).join('; ')}\n${stack.sidecarLog()}`);
  }
}

/** No insert/update A ever received carries another owner's row. */
function assertOnlyOwn(f, sub) {
  for (const m of f.messages) {
    if (m.key === undefined || m.headers.operation === 'delete') continue;
    if (m.value.owner_id !== undefined) assert.equal(m.value.owner_id, sub, `a ${m.headers.operation} of another user's row: ${JSON.stringify(m)}`);
    assert.equal(m.value.secret, undefined, `a column the role may not read: ${JSON.stringify(m)}`);
  }
}

const PEM_FILE = join(tmpdir(), `shapesync-auth-${process.pid}.pem`);
const JWKS_FILE = join(tmpdir(), `shapesync-auth-jwks-${process.pid}.json`);

before(async () => {
  const work = PEM_FILE;
  writeFileSync(work, rsa.publicPem);
  stack = await startStack({
    setupSql: SETUP,
    insecure: false,
    longPollTimeoutMs: 2000,
    sidecarArgs: ['--jwt-secret', SECRET, '--jwt-public-key', work, '--jwt-audience', AUD, '--jwt-leeway', '1',
      '--allow-shape-deletion', 'true'],
  });
});

after(async () => {
  await nginx?.stop?.();
  await stack?.stop();
  rmSync(PEM_FILE, { force: true });
  rmSync(JWKS_FILE, { force: true });
});

test('without a key and without --insecure, shapesyncd refuses to start', async () => {
  const { spawnSync } = await import('node:child_process');
  const { SHAPESYNCD } = await import('../lib/stack.js');
  const r = spawnSync(SHAPESYNCD, ['--database-url', stack.sidecarDbUrl, '--listen', '127.0.0.1:1'], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /no JWT key.*--insecure/s);
});

test('no token: 401 with a Bearer challenge and a JSON body', async () => {
  const r = await get('table=todos&offset=-1');
  assert.equal(r.status, 401, r.text);
  assert.match(r.headers.get('www-authenticate'), /^Bearer realm="shapesync"$/);
  assert.equal(r.body.error, 'missing_token');
  assert.equal(r.headers.get('cache-control'), 'no-store');
});

test('forged, expired and misdirected tokens: 401 invalid_token, never a row', async () => {
  const hsWithPublicKey = signHS256(claimsOf(A), rsa.publicPem);  // HS/RS confusion
  const cases = {
    'bad signature': tokenOf(A).slice(0, -3) + 'AAA',
    'signed with another secret': signHS256(claimsOf(A), 'another-secret-that-is-also-32-bytes-long'),
    'alg none': unsigned(claimsOf(A)),
    'HS256 signed with the RSA public key': hsWithPublicKey,
    expired: tokenOf(A, { exp: now() - 60 }),
    'not yet valid': tokenOf(A, { nbf: now() + 600 }),
    'wrong audience': tokenOf(A, { aud: 'someone-else' }),
    'not a JWT': 'hello',
    'RS256 with another key': signRS256(claimsOf(A), rsaKeyPair().privateKey),
  };
  for (const [what, token] of Object.entries(cases)) {
    const r = await get('table=todos&offset=-1', token);
    assert.equal(r.status, 401, `${what}: ${r.text}`);
    assert.match(r.headers.get('www-authenticate'), /error="invalid_token"/, what);
    assert.equal(r.body.error, 'invalid_token', what);
    assert.equal(r.headers.get('electric-handle'), null, what);
  }
  // The same claims, properly signed (HS256 and RS256), are accepted.
  assert.equal((await get('table=todos&offset=-1', tokenOf(A))).status, 200);
  assert.equal((await get('table=todos&offset=-1', signRS256(claimsOf(A), rsa.privateKey))).status, 200);
});

test('a 1 MB token is refused (431 or 401) and the sidecar lives on', async () => {
  const big = tokenOf(A, { pad: 'x'.repeat(1 << 20) });
  let status;
  try {
    status = (await get('table=todos&offset=-1', big)).status;
  } catch (e) {
    status = `connection closed (${e.cause?.code ?? e.message})`;
  }
  assert.ok(status === 431 || status === 401, `got ${status}`);
  assert.equal(stack.sidecarExited(), null);
  assert.equal((await get('table=todos&offset=-1', tokenOf(A))).status, 200);
});

test('roles: one the sidecar is not a member of, or none, is 403', async () => {
  let r = await get('table=todos&offset=-1', tokenOf(A, { role: 'outsider' }));
  assert.equal(r.status, 403, r.text);
  assert.ok(JSON.stringify(r.body.errors).includes('outsider') || r.body.errors.role, r.text);
  r = await get('table=todos&offset=-1', signHS256({ sub: A, aud: AUD, exp: now() + 60 }, SECRET));
  assert.equal(r.status, 403, r.text);
  assert.match(JSON.stringify(r.body), /role/);
});

test('claims with SQL metacharacters stay values', async () => {
  // not a uuid: the policy cannot be evaluated for it; refused, nothing served
  let r = await get('table=todos&offset=-1', tokenOf("x' OR true --"));
  assert.ok(r.status === 403 || r.status === 400, r.text);
  assert.equal(r.headers.get('electric-handle'), null);
  // a valid subject with a hostile extra claim: just A's rows, the table intact
  r = await get('table=todos&offset=-1', tokenOf(A, { name: "'; DROP TABLE todos; --", 'x"y': "$$ ; $1" }));
  assert.equal(r.status, 200, r.text);
  const owners = new Set(r.body.filter((m) => m.key).map((m) => m.value.owner_id));
  assert.deepEqual([...owners], [A]);
  assert.equal(await stack.psql('SELECT count(*) FROM todos'), '4');
});

test('columns: omitted gives the permitted ones; a forbidden one is 403 naming it', async () => {
  let r = await get('table=todos&offset=-1', tokenOf(A));
  assert.equal(r.status, 200, r.text);
  for (const m of r.body.filter((x) => x.key)) assert.deepEqual(Object.keys(m.value).sort(), ['id', 'owner_id', 'title']);
  assert.deepEqual(Object.keys(JSON.parse(r.headers.get('electric-schema'))).sort(), ['id', 'owner_id', 'title']);
  r = await get('table=todos&offset=-1&columns=id,secret', tokenOf(A));
  assert.equal(r.status, 403, r.text);
  assert.match(r.text, /secret/);
  r = await get(`table=todos&offset=-1&where=${encodeURIComponent("secret = 's3'")}`, tokenOf(A));
  assert.equal(r.status, 403, r.text);
  assert.match(r.text, /secret/);
});

test('responses vary by Authorization and are private under row-level security', async () => {
  const r = await get('table=todos&offset=-1', tokenOf(A));
  assert.match(r.headers.get('vary') ?? '', /Authorization/i);
  assert.match(r.headers.get('cache-control'), /^private,/);
  assert.doesNotMatch(r.headers.get('cache-control'), /s-maxage/);
  // the same effective shape for the same user, whatever the token: one handle
  const again = await get('table=todos&offset=-1', tokenOf(A, { exp: now() + 7200 }));
  assert.equal(again.headers.get('electric-handle'), r.headers.get('electric-handle'));
  const b = await get('table=todos&offset=-1', tokenOf(B));
  assert.notEqual(b.headers.get('electric-handle'), r.headers.get('electric-handle'));
});

test('A and B with the official client: snapshot, live insert, update, move-in, move-out, PK change', async (t) => {
  const fa = followAs(A);
  const fb = followAs(B);
  t.after(() => { fa.close(); fb.close(); });
  await assertRowsAs(fa, A, 'A snapshot');
  await assertRowsAs(fb, B, 'B snapshot');
  assert.equal(fa.shape.currentRows.length, 2);

  const steps = [
    ['insert', `INSERT INTO todos VALUES (5, '${A}', 'a five', 's5'), (6, '${B}', 'b six', 's6')`],
    ['update', `UPDATE todos SET title = title || '!' WHERE id IN (1, 3)`],
    ['move-in (B row reassigned to A)', `UPDATE todos SET owner_id = '${A}' WHERE id = 4`],
    ['move-out (A row reassigned to B)', `UPDATE todos SET owner_id = '${B}' WHERE id = 2`],
    ['PK change', `UPDATE todos SET id = 10 WHERE id = 1`],
    ['delete', `DELETE FROM todos WHERE id IN (10, 3)`],
    ['hidden column change', `UPDATE todos SET secret = 'changed' WHERE id = 4`],
  ];
  for (const [what, sql] of steps) {
    await stack.psql(sql);
    await assertRowsAs(fa, A, `A after ${what}`);
    await assertRowsAs(fb, B, `B after ${what}`);
  }
  assertOnlyOwn(fa, A);
  assertOnlyOwn(fb, B);
  assert.deepEqual(fa.errors, []);
  // the move-out reached A's client as a delete of row 2
  assert.ok(fa.messages.some((m) => m.headers?.operation === 'delete' && String(m.value?.id) === '2'),
    JSON.stringify(fa.messages.filter((m) => m.key)));
});

test('subset snapshots (GET subset__* and POST) hold only the caller\'s rows', async () => {
  const r0 = await get('table=todos&offset=-1', tokenOf(A));
  const handle = r0.headers.get('electric-handle');
  const base = `table=todos&handle=${encodeURIComponent(handle)}&offset=-1`;
  let r = await get(`${base}&subset__where=${encodeURIComponent('id > 0')}&subset__order_by=id`, tokenOf(A));
  assert.equal(r.status, 200, r.text);
  const ids = r.body.data.map((m) => m.value.owner_id);
  assert.ok(ids.length > 0);
  assert.deepEqual(new Set(ids), new Set([A]));
  for (const m of r.body.data) assert.equal(m.value.secret, undefined);
  // POST, with the subset in the body
  const pr = await fetch(`${stack.shapeUrl}?table=todos&offset=-1`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', Authorization: `Bearer ${tokenOf(B)}` },
    body: JSON.stringify({ where: 'id > 0', order_by: 'id' }),
  });
  const body = await pr.json();
  assert.equal(pr.status, 200, JSON.stringify(body));
  assert.deepEqual(new Set(body.data.map((m) => m.value.owner_id)), new Set([B]));
  // a subset filter or order on a column the role may not read: 403
  r = await get(`${base}&subset__where=${encodeURIComponent("secret = 's1'")}`, tokenOf(A));
  assert.equal(r.status, 403, r.text);
  r = await get(`${base}&subset__where=${encodeURIComponent('id > 0')}&subset__order_by=secret`, tokenOf(A));
  assert.equal(r.status, 403, r.text);
  // no token: 401
  assert.equal((await get(`${base}&subset__where=${encodeURIComponent('id > 0')}`)).status, 401);
});

test('SSE: only A\'s changes; an expired token is 401', async () => {
  const r0 = await get('table=todos&offset=-1', tokenOf(A));
  let handle = r0.headers.get('electric-handle');
  let offset = r0.headers.get('electric-offset');
  for (let i = 0; i < 20 && !isControl(r0.body.at(-1), 'up-to-date'); i++) {
    const r = await get(`table=todos&handle=${handle}&offset=${offset}`, tokenOf(A));
    offset = r.headers.get('electric-offset');
    if (isControl(r.body.at(-1), 'up-to-date')) break;
  }
  const res = await fetch(`${stack.shapeUrl}?table=todos&handle=${handle}&offset=${offset}&live=true&live_sse=true`, bearer(tokenOf(A)));
  assert.equal(res.status, 200);
  assert.match(res.headers.get('cache-control'), /^private/);
  await stack.psql(`INSERT INTO todos VALUES (20, '${B}', 'b twenty', 'x'), (21, '${A}', 'a twenty-one', 'y')`);
  const { messages } = await readSse(res, { stop: (m) => m.some((x) => x.key && String(x.value.id) === '21'), timeoutMs: 8000 });
  const rows = messages.filter((m) => m.key);
  assert.ok(rows.some((m) => String(m.value.id) === '21'), JSON.stringify(messages));
  for (const m of rows) assert.equal(m.value.owner_id, A, JSON.stringify(m));
  const expired = await fetch(`${stack.shapeUrl}?table=todos&handle=${handle}&offset=${offset}&live=true&live_sse=true`,
    bearer(tokenOf(A, { exp: now() - 60 })));
  assert.equal(expired.status, 401);
  await expired.body?.cancel();
  // a live long-poll woken by a change (the hot path that writes its head by hand): private, varies by token
  const tokenA = tokenOf(A);
  let cur = offset;
  for (let i = 0; i < 20; i++) {  // to the end of the log first
    const r = await get(`table=todos&handle=${handle}&offset=${cur}`, tokenA);
    cur = r.headers.get('electric-offset');
    if (isControl(r.body.at(-1), 'up-to-date')) break;
  }
  const waiting = get(`table=todos&handle=${handle}&offset=${cur}&live=true`, tokenA);
  await new Promise((r) => setTimeout(r, 300));
  await stack.psql(`INSERT INTO todos VALUES (22, '${A}', 'a twenty-two', 'w')`);
  const woke = await waiting;
  assert.equal(woke.status, 200, woke.text);
  assert.ok(woke.body.some((m) => m.key && String(m.value.id) === '22'), woke.text);
  assert.match(woke.headers.get('cache-control'), /^private, max-age=5/);
  assert.match(woke.headers.get('vary') ?? '', /Authorization/);
  // a live long-poll with an expired token too
  const lp = await get(`table=todos&handle=${handle}&offset=${offset}&live=true`, tokenOf(A, { exp: now() - 60 }));
  assert.equal(lp.status, 401);
  assert.match(lp.headers.get('www-authenticate'), /expired/);
});

test('the official client refreshes an expiring token through onError and resumes from its offset', async (t) => {
  let refreshes = 0;
  let current = tokenOf(A, { exp: now() + 2 });  // expires during the live phase (leeway 1 s)
  const seenStatus = [];
  const f = followAs(A, {
    token: () => current,
    onError: (e) => {
      seenStatus.push(e.status);
      if (e.status === 401) {
        refreshes++;
        current = tokenOf(A, { exp: now() + 3600 });
        return {};  // retry: the header function reads the fresh token
      }
      return undefined;
    },
  });
  t.after(() => f.close());
  await assertRowsAs(f, A, 'snapshot before expiry');
  const handle = f.stream.shapeHandle;
  await new Promise((r) => setTimeout(r, 4500));  // the token expires; a live request gets 401
  await stack.psql(`INSERT INTO todos VALUES (30, '${A}', 'after refresh', 'z')`);
  await assertRowsAs(f, A, 'after the refresh');
  assert.ok(refreshes >= 1, `no 401 reached onError (statuses: ${seenStatus})`);
  assert.equal(f.stream.shapeHandle, handle, 'the stream resumed on the same shape');
  assert.ok(!f.messages.some((m) => isControl(m, 'must-refetch')), 'no re-sync after the refresh');
  assertOnlyOwn(f, A);
});

test('shape-scoped tokens serve exactly their shape', async () => {
  const scoped = tokenOf(A, { shape: { table: 'public.todos', where: 'id  >  0', columns: ['title', 'id', 'owner_id'] } });
  let r = await get(`table=todos&offset=-1&where=${encodeURIComponent('id > 0')}&columns=id,owner_id,title`, scoped);
  assert.equal(r.status, 200, r.text);
  r = await get('table=todos&offset=-1&columns=id,owner_id,title', scoped);
  assert.equal(r.status, 403, r.text);
  assert.match(r.text, /where/);
  r = await get(`table=todos&offset=-1&where=${encodeURIComponent('id > 0')}`, scoped);
  assert.equal(r.status, 403, r.text);
  r = await get(`table=other&offset=-1&where=${encodeURIComponent('id > 0')}&columns=id,owner_id,title`, scoped);
  assert.equal(r.status, 403, r.text);
});

test('through a caching nginx, A\'s cached response is never served to B', { skip: !nginxBinary() && 'nginx not installed' }, async () => {
  const port = new URL(stack.baseUrl).port;
  nginx = await startNginx({ upstreams: [`127.0.0.1:${port}`], cache: true });
  const url = `http://127.0.0.1:${nginx.port}/v1/shape`;
  const asUser = async (sub) => getRaw(url, 'table=todos&offset=-1', bearer(tokenOf(sub)));
  const a1 = await asUser(A);
  const a2 = await asUser(A);
  const b1 = await asUser(B);
  for (const [who, r, sub] of [['A', a1, A], ['A again', a2, A], ['B', b1, B]]) {
    assert.equal(r.status, 200, `${who}: ${r.text}`);
    const owners = new Set(r.body.filter((m) => m.key).map((m) => m.value.owner_id));
    assert.deepEqual([...owners], [sub], `${who} (x-cache-status ${r.headers.get('x-cache-status')})`);
  }
  assert.notEqual(b1.headers.get('x-cache-status'), 'HIT');
  // without a token, the cache answers nothing either
  assert.equal((await getRaw(url, 'table=todos&offset=-1')).status, 401);
});

test('DELETE needs a token and retires only the caller\'s own shape', async () => {
  let r = await fetch(`${stack.shapeUrl}?table=todos`, { method: 'DELETE' });
  assert.equal(r.status, 401);
  const before = await get('table=todos&offset=-1', tokenOf(B));
  r = await fetch(`${stack.shapeUrl}?handle=${before.headers.get('electric-handle')}`, { method: 'DELETE', ...bearer(tokenOf(A)) });
  assert.equal(r.status, 403);
  const still = await get(`table=todos&handle=${before.headers.get('electric-handle')}&offset=${before.headers.get('electric-offset')}`, tokenOf(B));
  assert.equal(still.status, 200, still.text);
});

test('a JWKS file is read again on SIGHUP; --anonymous-role serves requests without a token', async (t) => {
  const k1 = rsaKeyPair();
  const k2 = rsaKeyPair();
  const jwk = (k, kid) => ({ ...k.publicKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' });
  const jwks = JWKS_FILE;
  await writeFile(jwks, JSON.stringify({ keys: [jwk(k1, 'k1')] }));
  const sc = await startSidecar({
    dbUrl: stack.sidecarDbUrl,
    insecure: false,
    args: ['--jwks-file', jwks, '--anonymous-role', 'authenticated'],
  });
  t.after(() => sc.stop());
  const at = (token) => getRaw(sc.shapeUrl, 'table=todos&offset=-1', token ? bearer(token) : undefined);
  const t1 = signRS256(claimsOf(A), k1.privateKey, { alg: 'RS256', kid: 'k1' });
  const t2 = signRS256(claimsOf(A), k2.privateKey, { alg: 'RS256', kid: 'k2' });
  assert.equal((await at(t1)).status, 200);
  assert.equal((await at(t2)).status, 401);
  // anonymous: the role with no claims; auth.uid() is NULL, the policy admits no row
  const anon = await at(null);
  assert.equal(anon.status, 200, anon.text);
  assert.equal(anon.body.filter((m) => m.key).length, 0, anon.text);
  // rotate: k2 replaces k1
  await writeFile(jwks, JSON.stringify({ keys: [jwk(k2, 'k2')] }));
  process.kill(sc.pid, 'SIGHUP');
  await waitFor(async () => (await at(t2)).status === 200, { what: 'the rotated key to be accepted', timeoutMs: 5000 });
  assert.equal((await at(t1)).status, 401, 'the old key is gone, its token with it (even though it was seen before)');
  // a broken JWKS on SIGHUP keeps the keys that work
  await writeFile(jwks, '{"keys": []}');
  process.kill(sc.pid, 'SIGHUP');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await at(t2)).status, 200);
  assert.match(sc.log(), /SIGHUP: JWT keys not reloaded/);
});
