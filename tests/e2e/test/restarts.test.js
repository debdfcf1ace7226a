// Restarts (issue 4, ARCHITECTURE invariant 6): killing shapesyncd, restarting
// PostgreSQL or losing the database loses nothing. The official client
// (ShapeStream + Shape, long-poll) stays live through each fault and resumes from
// its offset with the same handle; after every fault its rows equal the
// database's SELECT. Also: 503 while the database is down, and a graceful
// SIGTERM drain. Real processes throughout (pgcluster.sh, build/shapesyncd).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from 'node:net';
import { waitFor } from '../lib/stack.js';
import {
  startCluster, startSidecar, psqlSession, recordingFetch, canConnect, cleanupAll, workDir, FAST_BACKOFF,
  syncRaw, applyMessages,
} from '../lib/procs.js';
import {
  follow, firstRows, select, isControl, within, assertConsistent as assertRowsConsistent,
} from '../lib/shape-helpers.js';

const LONG_POLL_MS = 3000;
const SETUP = `
CREATE TABLE items (id int8 PRIMARY KEY, v text NOT NULL, n int4 NOT NULL);
SELECT shapesync.track('items');
INSERT INTO items SELECT g, 'row ' || g, g % 10 FROM generate_series(1, 50) g;
`;

let work;
let cluster;
let sidecar; // the sidecar the client follows; replaced by test 1
let client; // { f: follow(...), rec: recordingFetch(), handle }

before(async () => {
  work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  sidecar = await startSidecar({ dbUrl: cluster.dbUrl, longPollTimeoutMs: LONG_POLL_MS, work });
  const rec = recordingFetch();
  const f = follow(sidecar.shapeUrl, { table: 'items' }, { fetchClient: rec.fetchClient, backoffOptions: FAST_BACKOFF });
  await firstRows(f);
  client = { f, rec, handle: f.stream.shapeHandle };
});

after(async () => {
  client?.f.close();
  await sidecar?.stop();
  await cluster?.destroy();
  cleanupAll();
});

const norm = (rows) => {
  const out = {};
  for (const r of rows) out[String(r.id)] = { id: String(r.id), v: r.v, n: Number(r.n) };
  return out;
};

/** Wait until the client's rows equal SELECT * FROM items; assert with a diff otherwise. */
const assertConsistent = (f, what, timeoutMs = 15_000) => assertRowsConsistent(f, () => select(cluster, 'SELECT * FROM items'),
  what, { normalize: norm, timeoutMs, context: () => `sidecar log:\n${sidecar.log(30)}` });

/** Paced writes from one psql session: insert id, update id-7, delete id-13 when it is a multiple of 3. */
function startWriter(firstId, everyMs = 40) {
  const s = psqlSession(cluster.dbUrl);
  const done = []; // { id, at } committed
  let stopped = false;
  let error = null;
  const loop = (async () => {
    for (let i = firstId; !stopped; i++) {
      try {
        await s.exec(`BEGIN;
          INSERT INTO items VALUES (${i}, 'w${i}', ${i % 10});
          UPDATE items SET n = n + 1, v = v || '+' WHERE id = ${i - 7};
          DELETE FROM items WHERE id = ${i - 13} AND id % 3 = 0;
          COMMIT`);
      } catch (e) {
        error = e;
        return;
      }
      done.push({ id: i, at: performance.now() });
      await sleep(everyMs);
    }
  })();
  return {
    done,
    async stop() {
      stopped = true;
      await loop;
      await s.close();
      if (error) throw error;
    },
  };
}

const insertsSeen = (f) => new Set(
  f.messages.filter((m) => m.headers?.operation === 'insert').map((m) => String(m.value.id)));
const mustRefetches = (f) => f.messages.filter((m) => isControl(m, 'must-refetch')).length;

