// Scale-out (issue 4, ARCHITECTURE "Scale-out" and invariant 3): two shapesyncd
// on one database behind nginx round-robin. Handles, offsets and the bytes of
// every non-live chunk are the same from either sidecar, so a client whose
// requests alternate between them sees one consistent stream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from '../lib/stack.js';
import {
  startCluster, startSidecar, startNginx, nginxBinary, psqlSession, recordingFetch, cleanupAll, workDir,
  FAST_BACKOFF, compareOffsets,
} from '../lib/procs.js';
import { follow, firstRows, select, isControl } from '../lib/shape-helpers.js';

const LONG_POLL_MS = 3000;
const SIDECAR_ARGS = ['--chunk-bytes', '4096'];
const SETUP = `
CREATE TABLE items (id int8 PRIMARY KEY, v text NOT NULL, n int4 NOT NULL);
SELECT shapesync.track('items');
INSERT INTO items SELECT g, 'row ' || g || ' ' || repeat('x', 60), g % 10 FROM generate_series(1, 300) g;
`;
const NGINX = nginxBinary();
const skip = NGINX ? false : 'nginx is not installed (scripts/install-deps.sh installs it)';

let work;
let cluster;
let a;
let b;
let nginx;

before(async () => {
  if (skip) return;
  work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  [a, b] = await Promise.all([
    startSidecar({ dbUrl: cluster.dbUrl, longPollTimeoutMs: LONG_POLL_MS, args: SIDECAR_ARGS, work, name: 'a' }),
    startSidecar({ dbUrl: cluster.dbUrl, longPollTimeoutMs: LONG_POLL_MS, args: SIDECAR_ARGS, work, name: 'b' }),
  ]);
  nginx = await startNginx({ upstreams: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], readTimeoutS: 30, work });
});

after(async () => {
  await nginx?.stop();
  await Promise.all([a?.stop(), b?.stop()]);
  await cluster?.destroy();
  cleanupAll();
});

async function get(sidecar, query) {
  const url = `${sidecar.shapeUrl}?${query}`;
  const t0 = performance.now();
  const r = await fetch(url, { signal: AbortSignal.timeout(20_000) });
  const text = await r.text();
  if (process.env.E4DEBUG) console.log(`# ${sidecar.name} ${query} ${r.status} ${(performance.now() - t0).toFixed(0)} ms`);
  return {
    url,
    status: r.status,
    handle: r.headers.get('electric-handle'),
    offset: r.headers.get('electric-offset'),
    upToDate: r.headers.get('electric-up-to-date') !== null,
    text,
    body: r.status === 200 ? JSON.parse(text) : text,
  };
}

const show = (r) => `GET ${r.url} -> ${r.status} handle=${r.handle} offset=${r.offset} ${r.text.length} bytes: ${r.text.slice(0, 300)}`;
const lastIsUpToDate = (r) => Array.isArray(r.body) && isControl(r.body.at(-1), 'up-to-date');
const withoutUpToDate = (r) => (lastIsUpToDate(r) ? r.body.slice(0, -1) : r.body);

/**
 * Fetch the same (handle, offset) chunks from both sidecars, from `offset` up to
 * an up-to-date. Hard-asserts status, handle, electric-offset and bodies without
 * a trailing up-to-date; returns the chunks whose raw bytes differ (only the
 * final up-to-date's global_last_seen_lsn may legitimately make them differ).
 */
async function compareWalk(base, handle, offset) {
  const exactDiffs = [];
  const chunks = [];
  for (let i = 0; i < 200; i++) {
    const q = `${base}&handle=${encodeURIComponent(handle)}&offset=${offset}`;
    const [ra, rb] = await Promise.all([get(a, q), get(b, q)]);
    assert.equal(ra.status, 200, show(ra));
    assert.equal(rb.status, 200, show(rb));
    assert.equal(ra.handle, handle, show(ra));
    assert.equal(rb.handle, handle, show(rb));
    assert.equal(ra.offset, rb.offset, `electric-offset differs for offset=${offset}:\nA: ${show(ra)}\nB: ${show(rb)}`);
    assert.deepEqual(withoutUpToDate(ra), withoutUpToDate(rb), `bodies differ for offset=${offset}`);
    assert.equal(lastIsUpToDate(ra), lastIsUpToDate(rb), `up-to-date differs for offset=${offset}`);
    if (ra.text !== rb.text) exactDiffs.push({ offset, a: ra.text.slice(-200), b: rb.text.slice(-200) });
    chunks.push({ offset, end: ra.offset, bytes: ra.text.length, upToDate: lastIsUpToDate(ra) });
    if (lastIsUpToDate(ra)) return { chunks, exactDiffs, end: ra.offset };
    assert.ok(compareOffsets(ra.offset, offset) > 0, `non-live response must advance: ${show(ra)}`);
    offset = ra.offset;
  }
  throw new Error('no up-to-date after 200 chunks');
}

