// Subset snapshots (PROTOCOL.md §2.2 subset__*, POST /v1/shape, §4.8) against a
// real PostgreSQL and sidecar: raw GET and POST compared with the equivalent
// SELECT, the official client's requestSnapshot on a changes_only stream, and
// the 400s (nested under "subset") that must change nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ShapeStream, Shape } from '../lib/electric.js';
import { startStack, waitFor } from '../lib/stack.js';
import { getShape, describe, rawShape, select, within } from '../lib/shape-helpers.js';

let stack;

before(async () => {
  stack = await startStack({
    longPollTimeoutMs: 3000,
    setupSql: `
      CREATE TABLE items (id bigserial PRIMARY KEY, title text NOT NULL, priority int NOT NULL, tag text,
                          "Mixed Case" int);
      SELECT shapesync.track('items');
      INSERT INTO items (title, priority, tag, "Mixed Case")
        SELECT 'item ' || g, g % 7, CASE WHEN g % 3 = 0 THEN NULL ELSE 'tag' || (g % 4) END, 100 - g
          FROM generate_series(1, 30) g;
    `,
  });
});

after(async () => {
  await stack?.stop();
});

const enc = encodeURIComponent;
const ids = (rows) => rows.map((r) => String(r.id));
const dataIds = (body) => body.data.map((m) => m.value.id);

function assertSubsetResponse(r, { offset = '-1' } = {}) {
  assert.equal(r.status, 200, describe(r));
  assert.equal(r.headers.get('electric-snapshot'), 'true');
  assert.equal(r.headers.get('cache-control'), 'no-cache');
  assert.ok(r.headers.get('electric-handle'), 'electric-handle');
  assert.equal(r.headers.get('electric-offset'), offset);
  assert.ok(JSON.parse(r.headers.get('electric-schema')).id, 'electric-schema');
  for (const h of ['etag', 'electric-cursor', 'electric-up-to-date']) assert.equal(r.headers.has(h), false, h);
  const { metadata, data } = r.body;
  assert.deepEqual(Object.keys(r.body).sort(), ['data', 'metadata']);
  assert.match(metadata.xmin, /^\d+$/);
  assert.match(metadata.xmax, /^\d+$/);
  assert.ok(Array.isArray(metadata.xip_list) && metadata.xip_list.every((x) => /^\d+$/.test(x)));
  assert.match(metadata.database_lsn, /^\d+$/);
  assert.ok(Number.isInteger(metadata.snapshot_mark) && metadata.snapshot_mark >= 0 && metadata.snapshot_mark < 2 ** 31);
  for (const m of data) {
    assert.deepEqual(m.headers, { operation: 'insert', relation: ['public', 'items'], version: m.headers.version,
      snapshot_mark: metadata.snapshot_mark });
    assert.match(m.headers.version, /^\d+$/, 'the row version (docs/mutations.md)');
    assert.equal(m.key, `"public"."items"/"${m.value.id}"`);
  }
}

test('GET subset: where + order_by + limit + offset = the equivalent SELECT, in order', async () => {
  const r = await getShape(stack, 'table=items&offset=-1&subset__where=' + enc('priority > 1 AND tag IS NOT NULL') +
    '&subset__order_by=' + enc('priority DESC, "Mixed Case" ASC NULLS LAST') + '&subset__limit=6&subset__offset=2');
  assertSubsetResponse(r);
  const want = await select(stack, `SELECT * FROM items WHERE priority > 1 AND tag IS NOT NULL
                                    ORDER BY priority DESC, "Mixed Case" ASC NULLS LAST LIMIT 6 OFFSET 2`);
  assert.equal(want.length, 6);
  assert.deepEqual(dataIds(r.body), ids(want));
  const first = r.body.data[0].value;
  assert.deepEqual(first, {
    id: String(want[0].id), title: want[0].title, priority: String(want[0].priority), tag: want[0].tag,
    'Mixed Case': String(want[0]['Mixed Case']),
  });
  // the whole filtered set without limit, and a page past the end
  const all = await getShape(stack, 'table=items&offset=-1&subset__where=' + enc('tag IS NULL') + '&subset__order_by=id');
  assertSubsetResponse(all);
  assert.deepEqual(dataIds(all.body), ids(await select(stack, 'SELECT id FROM items WHERE tag IS NULL ORDER BY id')));
  assert.ok(all.body.data.some((m) => m.value.tag === null));
  const past = await getShape(stack, 'table=items&offset=-1&subset__order_by=id&subset__offset=1000');
  assertSubsetResponse(past);
  assert.deepEqual(past.body.data, []);
});

test('GET subset: ANDed with the shape where; params; columns', async () => {
  const r = await getShape(stack, 'table=items&offset=-1&where=' + enc('priority >= 2') +
    '&columns=' + enc('"id","title"') +
    '&subset__where=' + enc('title LIKE $1 OR id = $2') + '&subset__params=' + enc(JSON.stringify({ 1: 'item 1%', 2: 5 })) +
    '&subset__order_by=' + enc('"title" DESC'));
  assertSubsetResponse(r);
  const want = await select(stack, `SELECT id, title FROM items WHERE priority >= 2 AND (title LIKE 'item 1%' OR id = 5)
                                    ORDER BY title DESC`);
  assert.ok(want.length > 2);
  assert.deepEqual(dataIds(r.body), ids(want));
  assert.deepEqual(Object.keys(r.body.data[0].value).sort(), ['id', 'title']);
  assert.deepEqual(Object.keys(JSON.parse(r.headers.get('electric-schema'))).sort(), ['id', 'title']);
});

