// The Shape HTTP protocol on the wire (PROTOCOL.md §2–§6), with plain fetch.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack } from '../lib/stack.js';

const LONG_POLL_MS = 3000;
let stack;

before(async () => {
  stack = await startStack({
    longPollTimeoutMs: LONG_POLL_MS,
    setupSql: `
      CREATE TABLE items (id bigserial PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false);
      SELECT shapesync.track('items');
      INSERT INTO items (title) VALUES ('one'), ('two');
    `,
  });
});

after(async () => {
  await stack?.stop();
});

const get = (query, init) => fetch(`${stack.shapeUrl}?${query}`, init);

async function json(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    assert.fail(`body is not JSON: ${JSON.stringify(text)}`);
  }
}

const isControl = (m, c) => m?.headers?.control === c;

// State carried from one test to the next (they run in order).
let handle;
let offset;

test('GET /v1/health', async () => {
  const r = await fetch(`${stack.baseUrl}/v1/health`);
  assert.equal(r.status, 200);
  assert.deepEqual(await json(r), { status: 'active' });
});

test('offset=-1: first snapshot chunk, no up-to-date', async () => {
  const r = await get('table=items&offset=-1&log=full&unknown_param=ignored');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  handle = r.headers.get('electric-handle');
  assert.ok(handle, 'electric-handle');
  assert.equal(r.headers.get('electric-offset'), '0_0');
  assert.equal(r.headers.has('electric-up-to-date'), false, 'no electric-up-to-date on offset=-1');
  const schema = JSON.parse(r.headers.get('electric-schema'));
  assert.deepEqual(schema.id, { type: 'int8', pk_index: 0, not_null: true });
  assert.deepEqual(schema.title, { type: 'text', not_null: true });
  assert.deepEqual(schema.done, { type: 'bool', not_null: true });

  const body = await json(r);
  assert.ok(Array.isArray(body));
  assert.equal(body.some((m) => isControl(m, 'up-to-date')), false, 'no up-to-date message');
  const rows = body.filter((m) => m.key);
  assert.equal(rows.length, 2);
  const one = rows.find((m) => m.value.title === 'one');
  assert.deepEqual(one, {
    key: '"public"."items"/"1"',
    value: { id: '1', title: 'one', done: one.value.done },
    headers: { operation: 'insert', relation: ['public', 'items'], version: one.headers.version },
  });
  assert.match(one.headers.version, /^\d+$/, 'the row version (docs/mutations.md)');
  assert.ok(['f', 'false'].includes(one.value.done), `bool text form, got ${one.value.done}`);
  const end = body.at(-1);
  assert.ok(isControl(end, 'snapshot-end'), `last message is snapshot-end: ${JSON.stringify(end)}`);
  assert.equal(typeof end.headers.xmin, 'string');
  assert.equal(typeof end.headers.xmax, 'string');
  assert.ok(Array.isArray(end.headers.xip_list));
});

test('second request: up-to-date', async () => {
  const r = await get(`table=items&handle=${encodeURIComponent(handle)}&offset=0_0&log=full`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('electric-handle'), handle);
  assert.equal(r.headers.has('electric-up-to-date'), true, 'electric-up-to-date header');
  assert.ok(r.headers.get('electric-schema'), 'electric-schema on a non-live response');
  offset = r.headers.get('electric-offset');
  assert.match(offset, /^\d+_(\d+|inf)$/);
  const body = await json(r);
  const last = body.at(-1);
  assert.ok(isControl(last, 'up-to-date'), `ends with up-to-date: ${JSON.stringify(body)}`);
  assert.match(last.headers.global_last_seen_lsn, /^\d+$/);
});

