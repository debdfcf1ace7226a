// Filtered shapes (where / params / columns) with the official client and on the
// wire: move-in and move-out, payloads by replica mode, column projection,
// shape identity, WHERE validation errors and TRUNCATE recovery.
// PROTOCOL.md §2, §4.4, §6.4, §9; docs/shape-membership.md.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitFor } from '../lib/stack.js';
import {
  byId, keyed, follow, firstRows, select, getShape, describe, rawShape, isControl, changes,
} from '../lib/shape-helpers.js';

const SETUP = `
CREATE TABLE mv (id int PRIMARY KEY, priority int, title text);
INSERT INTO mv VALUES (1, 9, 'a'), (2, 2, 'b'), (3, 3, 'c'), (4, 6, 'd');

CREATE TABLE wire (id int PRIMARY KEY, priority int, title text, note text);
INSERT INTO wire VALUES (1, 9, 'a', 'n1'), (2, 2, 'b', 'n2'), (3, 3, 'c', 'n3');

CREATE TABLE cols (id int PRIMARY KEY, name text, secret text, n int);
INSERT INTO cols VALUES (1, 'one', 's1', 1), (2, 'two', 's2', 0), (3, 'three', 's3', 5);

CREATE TABLE people (id int PRIMARY KEY, owner text, v int);
INSERT INTO people VALUES (1, 'alice', 10), (2, 'bob', 20), (3, 'alice', 30), (5, 'carol', 50);

CREATE TABLE ident (id int PRIMARY KEY, x int);
INSERT INTO ident VALUES (1, 1), (2, 2), (3, 3);

CREATE TABLE trunc (id int PRIMARY KEY, v text);
INSERT INTO trunc VALUES (1, 'one'), (2, 'two'), (3, 'three');

CREATE TABLE victim (id int PRIMARY KEY);

-- rows wide enough that an UPDATE logs only the columns it changed
-- (wide_p); wide_f gets the same statements with the whole old image
CREATE TABLE wide_p (id int PRIMARY KEY, priority int, title text, note text, big text,
                     pad text DEFAULT repeat('p', 300));
INSERT INTO wide_p (id, priority, title, note, big) VALUES
  (1, 9, 't1', 'n1', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g)),
  (2, 8, 't2', NULL, 'small'), (3, 3, 't3', 'n3', NULL);
CREATE TABLE wide_f (LIKE wide_p INCLUDING ALL);
INSERT INTO wide_f SELECT * FROM wide_p;

SELECT shapesync.track(t) FROM unnest(ARRAY['mv', 'wire', 'cols', 'people', 'ident', 'trunc', 'victim',
                                            'wide_p', 'wide_f']) t;
`;

let stack;
const open = [];

before(async () => {
  stack = await startStack({ setupSql: SETUP, longPollTimeoutMs: 2000 });
});

after(async () => {
  for (const f of open) f.close();
  await stack?.stop();
});

function track(f) {
  open.push(f);
  return f;
}

const enc = encodeURIComponent;

// --- 1. move-in / move-out -------------------------------------------------

