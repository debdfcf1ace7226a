// Shape logs stay bounded in memory (issue 4): closed log chunks beyond the
// newest go to segment files under --data-dir; reads of old offsets are
// byte-identical before and after; a deleted or damaged segment file is
// rebuilt from the change log (the disk is a cache); a shape's files go with
// the shape; and when the change log no longer holds a lost segment, the
// shape is retired and the client gets 409. Real PostgreSQL and shapesyncd.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { readdirSync, existsSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../lib/stack.js';
import { startCluster, startSidecar, cleanupAll, workDir, getRaw, FAST_BACKOFF } from '../lib/procs.js';
import { follow, firstRows, select } from '../lib/shape-helpers.js';

const SETUP = `
CREATE TABLE docs (id int8 PRIMARY KEY, body text NOT NULL, rev int4 NOT NULL);
SELECT shapesync.track('docs');
INSERT INTO docs SELECT g, repeat('x', 50), 0 FROM generate_series(1, 20) g;
`;

let work;
let cluster;
let sidecar;
let dataDir;

before(async () => {
  work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  sidecar = await startSidecar({
    dbUrl: cluster.dbUrl, longPollTimeoutMs: 2000, work,
    args: ['--chunk-bytes', '4000', '--memory-chunks', '1', '--allow-shape-deletion', 'true'],
  });
  dataDir = join(work, `shapesyncd-${sidecar.port}-data`, 'shapes');
});

after(async () => {
  await sidecar?.stop();
  await cluster?.destroy();
  cleanupAll();
});

const segFiles = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.seg')).sort((a, b) => Number.parseInt(a) - Number.parseInt(b)) : []);
const shapeDirs = () => (existsSync(dataDir) ? readdirSync(dataDir) : []);
// <handle>.<generation>: a shape reloaded after an eviction never meets an older copy's files
const dirOf = (handle) => {
  const name = handle.replace(/[^A-Za-z0-9_-]/g, '_');
  const found = shapeDirs().filter((d) => d.startsWith(`${name}.`));
  return join(dataDir, found.at(-1) ?? `${name}.0`);
};

/** Every response body from offset -1 to the first up-to-date: [{offset, status, text}]. */
async function walk(base) {
  const out = [];
  let handle = '';
  let offset = '-1';
  for (let i = 0; i < 500; i++) {
    const r = await getRaw(sidecar.shapeUrl, `${base}${handle ? `&handle=${handle}` : ''}&offset=${offset}`);
    out.push({ offset, status: r.status, text: r.text });
    if (r.status !== 200) return { handle, bodies: out };
    handle = r.headers.get('electric-handle');
    offset = r.headers.get('electric-offset');
    if (r.headers.has('electric-up-to-date')) return { handle, bodies: out };
  }
  throw new Error('no up-to-date after 500 requests');
}

async function writeRevisions(from, to) {
  const stmts = [];
  for (let rev = from; rev <= to; rev++) stmts.push(`UPDATE docs SET rev = ${rev}, body = repeat(chr(97 + ${rev} % 26), 60) WHERE id % 4 = ${rev % 4};`);
  await cluster.psql(stmts.join('\n'));
}

