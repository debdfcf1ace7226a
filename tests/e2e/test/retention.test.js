// Storage stays bounded (issue 4): the change log is rotated and truncated
// once every consumer has passed it; a shape whose changes are no longer all
// in the log cannot be rebuilt, so after a restart its clients get 409 and
// re-sync (consistent); a sidecar gone longer than shapesync.consumer_timeout
// is dropped (the log says so) and, back, starts over without losing a row.
// Real processes: pgcluster.sh, build/shapesyncd, the official client.
// Rotations are driven with shapesync.maintain('0', ...) (retention 0) so the
// test needs no waiting; the ticker worker's own runs use the defaults.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../lib/stack.js';
import {
  startCluster, startSidecar, recordingFetch, cleanupAll, workDir, FAST_BACKOFF, getRaw, syncRaw,
} from '../lib/procs.js';
import { follow, firstRows, select, isControl, assertConsistent as assertRowsConsistent } from '../lib/shape-helpers.js';

const LONG_POLL_MS = 2000;
const SETUP = `
CREATE TABLE items (id int8 PRIMARY KEY, v text NOT NULL, n int4 NOT NULL);
SELECT shapesync.track('items');
INSERT INTO items SELECT g, 'row ' || g, g % 10 FROM generate_series(1, 40) g;
`;

let work;
let cluster;
let sidecar;
let nextId = 1000;

before(async () => {
  work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  sidecar = await startSidecar({ dbUrl: cluster.dbUrl, longPollTimeoutMs: LONG_POLL_MS, work, args: ['--consumer-name', 'e2e-a'] });
});

after(async () => {
  await sidecar?.stop();
  await cluster?.destroy();
  cleanupAll();
});

const norm = (rows) => {
  const out = {};
  for (const r of rows) out[String(r.id)] = { id: String(r.id), v: r.v, n: Number(r.n) };
  return out;
};

const assertConsistent = (f, what, where = 'true', timeoutMs = 20_000) => assertRowsConsistent(f,
  () => select(cluster, `SELECT * FROM items WHERE ${where}`), what,
  { normalize: norm, timeoutMs, context: () => `sidecar log:\n${sidecar.log(30)}` });

const q1 = async (sql) => (await cluster.psql(sql)).split('\n').pop();

/** Write a row and tick, so the next rotation has something to truncate. */
async function writeAndTick() {
  const id = nextId++;
  await cluster.psql(`INSERT INTO items VALUES (${id}, 'w${id}', ${id % 10}); SELECT shapesync.tick(true);`);
  return id;
}

/**
 * Rotate the change log `times` times (a write before each), retrying while a
 * consumer has not read the rows yet. Returns the horizon.
 */
async function rotate(times, consumerTimeout = '1 hour') {
  for (let i = 0; i < times; i++) {
    await writeAndTick();
    await waitFor(async () => (await q1(`SELECT rotated FROM shapesync.maintain('0', '${consumerTimeout}')`)) === 't',
      { timeoutMs: 15_000, intervalMs: 100, what: `rotation ${i + 1} of ${times}` });
  }
  return BigInt(await q1('SELECT horizon_tick FROM shapesync.log_state'));
}

