// Writes end to end (docs/mutations.md, issue 12): POST /v1/mutations against a
// real PostgreSQL and shapesyncd with JWT auth and row-level security, read
// back through the official client. Versions travel on snapshot rows and
// change messages and come back as base.version; a write's txid arrives in
// the live stream (long-poll and SSE) of every shape the row is in and in no
// other; concurrent edits conflict or merge as the table's policy says; an
// offline queue replayed twice applies each mutation once; the database's
// grants and RLS WITH CHECK refuse what they should; metacharacters are data.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { startStack, waitFor } from '../lib/stack.js';
import { getRaw, FAST_BACKOFF } from '../lib/procs.js';
import { follow, readSse } from '../lib/shape-helpers.js';
import { signHS256, now } from '../lib/jwt.js';

const SECRET = 'e2e-mutations-secret-of-at-least-32-bytes';
const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';

const SETUP = String.raw`
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('request.jwt.claims', true)::json->>'sub', '')::uuid $$;
CREATE ROLE authenticated NOLOGIN;
CREATE ROLE reader NOLOGIN;                 -- may read, has no grant_writer
GRANT USAGE ON SCHEMA auth TO authenticated, reader;
GRANT EXECUTE ON FUNCTION auth.uid() TO authenticated, reader;
GRANT authenticated, reader TO shapesync_sidecar;
CREATE TABLE todos (id int PRIMARY KEY, owner_id uuid NOT NULL, title text, done boolean NOT NULL DEFAULT false,
                    "we'ird ""col""" text);
ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
CREATE POLICY sel ON todos FOR SELECT TO authenticated, reader USING (owner_id = auth.uid());
CREATE POLICY ins ON todos FOR INSERT TO authenticated WITH CHECK (owner_id = auth.uid());
CREATE POLICY upd ON todos FOR UPDATE TO authenticated USING (owner_id = auth.uid()) WITH CHECK (owner_id = auth.uid());
CREATE POLICY del ON todos FOR DELETE TO authenticated USING (owner_id = auth.uid());
GRANT SELECT, INSERT, UPDATE, DELETE ON todos TO authenticated;
GRANT SELECT ON todos TO reader;
SELECT shapesync.track('todos');
SELECT shapesync.grant_writer('authenticated');
CREATE TABLE notes (id int PRIMARY KEY, body text);
GRANT SELECT, INSERT, UPDATE ON notes TO authenticated;
SELECT shapesync.track('notes');
SELECT shapesync.set_conflict_policy('notes', 'merge');
INSERT INTO todos (id, owner_id, title) VALUES (1, '${A}', 'a one'), (2, '${A}', 'a two'), (3, '${B}', 'b three');
INSERT INTO notes VALUES (1, 'n1');
`;

let stack;
const tokenOf = (sub, role = 'authenticated', extra = {}) =>
  signHS256({ sub, role, exp: now() + 3600, ...extra }, SECRET);
const auth = (sub, role) => ({ Authorization: `Bearer ${tokenOf(sub, role)}` });

