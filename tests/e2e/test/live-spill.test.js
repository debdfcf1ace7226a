// Issue 8: live answers and chunk/segment boundaries. A client waits at the end
// of a shape's log; a transaction larger than a chunk arrives and its first
// chunks go to segment files before the waiting request reads them. Before the
// fix the long-poll was answered `[]` with its offset moved past those rows,
// and SSE skipped them: rows lost for good. Also: every chunk boundary is a
// resumable, revalidatable (304) offset with a stable ETag, and a caching
// proxy in front revalidates instead of refetching.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from '../lib/stack.js';
import {
  startCluster, startSidecar, startNginx, nginxBinary, cleanupAll, workDir, getRaw, FAST_BACKOFF,
} from '../lib/procs.js';
import { follow, firstRows, select, keyed, changes, isControl } from '../lib/shape-helpers.js';

const ROWS_PER_TX = 35;
const TXS = 10;

let work;
let cluster;
const sidecars = [];
const open = [];

before(async () => {
  work = workDir();
  cluster = await startCluster({ work, setupSql: 'SELECT 1' });
});

after(async () => {
  for (const f of open) f.close();
  for (const s of sidecars) await s.stop();
  await cluster?.destroy();
  cleanupAll();
});

async function sidecar(args) {
  const s = await startSidecar({ dbUrl: cluster.dbUrl, longPollTimeoutMs: 5000, work, args });
  sidecars.push(s);
  return s;
}

const psql = (sql) => cluster.psql(sql);

/** One transaction of ROWS_PER_TX rows of about 1 kB into `table`, ids from `first`. */
const bigTx = (table, first) =>
  psql(`INSERT INTO ${table} SELECT g, repeat(md5(g::text), 32) FROM generate_series(${first}, ${first + ROWS_PER_TX - 1}) g`);

async function makeTable(name) {
  await psql(`CREATE TABLE ${name} (id int PRIMARY KEY, body text NOT NULL); SELECT shapesync.track('${name}');`);
}

for (const memoryChunks of [1, 0]) {
  test(`official clients, long-poll and SSE, lose no row of transactions larger than a chunk ` +
       `(10 kB chunks, ${memoryChunks} closed chunk(s) in memory)`, async () => {
    const table = `big_m${memoryChunks}`;
    await makeTable(table);
    const s = await sidecar(['--chunk-bytes', '10000', '--memory-chunks', String(memoryChunks)]);
    const lp = follow(s.shapeUrl, { table }, { backoffOptions: FAST_BACKOFF });
    const sse = follow(s.shapeUrl, { table }, { backoffOptions: FAST_BACKOFF, liveSse: true });
    open.push(lp, sse);
    await Promise.all([firstRows(lp), firstRows(sse)]);
    await sleep(300); // both are waiting at the end of the log now
    for (let t = 0; t < TXS; t++) {
      await bigTx(table, 1 + t * ROWS_PER_TX);
      await sleep(300);
    }
    const expected = keyed(await select({ psql }, `SELECT * FROM ${table}`));
    assert.equal(Object.keys(expected).length, ROWS_PER_TX * TXS);
    for (const [name, f] of [['long-poll', lp], ['SSE', sse]]) {
      await waitFor(() => f.shape.currentRows.length >= ROWS_PER_TX * TXS, {
        timeoutMs: 20_000, what: `${name}: all ${ROWS_PER_TX * TXS} rows (has ${f.shape.currentRows.length})`,
      }).catch((e) => { throw new Error(`${e.message}; errors ${f.errors.map(String)}\n${s.log(30)}`); });
      assert.deepEqual(keyed(f.shape.currentRows), expected, `${name}: rows equal SELECT`);
      const inserts = changes(f.messages).filter((m) => m.headers.operation === 'insert');
      assert.equal(inserts.length, ROWS_PER_TX * TXS, `${name}: each row arrived exactly once`);
      assert.deepEqual(f.errors, [], `${name}: no stream errors`);
    }
    lp.close();
    sse.close();
  });
}

