// Live mode over Server-Sent Events (PROTOCOL.md §6.3): the official client with
// liveSse, and the raw text/event-stream framing (data: lines, one up-to-date per
// batch, keep-alive comments, end of stream after the SSE timeout, JSON errors).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startStack, waitFor } from '../lib/stack.js';
import {
  byId, keyed, follow, firstRows, select, getShape, describe, rawShape, readSse, isControl, changes,
} from '../lib/shape-helpers.js';

const SSE_TIMEOUT_MS = 3000;
const KEEPALIVE_MS = 500;
let stack;
const open = [];

before(async () => {
  stack = await startStack({
    longPollTimeoutMs: 3000,
    sidecarArgs: ['--sse-timeout', String(SSE_TIMEOUT_MS), '--sse-keepalive', String(KEEPALIVE_MS)],
    setupSql: `
      CREATE TABLE tasks (id int PRIMARY KEY, priority int, title text);
      INSERT INTO tasks VALUES (1, 9, 'one'), (2, 2, 'two');
      CREATE TABLE ev (id int PRIMARY KEY, v text);
      INSERT INTO ev VALUES (1, 'a');
      SELECT shapesync.track('tasks'), shapesync.track('ev');
    `,
  });
});

after(async () => {
  for (const f of open) f.close();
  await stack?.stop();
});

const enc = encodeURIComponent;

test('client with liveSse: live inserts, updates, move-in/out and deletes of a filtered shape; transactions whole', async () => {
  const seen = [];
  const f = follow(stack.shapeUrl, { table: 'tasks', where: 'priority > 5' }, {
    liveSse: true,
    fetchClient: async (input, init) => {
      const res = await fetch(input, init);
      seen.push({ url: String(input), type: res.headers.get('content-type') ?? '', status: res.status });
      return res;
    },
  });
  open.push(f);
  const rows = await firstRows(f);
  assert.deepEqual(keyed(rows), { 1: { id: 1, priority: 9, title: 'one' } });
  // Every notification must show whole transactions: rows 10..12 are inserted together.
  const partial = [];
  const unsub = f.shape.subscribe(({ rows: rs }) => {
    const n = rs.filter((r) => r.id >= 10 && r.id <= 12).length;
    if (n !== 0 && n !== 3) partial.push(n);
  });
  await waitFor(() => seen.some((r) => r.url.includes('live_sse=true')), { what: 'the client to go live over SSE' });

  await stack.psql(`INSERT INTO tasks VALUES (3, 7, 'three')`);
  await waitFor(() => byId(f.shape.currentRows).get('3')?.title === 'three', { what: 'SSE insert' });
  await stack.psql(`UPDATE tasks SET title = 'THREE' WHERE id = 3`);
  await waitFor(() => byId(f.shape.currentRows).get('3')?.title === 'THREE', { what: 'SSE update' });
  await stack.psql(`UPDATE tasks SET priority = 8 WHERE id = 2`);
  await waitFor(() => byId(f.shape.currentRows).has('2'), { what: 'SSE move-in' });
  await stack.psql(`UPDATE tasks SET priority = 0 WHERE id = 1`);
  await waitFor(() => !byId(f.shape.currentRows).has('1'), { what: 'SSE move-out' });
  await stack.psql(`DELETE FROM tasks WHERE id = 3`);
  await waitFor(() => !byId(f.shape.currentRows).has('3'), { what: 'SSE delete' });
  await stack.psql(`BEGIN; INSERT INTO tasks VALUES (10, 6, 'a'); INSERT INTO tasks VALUES (11, 6, 'b');
    INSERT INTO tasks VALUES (12, 6, 'c'); COMMIT;`);
  await waitFor(() => byId(f.shape.currentRows).has('12'), { what: 'SSE transaction' });
  assert.deepEqual(keyed(f.shape.currentRows), keyed(await select(stack, 'SELECT * FROM tasks WHERE priority > 5')));
  assert.deepEqual(partial, [], 'no notification showed part of a transaction');

  // Past the SSE timeout the server ends the stream; the client reconnects (still SSE) and keeps following.
  await sleep(SSE_TIMEOUT_MS + 500);
  await stack.psql(`INSERT INTO tasks VALUES (13, 99, 'after reconnect')`);
  await waitFor(() => byId(f.shape.currentRows).has('13'), { what: 'an insert after the SSE stream was renewed' });
  unsub();
  assert.deepEqual(keyed(f.shape.currentRows), keyed(await select(stack, 'SELECT * FROM tasks WHERE priority > 5')));
  assert.deepEqual(f.errors, []);
  const sse = seen.filter((r) => r.url.includes('live_sse=true'));
  assert.ok(sse.length >= 2, `the client reconnected over SSE (${sse.length} SSE requests)`);
  assert.ok(sse.every((r) => r.status === 200 && r.type.startsWith('text/event-stream')),
    `SSE responses: ${JSON.stringify(sse)}`);
  const live = seen.filter((r) => r.url.includes('live=true'));
  assert.equal(live.filter((r) => !r.url.includes('live_sse=true')).length, 0, 'no fallback to long-polling');
});

