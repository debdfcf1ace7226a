// The official @electric-sql/client (ShapeStream + Shape) against shapesyncd:
// initial snapshot parsed to the right JS types, then live INSERT/UPDATE/DELETE.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ShapeStream, Shape } from '../lib/electric.js';
import { startStack, waitFor } from '../lib/stack.js';
import { within } from '../lib/shape-helpers.js';

const SETUP = String.raw`
CREATE TABLE kitchen (
  id    int8 PRIMARY KEY,
  i2    int2,
  i4    int4 NOT NULL,
  i8    int8,
  f8    float8,
  num   numeric,
  b     bool,
  t     text,
  jb    jsonb,
  j     json,
  by    bytea,
  ts    timestamptz,
  u     uuid,
  ia    int4[],
  ta    text[]
);
SELECT shapesync.track('kitchen');
INSERT INTO kitchen VALUES
  (1, 1, 2147483647, 9223372036854775807, 4.5, 12345.678901234567890, true, 'hello',
   '{"a": 1, "b": [1, 2]}', '{"x":"y"}', '\x0001fffe', '2024-01-02 03:04:05+00',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,3}', '{foo,"bar baz",NULL}'),
  (2, NULL, -5, NULL, 'Infinity', NULL, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, -32768, 0, -9223372036854775808, '-Infinity', 0, NULL, '', '[]', 'null', '\x', NULL, NULL, '{}', '{}'),
  (4, 0, 1, 0, 'NaN', -1.5, true, 'quote " and \ backslash', '{"nested": {"k": null}}', '[1, 2]',
   NULL, '1999-12-31 23:59:59.123456+00', NULL, '{NULL,-1}', '{"with,comma","{braces}"}');
`;

let stack;
let stream;
let shape;
const aborter = new AbortController();

before(async () => {
  stack = await startStack({ setupSql: SETUP });
  stream = new ShapeStream({
    url: stack.shapeUrl,
    params: { table: 'kitchen' },
    signal: aborter.signal,
  });
  shape = new Shape(stream);
});

after(async () => {
  aborter.abort();
  shape?.unsubscribeAll();
  stream?.unsubscribeAll();
  await stack?.stop();
});

const byId = (rows) => new Map(rows.map((r) => [String(r.id), r]));

test('snapshot arrives with values parsed to JS types', async () => {
  const rows = await within(shape.rows, 15_000,
    () => `no snapshot (stream error: ${stream.error ?? shape.error})\n${stack.sidecarLog()}`);
  assert.equal(rows.length, 4);
  const m = byId(rows);

  const r1 = m.get('1');
  assert.deepEqual(r1, {
    id: 1n,
    i2: 1,
    i4: 2147483647,
    i8: 9223372036854775807n,
    f8: 4.5,
    num: '12345.678901234567890',
    b: true,
    t: 'hello',
    jb: { a: 1, b: [1, 2] },
    j: { x: 'y' },
    by: '\\x0001fffe',
    ts: '2024-01-02 03:04:05+00',
    u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    ia: [1, 2, 3],
    ta: ['foo', 'bar baz', null],
  });

  const r2 = m.get('2');
  assert.equal(r2.id, 2n);
  assert.equal(r2.i4, -5);
  assert.equal(r2.f8, Infinity);
  assert.equal(r2.b, false);
  for (const c of ['i2', 'i8', 'num', 't', 'jb', 'j', 'by', 'ts', 'u', 'ia', 'ta']) {
    assert.equal(r2[c], null, `column ${c} of row 2 should be null`);
  }

  const r3 = m.get('3');
  assert.equal(r3.i2, -32768);
  assert.equal(r3.i8, -9223372036854775808n);
  assert.equal(r3.f8, -Infinity);
  assert.equal(r3.num, '0');
  assert.equal(r3.b, null);
  assert.equal(r3.t, '');
  assert.deepEqual(r3.jb, []);
  assert.equal(r3.j, null); // json 'null' parses to null
  assert.equal(r3.by, '\\x');
  assert.deepEqual(r3.ia, []);
  assert.deepEqual(r3.ta, []);

  const r4 = m.get('4');
  assert.ok(Number.isNaN(r4.f8));
  assert.equal(r4.num, '-1.5');
  assert.equal(r4.t, 'quote " and \\ backslash');
  assert.deepEqual(r4.jb, { nested: { k: null } });
  assert.deepEqual(r4.j, [1, 2]);
  assert.equal(r4.ts, '1999-12-31 23:59:59.123456+00');
  assert.deepEqual(r4.ia, [null, -1]);
  assert.deepEqual(r4.ta, ['with,comma', '{braces}']);

  assert.equal(typeof shape.lastOffset, 'string');
  assert.ok(shape.isUpToDate, 'shape is up to date after the snapshot');
});

test('INSERT made with psql shows up in currentRows', async () => {
  await stack.psql(`INSERT INTO kitchen (id, i4, t, ia) VALUES (10, 42, 'inserted', '{7,8}')`);
  const row = await waitFor(() => byId(shape.currentRows).get('10'), { what: 'inserted row 10' });
  assert.equal(row.id, 10n);
  assert.equal(row.i4, 42);
  assert.equal(row.t, 'inserted');
  assert.deepEqual(row.ia, [7, 8]);
  assert.equal(row.b, null);
  assert.equal(shape.currentRows.length, 5);
});

