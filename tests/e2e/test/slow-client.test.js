// A stalled client never delays the others (issue 4): a raw TCP client opens a
// live SSE request and never reads while large rows (~50 KB each) are written;
// another client (the official ShapeStream + Shape, long-poll) on the same shape
// must see every row within 1 s of its commit, and end equal to the SELECT.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { connect } from 'node:net';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { waitFor } from '../lib/stack.js';
import {
  startCluster, startSidecar, psqlSession, cleanupAll, workDir, FAST_BACKOFF, syncRaw,
} from '../lib/procs.js';
import { follow, firstRows, select } from '../lib/shape-helpers.js';
import { setTimeout as sleep } from 'node:timers/promises';

const ROWS = 300;
const PAYLOAD_CHARS = 51_200; // repeat(md5, 1600)
const MAX_LATENCY_MS = 1000;
const SETUP = `
CREATE TABLE blobs (id int8 PRIMARY KEY, body text NOT NULL);
SELECT shapesync.track('blobs');
`;

let cluster;
let sidecar;

before(async () => {
  const work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  sidecar = await startSidecar({
    dbUrl: cluster.dbUrl, longPollTimeoutMs: 3000, args: ['--sse-timeout', '120000'], work,
  });
});

after(async () => {
  await sidecar?.stop();
  await cluster?.destroy();
  cleanupAll();
});

/** Recv-Q / Send-Q of the TCP connection whose client side is 127.0.0.1:localPort. */
function queues(localPort, serverPort) {
  const q = (filter) => {
    const out = spawnSync('ss', ['-Htn', 'state', 'established', filter], { encoding: 'utf8' }).stdout.trim();
    const [recvQ, sendQ] = out.split(/\s+/).map(Number);
    return out ? { recvQ, sendQ } : null;
  };
  return {
    client: q(`( sport = :${localPort} and dport = :${serverPort} )`),
    server: q(`( sport = :${serverPort} and dport = :${localPort} )`),
  };
}

test('a stalled SSE client never delays another client', async () => {
  const raw = await syncRaw(sidecar.shapeUrl, 'table=blobs');
  // The stalled client: sends a live SSE request, never reads a byte.
  const stalled = connect({ host: '127.0.0.1', port: sidecar.port });
  stalled.pause();
  let stalledClosed = false;
  stalled.on('close', () => { stalledClosed = true; });
  stalled.on('error', () => {});
  await new Promise((r, j) => { stalled.once('connect', r); stalled.once('error', j); });
  stalled.write(`GET /v1/shape?table=blobs&handle=${encodeURIComponent(raw.handle)}&offset=${raw.offset}` +
    `&live=true&live_sse=true&cursor=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`);

  const f = follow(sidecar.shapeUrl, { table: 'blobs' }, { backoffOptions: FAST_BACKOFF });
  const seenAt = new Map();
  f.stream.subscribe((msgs) => {
    const now = performance.now();
    for (const m of msgs) {
      if (m.headers?.operation === 'insert' && !seenAt.has(String(m.value.id))) seenAt.set(String(m.value.id), now);
    }
  });
  const committedAt = new Map();
  const s = psqlSession(cluster.dbUrl);
  try {
    await firstRows(f);
    await sleep(300); // the stalled SSE request is registered
    for (let i = 1; i <= ROWS; i++) {
      committedAt.set(String(i), await s.exec(`INSERT INTO blobs VALUES (${i}, repeat(md5('${i}'), ${PAYLOAD_CHARS / 32}))`));
      await sleep(15);
    }
    await waitFor(() => seenAt.size >= ROWS, {
      timeoutMs: 10_000, intervalMs: 20,
      what: `all ${ROWS} rows at the other client (seen ${seenAt.size}, errors ${f.errors.join('; ')})`,
    });
    const q = queues(stalled.localPort, sidecar.port);
    const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${sidecar.pid}/status`, 'utf8'))?.[1];
    const health = await fetch(`${sidecar.baseUrl}/v1/health`, { signal: AbortSignal.timeout(1_000) });
    assert.equal(health.status, 200, 'health answers while a client is stalled');

    const lat = [...committedAt].map(([id, t]) => seenAt.get(id) - t).sort((x, y) => x - y);
    const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))].toFixed(0);
    const sentMb = (ROWS * PAYLOAD_CHARS) / 1e6;
    console.log(`# other client latency over ${ROWS} rows of ${PAYLOAD_CHARS} chars (${sentMb.toFixed(1)} MB): ` +
      `p50 ${pct(50)} ms, p95 ${pct(95)} ms, max ${lat.at(-1).toFixed(0)} ms; stalled connection ` +
      `${stalledClosed ? 'closed by the server' : 'open'}, queues ${JSON.stringify(q)}, sidecar RSS ${rss} kB`);
    // The stalled client really is stuck: bytes wait unread in its receive queue.
    if (!stalledClosed) {
      assert.ok(q.client && q.client.recvQ > 0, `the stalled client has unread bytes: ${JSON.stringify(q)}`);
      assert.ok((q.client.recvQ + (q.server?.sendQ ?? 0)) < ROWS * PAYLOAD_CHARS,
        `more was written than the kernel can hold for it: ${JSON.stringify(q)}`);
    }
    assert.ok(lat.at(-1) < MAX_LATENCY_MS,
      `every row reached the other client within ${MAX_LATENCY_MS} ms (max ${lat.at(-1).toFixed(0)} ms, p95 ${pct(95)} ms)`);

    let last;
    await waitFor(async () => {
      last = {
        client: f.shape.currentRows.map((r) => `${r.id}:${r.body.length}:${r.body.slice(0, 32)}`).sort(),
        db: (await select(cluster, 'SELECT id, body FROM blobs')).map((r) => `${r.id}:${r.body.length}:${r.body.slice(0, 32)}`).sort(),
      };
      return isDeepStrictEqual(last.client, last.db);
    }, { timeoutMs: 10_000, what: 'client rows equal SELECT' }).catch(() => assert.deepEqual(last.client, last.db));
    assert.deepEqual(f.errors.map(String), []);
    assert.ok(sidecar.alive(), 'sidecar alive');
  } finally {
    await s.close();
    f.close();
    stalled.destroy();
  }
});
