// Issue 8.3: a table dropped while its shape is requested. Requests that race
// DROP TABLE are answered like any other missing table (400 under
// errors.table), or served (200), or told to refetch (409) — never a WHERE
// error and never a retryable 503 (the official client would retry forever).
// A live shape whose table is dropped gets 409, then 400 under errors.table.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, startSidecar, cleanupAll, workDir, getRaw } from '../lib/procs.js';

let work;
let cluster;
let sidecar;

before(async () => {
  work = workDir();
  cluster = await startCluster({ work, setupSql: 'SELECT 1' });
  sidecar = await startSidecar({ dbUrl: cluster.dbUrl, longPollTimeoutMs: 3000, work });
});

after(async () => {
  await sidecar?.stop();
  await cluster?.destroy();
  cleanupAll();
});

const create = (t) => cluster.psql(`CREATE TABLE ${t} (id int PRIMARY KEY, v text);
  INSERT INTO ${t} SELECT g, 'v' || g FROM generate_series(1, 2000) g; SELECT shapesync.track('${t}');`);

function judge(r, what) {
  const where = `${what}: ${r.status} ${r.text.slice(0, 300)}`;
  assert.ok([200, 400, 409].includes(r.status), `no 5xx: ${where}`);
  if (r.status === 400) {
    assert.ok(r.body?.errors?.table, `a 400 names the table: ${where}`);
    assert.equal(r.body.errors.where, undefined, `not a WHERE error: ${where}`);
    assert.match(String(r.body.errors.table), /does not exist/, where);
  }
}

test('requests racing DROP TABLE: 200, 409 or 400 under errors.table, never 503 or a WHERE error', async () => {
  const seen = {};
  for (let round = 0; round < 12; round++) {
    const t = `race_${round}`;
    await create(t);
    const reqs = [];
    for (let k = 0; k < 16; k++) {
      const where = k % 4 === 0 ? '' : `&where=${encodeURIComponent(`id > ${k * 7 + round}`)}`;
      reqs.push(getRaw(sidecar.shapeUrl, `table=${t}&offset=-1${where}`).then((r) => ({ r, what: `${t} #${k}` })));
      if (k === 6) {
        const drop = sleep(2 * (round % 5)).then(() => cluster.psql(`DROP TABLE ${t}`));
        reqs.push(drop.then(() => null));
        // new shapes asked for right after the drop committed, before the
        // sidecar's next tick: they meet the missing table (grouped snapshots
        // can serve all 16 above before the DROP gets its lock)
        for (let j = 0; j < 3; j++) {
          const w = encodeURIComponent(`id > ${1000 + j * 7 + round}`);
          reqs.push(drop.then(() => getRaw(sidecar.shapeUrl, `table=${t}&offset=-1&where=${w}`))
            .then((r) => ({ r, what: `${t} after-drop #${j}` })));
        }
      }
    }
    for (const x of await Promise.all(reqs)) {
      if (!x) continue;
      seen[x.r.status] = (seen[x.r.status] ?? 0) + 1;
      judge(x.r, x.what);
    }
    // The sidecar learns of the drop with the next tick, as of any write: until
    // then a request may still be served the shape; then it is a missing table.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const after = await getRaw(sidecar.shapeUrl, `table=${t}&offset=-1`);
      judge(after, `${t} after the drop`);
      if (after.status === 400) break;
      assert.ok(Date.now() < deadline, `${t}: still ${after.status} 10 s after the drop`);
      await sleep(50);
    }
  }
  console.log(`# statuses over 12 races: ${JSON.stringify(seen)}`);
  assert.ok(seen[400] > 0, 'some requests met the dropped table');
  assert.ok(sidecar.alive());
});

test('a live shape whose table is dropped: 409 must-refetch, then 400 under errors.table', async () => {
  const t = 'live_drop';
  await create(t);
  let r = await getRaw(sidecar.shapeUrl, `table=${t}&offset=-1`);
  assert.equal(r.status, 200);
  const handle = r.headers.get('electric-handle');
  let offset = r.headers.get('electric-offset');
  for (let i = 0; i < 50 && !r.headers.has('electric-up-to-date'); i++) {
    r = await getRaw(sidecar.shapeUrl, `table=${t}&handle=${handle}&offset=${offset}`);
    offset = r.headers.get('electric-offset');
  }
  const waiting = getRaw(sidecar.shapeUrl, `table=${t}&handle=${handle}&offset=${offset}&live=true&cursor=1`);
  await sleep(200);
  await cluster.psql(`DROP TABLE ${t}`);
  const live = await waiting;
  assert.equal(live.status, 409, live.text.slice(0, 300));
  assert.equal(live.body?.[0]?.headers?.control, 'must-refetch');
  const again = await getRaw(sidecar.shapeUrl, `table=${t}&offset=-1`);
  judge(again, 'refetch after the drop');
  assert.equal(again.status, 400);
});
