// Hostile input and least privilege, database side (docs/security.md):
// the sidecar runs as the non-superuser role of shapesync.grant_sidecar();
// inheritance children are not served through their parent; row-level
// security that applies to the sidecar's role refuses the shape (403);
// constant folding cannot stall registration (400, fast, others go on);
// rejected filters write nothing to the server log; a missing grant is
// logged with the fix and retires nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ShapeStream } from '../lib/electric.js';
import { startStack, waitFor, SIDECAR_ROLE } from '../lib/stack.js';
import { getShape, describe, rawShape, changes, select } from '../lib/shape-helpers.js';

let stack;
const enc = encodeURIComponent;

before(async () => {
  stack = await startStack({
    longPollTimeoutMs: 1000,
    setupSql: `
      CREATE TABLE hd_items (id int PRIMARY KEY, title text);
      INSERT INTO hd_items SELECT g, 't' || g FROM generate_series(1, 5) g;
      SELECT shapesync.track('hd_items');

      CREATE TABLE hd_parent (id int PRIMARY KEY, v text);
      CREATE TABLE hd_child () INHERITS (hd_parent);
      INSERT INTO hd_parent VALUES (1, 'parent row');
      INSERT INTO hd_child VALUES (2, 'child row');
      SELECT shapesync.track('hd_parent');

      CREATE TABLE hd_rls (id int PRIMARY KEY, owner text);
      INSERT INTO hd_rls VALUES (1, 'u1'), (2, 'u2');
      SELECT shapesync.track('hd_rls');
      ALTER TABLE hd_rls ENABLE ROW LEVEL SECURITY;
      CREATE POLICY only_u1 ON hd_rls FOR SELECT USING (owner = 'u1');

      CREATE SCHEMA hd_other;
      CREATE TABLE hd_other.things (id int PRIMARY KEY);
      INSERT INTO hd_other.things VALUES (1);
      SELECT shapesync.track('hd_other.things');
    `,
  });
});

after(async () => {
  await stack?.stop();
});

test('the sidecar connects as a role that is not a superuser', async () => {
  const roles = await select(stack,
    `SELECT DISTINCT usename::text AS usename, r.rolsuper, r.rolbypassrls FROM pg_stat_activity a
       JOIN pg_roles r ON r.rolname = a.usename WHERE a.application_name = 'shapesyncd'`);
  assert.deepEqual(roles, [{ usename: SIDECAR_ROLE, rolsuper: false, rolbypassrls: false }]);
  // and it serves, including a table of another schema tracked by the setup
  const s = await rawShape(stack, 'table=hd_other.things');
  assert.deepEqual(changes(s.snapshot).map((m) => m.value.id), ['1']);
});

test('an inheritance parent serves its own rows, not its children\'s', async () => {
  const s = await rawShape(stack, 'table=hd_parent');
  assert.deepEqual(changes(s.snapshot).map((m) => m.value), [{ id: '1', v: 'parent row' }]);
  // a subset of the parent reads ONLY it as well
  const sub = await fetch(`${stack.shapeUrl}?table=hd_parent&offset=-1&subset__where=${enc('id > 0')}`);
  if (sub.status === 200) {
    const body = await sub.json();
    const rows = (body.data ?? body).filter((m) => m.value).map((m) => m.value.id);
    assert.deepEqual(rows, ['1']);
  }
  await stack.psql(`INSERT INTO hd_child VALUES (3, 'child later'); INSERT INTO hd_parent VALUES (4, 'parent later')`);
  const got = await s.live(1);
  assert.deepEqual(got.map((m) => m.value.id), ['4']);
});

test('row-level security that applies to the sidecar role refuses the shape with a 403', async () => {
  const r = await getShape(stack, 'table=hd_rls&offset=-1');
  assert.equal(r.status, 403, describe(r));
  assert.match(r.body.errors.table[0], /row-level security applies to role "shapesync_sidecar" on table "hd_rls"/);
  const w = await getShape(stack, `table=hd_rls&offset=-1&where=${enc('id > 0')}`);
  assert.equal(w.status, 403, describe(w));
  assert.equal((await select(stack, `SELECT count(*)::int AS n FROM shapesync.shapes WHERE table_name = 'hd_rls'::regclass`))[0].n, 0);
  // once RLS no longer applies (here: disabled), the table is served in full
  await stack.psql('ALTER TABLE hd_rls DISABLE ROW LEVEL SECURITY');
  const ok = await rawShape(stack, 'table=hd_rls');
  assert.deepEqual(changes(ok.snapshot).map((m) => m.value.id).sort(), ['1', '2']);
});