test('raw SSE: text/event-stream, data: lines, one up-to-date per batch, keep-alives, end after the timeout', async () => {
  const s = await rawShape(stack, 'table=ev');
  const t0 = Date.now();
  const res = await fetch(
    `${stack.shapeUrl}?table=ev&handle=${enc(s.handle)}&offset=${s.offset}&live=true&live_sse=true&cursor=1`,
    { headers: { accept: 'text/event-stream' } },
  );
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  assert.equal(res.headers.get('electric-handle'), s.handle);
  assert.equal(res.headers.get('electric-offset'), s.offset);
  assert.match(res.headers.get('electric-cursor') ?? '', /^\d+$/);
  assert.equal(res.headers.get('cache-control'), `public, max-age=${SSE_TIMEOUT_MS / 1000 - 1}`);
  assert.equal(res.headers.get('electric-schema'), null, 'no electric-schema on live responses');

  // two transactions, some time apart: two batches
  const writes = (async () => {
    await sleep(200);
    await stack.psql(`BEGIN; INSERT INTO ev VALUES (2, 'b'), (3, 'c'); UPDATE ev SET v = 'A' WHERE id = 1; COMMIT;`);
    await sleep(900); // > keep-alive interval: a keep-alive comment in between
    await stack.psql(`DELETE FROM ev WHERE id = 2`);
  })();
  const got = await readSse(res, { timeoutMs: SSE_TIMEOUT_MS + 2000 });
  await writes;
  const elapsed = Date.now() - t0;

  assert.equal(got.ended, true, 'the server ends the stream');
  assert.ok(elapsed >= SSE_TIMEOUT_MS - 200 && elapsed < SSE_TIMEOUT_MS + 1500, `stream lasted ${elapsed} ms`);
  assert.equal(got.rest, '', 'every event ends with a blank line');
  for (const e of got.events) {
    assert.ok(e.startsWith('data: ') || e.startsWith(':'), `event ${JSON.stringify(e)}`);
    assert.ok(!e.startsWith('data: ') || !e.includes('\n'), `one data line per event: ${JSON.stringify(e)}`);
  }
  assert.ok(got.comments.length >= 1 && got.comments.every((c) => c === ': keep-alive'),
    `keep-alive comments: ${JSON.stringify(got.comments)}`);

  const view = got.messages.map((m) => (m.key ? [m.headers.operation, m.value] : [m.headers.control]));
  assert.deepEqual(view, [
    ['insert', { id: '2', v: 'b' }],
    ['insert', { id: '3', v: 'c' }],
    ['update', { id: '1', v: 'A' }],
    ['up-to-date'],
    ['delete', { id: '2' }],
    ['up-to-date'],
  ]);
  const [tx1, tx2] = [got.messages.slice(0, 3), got.messages[4]];
  assert.equal(new Set(tx1.map((m) => m.headers.lsn)).size, 1, 'one transaction, one lsn');
  assert.deepEqual(tx1.map((m) => m.headers.last ?? false), [false, false, true]);
  assert.ok(BigInt(tx2.headers.lsn) > BigInt(tx1[0].headers.lsn));
  // global_last_seen_lsn: at least the batch's transaction (shapesync may send its global
  // position, which is past it), and below the next transaction of the shape.
  const utd = got.messages.filter((m) => isControl(m, 'up-to-date'));
  const lsn = (m) => BigInt(m.headers.global_last_seen_lsn ?? m.headers.lsn);
  assert.ok(lsn(utd[0]) >= lsn(tx1[0]) && lsn(utd[0]) < lsn(tx2), JSON.stringify(got.messages));
  assert.ok(lsn(utd[1]) >= lsn(tx2), JSON.stringify(got.messages));

  // The client resumes from `${global_last_seen_lsn}_0`: nothing is skipped, nothing delivered twice.
  const at = (u) => `table=ev&handle=${enc(s.handle)}&offset=${u.headers.global_last_seen_lsn}_0`;
  let resume = await getShape(stack, at(utd[0]));
  assert.equal(resume.status, 200, describe(resume));
  assert.deepEqual(changes(resume.body).map((m) => [m.headers.operation, m.value]), [['delete', { id: '2' }]],
    describe(resume));
  resume = await getShape(stack, at(utd[1]));
  assert.equal(resume.status, 200, describe(resume));
  assert.deepEqual(changes(resume.body), [], describe(resume));
  assert.ok(isControl(resume.body.at(-1), 'up-to-date'));
});

