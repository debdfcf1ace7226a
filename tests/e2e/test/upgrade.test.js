// ALTER EXTENSION shapesync UPDATE under a running stack (what `make run`
// does when the installed extension is newer than the database's): a
// database created at 0.1.0 holding shapes and live clients is upgraded in
// place; the clients keep their handles and receive every change; nothing is
// dropped; and the upgraded database then serves a least-privilege sidecar.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, SIDECAR_ROLE } from '../lib/stack.js';
import { spawnSidecar } from '../lib/procs.js';
import { follow, firstRows, assertConsistent, select, rawShape, changes } from '../lib/shape-helpers.js';

let stack;
const open = [];

before(async () => {
  // 0.1.0 has no grant_sidecar(): the sidecar of that release ran as the superuser
  stack = await startStack({
    extensionVersion: '0.1.0',
    superuserSidecar: true,
    longPollTimeoutMs: 1000,
    setupSql: `
      CREATE TABLE up_todos (id int PRIMARY KEY, owner text, title text);
      INSERT INTO up_todos SELECT g, 'u' || (g % 2), 'todo ' || g FROM generate_series(1, 10) g;
      SELECT shapesync.track('up_todos');
    `,
  });
});

after(async () => {
  for (const f of open) f.close();
  await stack?.stop();
});

test('an upgrade with live clients loses nothing and keeps handles', async () => {
  assert.deepEqual(await select(stack, `SELECT extversion FROM pg_extension WHERE extname = 'shapesync'`),
    [{ extversion: '0.1.0' }]);
  const all = follow(stack.shapeUrl, { table: 'up_todos' });
  const u1 = follow(stack.shapeUrl, { table: 'up_todos', where: "owner = 'u1'" });
  open.push(all, u1);
  await firstRows(all);
  await firstRows(u1);
  const handles = [all.stream.shapeHandle, u1.stream.shapeHandle];
  const before = await select(stack, 'SELECT handle, shape_id, state FROM shapesync.shapes ORDER BY handle');
  const logRows = (await select(stack, 'SELECT count(*)::int AS n FROM shapesync.changes'))[0].n;

  await stack.psql(`INSERT INTO up_todos VALUES (11, 'u1', 'before the upgrade')`);
  // Commits on 0.1.0, one tick each (0.1.0 has batch() but not batches():
  // the sidecar reads ranges of ticks another way).
  await stack.psql(Array.from({ length: 40 }, (_, i) =>
    `INSERT INTO up_todos VALUES (${100 + i}, 'u${i % 2}', 'burst ${i}'); SELECT pg_sleep(0.02);`).join('\n'));
  await assertConsistent(all, () => select(stack, 'SELECT * FROM up_todos'), 'whole table, burst on 0.1.0');
  await assertConsistent(u1, () => select(stack, `SELECT * FROM up_todos WHERE owner = 'u1'`), 'u1, burst on 0.1.0');
  // A second sidecar on 0.1.0 loads the stored snapshot and reads every tick
  // since it in one range.
  const second = await spawnSidecar({ dbUrl: stack.dbUrl, longPollTimeoutMs: 1000, name: 'second' });
  try {
    await second.waitHealthy();
    const late = follow(second.shapeUrl, { table: 'up_todos' });
    open.push(late);
    await firstRows(late);
    assert.equal(late.stream.shapeHandle, handles[0], 'the second sidecar serves the same shape');
    await assertConsistent(late, () => select(stack, 'SELECT * FROM up_todos'), 'second sidecar on 0.1.0');
    assert.deepEqual(late.errors, []);
    late.close();
  } finally {
    second.kill();
  }
  await stack.psql('ALTER EXTENSION shapesync UPDATE');
  await stack.psql(`INSERT INTO up_todos VALUES (12, 'u1', 'after the upgrade');
                    UPDATE up_todos SET title = 'changed after' WHERE id = 1;
                    DELETE FROM up_todos WHERE id = 2`);

  assert.deepEqual(await select(stack, `SELECT extversion FROM pg_extension WHERE extname = 'shapesync'`),
    [{ extversion: '0.2.0' }]);
  await assertConsistent(all, () => select(stack, 'SELECT * FROM up_todos'), 'whole table after the upgrade');
  await assertConsistent(u1, () => select(stack, `SELECT * FROM up_todos WHERE owner = 'u1'`), 'u1 after the upgrade');
  // the changes did arrive (not only the snapshot)
  assert.equal(all.shape.currentRows.find((r) => String(r.id) === '1')?.title, 'changed after');
  assert.ok(u1.shape.currentRows.some((r) => String(r.id) === '12'));
  assert.deepEqual([all.stream.shapeHandle, u1.stream.shapeHandle], handles, 'same handles');
  assert.deepEqual(all.errors, []);
  assert.deepEqual(u1.errors, []);
  assert.deepEqual(await select(stack, 'SELECT handle, shape_id, state FROM shapesync.shapes ORDER BY handle'), before);
  assert.ok((await select(stack, 'SELECT count(*)::int AS n FROM shapesync.changes'))[0].n >= logRows);
});

test('after the upgrade the least-privilege role works', async () => {
  await stack.psql(`CREATE ROLE ${SIDECAR_ROLE} LOGIN; SELECT shapesync.grant_sidecar('${SIDECAR_ROLE}')`);
  assert.deepEqual(await select(stack,
    `SELECT has_table_privilege('${SIDECAR_ROLE}', 'up_todos', 'SELECT') AS sel,
            has_function_privilege('${SIDECAR_ROLE}', 'shapesync.batch(bigint)', 'EXECUTE') AS batch,
            has_table_privilege('${SIDECAR_ROLE}', 'shapesync.shape_registry', 'SELECT') AS registry`),
  [{ sel: true, batch: true, registry: false }]);
  // new shapes on the upgraded database
  const s = await rawShape(stack, `table=up_todos&where=${encodeURIComponent('id <= 3')}`);
  assert.deepEqual(changes(s.snapshot).map((m) => m.value.id).sort(), ['1', '3']);
});