test('subset with a handle: must match the shape (409 otherwise), offset echoed', async () => {
  const base = 'table=items&where=' + enc('priority = 3');
  const s = await rawShape(stack, base);
  const ok = await getShape(stack, `${base}&handle=${enc(s.handle)}&offset=${s.offset}&subset__where=${enc('id < 10')}&subset__order_by=id`);
  assertSubsetResponse(ok, { offset: s.offset });
  assert.equal(ok.headers.get('electric-handle'), s.handle);
  assert.deepEqual(dataIds(ok.body), ids(await select(stack, 'SELECT id FROM items WHERE priority = 3 AND id < 10 ORDER BY id')));
  const bad = await getShape(stack, `${base}&handle=nope-1&offset=${s.offset}&subset__where=${enc('id < 10')}`);
  assert.equal(bad.status, 409, describe(bad));
  assert.equal(bad.headers.get('electric-handle'), s.handle);
  assert.deepEqual(bad.body, [{ headers: { control: 'must-refetch' } }]);
});

async function post(query, body, headers = { 'content-type': 'application/json' }) {
  const r = await fetch(`${stack.shapeUrl}?${query}`, { method: 'POST', headers, body });
  const text = await r.text();
  let parsed;
  try { parsed = JSON.parse(text); } catch { parsed = text; }
  return { status: r.status, headers: r.headers, body: parsed, text, url: `POST ${query} ${String(body).slice(0, 200)}` };
}

test('POST /v1/shape: subset in the JSON body (top level and nested), other keys as parameters', async () => {
  const r = await post('table=items&offset=-1', JSON.stringify({
    where: 'priority < $1', params: { 1: 3 }, order_by: 'id DESC', limit: 4, where_expr: { type: 'ref', column: 'x' },
    columns: '"id","priority"',
  }));
  assertSubsetResponse(r);
  const want = await select(stack, 'SELECT id, priority FROM items WHERE priority < 3 ORDER BY id DESC LIMIT 4');
  assert.deepEqual(dataIds(r.body), ids(want));
  assert.deepEqual(Object.keys(r.body.data[0].value).sort(), ['id', 'priority']);

  const n = await post('table=items&offset=-1&subset__where=false', JSON.stringify({ subset: { where: 'id <= 3', order_by: 'id' } }));
  assertSubsetResponse(n);
  assert.deepEqual(dataIds(n.body), ['1', '2', '3']);

  // an empty body: the whole shape as a subset snapshot
  const e = await post('table=items&offset=-1', '');
  assertSubsetResponse(e);
  assert.equal(e.body.data.length, Number(await stack.psql('SELECT count(*) FROM items')));
});

test('POST /v1/shape: body too large -> 413', async () => {
  const r = await post('table=items&offset=-1', JSON.stringify({ where: `title <> '${'x'.repeat(2 << 20)}'` }));
  assert.equal(r.status, 413, r.text.slice(0, 200));
  assert.deepEqual(r.body, { error: 'Request body too large' });
});