/** Walk one sidecar non-live from `offset` to up-to-date; the change messages. */
async function changesFrom(sidecar, base, handle, offset) {
  const out = [];
  for (let i = 0; i < 200; i++) {
    const r = await get(sidecar, `${base}&handle=${encodeURIComponent(handle)}&offset=${offset}`);
    assert.equal(r.status, 200, show(r));
    out.push(...r.body.filter((m) => m.key !== undefined));
    if (lastIsUpToDate(r)) return out;
    offset = r.offset;
  }
  throw new Error('no up-to-date after 200 chunks');
}

let snapshotEnd; // { handle, offset } of table=items after its snapshot

test('same handle, electric-offset and bytes for every snapshot chunk from either sidecar', { skip }, async () => {
  // built by A, loaded by B
  const [ra, rb] = [await get(a, 'table=items&offset=-1'), await get(b, 'table=items&offset=-1')];
  assert.equal(ra.status, 200, show(ra));
  assert.equal(rb.status, 200, show(rb));
  assert.equal(rb.handle, ra.handle, 'same handle from both sidecars');
  assert.equal(rb.offset, ra.offset);
  assert.equal(rb.text, ra.text, 'offset=-1 bodies are byte-identical');
  const walk = await compareWalk('table=items', ra.handle, ra.offset);
  assert.ok(walk.chunks.length >= 3, `the snapshot spans several chunks (${walk.chunks.length})`);
  assert.deepEqual(walk.exactDiffs, [], 'byte-identical chunks, up-to-date included');
  snapshotEnd = { handle: ra.handle, offset: walk.end };

  // a second shape built by B (both asked at once: one builds, the other loads)
  const where = `table=items&where=${encodeURIComponent('n < 4')}`;
  const [sb, sa] = await Promise.all([get(b, `${where}&offset=-1`), get(a, `${where}&offset=-1`)]);
  assert.equal(sb.status, 200, show(sb));
  assert.equal(sa.status, 200, show(sa));
  assert.equal(sa.handle, sb.handle, 'same handle for a shape requested on both at once');
  assert.notEqual(sa.handle, ra.handle);
  assert.equal(sa.text, sb.text);
  const w2 = await compareWalk(where, sb.handle, sb.offset);
  assert.deepEqual(w2.exactDiffs, []);
  console.log(`# snapshot: ${walk.chunks.length + 1} chunks of table=items identical from A and B; ` +
    `${w2.chunks.length + 1} chunks of n < 4`);
});

test('same electric-offset and bytes for every log chunk from either sidecar', { skip }, async () => {
  assert.ok(snapshotEnd, 'needs the snapshot test');
  const { handle, offset } = snapshotEnd;
  const s = psqlSession(cluster.dbUrl);
  try {
    for (let t = 0; t < 12; t++) {
      const base = 1000 + t * 10;
      await s.exec(`BEGIN;
        INSERT INTO items SELECT g, 'log ' || g || ' ' || repeat('y', 150), g % 10 FROM generate_series(${base}, ${base + 9}) g;
        UPDATE items SET v = 'upd ${t}' WHERE id = ${t + 1};
        DELETE FROM items WHERE id = ${t + 100};
        COMMIT`);
    }
  } finally {
    await s.close();
  }
  const expected = 12 * 12;
  // Both sidecars have the whole log (each follows the ticks on its own).
  for (const sc of [a, b]) {
    await waitFor(async () => (await changesFrom(sc, 'table=items', handle, offset)).length >= expected,
      { timeoutMs: 15_000, intervalMs: 100, what: `${sc.name} to have ${expected} changes` });
  }
  const walk = await compareWalk('table=items', handle, offset);
  assert.ok(walk.chunks.length >= 3, `the log spans several chunks (${JSON.stringify(walk.chunks)})`);
  const middle = walk.chunks.filter((c) => !c.upToDate);
  assert.ok(middle.length >= 2, 'log ranges without a trailing up-to-date were compared');
  // Log offsets are <tick << 32 | rank>_<2 * op>: not in the snapshot region.
  assert.ok(!walk.end.startsWith('0_'), `log offset ${walk.end}`);
  let exactDiffs = walk.exactDiffs;
  for (let i = 0; i < 5 && exactDiffs.length > 0; i++) {
    await sleep(200); // a sidecar may be one tick behind on global_last_seen_lsn
    exactDiffs = (await compareWalk('table=items', handle, offset)).exactDiffs;
  }
  assert.deepEqual(exactDiffs, [], 'byte-identical log chunks, final up-to-date included');
  console.log(`# log: ${walk.chunks.length} chunks identical from A and B (${middle.length} without up-to-date), end ${walk.end}`);
});