/** POST /v1/mutations; returns { status, body, headers }. */
async function mutate(sub, mutations, { role, key, query = '', raw, headers = {} } = {}) {
  const r = await fetch(`${stack.baseUrl}/v1/mutations${query}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(sub ? auth(sub, role) : {}), ...(key ? { 'Idempotency-Key': key } : {}), ...headers },
    body: raw ?? JSON.stringify({ mutations }),
  });
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: r.status, body, headers: r.headers };
}
const m = (op, table, key, values, base) => ({ id: randomUUID(), table, op, ...(key ? { key } : {}), ...(values ? { values } : {}), ...(base ? { base } : {}) });

async function dbRows(sql) {
  const out = await stack.psql(`SELECT coalesce(json_agg(q), '[]') FROM (${sql}) q`);
  return JSON.parse(out);
}

/**
 * The rows of a shape as `sub` sees them, with each row's version header. A
 * fresh shape each time (a filter no other request used), so its snapshot is
 * taken after every write the test made so far (an existing shape could answer
 * up-to-date before the sidecar has read the newest tick).
 */
let fresh = 0;
async function snapshotAs(sub, table, userWhere) {
  const where = `id > ${-1_000_000 - ++fresh}${userWhere ? ` AND ${userWhere}` : ''}`;
  const q = `table=${table}&offset=-1${where ? `&where=${encodeURIComponent(where)}` : ''}`;
  const rows = new Map();
  let handle;
  let offset = '-1';
  for (let i = 0; i < 20; i++) {
    const r = await getRaw(stack.shapeUrl, i === 0 ? q : `table=${table}&handle=${handle}&offset=${offset}${where ? `&where=${encodeURIComponent(where)}` : ''}`,
      { headers: auth(sub) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    handle = r.headers.get('electric-handle');
    offset = r.headers.get('electric-offset');
    for (const msg of r.body) if (msg.key) rows.set(msg.value.id, msg);
    if (r.headers.get('electric-up-to-date') !== null) break;
  }
  return { rows, handle, offset, where };
}

before(async () => {
  stack = await startStack({
    setupSql: SETUP,
    insecure: false,
    longPollTimeoutMs: 2000,
    sidecarArgs: ['--jwt-secret', SECRET, '--max-mutations', '200'],
  });
});

after(async () => { await stack?.stop(); });

test('snapshot rows and change messages carry the row version, which a later update sends back as its base', async () => {
  const snap = await snapshotAs(A, 'todos');
  const row1 = snap.rows.get('1');
  assert.ok(row1, 'A sees row 1');
  assert.match(row1.headers.version, /^\d+$/, `snapshot row version: ${JSON.stringify(row1)}`);
  const [{ xmin }] = await dbRows(`SELECT shapesync.row_version(xmin)::text AS xmin FROM todos WHERE id = 1`);
  assert.equal(row1.headers.version, xmin);

  const f = follow(stack.shapeUrl, { table: 'todos' }, { headers: auth(A), backoffOptions: FAST_BACKOFF });
  try {
    await waitFor(() => f.shape.currentRows.length === 2, { what: 'A has its two rows' });
    const r = await mutate(A, [m('update', 'todos', { id: 1 }, { title: 'a one, edited' }, { version: row1.headers.version, values: { title: 'a one' } })]);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.committed, true);
    const res = r.body.results[0];
    assert.equal(res.status, 'applied', JSON.stringify(res));
    // the change arrives with the response's txid and the row's new version
    let change;
    await waitFor(() => (change = f.messages.find((x) => x.headers?.operation === 'update' && String(x.value.id) === '1')), { what: 'the update on the stream' })
      .catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(f.messages)} ${f.errors.map(String)}\n${stack.sidecarLog()}`); });
    assert.deepEqual(change.headers.txids, [r.body.txid]);
    assert.equal(change.headers.version, res.version);
    // the old base is stale now: reject (the default policy) answers conflict with the server row
    const stale = await mutate(A, [m('update', 'todos', { id: 1 }, { title: 'lost' }, { version: row1.headers.version, values: { title: 'a one' } })]);
    assert.equal(stale.status, 200);
    assert.equal(stale.body.committed, false);
    assert.equal(stale.body.results[0].status, 'conflict');
    assert.equal(stale.body.results[0].row.title, 'a one, edited');
    assert.equal(stale.body.results[0].server_version, res.version);
    const [{ title }] = await dbRows('SELECT title FROM todos WHERE id = 1');
    assert.equal(title, 'a one, edited');
  } finally { f.close(); }
});

