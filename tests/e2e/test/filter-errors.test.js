// A shape filter that raises for one row (docs/shape-membership.md "What the
// trigger records", ARCHITECTURE.md "A shape never fails or slows a writer"):
// the write commits; the shape is invalidated (its clients get 409); the next
// registration of the same definition fails with a 400 naming the error until
// the data changes. Other shapes of the table are not affected.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitFor } from '../lib/stack.js';
import {
  byId, keyed, follow, firstRows, select, getShape, describe, rawShape, isControl, changes,
} from '../lib/shape-helpers.js';

const LONG_POLL_MS = 2000;
let stack;
const open = [];

before(async () => {
  stack = await startStack({
    longPollTimeoutMs: LONG_POLL_MS,
    setupSql: `
      CREATE TABLE fe1 (id int PRIMARY KEY, x int, payload text);
      CREATE TABLE fe2 (LIKE fe1 INCLUDING ALL);
      CREATE TABLE fe3 (LIKE fe1 INCLUDING ALL);
      INSERT INTO fe1 VALUES (1, 1, '7'), (2, 2, '9'), (3, 5, '3');
      INSERT INTO fe2 SELECT * FROM fe1;
      INSERT INTO fe3 SELECT * FROM fe1;
      SELECT shapesync.track(t) FROM unnest(ARRAY['fe1', 'fe2', 'fe3']) t;
    `,
  });
});

after(async () => {
  for (const f of open) f.close();
  await stack?.stop();
});

const enc = encodeURIComponent;
const DIV = `where=${enc('10 / x > 1')}`;
const CAST = `table=fe3&where=${enc('payload::int > 5')}`;

test('a failing filter rolled back with its savepoint does not invalidate the shape', async () => {
  const s = await rawShape(stack, `table=fe1&${DIV}`);
  assert.deepEqual(changes(s.snapshot).map((m) => m.value.id), ['1', '2', '3']);
  await stack.psql(`
    BEGIN;
    SAVEPOINT a;
    INSERT INTO fe1 VALUES (100, 0, 'x');
    ROLLBACK TO SAVEPOINT a;
    INSERT INTO fe1 VALUES (4, 1, '1');
    COMMIT;`);
  const got = await s.live(1);
  assert.deepEqual(got.map((m) => [m.headers.operation, m.value]), [['insert', { id: '4', x: '1', payload: '1' }]]);
  const r = await getShape(stack, `table=fe1&${DIV}&offset=-1`);
  assert.equal(r.status, 200, describe(r));
  assert.equal(r.headers.get('electric-handle'), s.handle, 'still the same shape');
  await stack.psql(`DELETE FROM fe1 WHERE id = 4`);
  await s.live(1);
});

