// The shape store's memory budget (issue 15): with a tiny --max-memory every
// shape's log spills to segment files and every idle shape is evicted, over
// and over, while live clients keep reading changes and other clients come
// back to evicted shapes with their old handle and offset. Every client ends
// with exactly the rows of a SELECT (no change lost or repeated), and the
// store's own count of what it holds stays near the budget. Real PostgreSQL
// and shapesyncd; live clients are the official client, returning ones raw
// requests (they resume from their offset, as a client after a pause does).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../lib/stack.js';
import { startCluster, startSidecar, cleanupAll, workDir, getRaw, FAST_BACKOFF } from '../lib/procs.js';
import { follow, firstRows, select, assertConsistent } from '../lib/shape-helpers.js';
import { scrape } from '../lib/metrics.js';

const OWNERS = 16;
const LIVE = 4; // owners 1..LIVE are followed live all the time; the others come and go
const BUDGET = 24 * 1024;

const SETUP = `
CREATE TABLE items (id int8 PRIMARY KEY, owner int4 NOT NULL, v text NOT NULL);
SELECT shapesync.track('items');
INSERT INTO items SELECT g, (g % ${OWNERS}) + 1, 'v' || g FROM generate_series(1, ${OWNERS * 3}) g;
`;

let cluster;
let sidecar;

before(async () => {
  const work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  sidecar = await startSidecar({
    dbUrl: cluster.dbUrl, longPollTimeoutMs: 2000, work,
    args: ['--max-memory', `${BUDGET / 1024}K`, '--evict-idle', '0', '--chunk-bytes', '1500', '--poll-interval', '100'],
  });
});

after(async () => {
  await sidecar?.stop();
  await cluster?.destroy();
  cleanupAll();
});

const rowsOf = (owner) => select(cluster, `SELECT id::text, owner::text, v FROM items WHERE owner = ${owner}`);
const keyed = (rows) => Object.fromEntries([...rows].map((r) => [String(r.id), { id: String(r.id), owner: String(r.owner), v: r.v }])
  .sort((a, b) => Number(a[0]) - Number(b[0])));

/** A raw client: its handle, offset and rows; catches up to an up-to-date, failing on a repeated or lost change. */
function rawClient(owner) {
  const base = `table=items&where=${encodeURIComponent(`owner = ${owner}`)}`;
  const c = { owner, handle: '', offset: '-1', rows: new Map(), refetches: 0, requests: 0 };
  c.catchUp = async () => {
    for (let i = 0; i < 500; i++) {
      const q = `${base}&offset=${c.offset}${c.handle ? `&handle=${encodeURIComponent(c.handle)}` : ''}`;
      const r = await getRaw(sidecar.shapeUrl, q);
      c.requests++;
      if (r.status === 409) { // allowed by the protocol, counted: the test says how often
        c.refetches++;
        c.handle = '';
        c.offset = '-1';
        c.rows.clear();
        continue;
      }
      assert.equal(r.status, 200, `${r.url}: ${r.text.slice(0, 300)}`);
      c.handle = r.headers.get('electric-handle');
      c.offset = r.headers.get('electric-offset');
      for (const m of r.body) {
        if (m.key === undefined) continue;
        const op = m.headers.operation;
        const id = String(m.value.id);
        if (op === 'insert') {
          assert.ok(!c.rows.has(id), `owner ${owner}: insert of ${id}, which the client already has (a repeated change)`);
          c.rows.set(id, { ...m.value });
        } else if (op === 'update') {
          assert.ok(c.rows.has(id), `owner ${owner}: update of ${id}, which the client does not have (a lost change)`);
          c.rows.set(id, { ...c.rows.get(id), ...m.value });
        } else {
          assert.ok(c.rows.has(id), `owner ${owner}: delete of ${id}, which the client does not have`);
          c.rows.delete(id);
        }
      }
      if (r.headers.has('electric-up-to-date')) return;
    }
    throw new Error(`owner ${owner}: no up-to-date`);
  };
  return c;
}