/** Requests after log index `from` that got a response: all on `handle`, none 409. */
function assertSameHandle(rec, from, handle, what) {
  const answered = rec.log.slice(from).filter((e) => e.status !== undefined);
  assert.ok(answered.length > 0, `${what}: no request was answered`);
  for (const e of answered) {
    assert.notEqual(e.status, 409, `${what}: must-refetch: ${rec.describe(e)}`);
    assert.equal(e.params.get('handle'), handle, `${what}: request not on the old handle: ${rec.describe(e)}`);
    assert.equal(e.headers['electric-handle'], handle, `${what}: response handle changed: ${rec.describe(e)}`);
  }
  return answered;
}

test('kill -9 shapesyncd mid-stream: the client resumes from its offset with the same handle, nothing missed', async () => {
  const { f, rec, handle } = client;
  assert.ok(handle, 'client has a handle');
  const writer = startWriter(1000);
  try {
    await sleep(800);
    await waitFor(() => rec.pending().some((e) => e.params.get('live') === 'true'),
      { what: 'a live long-poll in flight' });
    const killedAt = performance.now();
    const fromIdx = rec.log.length;
    const lastOffsetBefore = f.stream.lastOffset;
    sidecar.kill('SIGKILL');
    const exit = await sidecar.exited;
    assert.equal(exit.signal, 'SIGKILL');
    await sleep(1500); // writes go on while it is down
    const whileDown = writer.done.filter((d) => d.at > killedAt).map((d) => String(d.id));
    const old = sidecar;
    sidecar = await startSidecar({ dbUrl: cluster.dbUrl, port: old.port, longPollTimeoutMs: LONG_POLL_MS, work });
    await sleep(1000); // and after it is back
    await writer.stop();
    assert.ok(whileDown.length >= 5, `only ${whileDown.length} rows were written while the sidecar was down`);

    await assertConsistent(f, 'after kill -9 and restart');
    const seen = insertsSeen(f);
    const missing = whileDown.filter((id) => !seen.has(id));
    assert.deepEqual(missing, [], 'rows inserted while the sidecar was down reached the client');
    assert.equal(mustRefetches(f), 0, 'no must-refetch');
    assert.deepEqual(f.errors.map(String), [], 'no client errors');
    assert.equal(f.stream.shapeHandle, handle, 'the stream keeps its handle');
    const answered = assertSameHandle(rec, fromIdx, handle, 'after restart');
    // The first answered request after the kill resumes at (or after) the offset the client had.
    assert.notEqual(answered[0].params.get('offset'), '-1', `resumed, not restarted: ${rec.describe(answered[0])}`);
    assert.ok(answered.some((e) => e.headers['electric-offset'] !== lastOffsetBefore), 'the stream advanced');
    const failed = rec.log.slice(fromIdx).filter((e) => e.error).length;
    console.log(`# kill -9: ${failed} failed attempt(s) while down, ${whileDown.length} rows written while down, ` +
      `${answered.length} requests answered after restart, handle ${handle}`);
  } finally {
    await writer.stop().catch(() => {});
  }
});