test("a write's txid arrives in the live stream of every shape the row is in (long-poll and SSE), and in no other", async () => {
  // long-poll: A's whole-table shape and A's done=false shape contain row 2; A's done=true shape does not
  const shapes = {};
  for (const [name, where] of [['all', undefined], ['open', 'done = false'], ['closed', 'done = true']]) {
    shapes[name] = await snapshotAs(A, 'todos', where);
  }
  const sseRes = await fetch(`${stack.shapeUrl}?table=todos&where=${encodeURIComponent(shapes.all.where)}&handle=${shapes.all.handle}&offset=${shapes.all.offset}&live=true&live_sse=true`,
    { headers: auth(A) });
  assert.equal(sseRes.status, 200);
  const polls = Object.fromEntries(Object.entries(shapes).map(([name, s]) => [name,
    getRaw(stack.shapeUrl, `table=todos&handle=${s.handle}&offset=${s.offset}&live=true&where=${encodeURIComponent(s.where)}`, { headers: auth(A) })]));
  // B's shape: never sees A's row
  const bSnap = await snapshotAs(B, 'todos');
  const bPoll = getRaw(stack.shapeUrl, `table=todos&where=${encodeURIComponent(bSnap.where)}&handle=${bSnap.handle}&offset=${bSnap.offset}&live=true`, { headers: auth(B) });
  await new Promise((r) => setTimeout(r, 200)); // all parked

  const w = await mutate(A, [m('update', 'todos', { id: 2 }, { title: 'a two, edited' })]);
  assert.equal(w.status, 200, JSON.stringify(w.body));
  const txid = w.body.txid;
  assert.ok(Number.isInteger(txid) && txid > 0 && txid < 2 ** 32, `txid ${txid}`);

  const sse = await readSse(sseRes, { stop: (msgs) => msgs.some((x) => x.headers?.txids?.includes(txid)), timeoutMs: 10_000 });
  assert.ok(sse.messages.some((x) => x.headers?.txids?.includes(txid) && x.value.id === '2'), 'SSE stream got the txid');
  for (const name of ['all', 'open']) {
    const r = await polls[name];
    assert.equal(r.status, 200);
    assert.ok(r.body.some((x) => x.headers?.txids?.includes(txid)), `${name} shape got txid ${txid}: ${JSON.stringify(r.body)}`);
  }
  const closed = await polls.closed;
  assert.ok(!closed.body.some((x) => x.headers?.txids?.includes(txid)), 'the done=true shape did not');
  const b = await bPoll;
  assert.ok(!b.body.some((x) => x.headers?.txids?.includes(txid)), "B's shape did not");
});

test('two clients edit the same row: the same column conflicts with the server row; different columns merge under merge', async () => {
  const snap = await snapshotAs(A, 'notes');
  const base = { version: snap.rows.get('1').headers.version, values: { body: 'n1' } };
  // reject (todos): A and a second session of A both edit the title of row 1 from the same base
  const t = await snapshotAs(A, 'todos');
  const tb = { version: t.rows.get('1').headers.version, values: { title: t.rows.get('1').value.title } };
  const [x, y] = await Promise.all([
    mutate(A, [m('update', 'todos', { id: 1 }, { title: 'from x' }, tb)]),
    mutate(A, [m('update', 'todos', { id: 1 }, { title: 'from y' }, tb)]),
  ]);
  const statuses = [x.body.results[0].status, y.body.results[0].status].sort();
  assert.deepEqual(statuses, ['applied', 'conflict'], JSON.stringify([x.body, y.body]));
  const loser = x.body.results[0].status === 'conflict' ? x : y;
  const winner = loser === x ? 'from y' : 'from x';
  assert.equal(loser.body.results[0].row.title, winner);

  // merge (notes): different columns from the same base both apply; the same column conflicts
  await stack.psql('ALTER TABLE notes ADD COLUMN tag text');
  const s2 = await snapshotAs(A, 'notes');
  const b2 = { version: s2.rows.get('1').headers.version, values: { body: 'n1', tag: null } };
  const first = await mutate(A, [m('update', 'notes', { id: 1 }, { body: 'edited body' }, b2)]);
  assert.equal(first.body.results[0].status, 'applied', JSON.stringify(first.body));
  const second = await mutate(A, [m('update', 'notes', { id: 1 }, { tag: 'urgent' }, b2)]);
  assert.equal(second.body.results[0].status, 'applied', JSON.stringify(second.body));
  assert.equal(second.body.results[0].resolved_by, 'merge');
  const third = await mutate(A, [m('update', 'notes', { id: 1 }, { body: 'mine' }, b2)]);
  assert.equal(third.body.results[0].status, 'conflict');
  assert.deepEqual(await dbRows('SELECT body, tag FROM notes WHERE id = 1'), [{ body: 'edited body', tag: 'urgent' }]);
  void base;
});

