// Many new shapes at once (issue 15): shapes of one table, role and column
// list have their snapshots taken together (one wait for writers, one
// REPEATABLE READ transaction, one COPY of a UNION ALL with each shape's own
// filter) and are caught up and stored together. 200 shapes over two tables,
// three filter templates, two column lists and ten users (JWT, role
// `authenticated`, row-level security on one table, a column grant) are
// requested at once while a writer commits changes; each shape's replayed
// stream (snapshot + changes, with inserts of present keys and updates or
// deletes of absent ones counted as errors: nothing repeated, nothing missed)
// must equal what PostgreSQL returns to that user for the shape's filter. Then
// the sidecar is killed and every shape comes back with its handle and offset
// at once (the reconnect storm), writes still running, and the same check
// holds. Run against a sidecar with the tiniest batch (--snapshot-batch 2, one
// snapshot connection: every group crosses the batch boundary) and one with
// the default. A filter that fails for a row (division by zero) in a group
// fails only its own shape (400), the others of its group are served.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  startCluster, spawnSidecar, psqlSession, cleanupAll, workDir, getRaw,
} from '../lib/procs.js';
import { signHS256, now } from '../lib/jwt.js';

const SECRET = 'e2e-secret-that-is-at-least-32-bytes-long!';
const AUD = 'shapesync-e2e';
const USERS = Array.from({ length: 10 }, (_, i) => `${String(i + 1).padStart(8, '0')}-1111-4111-8111-111111111111`);

const SETUP = String.raw`
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('request.jwt.claims', true)::json->>'sub', '')::uuid $$;
CREATE ROLE authenticated NOLOGIN;
GRANT USAGE ON SCHEMA auth TO authenticated;
GRANT EXECUTE ON FUNCTION auth.uid() TO authenticated;
CREATE TABLE items (id int8 PRIMARY KEY, owner_id int NOT NULL, n int NOT NULL, v text);
GRANT SELECT ON items TO authenticated;
INSERT INTO items SELECT g, g % 60 + 1, g % 7, 'item ' || g FROM generate_series(1, 3000) g;
CREATE TABLE docs (id int PRIMARY KEY, owner_id uuid NOT NULL, kind int NOT NULL, title text, secret text);
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_docs ON docs FOR SELECT TO authenticated USING (owner_id = auth.uid());
GRANT SELECT (id, owner_id, kind, title) ON docs TO authenticated;   -- not "secret"
INSERT INTO docs SELECT g, ('{${USERS.join(',')}}'::uuid[])[g % 10 + 1], g % 5, 'doc ' || g, 's' || g
  FROM generate_series(1, 2000) g;
SELECT shapesync.track('items');
SELECT shapesync.track('docs');
CREATE ROLE shapesync_sidecar LOGIN;
SELECT shapesync.grant_sidecar('shapesync_sidecar');
GRANT authenticated TO shapesync_sidecar;
`;

let work;
let cluster;
let sidecarUrl;
const tokens = USERS.map((sub) =>
  signHS256({ sub, role: 'authenticated', aud: AUD, exp: now() + 3600 }, SECRET));

before(async () => {
  work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  const u = new URL(cluster.dbUrl);
  u.username = 'shapesync_sidecar';
  sidecarUrl = u.toString();
});

after(async () => {
  await cluster?.destroy();
  cleanupAll();
});

/**
 * The 200 shapes: per user u (0..9) and j (0..19): items `owner_id = k` (all
 * columns), items `owner_id = k AND n < 4` (columns id,owner_id,n), docs
 * `kind = j % 5` (row-level security adds the user's own rows; columns the role
 * may read).
 */
function shapeList(salt) {
  const out = [];
  for (let u = 0; u < USERS.length; u++) {
    for (let j = 0; j < 20; j++) {
      const k = ((u * 20 + j + salt) % 60) + 1;
      if (j % 3 === 0) out.push({ u, table: 'items', where: `owner_id = ${k}`, cols: 'id, owner_id, n, v' });
      else if (j % 3 === 1) out.push({ u, table: 'items', where: `owner_id = ${k} AND n < 4`, cols: 'id, owner_id, n', columns: 'id,owner_id,n' });
      else out.push({ u, table: 'docs', where: `kind = ${j % 5}`, cols: 'id, owner_id, kind, title' });
    }
  }
  return out;
}