test('old chunks move to segment files and read back byte-identical; lost files are rebuilt from PostgreSQL', async () => {
  const f = follow(sidecar.shapeUrl, { table: 'docs' }, { backoffOptions: FAST_BACKOFF });
  try {
    await firstRows(f);
    await writeRevisions(1, 120); // ~600 update messages, well over 4000 bytes of log
    const want = await select(cluster, 'SELECT * FROM docs');
    await waitFor(() => isDeepStrictEqual(
      new Map(f.shape.currentRows.map((r) => [String(r.id), Number(r.rev)])),
      new Map(want.map((r) => [String(r.id), Number(r.rev)]))), { timeoutMs: 20_000, what: 'client caught up' });

    const handle = f.stream.shapeHandle;
    await waitFor(() => segFiles(dirOf(handle)).length >= 3, { what: 'segment files written' });
    const dir = dirOf(handle);
    assert.deepEqual(shapeDirs(), [dir.split('/').pop()], 'one directory, named after the handle');
    const files = segFiles(dir);

    // memory holds the open chunk and one closed chunk (4000 bytes each), not the ~600 updates
    const metrics = Object.fromEntries((await (await fetch(`${sidecar.baseUrl}/metrics`)).text()).split('\n')
      .filter((l) => l && !l.startsWith('#')).map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
    assert.ok(metrics.shapesync_log_memory_bytes > 0 && metrics.shapesync_log_memory_bytes <= 3 * 4000,
      `log bytes in memory: ${metrics.shapesync_log_memory_bytes}`);
    assert.ok(metrics.shapesync_changes_total >= 600, `changes read: ${metrics.shapesync_changes_total}`);
    assert.ok(metrics.shapesync_log_entries_total >= 600, `log entries: ${metrics.shapesync_log_entries_total}`);

    const first = await walk('table=docs');
    assert.equal(first.handle, handle);
    assert.ok(first.bodies.length >= files.length + 2, `${first.bodies.length} chunks for ${files.length} segments`);
    const again = await walk('table=docs');
    assert.deepEqual(again.bodies, first.bodies, 'the same offsets give the same bytes');

    // the disk is a cache: delete one file, damage another
    rmSync(join(dir, files[0]));
    const p = join(dir, files[1]);
    writeFileSync(p, 'not a segment');
    const rebuilt = await walk('table=docs');
    assert.deepEqual(rebuilt.bodies, first.bodies, 'rebuilt chunks are byte-identical');
    assert.match(sidecar.log(100), /rebuilding it from the change log/);
    assert.ok(statSync(p).size > 100, 'the damaged file was rewritten');

    // a shape's files go with it
    const del = await fetch(`${sidecar.shapeUrl}?table=docs&handle=${handle}`, { method: 'DELETE' });
    assert.equal(del.status, 202, await del.text());
    await cluster.psql('UPDATE docs SET rev = rev + 1 WHERE id = 1'); // a tick makes the sidecar tidy up
    await waitFor(() => !existsSync(dir), { what: `${dir} removed with its shape` });
  } finally {
    f.close();
  }
});

test('a lost segment the change log no longer holds: the shape is retired, 409, the client re-syncs', async () => {
  const where = 'id <= 10';
  const f = follow(sidecar.shapeUrl, { table: 'docs', where }, { backoffOptions: FAST_BACKOFF });
  try {
    await firstRows(f);
    await writeRevisions(200, 320);
    const h1 = f.stream.shapeHandle;
    await waitFor(() => segFiles(dirOf(h1)).length >= 2, { timeoutMs: 20_000, what: `segment files written (${shapeDirs()})` });
    const dir = dirOf(h1);
    // rotate the change log past the shape's changes (the live sidecar has read them)
    for (let i = 0; i < 3; i++) {
      await cluster.psql('UPDATE docs SET rev = rev + 1 WHERE id = 20; SELECT shapesync.tick(true);');
      await waitFor(async () => (await cluster.psql("SELECT rotated FROM shapesync.maintain('0', '1 hour')")).endsWith('t'),
        { timeoutMs: 15_000, what: `rotation ${i + 1}` });
    }
    for (const s of segFiles(dir)) rmSync(join(dir, s));
    const w = await walk(`table=docs&where=${encodeURIComponent(where)}`);
    const last = w.bodies.at(-1);
    assert.equal(last.status, 409, `reading the lost chunk: ${last.status} ${last.text.slice(0, 200)}`);
    assert.match(await cluster.psql(`SELECT reason FROM shapesync.shapes WHERE handle = '${h1}'`), /change log retention/);
    // the official client re-syncs under a new handle and is consistent
    const want = await select(cluster, `SELECT * FROM docs WHERE ${where}`);
    await cluster.psql('UPDATE docs SET rev = rev + 1 WHERE id = 2');
    await waitFor(async () => {
      const now = await select(cluster, `SELECT * FROM docs WHERE ${where}`);
      return f.stream.shapeHandle !== h1 && isDeepStrictEqual(
        new Map(f.shape.currentRows.map((r) => [String(r.id), Number(r.rev)])),
        new Map(now.map((r) => [String(r.id), Number(r.rev)])));
    }, { timeoutMs: 20_000, what: `client re-synced (had ${want.length} rows)` });
  } finally {
    f.close();
  }
});