test('PostgreSQL restart while the client is live: the sidecar reconnects, the client keeps going', async () => {
  const { f, rec, handle } = client;
  await assertConsistent(f, 'before the restart');
  await waitFor(() => rec.pending().some((e) => e.params.get('live') === 'true'),
    { what: 'a live long-poll in flight' });
  const fromIdx = rec.log.length;
  // Committed right before the shutdown: its tick may or may not be out yet.
  await cluster.psql(`INSERT INTO items SELECT g, 'pre ' || g, 1 FROM generate_series(20000, 20004) g`);
  const t0 = performance.now();
  await cluster.stop();
  await sleep(1000);
  await cluster.start();
  const dbBackMs = performance.now() - t0;
  await waitFor(async () => {
    const r = await fetch(`${sidecar.baseUrl}/v1/health`);
    return r.status === 200 && (await r.json()).status === 'active';
  }, { timeoutMs: 30_000, intervalMs: 100, what: 'sidecar health active after the restart' });
  const healthyMs = performance.now() - t0;
  assert.ok(sidecar.alive(), 'the sidecar survived the restart');
  await cluster.psql(`INSERT INTO items SELECT g, 'post ' || g, 2 FROM generate_series(20010, 20014) g;
                      UPDATE items SET v = 'updated after restart' WHERE id = 1`);
  await waitFor(() => {
    const ids = new Set(f.shape.currentRows.map((r) => String(r.id)));
    return ids.has('20000') && ids.has('20004') && ids.has('20010') && ids.has('20014');
  }, { timeoutMs: 20_000, intervalMs: 100, what: `rows written around the restart at the client (errors: ${f.errors.join('; ')})` });
  const arrivedMs = performance.now() - t0;
  await assertConsistent(f, 'after the PostgreSQL restart');
  assert.equal(mustRefetches(f), 0, 'no must-refetch');
  assert.deepEqual(f.errors.map(String), [], 'no client errors');
  assert.equal(f.stream.shapeHandle, handle, 'same handle');
  assertSameHandle(rec, fromIdx, handle, 'around the PostgreSQL restart');
  const statuses = rec.log.slice(fromIdx).map((e) => e.status ?? e.error);
  console.log(`# pg restart: db back after ${dbBackMs.toFixed(0)} ms, sidecar active after ${healthyMs.toFixed(0)} ms, ` +
    `rows at the client after ${arrivedMs.toFixed(0)} ms; statuses: ${statuses.join(',')}`);
});

test('database unreachable: 503 + retry-after for a new shape, health waiting, recovery after the cluster is back', async () => {
  const newShape = `${sidecar.shapeUrl}?table=items&where=${encodeURIComponent('n > 5')}&offset=-1`;
  await cluster.stop();
  try {
    // health notices
    let health;
    await waitFor(async () => {
      const r = await fetch(`${sidecar.baseUrl}/v1/health`, { signal: AbortSignal.timeout(3_000) });
      health = { status: r.status, body: await r.text() };
      return health.status !== 200;
    }, { timeoutMs: 10_000, intervalMs: 100, what: 'health to leave active' });
    assert.equal(health.status, 202, `health while down: ${JSON.stringify(health)}`);
    assert.deepEqual(JSON.parse(health.body), { status: 'waiting' });

    const t0 = performance.now();
    const r = await fetch(newShape, { signal: AbortSignal.timeout(15_000) });
    const ms = performance.now() - t0;
    const text = await r.text();
    const desc = `GET ${newShape} -> ${r.status} retry-after=${r.headers.get('retry-after')} ${text} (${ms.toFixed(0)} ms)`;
    assert.equal(r.status, 503, desc);
    assert.ok(ms < 5_000, `answered within 5 s: ${desc}`);
    assert.match(r.headers.get('retry-after') ?? '', /^[1-9][0-9]*$/, desc);
    assert.equal(typeof JSON.parse(text), 'object', desc);
    assert.match(r.headers.get('content-type') ?? '', /application\/json/, desc);
    assert.ok(sidecar.alive(), 'sidecar still running');
    console.log(`# db down: ${desc}`);
  } finally {
    await cluster.start();
  }
  const t1 = performance.now();
  await waitFor(async () => {
    const r = await fetch(`${sidecar.baseUrl}/v1/health`);
    return r.status === 200 && (await r.json()).status === 'active';
  }, { timeoutMs: 30_000, intervalMs: 100, what: 'health active after the cluster is back' });
  console.log(`# db back: health active after ${(performance.now() - t1).toFixed(0)} ms`);

  // The first request after health says active must work; on failure, say how
  // many more it took.
  const attempts = [];
  for (let i = 0; i < 20; i++) {
    const r = await fetch(newShape, { signal: AbortSignal.timeout(15_000) });
    attempts.push(`${r.status} retry-after=${r.headers.get('retry-after')} ${(await r.text()).slice(0, 120)}`);
    if (r.status === 200) break;
    await sleep(250);
  }
  // The new shape syncs to the right rows; the old client is still consistent.
  const raw = await syncRaw(sidecar.shapeUrl, `table=items&where=${encodeURIComponent('n > 5')}`);
  assert.deepEqual(norm(applyMessages(raw.messages)), norm(await select(cluster, 'SELECT * FROM items WHERE n > 5')));
  await cluster.psql(`INSERT INTO items VALUES (30000, 'after outage', 7)`);
  await assertConsistent(client.f, 'after the outage');
  assert.equal(mustRefetches(client.f), 0, 'no must-refetch');
  assert.equal(client.f.stream.shapeHandle, client.handle, 'same handle');
  assert.equal(attempts.length, 1, `GET ${newShape} right after health said active: ${attempts.length} attempt(s), ` +
    `250 ms apart, until 200:\n${attempts.join('\n')}\nsidecar log:\n${sidecar.log(12)}`);
});