test('client: a filtered shape follows move-in and move-out; rows outside never appear', async () => {
  const f = track(follow(stack.shapeUrl, { table: 'mv', where: 'priority > 5' }));
  const rows = await firstRows(f);
  assert.deepEqual(keyed(rows), {
    1: { id: 1, priority: 9, title: 'a' },
    4: { id: 4, priority: 6, title: 'd' },
  });

  // move-in: the full row appears
  await stack.psql(`UPDATE mv SET priority = 8 WHERE id = 2`);
  await waitFor(() => byId(f.shape.currentRows).has('2'), { what: 'move-in of row 2' });
  assert.deepEqual(keyed(f.shape.currentRows), {
    1: { id: 1, priority: 9, title: 'a' },
    2: { id: 2, priority: 8, title: 'b' },
    4: { id: 4, priority: 6, title: 'd' },
  });

  // move-out (also a NULL: three-valued logic, NULL is "not in")
  await stack.psql(`UPDATE mv SET priority = 1, title = 'b2' WHERE id = 2; UPDATE mv SET priority = NULL WHERE id = 4`);
  await waitFor(() => {
    const m = byId(f.shape.currentRows);
    return !m.has('2') && !m.has('4');
  }, { what: 'move-out of rows 2 and 4' });
  assert.deepEqual(keyed(f.shape.currentRows), { 1: { id: 1, priority: 9, title: 'a' } });

  // changes outside the shape, then a marker inside it
  await stack.psql(`
    UPDATE mv SET title = 'c2' WHERE id = 3;
    UPDATE mv SET priority = 5 WHERE id = 3;
    INSERT INTO mv VALUES (5, 0, 'outside');
    DELETE FROM mv WHERE id = 5;
    INSERT INTO mv VALUES (6, 100, 'inside');
    UPDATE mv SET title = 'marker' WHERE id = 1;`);
  await waitFor(() => byId(f.shape.currentRows).get('1')?.title === 'marker', { what: 'the marker update' });
  assert.deepEqual(keyed(f.shape.currentRows), {
    1: { id: 1, priority: 9, title: 'marker' },
    6: { id: 6, priority: 100, title: 'inside' },
  });
  const keys = new Set(changes(f.messages).map((m) => m.key));
  for (const id of [3, 5]) {
    assert.ok(!keys.has(`"public"."mv"/"${id}"`), `row ${id} (never in the shape) was sent`);
  }
  assert.deepEqual(keyed(f.shape.currentRows), keyed(await select(stack, 'SELECT * FROM mv WHERE priority > 5')));

  // a DELETE inside the shape
  await stack.psql(`DELETE FROM mv WHERE id = 6`);
  await waitFor(() => !byId(f.shape.currentRows).has('6'), { what: 'delete of row 6' });
  assert.deepEqual(f.errors, []);
});

const msgView = (m) => ({
  op: m.headers.operation,
  key: m.key,
  value: m.value,
  ...(m.old_value !== undefined ? { old_value: m.old_value } : {}),
});

test('wire: move-in is insert, move-out delete, update payloads by replica; columns shape drops unrelated updates', async () => {
  const where = `where=${enc('priority > 5')}`;
  const def = await rawShape(stack, `table=wire&${where}`);
  const full = await rawShape(stack, `table=wire&${where}&replica=full`);
  const cols = await rawShape(stack, `table=wire&${where}&columns=id,priority`);
  const snapRows = (s) => changes(s.snapshot).map(msgView);
  assert.deepEqual(snapRows(def), [
    { op: 'insert', key: '"public"."wire"/"1"', value: { id: '1', priority: '9', title: 'a', note: 'n1' } },
  ]);
  assert.deepEqual(snapRows(cols), [
    { op: 'insert', key: '"public"."wire"/"1"', value: { id: '1', priority: '9' } },
  ]);
  assert.notEqual(def.handle, full.handle);
  assert.notEqual(def.handle, cols.handle);

  // One statement per transaction (psql autocommit).
  await stack.psql(`
    UPDATE wire SET priority = 9 WHERE id = 2;
    UPDATE wire SET title = 'b2' WHERE id = 2;
    UPDATE wire SET note = 'n3x' WHERE id = 3;
    UPDATE wire SET note = 'n1x' WHERE id = 1;
    UPDATE wire SET priority = 1 WHERE id = 2;
    UPDATE wire SET priority = 10 WHERE id = 1;`);

  const k1 = '"public"."wire"/"1"';
  const k2 = '"public"."wire"/"2"';
  const gotDef = await def.live(5);
  assert.deepEqual(gotDef.map(msgView), [
    { op: 'insert', key: k2, value: { id: '2', priority: '9', title: 'b', note: 'n2' } },
    { op: 'update', key: k2, value: { id: '2', title: 'b2' } },
    { op: 'update', key: k1, value: { id: '1', note: 'n1x' } },
    { op: 'delete', key: k2, value: { id: '2' } },
    { op: 'update', key: k1, value: { id: '1', priority: '10' } },
  ]);
  for (const m of gotDef) {
    assert.equal(m.headers.last, true, `one change per transaction: ${JSON.stringify(m)}`);
    assert.ok(Array.isArray(m.headers.txids) && typeof m.headers.txids[0] === 'number');
    assert.match(m.headers.lsn, /^\d+$/);
    assert.deepEqual(m.headers.relation, ['public', 'wire']);
  }

  const gotFull = await full.live(5);
  assert.deepEqual(gotFull.map(msgView), [
    { op: 'insert', key: k2, value: { id: '2', priority: '9', title: 'b', note: 'n2' } },
    { op: 'update', key: k2, value: { id: '2', priority: '9', title: 'b2', note: 'n2' }, old_value: { title: 'b' } },
    { op: 'update', key: k1, value: { id: '1', priority: '9', title: 'a', note: 'n1x' }, old_value: { note: 'n1' } },
    { op: 'delete', key: k2, value: { id: '2', priority: '9', title: 'b2', note: 'n2' } },
    { op: 'update', key: k1, value: { id: '1', priority: '10', title: 'a', note: 'n1x' }, old_value: { priority: '9' } },
  ]);

  // columns=id,priority: the title/note updates change no column of the shape.
  const gotCols = await cols.live(3);
  assert.deepEqual(gotCols.map(msgView), [
    { op: 'insert', key: k2, value: { id: '2', priority: '9' } },
    { op: 'delete', key: k2, value: { id: '2' } },
    { op: 'update', key: k1, value: { id: '1', priority: '10' } },
  ]);
  // Same offsets for the same transactions in every shape: the marker ends all three logs.
  assert.equal(def.offset, full.offset);
  assert.equal(def.offset, cols.offset);
});