test('an offline queue of 100 mutations, replayed twice while rows change underneath: each applied at most once', async () => {
  await stack.psql(`INSERT INTO todos (id, owner_id, title) SELECT g, '${A}', 'q' || g FROM generate_series(100, 149) g`);
  const snap = await snapshotAs(A, 'todos');
  const queue = [];
  for (let i = 100; i < 150; i++) {
    const row = snap.rows.get(String(i));
    queue.push(m('update', 'todos', { id: i }, { title: `offline ${i}` }, { version: row.headers.version, values: { title: `q${i}` } }));
  }
  for (let i = 200; i < 250; i++) queue.push(m('insert', 'todos', null, { id: i, owner_id: A, title: `new ${i}` }));
  // meanwhile, someone else changes 8 of the rows the queue edits
  await stack.psql(`UPDATE todos SET title = 'server ' || id WHERE id IN (100, 105, 110, 115, 120, 125, 130, 135)`);

  const f = follow(stack.shapeUrl, { table: 'todos' }, { headers: auth(A), backoffOptions: FAST_BACKOFF });
  try {
    const first = await mutate(A, queue, { query: '?allow_partial=true' });
    assert.equal(first.status, 200, JSON.stringify(first.body).slice(0, 500));
    const count = (r, s) => r.body.results.filter((x) => x.status === s).length;
    assert.equal(count(first, 'applied'), 92);
    assert.equal(count(first, 'conflict'), 8);
    const before = await dbRows('SELECT id, title, shapesync.row_version(xmin)::text AS v FROM todos ORDER BY id');
    for (let round = 0; round < 2; round++) {
      const again = await mutate(A, queue, { query: '?allow_partial=true' });
      assert.equal(again.status, 200);
      assert.ok(again.body.results.every((x) => x.replayed === true), JSON.stringify(again.body.results.slice(0, 3)));
      assert.deepEqual(again.body.results.map((x) => x.status), first.body.results.map((x) => x.status));
    }
    assert.deepEqual(await dbRows('SELECT id, title, shapesync.row_version(xmin)::text AS v FROM todos ORDER BY id'), before,
      'replays changed nothing');
    // the stream agrees with the database
    let last;
    await waitFor(async () => {
      const db = await dbRows(`SELECT id::text, title FROM todos WHERE owner_id = '${A}' ORDER BY todos.id`);
      const mine = f.shape.currentRows.map((r) => ({ id: String(r.id), title: r.title })).sort((p, q) => Number(p.id) - Number(q.id));
      last = { db, mine };
      return JSON.stringify(db) === JSON.stringify(mine);
    }, { timeoutMs: 15_000, what: "A's stream equals the database" }).catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(last).slice(0, 3000)} ${f.errors.map(String)}`);
    });
  } finally { f.close(); }
});

test('the Idempotency-Key header replays the stored response without looking at the body', async () => {
  const key = `req-${randomUUID()}`;
  const r1 = await mutate(A, [m('insert', 'todos', null, { id: 300, owner_id: A, title: 'once' })], { key });
  assert.equal(r1.body.results[0].status, 'applied');
  const r2 = await mutate(A, [m('insert', 'todos', null, { id: 301, owner_id: A, title: 'never' })], { key });
  assert.equal(r2.status, 200);
  assert.equal(r2.body.replayed, true);
  assert.equal(r2.body.txid, r1.body.txid);
  assert.deepEqual(await dbRows('SELECT id FROM todos WHERE id IN (300, 301)'), [{ id: 300 }]);
});

test('the database decides: RLS WITH CHECK, no writer grant, another user\'s row', async () => {
  // A may not insert a row owned by B (WITH CHECK)
  const r = await mutate(A, [m('insert', 'todos', null, { id: 400, owner_id: B, title: 'forged' })]);
  assert.equal(r.status, 200);
  assert.equal(r.body.committed, false);
  assert.equal(r.body.results[0].status, 'rejected');
  assert.equal(r.body.results[0].code, '42501');
  // B's row is invisible to A: an update of it is a conflict with no row (its existence not revealed)
  const hidden = await mutate(A, [m('update', 'todos', { id: 3 }, { title: 'mine now' })]);
  assert.equal(hidden.body.results[0].status, 'conflict');
  assert.equal(hidden.body.results[0].row, null);
  // a role without grant_writer: 403, nothing applied
  const reader = await mutate(A, [m('insert', 'todos', null, { id: 401, owner_id: A, title: 'x' })], { role: 'reader' });
  assert.equal(reader.status, 403, JSON.stringify(reader.body));
  assert.equal(reader.body.code, '42501');
  // a role the sidecar is not a member of: 403
  const stranger = await mutate(A, [m('insert', 'todos', null, { id: 402, owner_id: A, title: 'x' })], { role: 'postgres' });
  assert.equal(stranger.status, 403, JSON.stringify(stranger.body));
  assert.deepEqual(await dbRows('SELECT id FROM todos WHERE id BETWEEN 400 AND 402'), []);
  assert.deepEqual(await dbRows(`SELECT title FROM todos WHERE id = 3`), [{ title: 'b three' }]);
});

test('bad input: 400 naming what is wrong, nothing applied', async () => {
  const cases = [
    [[m('insert', 'no_such_table', null, { id: 1 })], 'table'],
    [[m('insert', 'todos', null, { id: 500, owner_id: A, nope: 1 })], 'values'],
    [[m('update', 'todos', { id: 1 }, { done: 'maybe' })], 'values.done'],
    [[m('update', 'todos', null, { title: 'no key' })], 'key'],
    [[m('update', 'todos', { id: 1 }, { id: 2 })], 'values.id'],
    [[{ ...m('frobnicate', 'todos', { id: 1 }) }], 'op'],
  ];
  for (const [mutations, field] of cases) {
    const ok = m('insert', 'todos', null, { id: 501, owner_id: A, title: 'with a bad one' });
    const r = await mutate(A, [ok, ...mutations]);
    assert.equal(r.status, 400, `${field}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.invalid, true);
    const bad = r.body.results[1];
    assert.equal(bad.status, 'rejected');
    assert.ok(String(bad.field).startsWith(field), `field ${bad.field} for ${field}`);
  }
  // refused before the database
  for (const [raw, status] of [['{not json', 400], ['{"mutations":[]}', 400], ['[]', 400], ['{"mutations":[1]}', 400],
    [JSON.stringify({ mutations: Array.from({ length: 201 }, () => m('delete', 'todos', { id: 1 })) }), 413],
    ['{"mutations":[{"values":{"j":' + '['.repeat(1000) + ']'.repeat(1000) + '}}]}', 400]]) {
    const r = await mutate(A, null, { raw });
    assert.equal(r.status, status, `${raw.slice(0, 40)}: ${JSON.stringify(r.body)}`);
  }
  const noCt = await mutate(A, [m('delete', 'todos', { id: 1 })], { headers: { 'Content-Type': 'text/plain' } });
  assert.equal(noCt.status, 415);
  const noToken = await mutate(null, [m('delete', 'todos', { id: 1 })]);
  assert.equal(noToken.status, 401);
  assert.match(noToken.headers.get('www-authenticate') ?? '', /Bearer/);
  assert.deepEqual(await dbRows('SELECT id FROM todos WHERE id IN (1, 500, 501)'), [{ id: 1 }]);
});