/** A keep-alive connection that asked for /v1/health once and now sits idle (its session waits for a request). */
function idleConnection(port) {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port });
    let got = '';
    sock.once('error', reject);
    sock.on('data', (d) => {
      got += d;
      if (got.includes('"active"')) resolve(sock);
    });
    sock.write('GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n');
  });
}

test('SIGTERM drains: the pending long-poll is answered, exit 0 within seconds, new connections refused', async () => {
  const s = await startSidecar({ dbUrl: cluster.dbUrl, longPollTimeoutMs: 20_000, work, name: 'draining' });
  // idle keep-alive sessions are still open at exit: their coroutines are torn down, not skipped
  const idle = [];
  try {
    for (let i = 0; i < 3; i++) idle.push(await idleConnection(s.port));
    const raw = await syncRaw(s.shapeUrl, 'table=items');
    const url = `${s.shapeUrl}?table=items&handle=${encodeURIComponent(raw.handle)}&offset=${raw.offset}&live=true&cursor=1`;
    let answeredAt = null;
    const pending = fetch(url, { signal: AbortSignal.timeout(30_000) }).then(async (r) => {
      answeredAt = performance.now();
      return { status: r.status, headers: r.headers, text: await r.text() };
    });
    await sleep(500);
    assert.equal(answeredAt, null, 'the long-poll is pending before SIGTERM');
    const termAt = performance.now();
    s.kill('SIGTERM');
    await sleep(150);
    const refusedWhileDraining = !(await canConnect(s.port));
    const res = await within(pending, 5_000, 'the pending long-poll was not answered after SIGTERM');
    const answerMs = answeredAt - termAt;
    const exit = await within(s.exited, 10_000, 'shapesyncd did not exit within 10 s of SIGTERM');
    const exitMs = exit.at - termAt;
    const desc = `GET ${url} -> ${res.status} up-to-date=${res.headers.get('electric-up-to-date')} ${res.text}`;
    assert.equal(res.status, 200, desc);
    const body = JSON.parse(res.text);
    assert.ok(Array.isArray(body) && isControl(body.at(-1), 'up-to-date'), desc);
    assert.equal(res.headers.get('electric-up-to-date'), '', desc);
    assert.ok(res.headers.get('electric-cursor'), `live response carries a cursor: ${desc}`);
    assert.ok(answerMs < 2_000, `answered ${answerMs.toFixed(0)} ms after SIGTERM (long-poll timeout is 20 s)`);
    assert.ok(refusedWhileDraining, 'a connection 150 ms after SIGTERM was refused');
    assert.equal(await canConnect(s.port), false, 'connections refused after exit');
    assert.ok(exitMs < 5_000, `exited ${exitMs.toFixed(0)} ms after SIGTERM`);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null },
      `exit status (answered after ${answerMs.toFixed(0)} ms, exited after ${exitMs.toFixed(0)} ms)\n${s.log(20)}`);
    console.log(`# SIGTERM: long-poll answered after ${answerMs.toFixed(0)} ms, exit 0 after ${exitMs.toFixed(0)} ms`);
  } finally {
    for (const sock of idle) sock.destroy();
    s.kill('SIGKILL');
  }
});