test('wire: updates logging only their changed columns send what whole old images send, every replica mode', async () => {
  const where = `where=${enc('priority > 5')}`;
  const shapes = {};
  for (const t of ['wide_p', 'wide_f']) {
    shapes[t] = {
      def: await rawShape(stack, `table=${t}&${where}`),
      full: await rawShape(stack, `table=${t}&${where}&replica=full`),
      cols: await rawShape(stack, `table=${t}&${where}&columns=id,priority,note`),
    };
  }
  // One statement per transaction, then the same in one transaction.
  const stmts = (t) => `
    UPDATE ${t} SET title = 't1x' WHERE id = 1;
    UPDATE ${t} SET note = NULL WHERE id = 1;
    UPDATE ${t} SET note = 'back', title = NULL WHERE id = 1;
    UPDATE ${t} SET big = 'no longer big' WHERE id = 1;
    UPDATE ${t} SET big = (SELECT string_agg(md5(g::text), '') FROM generate_series(2, 301) g) WHERE id = 2;
    UPDATE ${t} SET title = 't2x' WHERE id = 2;
    UPDATE ${t} SET id = 10 WHERE id = 1;
    UPDATE ${t} SET priority = 1 WHERE id = 2;
    UPDATE ${t} SET priority = 7, note = 'in' WHERE id = 3;
    UPDATE ${t} SET pad = 'x' WHERE id = 3;
    BEGIN;
    UPDATE ${t} SET note = 'tx', priority = priority + 1;
    UPDATE ${t} SET id = id + 100 WHERE id = 3;
    COMMIT;`;
  await stack.psql(stmts('wide_p'));
  await stack.psql(`SET shapesync.full_old_images = on; ${stmts('wide_f')}`);

  const norm = (t, m) => {
    // the table's name, quoted in keys (escaped inside the JSON text) and in the relation
    const v = JSON.parse(JSON.stringify(msgView(m)).replaceAll(`\\"${t}\\"`, '\\"T\\"').replaceAll(`"${t}"`, '"T"'));
    for (const h of ['key_change_to', 'key_change_from'])
      if (m.headers[h] !== undefined) v[h] = m.headers[h].replaceAll(`"${t}"`, '"T"');
    return v;
  };
  const counts = { def: 15, full: 15, cols: 10 };
  const got = {};
  for (const mode of ['def', 'full', 'cols']) {
    for (const t of ['wide_p', 'wide_f']) {
      got[`${mode}/${t}`] = (await shapes[t][mode].live(counts[mode])).map((m) => norm(t, m));
    }
    assert.deepEqual(got[`${mode}/wide_p`], got[`${mode}/wide_f`], `replica/columns ${mode}`);
    assert.equal(got[`${mode}/wide_p`].length, counts[mode], `${mode}: ${JSON.stringify(got[`${mode}/wide_p`])}`);
  }
  const bigOld = (await select(stack, `SELECT string_agg(md5(g::text), '') AS b FROM generate_series(1, 300) g`))[0].b;
  const k1 = '"public"."T"/"1"';
  const k10 = '"public"."T"/"10"';
  const full = got['full/wide_p'];
  assert.deepEqual(full.slice(0, 4).map((m) => m.old_value), [
    { title: 't1' }, { note: 'n1' }, { title: 't1x', note: null }, { big: bigOld },
  ]);
  assert.deepEqual(full.slice(0, 4).map((m) => m.key), [k1, k1, k1, k1]);
  // the key change: a delete of the old key carrying the whole old row, an insert of the new
  const move = full.filter((m) => m.key_change_to === k10 || m.key_change_from === k1);
  assert.deepEqual(move.map((m) => [m.op, m.key]), [['delete', k1], ['insert', k10]]);
  assert.deepEqual(move[0].value, {
    id: '1', priority: '9', title: null, note: 'back', big: 'no longer big', pad: 'p'.repeat(300),
  });
  assert.deepEqual(got['def/wide_p'].slice(0, 2).map((m) => m.value), [{ id: '1', title: 't1x' }, { id: '1', note: null }]);
});