test('UPDATE made with psql shows up in currentRows', async () => {
  await stack.psql(`UPDATE kitchen SET t = 'changed', i8 = 5, jb = '{"v": 2}' WHERE id = 1`);
  const row = await waitFor(() => {
    const r = byId(shape.currentRows).get('1');
    return r && r.t === 'changed' ? r : null;
  }, { what: 'updated row 1' });
  assert.equal(row.i8, 5n);
  assert.deepEqual(row.jb, { v: 2 });
  // untouched columns keep their values
  assert.equal(row.i4, 2147483647);
  assert.deepEqual(row.ta, ['foo', 'bar baz', null]);
  assert.equal(shape.currentRows.length, 5);
});

test('DELETE made with psql shows up in currentRows', async () => {
  await stack.psql(`DELETE FROM kitchen WHERE id = 2`);
  await waitFor(() => !byId(shape.currentRows).has('2'), { what: 'row 2 deleted' });
  assert.equal(shape.currentRows.length, 4);
});

test('a multi-row transaction arrives whole', async () => {
  await stack.psql(`BEGIN;
    INSERT INTO kitchen (id, i4) VALUES (20, 1), (21, 2);
    UPDATE kitchen SET i4 = i4 + 100 WHERE id = 10;
    DELETE FROM kitchen WHERE id = 3;
  COMMIT;`);
  await waitFor(() => {
    const m = byId(shape.currentRows);
    return m.has('20') && m.has('21') && !m.has('3') && m.get('10').i4 === 142;
  }, { what: 'the transaction' });
  assert.equal(shape.currentRows.length, 5);
});

test('a shape with a where clause and columns', async () => {
  const ac = new AbortController();
  const s = new ShapeStream({
    url: stack.shapeUrl,
    params: { table: 'kitchen', where: 'i4 > $1', params: ['100'], columns: ['id', 'i4', 't'] },
    signal: ac.signal,
  });
  const sh = new Shape(s);
  try {
    const rows = await within(sh.rows, 15_000, () => `no snapshot (error: ${s.error})`);
    assert.deepEqual(
      rows.map((r) => r.id).sort(),
      [1n, 10n],
    );
    assert.deepEqual(Object.keys(rows[0]).sort(), ['i4', 'id', 't']);
    // move in, move out
    await stack.psql(`UPDATE kitchen SET i4 = 500 WHERE id = 20; UPDATE kitchen SET i4 = 0 WHERE id = 10`);
    await waitFor(() => {
      const ids = sh.currentRows.map((r) => r.id).sort();
      return ids.length === 2 && ids[0] === 1n && ids[1] === 20n;
    }, { what: 'move-in of 20 and move-out of 10' });
  } finally {
    ac.abort();
    sh.unsubscribeAll();
  }
});

test('live updates over SSE (liveSse: true)', async () => {
  const ac = new AbortController();
  const seen = [];
  const s = new ShapeStream({
    url: stack.shapeUrl,
    params: { table: 'kitchen' },
    liveSse: true,
    signal: ac.signal,
    fetchClient: async (input, init) => {
      const res = await fetch(input, init);
      seen.push({ url: String(input), type: res.headers.get('content-type') ?? '' });
      return res;
    },
  });
  const sh = new Shape(s);
  const unsubscribe = s.subscribe(() => {}, () => {});
  try {
    await within(sh.rows, 15_000, () => `no snapshot (error: ${s.error})`);
    const before = sh.currentRows.length;
    // let the stream settle into its live SSE request
    await new Promise((r) => setTimeout(r, 300));
    await stack.psql(`INSERT INTO kitchen (id, i4, t) VALUES (30, 3, 'over sse')`);
    await waitFor(() => byId(sh.currentRows).get('30')?.t === 'over sse', { what: 'SSE insert' });
    await stack.psql(`UPDATE kitchen SET t = 'sse update' WHERE id = 30`);
    await waitFor(() => byId(sh.currentRows).get('30')?.t === 'sse update', { what: 'SSE update' });
    await stack.psql(`DELETE FROM kitchen WHERE id = 30`);
    await waitFor(() => !byId(sh.currentRows).has('30'), { what: 'SSE delete' });
    assert.equal(sh.currentRows.length, before);
    assert.ok(!s.error, `stream error: ${s.error}`);
    const sse = seen.filter((r) => r.url.includes('live_sse=true'));
    assert.ok(sse.length > 0, 'the client made SSE requests');
    assert.ok(sse.some((r) => r.type.startsWith('text/event-stream')), 'answered as text/event-stream');
  } finally {
    unsubscribe();
    ac.abort();
    sh.unsubscribeAll();
  }
});

test('TRUNCATE makes the client refetch from a new handle', async () => {
  const oldHandle = stream.shapeHandle;
  assert.ok(oldHandle);
  await stack.psql(`TRUNCATE kitchen; INSERT INTO kitchen (id, i4, t) VALUES (100, 1, 'after truncate')`);
  await waitFor(() => {
    const rows = shape.currentRows;
    return rows.length === 1 && rows[0].id === 100n;
  }, { what: 'the shape to hold only the row inserted after TRUNCATE', timeoutMs: 15_000 });
  assert.notEqual(stream.shapeHandle, oldHandle, 'a new handle after must-refetch');
  // and it keeps following changes
  await stack.psql(`INSERT INTO kitchen (id, i4) VALUES (101, 2)`);
  await waitFor(() => byId(shape.currentRows).has('101'), { what: 'insert after refetch' });
});
