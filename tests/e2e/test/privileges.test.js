// A sidecar whose role lacks a grant (issue 9, items 7 and 10): its requests
// fail with a 503 that names the missing privilege, its log says which GRANT
// to run, and it never retires a shape that another, well-configured sidecar
// serves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { waitFor } from '../lib/stack.js';
import { startCluster, startSidecar, cleanupAll, workDir } from '../lib/procs.js';

let cluster;
let good; // superuser
let limited; // role sync_limited: no access to the stored snapshots, no SELECT on noread

before(async () => {
  const work = workDir();
  cluster = await startCluster({
    work,
    setupSql: `
      CREATE TABLE items (id bigserial PRIMARY KEY, title text NOT NULL);
      SELECT shapesync.track('items');
      INSERT INTO items (title) VALUES ('one'), ('two');
      CREATE TABLE noread (id int PRIMARY KEY);
      SELECT shapesync.track('noread');
      CREATE ROLE sync_limited LOGIN;
      GRANT USAGE ON SCHEMA shapesync TO sync_limited;
      GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA shapesync TO sync_limited;
      GRANT USAGE ON ALL SEQUENCES IN SCHEMA shapesync TO sync_limited;
      GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA shapesync TO sync_limited;
      GRANT SELECT ON items TO sync_limited;
      REVOKE ALL ON shapesync.shape_snapshots, shapesync.shape_snapshot_chunks FROM sync_limited;
    `,
  });
  good = await startSidecar({ dbUrl: cluster.dbUrl, work, name: 'good' });
  const url = new URL(cluster.dbUrl);
  url.username = 'sync_limited';
  limited = await startSidecar({ dbUrl: url.toString(), work, name: 'limited' });
});

after(async () => {
  await good?.stop();
  await limited?.stop();
  await cluster?.destroy();
  cleanupAll();
});

const state = async (handle) =>
  cluster.psql(`SELECT state FROM shapesync.shapes WHERE handle = '${handle}'`);

test('(10) a missing grant fails only this sidecar\'s requests (503 naming it) and retires nothing', async () => {
  const r = await fetch(`${good.shapeUrl}?table=items&offset=-1`);
  assert.equal(r.status, 200);
  const handle = r.headers.get('electric-handle');
  await r.arrayBuffer();
  for (let i = 0; i < 3; i++) {
    const b = await fetch(`${limited.shapeUrl}?table=items&offset=-1`);
    const body = await b.json();
    assert.equal(b.status, 503, JSON.stringify(body));
    assert.equal(body.code, 'insufficient_privilege');
    assert.match(body.message, /permission denied for table shape_snapshots/);
    assert.doesNotMatch(body.message, /connect/i);
    assert.equal(b.headers.get('retry-after'), '30');
  }
  assert.equal(await state(handle), 'active', 'the shape the good sidecar serves was retired');
  const again = await fetch(`${good.shapeUrl}?table=items&offset=0_0&handle=${handle}`);
  assert.equal(again.status, 200, 'the good sidecar must keep serving its handle');
  await again.arrayBuffer();
  await waitFor(() => /configuration: .*permission denied for table shape_snapshots.*GRANT .* ON TABLE shape_snapshots TO sync_limited/
    .test(readFileSync(limited.logFile, 'utf8')), { what: 'the log line naming the GRANT' });
  const log = readFileSync(limited.logFile, 'utf8');
  assert.doesNotMatch(log, /retired/);
  const lines = log.split('\n').filter((l) => l.includes('configuration:'));
  assert.ok(lines.length <= 2, `configuration errors are rate-limited, got ${lines.length} lines`);
});

test('(7) a tracked table the role may not read is a 503 naming the privilege, not "cannot connect" nor a WHERE error', async () => {
  for (const q of ['table=noread&offset=-1', 'table=noread&offset=-1&where=id%3D1', 'table=noread&offset=-1&subset__where=id%3D1']) {
    const r = await fetch(`${limited.shapeUrl}?${q}`);
    const body = await r.json();
    assert.equal(r.status, 503, `${q}: ${JSON.stringify(body)}`);
    assert.equal(body.code, 'insufficient_privilege', q);
    assert.match(body.message, /permission denied for table "public"."noread"/, q);
  }
  // The well-configured sidecar serves it.
  const ok = await fetch(`${good.shapeUrl}?table=noread&offset=-1`);
  assert.equal(ok.status, 200);
});