test('a raw long-poll waiting at the end is answered with the rows, never [] with a moved offset', async () => {
  const table = 'big_raw';
  await makeTable(table);
  const s = await sidecar(['--chunk-bytes', '10000', '--memory-chunks', '0']);
  const base = `table=${table}`;
  let r = await getRaw(s.shapeUrl, `${base}&offset=-1`);
  const handle = r.headers.get('electric-handle');
  r = await getRaw(s.shapeUrl, `${base}&handle=${handle}&offset=${r.headers.get('electric-offset')}`);
  assert.equal(r.status, 200);
  let offset = r.headers.get('electric-offset');
  for (let round = 0; round < 5; round++) {
    const first = 1 + round * ROWS_PER_TX;
    const waiting = getRaw(s.shapeUrl, `${base}&handle=${handle}&offset=${offset}&live=true&cursor=1`);
    await sleep(200);
    await bigTx(table, first);
    r = await waiting;
    assert.equal(r.status, 200, r.text);
    const got = changes(r.body);
    assert.ok(got.length > 0, `round ${round}: the woken long-poll carries rows, got ${r.text.slice(0, 200)} ` +
      `with electric-offset ${r.headers.get('electric-offset')}`);
    assert.equal(r.headers.get('electric-has-data'), 'true');
    const ids = got.map((m) => Number(m.value.id));
    offset = r.headers.get('electric-offset');
    // the rest of the transaction, chunk by chunk, non-live
    while (!isControl(r.body.at(-1), 'up-to-date')) {
      r = await getRaw(s.shapeUrl, `${base}&handle=${handle}&offset=${offset}`);
      assert.equal(r.status, 200, r.text);
      ids.push(...changes(r.body).map((m) => Number(m.value.id)));
      offset = r.headers.get('electric-offset');
    }
    assert.deepEqual(ids, Array.from({ length: ROWS_PER_TX }, (_, k) => first + k), `round ${round}: every row once, in order`);
  }
});

test('every chunk boundary: resumable, byte-identical on re-read, 304 on If-None-Match; ETags are stable', async () => {
  const table = 'walk';
  await makeTable(table);
  for (let t = 0; t < 4; t++) await bigTx(table, 1 + t * ROWS_PER_TX);
  const s = await sidecar(['--chunk-bytes', '10000', '--memory-chunks', '1']);
  const base = `table=${table}`;
  // the snapshot is one 140-row transaction's worth; add log entries spanning chunks
  let r = await getRaw(s.shapeUrl, `${base}&offset=-1`);
  const handle = r.headers.get('electric-handle');
  await bigTx(table, 1001);
  await bigTx(table, 2001);
  await psql(`UPDATE ${table} SET body = body || 'x' WHERE id BETWEEN 1 AND 40`);
  await sleep(500);
  const steps = [];
  let offset = '-1';
  for (let i = 0; i < 200; i++) {
    r = await getRaw(s.shapeUrl, `${base}${i ? `&handle=${handle}` : ''}&offset=${offset}`);
    assert.equal(r.status, 200, r.text);
    steps.push({ offset, etag: r.headers.get('etag'), text: r.text, end: r.headers.get('electric-offset') });
    offset = r.headers.get('electric-offset');
    if (r.headers.has('electric-up-to-date')) break;
  }
  assert.ok(steps.length >= 8, `the log spans many chunks (${steps.length} responses)`);
  const ids = [];
  for (const st of steps) ids.push(...changes(JSON.parse(st.text)).map((m) => `${m.headers.operation}:${m.value.id}`));
  assert.equal(new Set(ids).size, ids.length, 'no message is served twice across boundaries');
  assert.equal(ids.filter((x) => x.startsWith('update:')).length, 40);
  for (const st of steps) {
    const q = `${base}${st.offset === '-1' ? '' : `&handle=${handle}`}&offset=${st.offset}`;
    const again = await getRaw(s.shapeUrl, q);
    assert.equal(again.headers.get('etag'), st.etag, `stable ETag at offset ${st.offset}`);
    assert.equal(again.headers.get('electric-offset'), st.end);
    if (!again.headers.has('electric-up-to-date')) assert.equal(again.text, st.text, `same bytes at ${st.offset}`);
    const cond = await getRaw(s.shapeUrl, q, { headers: { 'If-None-Match': st.etag } });
    assert.equal(cond.status, 304, `304 at offset ${st.offset}`);
    assert.equal(cond.text, '');
  }
  // a non-live read at the end of the log is "up to date" and cacheable as such
  const atEnd = `${base}&handle=${handle}&offset=${offset}`;
  const e1 = await getRaw(s.shapeUrl, atEnd);
  const e2 = await getRaw(s.shapeUrl, atEnd);
  assert.equal(e1.headers.get('electric-has-data'), 'false');
  assert.equal(e1.headers.get('etag'), e2.headers.get('etag'), 'end-of-log ETag is stable');
  assert.equal(e1.headers.get('etag'), `"${handle}:${offset}:${offset}"`);
  const e3 = await getRaw(s.shapeUrl, atEnd, { headers: { 'If-None-Match': e1.headers.get('etag') } });
  assert.equal(e3.status, 304);
  // offset=now and a timed-out long-poll must never revalidate as the same answer
  const n1 = await getRaw(s.shapeUrl, `${base}&handle=${handle}&offset=now`);
  const n2 = await getRaw(s.shapeUrl, `${base}&handle=${handle}&offset=now`);
  assert.notEqual(n1.headers.get('etag'), n2.headers.get('etag'), 'offset=now: unique ETag');
  const l1 = await getRaw(s.shapeUrl, `${atEnd}&live=true&cursor=1`);
  assert.equal(l1.headers.get('electric-has-data'), 'false');
  assert.notEqual(l1.headers.get('etag'), e1.headers.get('etag'), 'timed-out long-poll: its own ETag');
  // once something new arrives, the same request is no longer the same answer
  await psql(`INSERT INTO ${table} VALUES (9999, 'new')`);
  await waitFor(async () => (await getRaw(s.shapeUrl, atEnd)).headers.get('electric-has-data') === 'true',
    { what: 'the new row at the end of the log' });
  const e4 = await getRaw(s.shapeUrl, atEnd, { headers: { 'If-None-Match': e1.headers.get('etag') } });
  assert.equal(e4.status, 200, 'new data: not 304');
});