// --- 2. columns ------------------------------------------------------------

test('a columns shape never shows another column (client, snapshot and live)', async () => {
  const f = track(follow(stack.shapeUrl, { table: 'cols', where: 'n > 0', columns: ['id', 'name'] }));
  const rows = await firstRows(f);
  assert.deepEqual(keyed(rows), { 1: { id: 1, name: 'one' }, 3: { id: 3, name: 'three' } });
  await stack.psql(`
    INSERT INTO cols VALUES (4, 'four', 's4', 4);
    UPDATE cols SET secret = 'changed' WHERE id = 1;
    UPDATE cols SET name = 'ONE', secret = 'again' WHERE id = 1;
    UPDATE cols SET n = 7, secret = 'in' WHERE id = 2;
    UPDATE cols SET n = 0 WHERE id = 3;
    DELETE FROM cols WHERE id = 4;
    INSERT INTO cols VALUES (5, 'marker', 's5', 1);`);
  await waitFor(() => byId(f.shape.currentRows).has('5'), { what: 'marker row 5' });
  assert.deepEqual(keyed(f.shape.currentRows), {
    1: { id: 1, name: 'ONE' },
    2: { id: 2, name: 'two' },
    5: { id: 5, name: 'marker' },
  });
  const msgs = changes(f.messages);
  assert.equal(msgs.length, 8, `2 snapshot rows + 6 live changes: ${JSON.stringify(msgs)}`);
  for (const m of msgs) {
    for (const k of Object.keys(m.value)) assert.ok(['id', 'name'].includes(k), `column ${k} in ${JSON.stringify(m)}`);
    assert.equal(m.old_value, undefined);
  }
  // the secret-only update of row 1 was not sent (replica default: PK + changed columns)
  const row1 = msgs.filter((m) => m.key === '"public"."cols"/"1"').map((m) => [m.headers.operation, m.value]);
  assert.deepEqual(row1, [['insert', { id: 1, name: 'one' }], ['update', { id: 1, name: 'ONE' }]]);
  assert.deepEqual(f.errors, []);
});

test('a columns shape never shows another column (wire, replica=full, old_value too)', async () => {
  const s = await rawShape(stack, `table=cols&columns=id,name&replica=full`);
  for (const m of changes(s.snapshot)) assert.deepEqual(Object.keys(m.value).sort(), ['id', 'name']);
  assert.deepEqual(Object.keys(s.schema).sort(), ['id', 'name'], 'electric-schema lists only the selected columns');
  await stack.psql(`
    UPDATE cols SET secret = 'x', n = 99 WHERE id = 2;
    UPDATE cols SET name = 'TWO', secret = 'y' WHERE id = 2;
    INSERT INTO cols VALUES (6, 'six', 's6', 6);
    DELETE FROM cols WHERE id = 6;`);
  const got = await s.live(3);
  assert.deepEqual(got.map(msgView), [
    { op: 'update', key: '"public"."cols"/"2"', value: { id: '2', name: 'TWO' }, old_value: { name: 'two' } },
    { op: 'insert', key: '"public"."cols"/"6"', value: { id: '6', name: 'six' } },
    { op: 'delete', key: '"public"."cols"/"6"', value: { id: '6', name: 'six' } },
  ]);
});

// --- 3. params -------------------------------------------------------------