const query = (s) => `table=${s.table}&where=${encodeURIComponent(s.where)}${s.columns ? `&columns=${s.columns}` : ''}`;
const auth = (s) => ({ headers: { Authorization: `Bearer ${tokens[s.u]}` } });

/** Applies messages strictly: an insert of a present key or an update/delete of an absent one is an error. */
function applyStrict(state, messages, errors, what) {
  for (const m of messages) {
    if (m.key === undefined) continue;
    const op = m.headers.operation;
    const has = state.has(m.key);
    if (op === 'insert') {
      if (has) errors.push(`${what}: insert of a present row ${m.key}`);
      state.set(m.key, { ...m.value });
    } else if (op === 'update') {
      if (!has) errors.push(`${what}: update of an absent row ${m.key}`);
      state.set(m.key, { ...(state.get(m.key) ?? {}), ...m.value });
    } else if (op === 'delete') {
      if (!has) errors.push(`${what}: delete of an absent row ${m.key}`);
      state.delete(m.key);
    }
  }
}

/** Follows a shape from its offset (or -1) to up-to-date, applying what arrives. */
async function syncTo(base, s, errors) {
  for (let i = 0; i < 400; i++) {
    const q = `${query(s)}&offset=${s.offset ?? '-1'}${s.handle ? `&handle=${encodeURIComponent(s.handle)}` : ''}`;
    const r = await getRaw(base, q, auth(s));
    if (r.status === 409) {  // rotated: start over
      s.handle = r.headers.get('electric-handle');
      s.offset = undefined;
      s.state = new Map();
      s.refetched = (s.refetched ?? 0) + 1;
      continue;
    }
    if (r.status === 503) { await sleep(100); continue; }
    if (r.status !== 200) throw new Error(`${s.table} ${s.where} as user ${s.u}: ${r.status} ${r.text.slice(0, 300)}`);
    s.handle = r.headers.get('electric-handle');
    s.offset = r.headers.get('electric-offset');
    s.state ??= new Map();
    applyStrict(s.state, r.body, errors, `${s.table} ${s.where} (user ${s.u})`);
    if (r.headers.get('electric-up-to-date') !== null) return;
  }
  throw new Error(`${s.table} ${s.where}: no up-to-date after 400 requests`);
}

/** What PostgreSQL returns to each user for each shape, as the role with the user's claims. */
async function expected(shapes) {
  const out = new Map();
  for (let u = 0; u < USERS.length; u++) {
    const mine = shapes.map((s, i) => [s, i]).filter(([s]) => s.u === u);
    const claims = JSON.stringify({ sub: USERS[u], role: 'authenticated' });
    let sql = `BEGIN; SET LOCAL ROLE authenticated; SELECT set_config('request.jwt.claims', '${claims}', true) IS NULL;\n`;
    for (const [s, i] of mine) {
      sql += `SELECT '${i}|' || coalesce(json_agg(json_build_object(${s.cols.split(', ').map((c) => `'${c}', ${c}::text`).join(', ')}) ORDER BY id), '[]') FROM ${s.table} WHERE ${s.where};\n`;
    }
    sql += 'COMMIT;';
    const text = await cluster.psql(sql);
    for (const line of text.split('\n')) {
      const m = /^(\d+)\|(.*)$/.exec(line);
      if (m) out.set(Number(m[1]), JSON.parse(m[2]));
    }
  }
  return out;
}

function assertMatches(shapes, want, what) {
  const diffs = [];
  shapes.forEach((s, i) => {
    const got = [...s.state.values()].sort((a, b) => Number(a.id) - Number(b.id));
    if (JSON.stringify(got) !== JSON.stringify(want.get(i))) {
      diffs.push(`${s.table} ${s.where} (user ${s.u}): got ${JSON.stringify(got).slice(0, 300)} want ${JSON.stringify(want.get(i)).slice(0, 300)}`);
    }
  });
  assert.deepEqual(diffs, [], `${what}: ${diffs.length} shapes differ`);
}