test('live request is woken by an INSERT within 1 s', async () => {
  const started = Date.now();
  const pending = get(`table=items&handle=${encodeURIComponent(handle)}&offset=${offset}&live=true&cursor=&log=full`);
  await new Promise((r) => setTimeout(r, 300));
  const insertedAt = Date.now();
  await stack.psql(`INSERT INTO items (title) VALUES ('live one')`);
  const r = await pending;
  const body = await json(r);
  const latency = Date.now() - insertedAt;
  assert.equal(r.status, 200);
  assert.ok(Date.now() - started < LONG_POLL_MS, 'answered before the long-poll timeout');
  assert.ok(latency < 1000, `woken ${latency} ms after the insert`);
  assert.match(r.headers.get('electric-cursor') ?? '', /^\d+$/, 'electric-cursor on live responses');
  assert.equal(r.headers.has('electric-schema'), false, 'no electric-schema on live responses');
  const newOffset = r.headers.get('electric-offset');
  assert.ok(newOffset && newOffset !== offset, 'offset advanced');
  assert.ok(!newOffset.startsWith('0_'), `a real log offset, got ${newOffset}`);
  const change = body.find((m) => m.key);
  assert.ok(change, `a change message in ${JSON.stringify(body)}`);
  assert.equal(change.key, '"public"."items"/"3"');
  assert.deepEqual(change.value, { id: '3', title: 'live one', done: change.value.done });
  assert.equal(change.headers.operation, 'insert');
  assert.deepEqual(change.headers.relation, ['public', 'items']);
  assert.ok(Array.isArray(change.headers.txids) && typeof change.headers.txids[0] === 'number', 'txids numbers');
  assert.match(change.headers.lsn, /^\d+$/, 'lsn decimal string');
  assert.equal(change.headers.last, true);
  assert.ok(isControl(body.at(-1), 'up-to-date'));
  assert.equal(r.headers.has('electric-up-to-date'), true);
  offset = newOffset;
});

test('UPDATE and DELETE on the wire', async () => {
  await stack.psql(`UPDATE items SET done = true WHERE id = 1; DELETE FROM items WHERE id = 2;`);
  const seen = [];
  const deadline = Date.now() + 10_000;
  while (seen.length < 2 && Date.now() < deadline) {
    const r = await get(`table=items&handle=${encodeURIComponent(handle)}&offset=${offset}&live=true&cursor=1`);
    assert.equal(r.status, 200);
    offset = r.headers.get('electric-offset');
    seen.push(...(await json(r)).filter((m) => m.key));
  }
  assert.equal(seen.length, 2, JSON.stringify(seen));
  const [u, d] = seen;
  assert.equal(u.headers.operation, 'update');
  assert.equal(u.key, '"public"."items"/"1"');
  assert.equal(u.value.id, '1');
  assert.ok(['t', 'true'].includes(u.value.done));
  assert.equal(u.value.title, undefined, 'replica=default: only PK + changed columns');
  assert.equal(d.headers.operation, 'delete');
  assert.deepEqual(d.value, { id: '2' });
});

test('live request with nothing new times out with up-to-date', async () => {
  const started = Date.now();
  const r = await get(`table=items&handle=${encodeURIComponent(handle)}&offset=${offset}&live=true&cursor=1`);
  const elapsed = Date.now() - started;
  assert.equal(r.status, 200);
  const body = await json(r);
  assert.equal(body.length, 1);
  assert.ok(isControl(body[0], 'up-to-date'));
  assert.equal(r.headers.get('electric-offset'), offset);
  assert.ok(elapsed >= LONG_POLL_MS - 200 && elapsed < LONG_POLL_MS + 2000, `held ${elapsed} ms`);
});