test('a WHERE whose constants are huge answers 400 at once and does not hold up other registrations', async () => {
  const t0 = Date.now();
  const slow = getShape(stack, `table=hd_items&offset=-1&where=${enc("repeat('y', 1000000000) = title")}`);
  // registrations meanwhile are not serialised behind it
  const other = getShape(stack, `table=hd_items&offset=-1&where=${enc('id = 3')}`);
  const [r, o] = await Promise.all([slow, other]);
  const ms = Date.now() - t0;
  assert.equal(r.status, 400, describe(r));
  assert.match(r.body.errors.where[0], /takes too long to evaluate|too large/);
  assert.ok(ms < 3000, `answered in ${ms} ms`);
  assert.equal(o.status, 200, describe(o));
  const big = await getShape(stack, `table=hd_items&offset=-1&where=${enc("title = repeat('ab', 1000000)")}`);
  assert.equal(big.status, 400, describe(big));
  assert.match(big.body.errors.where[0], /too large/);
});

test('the official client stops on the 400 instead of retrying forever', async () => {
  const ac = new AbortController();
  const errors = [];
  let requests = 0;
  const stream = new ShapeStream({
    url: stack.shapeUrl,
    params: { table: 'hd_items', where: "repeat('y', 1000000000) = title" },
    signal: ac.signal,
    fetchClient: (...a) => { requests++; return fetch(...a); },
    onError: (e) => { errors.push(e); },
  });
  stream.subscribe(() => {}, () => {});
  await waitFor(() => errors.length > 0, { what: 'the client to report the error', timeoutMs: 10_000 });
  ac.abort();
  assert.equal(errors[0].status, 400);
  assert.ok(requests <= 2, `${requests} requests`);
});

test('rejected filters write nothing to the server log', async () => {
  const marker = `hostile${Date.now()}`;
  const long = `title = '${marker}${'x'.repeat(20_000)}' AND nope = 1`; // under --max-url-bytes (32 KiB)
  for (let i = 0; i < 5; i++) {
    const r = await getShape(stack, `table=hd_items&offset=-1&where=${enc(long)}`);
    assert.equal(r.status, 400, describe(r));
    assert.match(r.body.errors.where[0], /column "nope" does not exist/);
  }
  for (const w of ['id = = 1', 'id = random()', "repeat('y', 1000000000) = title", `id = ${marker}`]) {
    const r = await getShape(stack, `table=hd_items&offset=-1&where=${enc(w)}`);
    assert.equal(r.status, 400, describe(r));
  }
  const log = stack.clusterLog();
  assert.ok(!log.includes(marker), 'the filter text is not in the server log');
  assert.ok(!/ERROR:.*(nope|syntax error|random|too long)/.test(log), 'no ERROR line for a rejected filter');
});

test('a missing grant is logged with its fix and retires no shape', async () => {
  await stack.psql(`CREATE TABLE hd_nogrant (id int PRIMARY KEY); INSERT INTO hd_nogrant VALUES (1);
                    SELECT shapesync.track('hd_nogrant'); REVOKE SELECT ON hd_nogrant FROM ${SIDECAR_ROLE};`);
  const r = await getShape(stack, 'table=hd_nogrant&offset=-1');
  assert.ok(r.status >= 500, describe(r));
  await waitFor(() => /permission denied for table ("public"\.)?"?hd_nogrant.*grant_sidecar\('shapesync_sidecar'\)/.test(stack.sidecarLog()),
    { what: 'the log line naming the missing grant' });
  const states = await select(stack, `SELECT state FROM shapesync.shapes WHERE table_name = 'hd_nogrant'::regclass`);
  assert.ok(states.every((s) => s.state === 'active'), JSON.stringify(states));
  await stack.psql(`SELECT shapesync.grant_sidecar('${SIDECAR_ROLE}')`);
  const ok = await waitFor(async () => {
    const x = await getShape(stack, 'table=hd_nogrant&offset=-1');
    return x.status === 200 ? x : null;
  }, { what: 'the shape once granted', timeoutMs: 15_000 });
  assert.deepEqual(changes(ok.body).map((m) => m.value.id), ['1']);
});