test('a tiny budget: shapes spill and are evicted many times; every client ends with the rows of a SELECT', async () => {
  const live = [];
  try {
    for (let o = 1; o <= LIVE; o++) {
      const f = follow(sidecar.shapeUrl, { table: 'items', where: `owner = ${o}` }, { backoffOptions: FAST_BACKOFF });
      await firstRows(f);
      live.push({ owner: o, f });
    }
    const clients = [];
    for (let o = LIVE + 1; o <= OWNERS; o++) clients.push(rawClient(o));
    for (const c of clients) await c.catchUp();

    let nextId = OWNERS * 3 + 1;
    let worstHeld = 0;
    const heldSamples = [];
    let rounds = 0;
    const metrics = async () => {
      const m = await scrape(sidecar.baseUrl);
      heldSamples.push(m.value('shapesync_memory_held_bytes'));
      worstHeld = Math.max(worstHeld, heldSamples.at(-1));
      return m;
    };
    for (; rounds < 40; rounds++) {
      // writes to every owner: inserts, updates, deletes, a change of owner (a move between shapes)
      const sql = [];
      for (let o = 1; o <= OWNERS; o++) {
        sql.push(`INSERT INTO items VALUES (${nextId}, ${o}, repeat('n', ${20 + (rounds % 30)}))`);
        nextId++;
      }
      sql.push(`UPDATE items SET v = v || 'u' WHERE id % 7 = ${rounds % 7}`);
      sql.push(`DELETE FROM items WHERE id = (SELECT min(id) FROM items WHERE owner = ${(rounds % OWNERS) + 1})`);
      sql.push(`UPDATE items SET owner = ${((rounds + 3) % OWNERS) + 1} WHERE id = (SELECT max(id) FROM items WHERE owner = ${((rounds + 5) % OWNERS) + 1})`);
      await cluster.psql(`BEGIN; ${sql.join('; ')}; COMMIT;`);
      // some of the returning clients come back (resuming from their offset), the others stay away
      for (const c of clients) if ((c.owner + rounds) % 3 === 0) await c.catchUp();
      await new Promise((r) => setTimeout(r, 150)); // idle shapes are evicted meanwhile
      await metrics();
    }
    // everyone ends with the rows of a SELECT
    for (const c of clients) {
      await c.catchUp();
      assert.deepEqual(keyed(c.rows.values()), keyed(await rowsOf(c.owner)), `owner ${c.owner} (raw client)`);
    }
    for (const { owner, f } of live) {
      await assertConsistent(f, () => rowsOf(owner), `owner ${owner} (live)`, { normalize: keyed, context: () => sidecar.log(40) });
      assert.deepEqual(f.errors.map(String), [], `owner ${owner}: client errors`);
    }
    const m = await metrics();
    const evictions = m.value('shapesync_shape_evictions_total');
    const reloads = m.value('shapesync_shape_reloads_total');
    const spills = m.value('shapesync_memory_spills_total');
    const refetches = clients.reduce((a, c) => a + c.refetches, 0);
    const sorted = [...heldSamples].sort((a, b) => a - b);
    const p90Held = sorted[Math.floor(0.9 * (sorted.length - 1))];
    const summary = `evictions ${evictions}, reloads ${reloads}, pressure spills ${spills}, 409s ${refetches}, ` +
      `held p90 ${p90Held} B, worst ${worstHeld} B (budget ${BUDGET}, ${heldSamples.length} samples), ` +
      `shapes held now ${m.value('shapesync_shapes')}`;
    console.log(`# memory budget: ${summary}`);
    assert.equal(m.value('shapesync_memory_budget_bytes'), BUDGET);
    assert.ok(evictions >= 3 * (OWNERS - LIVE), `every returning shape evicted many times: ${summary}`);
    // stubs take at most an eighth of the budget (3 KiB here): the other
    // returns were rebuilt from the stored snapshot and the change log
    assert.ok(reloads >= 5, `evicted shapes came back from their segment files: ${summary}`);
    assert.ok(spills > 10, `logs spilled under pressure: ${summary}`);
    assert.equal(refetches, 0, `an evicted shape comes back under its handle: ${summary}`);
    // Slack: the live shapes cannot be evicted (their structure, snapshot and
    // cached live bodies stay, about 2.5 KiB each here), and what one batch adds
    // between two passes of the budget. Nine samples in ten (one per round,
    // usually ~26 KiB) stay within it. A rebuilt shape's log (it cannot spill
    // while it is built) was held until the ticker's next pass: the last sample,
    // right after the returning clients' rebuilds, saw ~97 KB in 1 run of 6.
    // Builds now run a pass themselves (0 of 8 since); the worst sample keeps a
    // margin of five budgets: with a 100M budget the same run holds 1.1-1.3 MB (measured).
    const slack = LIVE * 4096 + 8192;
    assert.ok(p90Held <= BUDGET + slack, `held bytes stay within the budget + ${slack}: ${summary}`);
    assert.ok(worstHeld <= 5 * BUDGET, `held bytes never far above the budget: ${summary}`);
  } finally {
    for (const { f } of live) f.close();
  }
});