test('SSE: live_sse=true streams data: events ending with up-to-date', async () => {
  const ac = new AbortController();
  const pending = get(
    `table=items&handle=${encodeURIComponent(handle)}&offset=${offset}&live=true&live_sse=true&experimental_live_sse=true&cursor=1`,
    { headers: { accept: 'text/event-stream' }, signal: ac.signal },
  );
  await new Promise((r) => setTimeout(r, 300));
  await stack.psql(`INSERT INTO items (title) VALUES ('over sse')`);
  const r = await pending;
  try {
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.match(r.headers.get('electric-cursor') ?? '', /^\d+$/);
    assert.equal(r.headers.get('electric-handle'), handle);
    assert.ok(r.headers.get('electric-offset'));
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    const messages = [];
    let buf = '';
    const deadline = Date.now() + 5000;
    while (!messages.some((m) => isControl(m, 'up-to-date')) && Date.now() < deadline) {
      let timer;
      const chunk = await Promise.race([
        reader.read(),
        new Promise((res) => { timer = setTimeout(() => res({ timeout: true }), Math.max(1, deadline - Date.now())); }),
      ]).finally(() => clearTimeout(timer));
      if (chunk.timeout || chunk.done) break;
      buf += dec.decode(chunk.value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of event.split('\n')) {
          if (line.startsWith('data: ')) messages.push(JSON.parse(line.slice(6)));
        }
      }
    }
    const change = messages.find((m) => m.key);
    assert.ok(change, `a change event in ${JSON.stringify(messages)}`);
    assert.equal(change.value.title, 'over sse');
    const utd = messages.find((m) => isControl(m, 'up-to-date'));
    assert.ok(utd, 'an up-to-date event after the batch');
    assert.match(utd.headers.global_last_seen_lsn, /^\d+$/);
    // The client resumes from `${global_last_seen_lsn}_0` after an SSE batch.
    const resume = await get(`table=items&handle=${encodeURIComponent(handle)}&offset=${utd.headers.global_last_seen_lsn}_0`);
    assert.equal(resume.status, 200);
    const body = await json(resume);
    assert.ok(isControl(body.at(-1), 'up-to-date'));
    assert.equal(body.some((m) => m.value?.title === 'over sse'), false, 'not delivered twice');
    offset = resume.headers.get('electric-offset');
  } finally {
    ac.abort();
  }
});

test('catch-up from the start sees the current table', async () => {
  const r = await get('table=items&offset=-1');
  assert.equal(r.status, 200);
  assert.ok(handle);
  assert.equal(r.headers.get('electric-handle'), handle, 'same definition, same handle');
});

test('ETag revalidation gives 304', async () => {
  for (const q of ['offset=-1', `handle=${encodeURIComponent(handle)}&offset=0_0`]) {
    const r = await get(`table=items&${q}`);
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    const etag = r.headers.get('etag');
    assert.ok(etag, `etag on ${q}`);
    const again = await get(`table=items&${q}`, { headers: { 'If-None-Match': etag } });
    assert.equal(again.status, 304, `304 for ${q}`);
    assert.equal(again.headers.get('electric-handle'), handle);
  }
});

test('unknown handle gives 409 must-refetch with the active handle', async () => {
  const r = await get('table=items&handle=no-such-handle&offset=0_0');
  assert.equal(r.status, 409);
  assert.deepEqual(await json(r), [{ headers: { control: 'must-refetch' } }]);
  assert.equal(r.headers.get('electric-handle'), handle);
});

test('validation: missing table', async () => {
  const r = await get('offset=-1');
  assert.equal(r.status, 400);
  assert.deepEqual(await json(r), { message: 'Invalid request', errors: { table: ["can't be blank"] } });
  assert.match(r.headers.get('cache-control') ?? '', /no-store/);
});

test('validation: unknown table', async () => {
  const r = await get('table=nonexistent&offset=-1');
  assert.equal(r.status, 400);
  const body = await json(r);
  assert.equal(body.message, 'Invalid request');
  assert.equal(body.errors.table.length, 1);
  assert.match(body.errors.table[0], /does not exist/);
});

test('validation: offset=10 has invalid format', async () => {
  const r = await get('table=items&offset=10');
  assert.equal(r.status, 400);
  assert.deepEqual(await json(r), { message: 'Invalid request', errors: { offset: ['has invalid format'] } });
});

test('validation: missing offset', async () => {
  const r = await get('table=items');
  assert.equal(r.status, 400);
  assert.deepEqual(await json(r), { message: 'Invalid request', errors: { offset: ["can't be blank"] } });
});