test('a live sidecar holds the change log; after a restart an old shape answers 409, the client re-syncs', async () => {
  const rec = recordingFetch();
  const f = follow(sidecar.shapeUrl, { table: 'items' }, { fetchClient: rec.fetchClient, backoffOptions: FAST_BACKOFF });
  try {
    await firstRows(f);
    const h1 = f.stream.shapeHandle;
    const start = BigInt(await q1(`SELECT start_tick FROM shapesync.shape_snapshots WHERE handle = '${h1}'`));

    // The sidecar reports its position: it is a consumer, and a rotation waits for it.
    await waitFor(async () => (await q1(
      "SELECT count(*) FROM shapesync.consumer_status WHERE consumer_name = 'e2e-a' AND NOT stale")) === '1',
    { what: 'sidecar registered as a consumer' });

    const horizon = await rotate(3);
    assert.ok(horizon > start, `the log no longer holds the shape's changes (horizon ${horizon}, start ${start})`);
    assert.equal(await q1("SELECT count(*) FROM shapesync.ticks WHERE tick_id < (SELECT horizon_tick FROM shapesync.log_state)"), '0',
      'ticks before the horizon are deleted');

    // the sidecar holds the shape in memory: live clients go on, same handle
    const id = await writeAndTick();
    await waitFor(() => f.shape.currentRows.some((r) => String(r.id) === String(id)), { what: 'live row after rotations' });
    await assertConsistent(f, 'after rotations, before the restart');
    assert.equal(f.stream.shapeHandle, h1);

    // a shape created after the rotations can be rebuilt after a restart
    const fresh = await syncRaw(sidecar.shapeUrl, 'table=items&where=n%3D3');
    // its snapshot is served while it is stored; once stored, any sidecar can load it
    await waitFor(async () => (await q1(
      `SELECT chunk_count IS NOT NULL FROM shapesync.shape_snapshots WHERE handle = '${fresh.handle}'`)) === 't',
    { what: 'fresh snapshot stored' });

    // the offset the client has now (once the sidecar is back the client
    // itself may re-sync first and move to -1)
    const oldOffset = f.stream.lastOffset;
    assert.notEqual(oldOffset, '-1');
    sidecar.kill('SIGKILL');
    await sidecar.exited;
    await writeAndTick();
    sidecar = await startSidecar({ dbUrl: cluster.dbUrl, port: sidecar.port, longPollTimeoutMs: LONG_POLL_MS, work,
      args: ['--consumer-name', 'e2e-a'] });

    // raw: the old shape's offset is older than what is retained → 409 with a
    // new handle, at once: also when the request waited on the rebuild the
    // official client's retry started, which fails for retention (the shape
    // is retired before that build's waiters are woken).
    // Four at once: they wait on the same rebuild.
    const olds = await Promise.all([0, 1, 2, 3].map(() =>
      getRaw(sidecar.shapeUrl, `table=items&handle=${h1}&offset=${encodeURIComponent(oldOffset)}`)));
    for (const o of olds) assert.equal(o.status, 409, `old shape after restart: ${o.status} ${o.text}\n${sidecar.log(80)}`);
    const old = olds[0];
    assert.ok(isControl(old.body?.[0], 'must-refetch'), old.text);
    const h2 = old.headers.get('electric-handle');
    assert.ok(h2 && h2 !== h1, `a new handle (${h2})`);
    const reason = await q1(`SELECT reason FROM shapesync.shapes WHERE handle = '${h1}'`);
    assert.match(reason, /change log retention/, 'the registry says why');

    // the fresh shape resumes with its handle
    const r = await getRaw(sidecar.shapeUrl, `table=items&where=n%3D3&handle=${fresh.handle}&offset=${fresh.offset}`);
    assert.equal(r.status, 200, `fresh shape after restart: ${r.status} ${r.text}`);

    // the official client re-syncs and is consistent
    await assertConsistent(f, 'after the restart');
    assert.equal(f.stream.shapeHandle, h2, 'the client follows the new shape');
    assert.ok(f.messages.some((m) => isControl(m, 'must-refetch')), 'the client was told to refetch');
  } finally {
    f.close();
  }
});

test('a consumer gone longer than consumer_timeout is dropped (and logged); back, it starts over without losing rows', async () => {
  const where = 'n < 5';
  const rec = recordingFetch();
  const f = follow(sidecar.shapeUrl, { table: 'items', where }, { fetchClient: rec.fetchClient, backoffOptions: FAST_BACKOFF });
  try {
    await firstRows(f);
    const h1 = f.stream.shapeHandle;
    await waitFor(async () => (await q1(
      "SELECT count(*) FROM shapesync.consumer_status WHERE consumer_name = 'e2e-a'")) === '1', { what: 'registered' });

    sidecar.kill('SIGSTOP');
    try {
      // while it is stopped, the log is held for it: rotations go on until
      // the next table holds rows it has not read
      let held = '';
      for (let i = 0; i < 4 && !/e2e-a/.test(held); i++) {
        await writeAndTick();
        held = await q1("SELECT coalesce(waiting_for, 'rotated') FROM shapesync.maintain('0', '1 hour')");
      }
      assert.match(held, /consumers "e2e-a"/, 'rotation waits for the stopped sidecar');
      // ...until it has been unseen for longer than the timeout
      await cluster.psql("UPDATE shapesync.consumers SET last_seen = now() - interval '2 hours' WHERE consumer_name = 'e2e-a'");
      assert.equal(await q1("SELECT dropped_consumers FROM shapesync.maintain('1 day', '1 hour')"), '1');
      assert.equal(await q1("SELECT count(*) FROM shapesync.consumers WHERE consumer_name = 'e2e-a'"), '0');
      await rotate(3);
      await cluster.psql(`UPDATE items SET v = v || ' (while stopped)' WHERE n < 5 AND id <= 10`);
    } finally {
      sidecar.kill('SIGCONT');
    }
    await waitFor(() => /dropped consumer "e2e-a"/.test(cluster.log(400)), { what: 'PostgreSQL log names the dropped consumer' });

    await waitFor(() => /fell behind the change log|change log now starts after tick/.test(sidecar.log(200)),
      { timeoutMs: 15_000, what: 'the sidecar notices it fell behind' });
    await assertConsistent(f, 'after coming back', where);
    assert.notEqual(f.stream.shapeHandle, h1, 'the shape could not be rebuilt: new handle');
    assert.ok(sidecar.alive(), 'no crash');
    // registered again, from its new position
    await waitFor(async () => (await q1(
      "SELECT count(*) FROM shapesync.consumer_status WHERE consumer_name = 'e2e-a' AND NOT stale")) === '1',
    { what: 'registered again' });
    // and live again
    const id = nextId++;
    await cluster.psql(`INSERT INTO items VALUES (${id}, 'after', 1)`);
    await waitFor(() => f.shape.currentRows.some((r) => String(r.id) === String(id)), { what: 'live row after coming back' });
  } finally {
    f.close();
  }
});