test('raw SSE: a backlog is sent at once, then live batches, on a filtered shape', async () => {
  const s = await rawShape(stack, `table=tasks&where=${enc('priority > 50')}`);
  await stack.psql(`INSERT INTO tasks VALUES (20, 60, 'backlog')`);
  await sleep(300);
  const ac = new AbortController();
  const res = await fetch(
    `${stack.shapeUrl}?table=tasks&where=${enc('priority > 50')}&handle=${enc(s.handle)}&offset=${s.offset}` +
      '&live=true&live_sse=true&experimental_live_sse=true&cursor=1',
    { headers: { accept: 'text/event-stream' }, signal: ac.signal },
  );
  try {
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const writes = (async () => {
      await sleep(200);
      await stack.psql(`UPDATE tasks SET priority = 70 WHERE id = 2; UPDATE tasks SET priority = 1 WHERE id = 20;
        UPDATE tasks SET title = 'outside' WHERE id = 10;`);
    })();
    const done = (ms) => ms.some((m) => m.key && m.headers.operation === 'delete') && isControl(ms.at(-1), 'up-to-date');
    const got = await readSse(res, { stop: done, timeoutMs: SSE_TIMEOUT_MS });
    await writes;
    const view = got.messages.map((m) => (m.key ? [m.headers.operation, m.value.id] : [m.headers.control]));
    // The backlog (row 20) with its own up-to-date before the writes; then the move-in of 2 and
    // the move-out of 20 (two transactions: one batch or two, each ending with up-to-date).
    assert.deepEqual(view.slice(0, 2), [['insert', '20'], ['up-to-date']], JSON.stringify(view));
    assert.deepEqual(view.filter((v) => v.length === 2), [['insert', '20'], ['insert', '2'], ['delete', '20']],
      JSON.stringify(view));
    assert.deepEqual(view.at(-1), ['up-to-date'], JSON.stringify(view));
    assert.ok(view.length === 5 || view.length === 6, JSON.stringify(view));
  } finally {
    ac.abort();
  }
});

test('raw SSE: errors are plain JSON responses', async () => {
  let r = await getShape(stack, 'table=ev&handle=nope&offset=0_0&live=true&live_sse=true', {
    headers: { accept: 'text/event-stream' },
  });
  assert.equal(r.status, 409, describe(r));
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  assert.deepEqual(r.body, [{ headers: { control: 'must-refetch' } }]);

  const s = await rawShape(stack, 'table=ev');
  r = await getShape(stack, `table=ev&handle=${enc(s.handle)}&offset=${s.offset}&live_sse=true`);
  assert.equal(r.status, 400, describe(r));
  assert.deepEqual(r.body, { message: 'Invalid request', errors: { live_sse: ["can't be true unless live is also true"] } });
});