test('nginx with proxy_cache_revalidate in front: REVALIDATED after max-age, 304 from shapesync', { skip: !nginxBinary() && 'nginx not installed' }, async () => {
  const table = 'cached';
  await makeTable(table);
  await bigTx(table, 1);
  const s = await sidecar(['--cache-max-age', '1', '--cache-stale-age', '0', '--chunk-bytes', '10000']);
  const nginx = await startNginx({ upstreams: [`127.0.0.1:${s.port}`], cache: true, work: workDir('shapesync-nginx-') });
  try {
    const base = `table=${table}`;
    let r = await getRaw(nginx.shapeUrl, `${base}&offset=-1`);
    const handle = r.headers.get('electric-handle');
    let offset = r.headers.get('electric-offset');
    const offsets = [];
    for (let i = 0; i < 50; i++) {
      offsets.push(offset);
      r = await getRaw(nginx.shapeUrl, `${base}&handle=${handle}&offset=${offset}`);
      assert.equal(r.status, 200);
      if (r.headers.has('electric-up-to-date')) break;
      offset = r.headers.get('electric-offset');
    }
    // a mid-snapshot chunk and the end of the log
    for (const o of [offsets[0], offsets.at(-1)]) {
      const q = `${base}&handle=${handle}&offset=${o}`;
      const first = await getRaw(nginx.shapeUrl, q);
      assert.ok(['MISS', 'HIT', 'EXPIRED', 'REVALIDATED'].includes(first.headers.get('x-cache-status')),
        `${o}: ${first.headers.get('x-cache-status')}`);
      const hit = await getRaw(nginx.shapeUrl, q);
      assert.equal(hit.headers.get('x-cache-status'), 'HIT', `${o}: served from the cache within max-age`);
      await sleep(2100);
      const later = await getRaw(nginx.shapeUrl, q);
      assert.equal(later.status, 200);
      assert.equal(later.headers.get('x-cache-status'), 'REVALIDATED',
        `${o}: after max-age nginx revalidates (304 from shapesync), not EXPIRED`);
      assert.equal(later.text, first.text);
    }
  } finally {
    await nginx.stop();
  }
});
