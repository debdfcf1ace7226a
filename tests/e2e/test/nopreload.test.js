// Without shapesync in shared_preload_libraries there is no doorbell and no
// ticker worker: the sidecar ticks on its own timer, says so, and changes still
// reach live clients.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitFor } from '../lib/stack.js';

let stack;

before(async () => {
  stack = await startStack({
    preload: false,
    setupSql: `CREATE TABLE notes (id int PRIMARY KEY, body text);
               SELECT shapesync.track('notes');
               INSERT INTO notes VALUES (1, 'first');`,
    sidecarArgs: ['--tick-interval', '50'],
  });
});

after(async () => {
  await stack?.stop();
});

test('no worker: status says external ticking and the sidecar logs it', async () => {
  const mode = await stack.psql('SELECT ticker_mode FROM shapesync.status()');
  assert.equal(mode, 'external');
  assert.equal(await stack.psql('SELECT shapesync.worker_pid() IS NULL'), 't');
  await waitFor(() => /ticking every 50 ms from the sidecar/.test(stack.sidecarLog()), {
    what: 'the sidecar to say it ticks itself',
  });
});

test('no worker: a live request still gets an INSERT within 1 s', async () => {
  const base = `${stack.shapeUrl}?table=notes`;
  let r = await fetch(`${base}&offset=-1`);
  assert.equal(r.status, 200);
  const handle = r.headers.get('electric-handle');
  r = await fetch(`${base}&offset=0_0&handle=${handle}`);
  const offset = r.headers.get('electric-offset');
  assert.ok(r.headers.has('electric-up-to-date'));
  const live = fetch(`${base}&offset=${offset}&handle=${handle}&live=true`);
  await new Promise((res) => setTimeout(res, 100));
  const t0 = Date.now();
  await stack.psql(`INSERT INTO notes VALUES (2, 'second')`);
  r = await live;
  const elapsed = Date.now() - t0;
  const body = await r.json();
  assert.equal(r.status, 200);
  assert.deepEqual(body[0].value, { id: '2', body: 'second' });
  assert.equal(body[0].headers.operation, 'insert');
  assert.equal(body.at(-1).headers.control, 'up-to-date');
  assert.ok(elapsed < 1000, `took ${elapsed} ms`);
});