test('SQL metacharacters in values and column names are data', async () => {
  const evil = `x'); DROP TABLE todos; --`;
  const r = await mutate(A, [m('insert', 'todos', null, { id: 600, owner_id: A, title: evil, "we'ird \"col\"": `"; DELETE FROM notes; --` })]);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.results[0].status, 'applied');
  assert.deepEqual(await dbRows(`SELECT title, "we'ird ""col""" AS c FROM todos WHERE id = 600`), [{ title: evil, c: `"; DELETE FROM notes; --` }]);
  const bad = await mutate(A, [m('update', 'todos', { id: 600 }, { 'title" = null; --': 'x' })]);
  assert.equal(bad.status, 400);
  assert.equal((await dbRows('SELECT count(*)::int AS n FROM notes'))[0].n, 1);
});

test('mutations are counted in /metrics', async () => {
  const r = await fetch(`${stack.baseUrl}/metrics`, { headers: auth(A) });
  const text = await r.text();
  assert.equal(r.status, 200);
  assert.match(text, /shapesync_mutations_total\{status="applied"\} [1-9]/);
  assert.match(text, /shapesync_mutations_total\{status="conflict"\} [1-9]/);
  assert.match(text, /shapesync_http_requests_total\{route="\/v1\/mutations",status="200"/);
});
