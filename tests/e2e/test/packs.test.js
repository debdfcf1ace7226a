// Pressure spills share pack files (issue 15): when the store is over its
// --max-memory, the logs it spills in one pass go to one pack file, not a file
// per shape. Reads from them are byte-identical to reads from memory; a lost
// pack is a lost cache (its records are rebuilt from the change log, into a
// file of the shape's own that later reads use); a pack goes when no shape
// refers to it. Real PostgreSQL and shapesyncd.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../lib/stack.js';
import { startCluster, startSidecar, cleanupAll, workDir, getRaw } from '../lib/procs.js';
import { scrape } from '../lib/metrics.js';

const SETUP = `
CREATE TABLE notes (id int8 PRIMARY KEY, owner int4 NOT NULL, body text NOT NULL, rev int4 NOT NULL);
SELECT shapesync.track('notes');
INSERT INTO notes SELECT g, g % 6, repeat('x', 40), 0 FROM generate_series(1, 60) g;
`;

let cluster;
let sidecar;

before(async () => {
  const work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  sidecar = await startSidecar({
    dbUrl: cluster.dbUrl, longPollTimeoutMs: 2000, work,
    // room for the shapes, not for their logs; nothing evicted (the test reads them back)
    args: ['--max-memory', '40K', '--evict-idle', '3600', '--allow-shape-deletion', 'true'],
  });
});

after(async () => {
  await sidecar?.stop();
  await cluster?.destroy();
  cleanupAll();
});

const packDir = () => join(sidecar.dataDir, 'shapes', 'packs');
const packs = () => (existsSync(packDir()) ? readdirSync(packDir()).filter((f) => !f.includes('.tmp')) : []);

/** Every response body from offset -1 to the first up-to-date. */
async function walk(base) {
  const bodies = [];
  let handle = '';
  let offset = '-1';
  for (let i = 0; i < 2000; i++) {
    const r = await getRaw(sidecar.shapeUrl, `${base}${handle ? `&handle=${handle}` : ''}&offset=${offset}`);
    assert.equal(r.status, 200, `${base} at ${offset}: ${r.text.slice(0, 200)}`);
    bodies.push(r.text);
    handle = r.headers.get('electric-handle');
    offset = r.headers.get('electric-offset');
    if (r.headers.has('electric-up-to-date')) return { handle, bodies };
  }
  throw new Error('no up-to-date after 2000 requests');
}

test('a pass spills many shapes into one pack; reads are byte-identical, a lost pack is rebuilt, packs go with their shapes', async () => {
  const bases = [];
  for (let o = 0; o < 6; o++) bases.push(`table=notes&where=${encodeURIComponent(`owner = ${o}`)}`);
  for (const b of bases) await walk(b);
  // revisions in separate transactions: many ticks, many passes of the budget
  for (let rev = 1; rev <= 60; rev++) {
    await cluster.psql(`UPDATE notes SET rev = ${rev}, body = repeat(chr(97 + ${rev} % 26), 40) WHERE id % 10 = ${rev % 10}`);
  }
  await waitFor(async () => (await scrape(sidecar.baseUrl)).value('shapesync_memory_spills_total') >= 12,
    { what: 'pressure spills' });
  const m = await scrape(sidecar.baseUrl);
  const spills = m.value('shapesync_memory_spills_total');
  const files = packs();
  console.log(`# packs: ${spills} pressure spills in ${files.length} pack files`);
  assert.ok(files.length > 0, 'pressure spills are in pack files');
  assert.ok(files.length < spills, `${spills} spills share ${files.length} packs`);
  assert.equal(m.value('shapesync_shape_evictions_total'), 0);

  const first = [];
  for (const b of bases) first.push(await walk(b));
  const want = await cluster.psql('SELECT count(*) FROM notes WHERE rev > 0');
  assert.ok(Number(want.trim()) > 0);
  for (let i = 0; i < bases.length; i++) {
    const again = await walk(bases[i]);
    assert.deepEqual(again.bodies, first[i].bodies, `owner ${i}: the same offsets give the same bytes`);
  }

  // the disk is a cache: lose every pack
  for (const f of packs()) rmSync(join(packDir(), f));
  for (let i = 0; i < bases.length; i++) {
    const rebuilt = await walk(bases[i]);
    assert.deepEqual(rebuilt.bodies, first[i].bodies, `owner ${i}: records of lost packs are rebuilt byte-identical`);
  }
  const rebuilds = () => sidecar.log(100000).split('\n').filter((l) => /segment \S+\/packs\/\d+ is missing or damaged/.test(l)).length;
  const rebuiltOnce = rebuilds();
  assert.ok(rebuiltOnce > 0, 'the lost records were rebuilt from the change log');
  // a rebuilt record goes to a file of the shape's own: read again, nothing is rebuilt twice
  for (let i = 0; i < bases.length; i++) {
    const again = await walk(bases[i]);
    assert.deepEqual(again.bodies, first[i].bodies, `owner ${i}: read again after the rebuild`);
  }
  assert.equal(rebuilds(), rebuiltOnce, 'rebuilt records are read from their own files afterwards');

  // packs go with the last shape that refers to them
  for (let rev = 61; rev <= 80 && packs().length === 0; rev++) { // more passes write fresh packs
    await cluster.psql(`UPDATE notes SET rev = ${rev}, body = repeat(chr(97 + ${rev} % 26), 40) WHERE id % 10 = ${rev % 10}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await waitFor(() => packs().length > 0, { what: 'a new pack' });
  for (let i = 0; i < bases.length; i++) {
    const del = await fetch(`${sidecar.shapeUrl}?${bases[i]}&handle=${first[i].handle}`, { method: 'DELETE' });
    assert.equal(del.status, 202, await del.text());
  }
  await cluster.psql('UPDATE notes SET rev = rev + 1 WHERE id = 2'); // a tick makes the sidecar tidy up
  await waitFor(() => packs().length === 0, { what: 'packs removed with their shapes' });
});