/** Paced writes to both tables until stopped: inserts, updates (moving rows across owners and kinds), deletes. */
function startWriter(first) {
  const s = psqlSession(cluster.dbUrl);
  let stopped = false;
  let error = null;
  let n = 0;
  const loop = (async () => {
    for (let i = first; !stopped; i++, n++) {
      try {
        await s.exec(`BEGIN;
          INSERT INTO items VALUES (${i}, ${i % 60 + 1}, ${i % 7}, 'w${i}');
          UPDATE items SET n = (n + 1) % 7, owner_id = CASE WHEN id % 5 = 0 THEN owner_id % 60 + 1 ELSE owner_id END WHERE id = ${i % 3000 + 1};
          DELETE FROM items WHERE id = ${(i * 7) % 3000 + 1};
          UPDATE docs SET kind = (kind + 1) % 5, title = title || '+' WHERE id = ${i % 2000 + 1};
          COMMIT`);
      } catch (e) {
        error = e;
        return;
      }
      await sleep(5);
    }
  })();
  return {
    async stop() { stopped = true; await loop; await s.close(); if (error) throw error; return n; },
  };
}

async function storm(sidecarArgs, salt, firstId, grouped = true) {
  const errors = [];
  const shapes = shapeList(salt);
  let sc = await spawnSidecar({ dbUrl: sidecarUrl, work, insecure: false, longPollTimeoutMs: 2000,
    args: ['--jwt-secret', SECRET, '--jwt-audience', AUD, ...sidecarArgs] });
  try {
    await sc.waitHealthy();
    const writer = startWriter(firstId);
    // among the shapes of user 0's and user 1's groups: a filter that fails
    // for a row (snapshot), one the database rejects (registration), a column
    // the role may not read (403)
    const bad = getRaw(sc.shapeUrl, `table=items&where=${encodeURIComponent('1 / (n - n) = 1')}&offset=-1`, auth({ u: 0 }));
    const unknown = getRaw(sc.shapeUrl, `table=items&where=${encodeURIComponent('nosuchcol = 1')}&offset=-1`, auth({ u: 1 }));
    const secret = getRaw(sc.shapeUrl, `table=docs&where=${encodeURIComponent('kind = 1')}&columns=id,secret&offset=-1`, auth({ u: 1 }));
    await Promise.all(shapes.map((s) => syncTo(sc.shapeUrl, s, errors)));
    const badRes = await bad;
    assert.equal(badRes.status, 400, `a failing filter: ${badRes.status} ${badRes.text.slice(0, 300)}`);
    assert.match(badRes.text, /division by zero/);
    const unknownRes = await unknown;
    assert.equal(unknownRes.status, 400, `an unknown column: ${unknownRes.status} ${unknownRes.text.slice(0, 300)}`);
    assert.match(unknownRes.text, /nosuchcol/);
    const secretRes = await secret;
    assert.equal(secretRes.status, 403, `a column the role may not read: ${secretRes.status} ${secretRes.text.slice(0, 300)}`);
    await sleep(300);
    const writes1 = await writer.stop();
    assert.ok(writes1 > 0, 'the writer committed while the shapes were created');
    // everything committed is in: follow each to up-to-date once more (writes stopped)
    await sleep(500);
    await Promise.all(shapes.map((s) => syncTo(sc.shapeUrl, s, errors)));
    assert.deepEqual(errors, [], 'each change exactly once');
    assertMatches(shapes, await expected(shapes), 'after creating 200 shapes at once');
    const log = sc.log(100000);
    if (grouped) {
      assert.match(log, /shape snapshots taken together/, 'some snapshots were taken in groups');
      assert.match(log, /shapes checked and registered in one statement/, 'some registrations were made together');
    }

    // The reconnect storm: a new sidecar process; every shape comes back at once with its handle and offset.
    sc.kill('SIGKILL');
    await sc.exited;
    const writer2 = startWriter(firstId + 100000);
    sc = await spawnSidecar({ dbUrl: sidecarUrl, work, insecure: false, longPollTimeoutMs: 2000, port: sc.port,
      args: ['--jwt-secret', SECRET, '--jwt-audience', AUD, ...sidecarArgs] });
    await sc.waitHealthy();
    const handles = shapes.map((s) => s.handle);
    await Promise.all(shapes.map((s) => syncTo(sc.shapeUrl, s, errors)));
    await sleep(300);
    await writer2.stop();
    await sleep(500);
    await Promise.all(shapes.map((s) => syncTo(sc.shapeUrl, s, errors)));
    assert.deepEqual(errors, [], 'each change exactly once through the storm');
    assertMatches(shapes, await expected(shapes), 'after the reconnect storm');
    const kept = shapes.filter((s, i) => s.handle === handles[i]).length;
    assert.equal(kept, shapes.length, 'every shape resumed with its handle (no refetch)');
  } catch (e) {
    e.message += `\nsidecar log:\n${sc.log(60)}`;
    throw e;
  } finally {
    await sc.stop();
  }
}

