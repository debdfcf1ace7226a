// A snapshot is served while it is taken and stored (issue 4: initial sync at
// COPY speed). If the sidecar that took it dies before storing it, no one may
// take another snapshot under the same handle (a client holding part of the
// first would mix two snapshots): the next sidecar finds it abandoned, retires
// the shape, and the client gets 409 and re-syncs consistently.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from '../lib/stack.js';
import { startCluster, startSidecar, psqlSession, cleanupAll, workDir, getRaw, syncRaw, applyMessages } from '../lib/procs.js';
import { isControl, select } from '../lib/shape-helpers.js';

const SETUP = `
CREATE TABLE big (id int8 PRIMARY KEY, v text NOT NULL);
SELECT shapesync.track('big');
INSERT INTO big SELECT g, repeat('v', 40) || g FROM generate_series(1, 5000) g;
`;

let work;
let cluster;
let sidecar;

before(async () => {
  work = workDir();
  cluster = await startCluster({ setupSql: SETUP, work });
  sidecar = await startSidecar({ dbUrl: cluster.dbUrl, longPollTimeoutMs: 2000, work, args: ['--chunk-bytes', '20000'] });
});

after(async () => {
  await sidecar?.stop();
  await cluster?.destroy();
  cleanupAll();
});

test('the builder dies after serving chunks but before storing them: the shape is retired, 409, consistent re-sync', async () => {
  // Hold the store back: the chunks' INSERT waits for this lock.
  const blocker = psqlSession(cluster.dbUrl);
  await blocker.exec('BEGIN; LOCK TABLE shapesync.shape_snapshot_chunks IN EXCLUSIVE MODE');
  let h1;
  let offset;
  try {
    const r0 = await getRaw(sidecar.shapeUrl, 'table=big&offset=-1');
    assert.equal(r0.status, 200, r0.text.slice(0, 200));
    h1 = r0.headers.get('electric-handle');
    const r1 = await getRaw(sidecar.shapeUrl, `table=big&handle=${h1}&offset=${r0.headers.get('electric-offset')}`);
    assert.equal(r1.status, 200);
    offset = r1.headers.get('electric-offset');
    assert.match(offset, /^0_/, 'still in the snapshot');
    assert.equal(await cluster.psql(`SELECT chunk_count IS NULL FROM shapesync.shape_snapshots WHERE handle = '${h1}'`), 't',
      'claimed, not stored');
    sidecar.kill('SIGKILL');
    await sidecar.exited;
  } finally {
    await blocker.exec('ROLLBACK');
    await blocker.close();
  }
  sidecar = await startSidecar({ dbUrl: cluster.dbUrl, port: sidecar.port, longPollTimeoutMs: 2000, work,
    args: ['--chunk-bytes', '20000'] });

  const r = await getRaw(sidecar.shapeUrl, `table=big&handle=${h1}&offset=${offset}`);
  assert.equal(r.status, 409, `abandoned snapshot: ${r.status} ${r.text.slice(0, 200)}`);
  assert.ok(isControl(r.body?.[0], 'must-refetch'));
  const h2 = r.headers.get('electric-handle');
  assert.ok(h2 && h2 !== h1, `a new handle (${h2})`);
  assert.match(await cluster.psql(`SELECT reason FROM shapesync.shapes WHERE handle = '${h1}'`), /abandoned/);
  assert.match(sidecar.log(50), /abandoned/);

  // the re-sync is whole and consistent, and its snapshot gets stored
  const full = await syncRaw(sidecar.shapeUrl, 'table=big');
  assert.equal(full.handle, h2);
  const rows = applyMessages(full.messages);
  const want = await select(cluster, 'SELECT * FROM big');
  assert.equal(rows.length, want.length);
  await waitFor(async () => (await cluster.psql(
    `SELECT chunk_count IS NOT NULL FROM shapesync.shape_snapshots WHERE handle = '${h2}'`)) === 't', { what: 'stored' });
});