test('validation: offset without handle', async () => {
  const r = await get('table=items&offset=0_0');
  assert.equal(r.status, 400);
  assert.deepEqual(await json(r),
    { message: 'Invalid request', errors: { handle: ["can't be blank when offset != -1"] } });
});

test('validation: live with offset=-1', async () => {
  const r = await get('table=items&offset=-1&live=true');
  assert.equal(r.status, 400);
  assert.deepEqual(await json(r),
    { message: 'Invalid request', errors: { live: ["can't be true when offset == -1"] } });
});

test('validation: more Electric error messages', async () => {
  const cases = [
    ['table=items&offset=0_0&live_sse=true&handle=x', { live_sse: ["can't be true unless live is also true"] }],
    ['table=a.b.c&offset=-1', { table: ['Invalid relation identifier, too many delimiters: a.b.c'] }],
    ['table=items&offset=-1&columns=title', { columns: ['The list of columns must include all primary key columns, missing: id'] }],
    ['table=items&offset=-1&replica=partial', { replica: ['is invalid'] }],
    ['table=items&offset=1_2_3', { offset: ['has invalid format'] }],
  ];
  for (const [q, errors] of cases) {
    const r = await get(q);
    assert.equal(r.status, 400, q);
    assert.deepEqual(await json(r), { message: 'Invalid request', errors }, q);
  }
  const r = await get(`table=items&offset=-1&where=${encodeURIComponent('id IN (SELECT 1)')}`);
  assert.equal(r.status, 400);
  const body = await json(r);
  assert.equal(body.errors.where.length, 1);
});

test('offset=now: up-to-date at the current end, no history', async () => {
  const r = await get('table=items&offset=now');
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('electric-handle'), handle);
  assert.ok(r.headers.get('electric-schema'));
  assert.equal(r.headers.has('electric-up-to-date'), true);
  const body = await json(r);
  assert.equal(body.length, 1);
  assert.ok(isControl(body[0], 'up-to-date'));
  const now = r.headers.get('electric-offset');
  assert.match(now, /^\d+_(\d+|inf)$/);
  const next = await get(`table=items&handle=${encodeURIComponent(handle)}&offset=${now}`);
  assert.equal(next.status, 200);
  const rest = await json(next);
  assert.equal(rest.some((m) => m.key), false, 'nothing after now');
  assert.ok(isControl(rest.at(-1), 'up-to-date'));
});

test('HEAD: headers without a body', async () => {
  const r = await get('table=items&offset=-1', { method: 'HEAD' });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('electric-handle'), handle);
  assert.equal(r.headers.get('electric-offset'), '0_0');
  assert.equal(await r.text(), '');
});

test('CORS headers', async () => {
  const r = await get('table=items&offset=-1', { headers: { Origin: 'http://app.localhost' } });
  assert.equal(r.status, 200);
  const expose = (r.headers.get('access-control-expose-headers') ?? '').split(',').map((s) => s.trim().toLowerCase());
  for (const h of ['electric-offset', 'electric-handle', 'electric-schema', 'electric-cursor', 'electric-up-to-date']) {
    assert.ok(expose.includes(h), `${h} exposed (got ${expose})`);
  }
  const allow = r.headers.get('access-control-allow-origin');
  assert.ok(allow === 'http://app.localhost' || allow === '*', `allow-origin ${allow}`);

  const e = await get('offset=-1');
  assert.ok(e.headers.get('access-control-expose-headers'), 'expose-headers on errors too');

  const pre = await fetch(`${stack.shapeUrl}?table=items&offset=-1`, {
    method: 'OPTIONS',
    headers: { Origin: 'http://app.localhost', 'Access-Control-Request-Method': 'GET' },
  });
  assert.ok(pre.status === 204 || pre.status === 200, `preflight status ${pre.status}`);
});

test('unknown path is 404', async () => {
  const r = await fetch(`${stack.baseUrl}/no/such/path`);
  assert.equal(r.status, 404);
});