test('params: owner = $1 with params [alice]; the client sends params[1]', async () => {
  const urls = [];
  const f = track(follow(stack.shapeUrl, { table: 'people', where: 'owner = $1', params: ['alice'] }, {
    fetchClient: (input, init) => {
      urls.push(String(input));
      return fetch(input, init);
    },
  }));
  const rows = await firstRows(f);
  assert.deepEqual(keyed(rows), {
    1: { id: 1, owner: 'alice', v: 10 },
    3: { id: 3, owner: 'alice', v: 30 },
  });
  const u = new URL(urls[0]);
  assert.equal(u.searchParams.get('params[1]'), 'alice', `client URL ${urls[0]}`);
  assert.equal(u.searchParams.get('where'), 'owner = $1');

  await stack.psql(`
    INSERT INTO people VALUES (10, 'bob', 1), (11, 'alice', 2);
    UPDATE people SET owner = 'bob' WHERE id = 1;
    UPDATE people SET owner = 'alice' WHERE id = 2;
    UPDATE people SET v = 31 WHERE id = 3;`);
  await waitFor(() => byId(f.shape.currentRows).get('3')?.v === 31, { what: 'update of row 3' });
  assert.deepEqual(keyed(f.shape.currentRows), {
    2: { id: 2, owner: 'alice', v: 20 },
    3: { id: 3, owner: 'alice', v: 31 },
    11: { id: 11, owner: 'alice', v: 2 },
  });
  assert.deepEqual(f.errors, []);
});

test('params: typed by context (id = $1 with "5"), bad values and missing params', async () => {
  let r = await getShape(stack, `table=people&offset=-1&where=${enc('id = $1')}&params[1]=5`);
  assert.equal(r.status, 200, describe(r));
  assert.deepEqual(changes(r.body).map((m) => m.value), [{ id: '5', owner: 'carol', v: '50' }]);
  const h5 = r.headers.get('electric-handle');
  r = await getShape(stack, `table=people&offset=-1&where=${enc('id = 5')}`);
  assert.equal(r.headers.get('electric-handle'), h5, 'id = $1 with 5 is the shape id = 5');

  r = await getShape(stack, `table=people&offset=-1&where=${enc('id = $1')}&params[1]=abc`);
  assert.equal(r.status, 400, describe(r));
  assert.equal(r.body.message, 'Invalid request');
  assert.match(r.body.errors.where[0], /invalid input syntax for type integer: "abc"/);

  r = await getShape(stack, `table=people&offset=-1&where=${enc('id = $1')}`);
  assert.equal(r.status, 400, describe(r));
  assert.match(r.body.errors.where[0], /there is no parameter \$1/);

  r = await getShape(stack, `table=people&offset=-1&where=${enc('id = $1')}&params[2]=5`);
  assert.equal(r.status, 400, describe(r));
  assert.deepEqual(r.body, {
    message: 'Invalid request',
    errors: { params: ['Parameters must be numbered sequentially, starting from 1'] },
  });
});

// --- 4. identity -----------------------------------------------------------

test('identical effective shapes share one handle; different constants do not', async () => {
  const handle = async (q) => {
    const r = await getShape(stack, `table=ident&offset=-1&${q}`);
    assert.equal(r.status, 200, describe(r));
    return r.headers.get('electric-handle');
  };
  const h = await handle(`where=${enc('x > 1')}`);
  assert.ok(h);
  assert.equal(await handle(`where=${enc('X   >  1')}`), h, 'case and whitespace');
  assert.equal(await handle(`where=${enc('x > $1')}&params[1]=1`), h, 'param substituted');
  assert.equal(await handle(`where=${enc('(x > 1)')}`), h, 'parentheses');
  assert.equal(await handle(`where=${enc('x > 0 + 1')}`), h, 'constant folding');
  assert.equal(await handle(`where=${enc('x > 1')}&cursor=5&custom=1`), h, 'non-identity params');

  const h2 = await handle(`where=${enc('x > 2')}`);
  assert.notEqual(h2, h, 'different constant, different handle');
  assert.equal(await handle(`where=${enc('x > $1')}&params[1]=2`), h2);
  assert.notEqual(await handle(`where=${enc('x > $1')}&params[1]=3`), h);
  assert.notEqual(await handle(`where=${enc('x > 1')}&replica=full`), h, 'replica is part of identity');
  assert.notEqual(await handle(`where=${enc('x > 1')}&columns=id`), h, 'columns are part of identity');
  assert.notEqual(await handle(''), h, 'whole table');
});