test('division by zero in a filter: the INSERT commits, clients get 409, then 400 naming the error', async () => {
  const raw = await rawShape(stack, `table=fe2&${DIV}`);
  const other = await rawShape(stack, `table=fe2&where=${enc('x >= 0')}`); // leakproof filter, same table
  const whole = await rawShape(stack, 'table=fe2');
  const f = follow(stack.shapeUrl, { table: 'fe2', where: '10 / x > 1' });
  open.push(f);
  await firstRows(f);
  assert.equal(f.stream.shapeHandle, raw.handle);

  const q = `table=fe2&${DIV}&handle=${enc(raw.handle)}&offset=${raw.offset}&live=true&cursor=1`;
  const pending = getShape(stack, q);
  await new Promise((r) => setTimeout(r, 200));
  // stack.psql rejects on a non-zero psql exit: the writer must not see the filter's error.
  await stack.psql(`INSERT INTO fe2 VALUES (5, 0, 'zero')`);
  assert.deepEqual(await select(stack, 'SELECT * FROM fe2 WHERE id = 5'), [{ id: 5, x: 0, payload: 'zero' }]);

  const live = await pending;
  assert.equal(live.status, 409, describe(live));
  assert.deepEqual(live.body, [{ headers: { control: 'must-refetch' } }]);

  // Other shapes of the table are not affected and see the row.
  const o = await other.live(1);
  assert.deepEqual(o.map((m) => [m.headers.operation, m.value]), [['insert', { id: '5', x: '0', payload: 'zero' }]]);
  const w = await whole.live(1);
  assert.deepEqual(w.map((m) => [m.headers.operation, m.value]), [['insert', { id: '5', x: '0', payload: 'zero' }]]);

  // The registry says why.
  assert.equal(
    await stack.psql(`SELECT state || ': ' || reason FROM shapesync.shapes WHERE handle = '${raw.handle}'`),
    'invalid: division by zero',
  );

  // Re-creating the shape (what the client does after 409) answers 400 naming the error.
  const again = await getShape(stack, `table=fe2&${DIV}&offset=-1`);
  assert.equal(again.status, 400, describe(again));
  assert.equal(again.body.message, 'Invalid request');
  assert.equal(again.body.errors.where.length, 1, again.text);
  assert.match(again.body.errors.where[0], /division by zero/, again.text);
  const old = await getShape(stack, `table=fe2&${DIV}&handle=${enc(raw.handle)}&offset=${raw.offset}`);
  assert.ok([400, 409].includes(old.status), describe(old));

  // The official client: must-refetch, then the 400 reaches onError and stops the stream.
  await waitFor(() => f.errors.length > 0, { what: 'the client to report the 400', timeoutMs: 10_000 })
    .catch((e) => {
      throw new Error(`${e.message}; client messages ${JSON.stringify(f.messages.slice(-3))}`);
    });
  assert.ok(f.messages.some((m) => isControl(m, 'must-refetch')), 'the client saw must-refetch');
  const err = f.errors[0];
  assert.equal(err.status, 400, String(err));
  assert.match(JSON.stringify(err.json ?? err.text), /division by zero/);

  // Once the data no longer raises, the shape can be created again.
  await stack.psql(`DELETE FROM fe2 WHERE x = 0`);
  const fixed = await getShape(stack, `table=fe2&${DIV}&offset=-1`);
  assert.equal(fixed.status, 200, describe(fixed));
  assert.notEqual(fixed.headers.get('electric-handle'), raw.handle, 'a new handle');
  assert.deepEqual(changes(fixed.body).map((m) => m.value.id).sort(), ['1', '2', '3']);
});

test('a failing cast (payload::int with "abc") on UPDATE: the write commits, 409 then 400', async () => {
  const f = follow(stack.shapeUrl, { table: 'fe3', where: 'payload::int > 5' });
  open.push(f);
  const rows = await firstRows(f);
  assert.deepEqual(keyed(rows), {
    1: { id: 1, x: 1, payload: '7' },
    2: { id: 2, x: 2, payload: '9' },
  });
  const raw = await rawShape(stack, CAST);
  assert.equal(raw.handle, f.stream.shapeHandle);
  const pending = getShape(stack, `${CAST}&handle=${enc(raw.handle)}&offset=${raw.offset}&live=true&cursor=1`);
  await new Promise((r) => setTimeout(r, 200));
  await stack.psql(`BEGIN; UPDATE fe3 SET payload = 'abc' WHERE id = 1; UPDATE fe3 SET x = 42 WHERE id = 3; COMMIT;`);
  assert.deepEqual(await select(stack, 'SELECT id, x, payload FROM fe3 WHERE id IN (1, 3) ORDER BY id'),
    [{ id: 1, x: 1, payload: 'abc' }, { id: 3, x: 42, payload: '3' }]);

  const r = await pending;
  assert.equal(r.status, 409, describe(r));
  const again = await getShape(stack, `${CAST}&offset=-1`);
  assert.equal(again.status, 400, describe(again));
  assert.match(again.body.errors.where[0], /invalid input syntax for type integer: "abc"/, again.text);
  await waitFor(() => f.errors.length > 0, { what: 'the client to report the 400', timeoutMs: 10_000 });
  assert.equal(f.errors[0].status, 400, String(f.errors[0]));

  await stack.psql(`UPDATE fe3 SET payload = '8' WHERE id = 1`);
  const fixed = await getShape(stack, `${CAST}&offset=-1`);
  assert.equal(fixed.status, 200, describe(fixed));
  assert.deepEqual(changes(fixed.body).map((m) => m.value).sort((a, b) => a.id - b.id), [
    { id: '1', x: '1', payload: '8' },
    { id: '2', x: '2', payload: '9' },
  ]);
});