test('200 new shapes at once and a reconnect storm, batches of 2 over one connection', async () => {
  await storm(['--snapshot-batch', '2', '--snapshot-connections', '1', '--registration-batch', '2',
    '--registration-connections', '1'], 0, 10000);
});

test('200 new shapes at once and a reconnect storm, one at a time (batch 1)', async () => {
  await storm(['--snapshot-batch', '1', '--registration-batch', '1'], 3, 300000, false);
});

test('200 new shapes at once and a reconnect storm, default batch', async () => {
  // other owners and kinds than the first test's where they can differ (new handles), same ones elsewhere (loaded)
  await storm([], 7, 500000);
});

test('two sidecars create the same 200 shapes at once: one snapshot per shape, both serve it', async () => {
  const errors = [];
  const args = ['--jwt-secret', SECRET, '--jwt-audience', AUD];
  const a = await spawnSidecar({ dbUrl: sidecarUrl, work, insecure: false, longPollTimeoutMs: 2000, name: 'sc-a',
    args: [...args, '--snapshot-batch', '2', '--registration-batch', '2'] });
  const b = await spawnSidecar({ dbUrl: sidecarUrl, work, insecure: false, longPollTimeoutMs: 2000, name: 'sc-b', args });
  try {
    await a.waitHealthy();
    await b.waitHealthy();
    const writer = startWriter(700000);
    // the same definitions on both: each sidecar finds some shapes' build locks
    // taken by the other (it waits for and loads their snapshots) and takes the rest
    const onA = shapeList(11);
    const onB = shapeList(11);
    await Promise.all([...onA.map((s) => syncTo(a.shapeUrl, s, errors)), ...onB.map((s) => syncTo(b.shapeUrl, s, errors))]);
    await sleep(300);
    await writer.stop();
    await sleep(500);
    await Promise.all([...onA.map((s) => syncTo(a.shapeUrl, s, errors)), ...onB.map((s) => syncTo(b.shapeUrl, s, errors))]);
    assert.deepEqual(errors, [], 'each change exactly once on both sidecars');
    const want = await expected(onA);
    assertMatches(onA, want, 'sidecar a');
    assertMatches(onB, want, 'sidecar b');
    onA.forEach((s, i) => assert.equal(s.handle, onB[i].handle, 'one handle per shape on both sidecars'));
    const snaps = await cluster.psql(`SELECT count(*) FROM shapesync.shape_snapshots WHERE handle = ANY('{${onA.map((s) => s.handle).join(',')}}')`);
    assert.equal(Number(snaps), new Set(onA.map((s) => s.handle)).size, 'one stored snapshot per shape');
  } catch (e) {
    e.message += `\nsidecar a:\n${a.log(40)}\nsidecar b:\n${b.log(40)}`;
    throw e;
  } finally {
    await a.stop();
    await b.stop();
  }
});