test('errors: 400 nested under subset, nothing registered or changed', async () => {
  const registry = () => stack.psql('SELECT count(*) FROM shapesync.shape_registry');
  const contents = () => stack.psql('SELECT md5(string_agg(i::text, \',\' ORDER BY id)) FROM items i');
  const before = [await registry(), await contents()];
  const base = 'table=items&offset=-1&where=' + enc('priority <> 42');  // a shape nobody asked for yet
  const cases = [
    [`subset__where=${enc('id = = 1')}`, 'where', /^At location \d+: syntax error at or near "="/],
    [`subset__where=${enc('id IN (SELECT 1)')}`, 'where', /subquer/i],
    [`subset__where=${enc('nope = 1')}`, 'where', /column "nope" does not exist/],
    [`subset__where=${enc('id = $1')}`, 'where', /\$1|param/i],
    [`subset__where=${enc('random() > 0.5')}`, 'where', /random|volatile|not allowed/i],
    [`subset__order_by=${enc('lower(title)')}`, 'order_by', /^Function calls are not allowed in ORDER BY/],
    [`subset__order_by=${enc('(SELECT 1)')}`, 'order_by', /^Subqueries are not allowed in ORDER BY/],
    [`subset__order_by=${enc('title::int')}`, 'order_by', /^Type casts are not allowed in ORDER BY/],
    [`subset__order_by=${enc('id; DELETE FROM items')}`, 'order_by', /not allowed in ORDER BY/],
    [`subset__order_by=nope`, 'order_by', /^Unknown column in ORDER BY: nope$/],
    ['subset__limit=5', 'order_by', /^order_by is required when limit or offset is present$/],
    ['subset__offset=5', 'order_by', /^order_by is required when limit or offset is present$/],
    ['subset__limit=0&subset__order_by=id', 'limit', /^must be greater than 0$/],
    [`subset__params=${enc('{"1":')}`, 'params', /^params must be valid JSON$/],
    [`subset__params=${enc('["a"]')}`, 'params', /^params must be a JSON object$/],
    [`subset__where=${enc('id = 1 / (priority - priority)')}`, 'where', /division by zero/],
  ];
  for (const [q, field, re] of cases) {
    const r = await getShape(stack, `${base}&${q}`);
    assert.equal(r.status, 400, describe(r));
    assert.equal(r.body.message, 'Invalid request', describe(r));
    assert.deepEqual(Object.keys(r.body.errors), ['subset'], describe(r));
    assert.match(r.body.errors.subset[field]?.[0] ?? '', re, describe(r));
    assert.equal(r.headers.get('cache-control'), 'no-store');
  }
  const notObject = await post(base, '[1,2]');
  assert.equal(notObject.status, 400, notObject.text);
  assert.deepEqual(notObject.body, { error: 'Request body must be a JSON object' });
  const notJson = await post(base, '{"where":');
  assert.equal(notJson.status, 400, notJson.text);
  assert.equal(notJson.body.error, 'Invalid JSON in request body');
  const badPostOrder = await post(base, JSON.stringify({ order_by: 'id DESC, f(x)' }));
  assert.equal(badPostOrder.status, 400, badPostOrder.text);
  assert.match(badPostOrder.body.errors.subset.order_by[0], /^Function calls are not allowed in ORDER BY/);
  // the row-time error is the only one that reached the shape: it may have registered the shape, nothing else
  const after = [await registry(), await contents()];
  assert.equal(after[1], before[1], 'table contents unchanged');
  assert.ok(Number(after[0]) - Number(before[0]) <= 1, `registry grew by ${Number(after[0]) - Number(before[0])}`);
});

test('validation errors register no shape', async () => {
  const registry = () => stack.psql('SELECT count(*) FROM shapesync.shape_registry');
  const before = await registry();
  const base = 'table=items&offset=-1&where=' + enc('priority <> 43');
  for (const q of [`subset__where=${enc('id IN (SELECT 1)')}`, 'subset__order_by=f(x)', 'subset__limit=1']) {
    const r = await getShape(stack, `${base}&${q}`);
    assert.equal(r.status, 400, describe(r));
  }
  assert.equal(await registry(), before);
});

test('official client: requestSnapshot on a changes_only stream gets the rows, then live changes', async () => {
  const errors = [];
  const ac = new AbortController();
  const stream = new ShapeStream({
    url: stack.shapeUrl,
    params: { table: 'items' },
    log: 'changes_only',
    signal: ac.signal,
    onError: (e) => { errors.push(e); },
  });
  const shape = new Shape(stream);
  try {
    await within(shape.rows, 15_000, () => `stream not up to date (errors: ${errors.map(String).join('; ')})`);
    assert.equal(shape.currentRows.length, 0, 'changes_only: no initial rows');

    const got = await within(shape.requestSnapshot({ where: 'priority >= $1', params: { 1: '5' }, orderBy: 'id', limit: 5 }),
      15_000, () => `requestSnapshot (errors: ${errors.map(String).join('; ')})`);
    void got;
    const want = await select(stack, 'SELECT * FROM items WHERE priority >= 5 ORDER BY id LIMIT 5');
    await waitFor(() => shape.currentRows.length === 5, { what: 'the snapshot rows in the Shape' });
    const rows = new Map(shape.currentRows.map((r) => [String(r.id), r]));
    assert.deepEqual([...rows.keys()].sort(), ids(want).sort());
    const w0 = want[0];
    assert.deepEqual(rows.get(String(w0.id)), { id: BigInt(w0.id), title: w0.title, priority: w0.priority, tag: w0.tag, 'Mixed Case': w0['Mixed Case'] });

    // a second snapshot over POST (fetchSnapshot: not injected)
    const fetched = await stream.fetchSnapshot({ where: 'id <= 2', orderBy: 'id DESC', method: 'POST' });
    assert.deepEqual(fetched.data.map((m) => String(m.value.id)), ['2', '1']);

    // live: an update of a snapshot row and a new row arrive through the stream
    await stack.psql(`UPDATE items SET title = 'changed' WHERE id = ${w0.id}`);
    const inserted = await stack.psql(`INSERT INTO items (title, priority) VALUES ('new one', 6) RETURNING id`);
    await waitFor(() => shape.currentRows.some((r) => String(r.id) === inserted) &&
      shape.currentRows.find((r) => String(r.id) === String(w0.id))?.title === 'changed',
    { timeoutMs: 15_000, what: `live changes in the Shape (rows: ${JSON.stringify(shape.currentRows, (k, v) => typeof v === 'bigint' ? String(v) : v)})` });
    assert.equal(errors.length, 0, errors.map(String).join('; '));
  } finally {
    ac.abort();
    shape.unsubscribeAll();
    stream.unsubscribeAll();
  }
});