test('the official client through nginx alternates sidecars and stays consistent under writes', { skip }, async () => {
  const rec = recordingFetch();
  const recW = recordingFetch();
  const opts = (r) => ({ fetchClient: r.fetchClient, backoffOptions: FAST_BACKOFF });
  const all = follow(nginx.shapeUrl, { table: 'items' }, opts(rec));
  // a shape nobody asked for yet: created through nginx while writes go on
  const some = follow(nginx.shapeUrl, { table: 'items', where: 'n % 3 = 0' }, opts(recW));
  const s = psqlSession(cluster.dbUrl);
  try {
    const writes = (async () => {
      for (let i = 0; i < 120; i++) {
        const id = 5000 + i;
        await s.exec(`BEGIN;
          INSERT INTO items VALUES (${id}, 'c${id}', ${i % 10});
          UPDATE items SET n = n + 1, v = 'moved ${i}' WHERE id = ${(i * 7) % 300 + 1};
          DELETE FROM items WHERE id = ${id - 11} AND ${i % 4} = 0;
          COMMIT`);
        await sleep(25);
      }
    })();
    await firstRows(all);
    await firstRows(some);
    await writes;
  } finally {
    await s.close();
  }
  for (const [f, sql, what] of [
    [all, 'SELECT * FROM items', 'table=items'],
    [some, 'SELECT * FROM items WHERE n % 3 = 0', 'n % 3 = 0'],
  ]) {
    let last;
    try {
      await waitFor(async () => {
        last = { client: norm(f.shape.currentRows), db: norm(await select(cluster, sql)) };
        return isDeepStrictEqual(last.client, last.db);
      }, { timeoutMs: 15_000, intervalMs: 100, what });
    } catch (e) {
      assert.deepEqual(last?.client, last?.db, `${what}: client rows differ from SELECT (${e.message}; errors ${f.errors.join('; ')})`);
    }
    assert.deepEqual(f.errors.map(String), [], `${what}: no client errors`);
    assert.equal(f.messages.filter((m) => isControl(m, 'must-refetch')).length, 0, `${what}: no must-refetch`);
  }
  for (const [r, f, what] of [[rec, all, 'table=items'], [recW, some, 'n % 3 = 0']]) {
    const answered = r.log.filter((e) => e.status !== undefined);
    const handle = f.stream.shapeHandle;
    const upstreams = new Map();
    let prev = null;
    for (const e of answered) {
      assert.equal(e.status, 200, `${what}: ${r.describe(e)}`);
      assert.equal(e.headers['electric-handle'], handle, `${what}: one handle: ${r.describe(e)}`);
      if (e.params.get('offset') !== '-1') assert.equal(e.params.get('handle'), handle, r.describe(e));
      upstreams.set(e.headers['x-upstream'], (upstreams.get(e.headers['x-upstream']) ?? 0) + 1);
      if (prev && e.params.get('offset') !== '-1' && !e.params.has('subset__where')) {
        assert.ok(compareOffsets(e.headers['electric-offset'], prev) >= 0, `${what}: offset went back: ${r.describe(e)}`);
      }
      if (e.params.get('offset') !== '-1') prev = e.headers['electric-offset'];
    }
    assert.ok(upstreams.has(`127.0.0.1:${a.port}`) && upstreams.has(`127.0.0.1:${b.port}`),
      `${what}: requests reached both sidecars: ${JSON.stringify([...upstreams])}`);
    console.log(`# nginx ${what}: ${answered.length} requests, per upstream ${JSON.stringify([...upstreams])}, handle ${handle}`);
  }
  assert.equal(rec.log.filter((e) => e.error).length, 0, 'no failed requests');
  all.close();
  some.close();
});

function norm(rows) {
  const out = {};
  for (const r of rows) out[String(r.id)] = { id: String(r.id), v: r.v, n: Number(r.n) };
  return out;
}