// --- 5. validation ---------------------------------------------------------

test('invalid WHERE clauses answer 400 naming the problem', async () => {
  const cases = [
    ['x >', /^At location \d+: syntax error/],
    ['x in (select 1)', /subqueries are not allowed/],
    ['x > 1 and now() < now()', /now\(\).*not allowed|not immutable/],
    ['1+1', /must return a boolean/],
    ['nope = 1', /column "nope" does not exist/],
    ['1; drop table victim', /unescaped ";" causing statement split/],
    ['true; drop table victim', /unescaped ";" causing statement split/],
    ['x > 1 order by x', /malformed query ending with SQL clauses/],
  ];
  for (const [where, re] of cases) {
    const r = await getShape(stack, `table=ident&offset=-1&where=${enc(where)}`);
    assert.equal(r.status, 400, `${where}: ${describe(r)}`);
    assert.equal(r.body.message, 'Invalid request', where);
    assert.deepEqual(Object.keys(r.body.errors), ['where'], `${where}: ${r.text}`);
    assert.equal(r.body.errors.where.length, 1, where);
    assert.equal(typeof r.body.errors.where[0], 'string');
    assert.match(r.body.errors.where[0], re, where);
    assert.match(r.headers.get('cache-control') ?? '', /no-store/);
    assert.equal(r.headers.get('electric-handle'), null);
  }
  assert.equal(await stack.psql(`SELECT to_regclass('public.victim') IS NOT NULL`), 't', 'table victim still exists');
});

// --- 6. TRUNCATE -----------------------------------------------------------

test('TRUNCATE: the client refetches by itself; the old handle gets 409 with a new handle', async () => {
  const f = track(follow(stack.shapeUrl, { table: 'trunc' }));
  await firstRows(f);
  assert.deepEqual(keyed(f.shape.currentRows), {
    1: { id: 1, v: 'one' }, 2: { id: 2, v: 'two' }, 3: { id: 3, v: 'three' },
  });
  const oldHandle = f.stream.shapeHandle;
  const oldOffset = f.stream.lastOffset;
  assert.ok(oldHandle);
  // let the client settle into its live request
  await new Promise((r) => setTimeout(r, 200));

  await stack.psql(`TRUNCATE trunc`);
  await stack.psql(`INSERT INTO trunc VALUES (10, 'ten'), (11, 'eleven'); UPDATE trunc SET v = 'TEN' WHERE id = 10`);
  const expected = keyed(await select(stack, 'SELECT * FROM trunc'));
  assert.deepEqual(expected, { 10: { id: 10, v: 'TEN' }, 11: { id: 11, v: 'eleven' } });
  await waitFor(() => {
    const rows = f.shape.currentRows;
    return rows.length === 2 && byId(rows).get('10')?.v === 'TEN';
  }, { what: 'the shape to hold the table after TRUNCATE', timeoutMs: 15_000 });
  assert.deepEqual(keyed(f.shape.currentRows), expected);
  assert.ok(f.messages.some((m) => isControl(m, 'must-refetch')), 'the stream saw must-refetch');
  const newHandle = f.stream.shapeHandle;
  assert.notEqual(newHandle, oldHandle);

  const r = await getShape(stack, `table=trunc&handle=${enc(oldHandle)}&offset=${oldOffset}`);
  assert.equal(r.status, 409, describe(r));
  assert.deepEqual(r.body, [{ headers: { control: 'must-refetch' } }]);
  assert.equal(r.headers.get('electric-handle'), newHandle, 'the 409 names the active handle');
  const rl = await getShape(stack, `table=trunc&handle=${enc(oldHandle)}&offset=${oldOffset}&live=true`);
  assert.equal(rl.status, 409, describe(rl));
  assert.equal(rl.headers.get('electric-handle'), newHandle);

  // and it keeps following changes
  await stack.psql(`INSERT INTO trunc VALUES (12, 'twelve')`);
  await waitFor(() => byId(f.shape.currentRows).has('12'), { what: 'insert after refetch' });
  assert.deepEqual(keyed(f.shape.currentRows), keyed(await select(stack, 'SELECT * FROM trunc')));
  assert.deepEqual(f.errors, []);
});
