// A waiting live long-poll whose client goes away is released at once, not at the
// long-poll deadline: /metrics' waiting-request and open-connection gauges drop as
// soon as the clients close their sockets, and clients still waiting are answered.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startStack, waitFor } from '../lib/stack.js';
import { syncRaw } from '../lib/procs.js';

const LONG_POLL_MS = 60_000; // far longer than the test waits for the release
const CLIENTS = 40;
let stack;

before(async () => {
  stack = await startStack({
    longPollTimeoutMs: LONG_POLL_MS,
    setupSql: `
      CREATE TABLE items (id int PRIMARY KEY, v text);
      INSERT INTO items VALUES (1, 'a');
      SELECT shapesync.track('items');
    `,
  });
});

after(async () => {
  await stack?.stop();
});

async function gauges() {
  const r = await fetch(`${stack.baseUrl}/metrics`, { headers: { connection: 'close' } });
  assert.equal(r.status, 200);
  const out = {};
  for (const line of (await r.text()).split('\n')) {
    const m = /^(shapesync_\w+) (\d+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** A raw live long-poll: resolves with the socket once the request is sent. */
function livePoll(handle, offset) {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port: Number(new URL(stack.baseUrl).port) });
    let data = '';
    sock.on('data', (d) => { data += d; });
    sock.on('error', () => {});
    sock.once('connect', () => {
      sock.write(`GET /v1/shape?table=items&handle=${encodeURIComponent(handle)}&offset=${offset}` +
        `&live=true&cursor=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
      resolve({ sock, received: () => data });
    });
    sock.once('error', reject);
  });
}

test('metrics exposes the gauges', async () => {
  const g = await gauges();
  for (const name of ['shapesync_waiting_requests', 'shapesync_open_connections', 'shapesync_shapes']) {
    assert.ok(name in g, `${name} in /metrics`);
  }
});

test('long-polls whose clients disconnect are released before their deadline', async () => {
  const raw = await syncRaw(stack.shapeUrl, 'table=items');
  const base = await gauges();
  const polls = [];
  for (let i = 0; i < CLIENTS; i++) polls.push(await livePoll(raw.handle, raw.offset));
  const stay = await livePoll(raw.handle, raw.offset); // this one keeps waiting
  await waitFor(async () => (await gauges()).shapesync_waiting_requests >= base.shapesync_waiting_requests + CLIENTS + 1,
    { what: 'every long-poll to wait', timeoutMs: 10_000 });
  const before = await gauges();
  assert.ok(before.shapesync_open_connections >= CLIENTS + 1, JSON.stringify(before));

  const closedAt = Date.now();
  for (const p of polls) p.sock.destroy();
  await waitFor(async () => {
    const g = await gauges();
    return g.shapesync_waiting_requests === base.shapesync_waiting_requests + 1 &&
      g.shapesync_open_connections <= base.shapesync_open_connections + 1 + 1; // + the one that stays, + /metrics
  }, { what: 'the disconnected long-polls to be released', timeoutMs: 5_000 });
  assert.ok(Date.now() - closedAt < LONG_POLL_MS / 2);

  // The one still waiting is answered by the next change.
  await stack.psql(`INSERT INTO items VALUES (2, 'b')`);
  await waitFor(() => stay.received().includes('"v":"b"'), { what: 'the remaining long-poll to get the insert' });
  assert.match(stay.received(), /^HTTP\/1\.1 200/);
  stay.sock.destroy();
  await waitFor(async () => (await gauges()).shapesync_waiting_requests === base.shapesync_waiting_requests,
    { what: 'no waiting request left' });
});
