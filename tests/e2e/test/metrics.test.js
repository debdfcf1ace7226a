// Monitoring, sidecar side (docs/monitoring.md): GET /metrics read with a real
// Prometheus text-format parser, its counters moving with writes and live
// clients, the commit-to-send histogram's count equal to the deliveries, the
// token protection, the live reports into shapesync.sidecars / shapes, and
// GET /dashboard/data as the least-privilege sidecar role.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startStack, waitFor } from '../lib/stack.js';
import { rawShape, readSse, changes, select } from '../lib/shape-helpers.js';
import { fetchMetrics, parseMetrics, scrape } from '../lib/metrics.js';

const TOKEN = 'metrics-token-e2e';
let stack;

before(async () => {
  stack = await startStack({
    longPollTimeoutMs: 5000,
    sidecarArgs: ['--metrics-token', TOKEN, '--report-interval', '1000'],
    setupSql: `
      CREATE TABLE items (id int PRIMARY KEY, title text);
      INSERT INTO items VALUES (1, 'one');
      SELECT shapesync.track('items');
    `,
  });
});

after(async () => {
  await stack?.stop();
});

const metricsNow = () => scrape(stack.baseUrl, TOKEN);

test('/metrics, /dashboard and /dashboard/data refuse requests without the token, and count the refusals', async () => {
  let refused = 0;
  for (const path of ['/metrics', '/dashboard', '/dashboard/data']) {
    for (const headers of [{}, { Authorization: 'Bearer wrong' }, { Authorization: `Bearer ${TOKEN}x` }]) {
      const r = await fetch(`${stack.baseUrl}${path}`, { headers });
      assert.equal(r.status, 401, `${path} with ${JSON.stringify(headers)}`);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer');
      refused++;
    }
    const q = await fetch(`${stack.baseUrl}${path}?token=nope`);
    assert.equal(q.status, 401, `${path}?token=nope`);
    refused++;
  }
  // the token as a bearer token or as ?token= (what the dashboard page uses)
  assert.equal((await fetchMetrics(stack.baseUrl, TOKEN)).status, 200);
  assert.equal((await fetch(`${stack.baseUrl}/metrics?token=${TOKEN}`)).status, 200);
  assert.equal((await fetch(`${stack.baseUrl}/dashboard?token=${TOKEN}`)).status, 200);
  const m = await metricsNow();
  assert.equal(m.value('shapesync_auth_failures_total', { reason: 'metrics_token' }), refused);
  assert.ok(m.value('shapesync_http_requests_total', { route: '/metrics', status: '401' }) >= 4);
});

test('the exposition parses and follows the naming conventions; every documented metric is there', async () => {
  const r = await fetchMetrics(stack.baseUrl, TOKEN);
  assert.equal(r.status, 200);
  assert.equal(r.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  const m = parseMetrics(r.text);
  const want = {
    shapesync_http_requests_total: 'COUNTER',
    shapesync_live_connections: 'GAUGE',
    shapesync_deliveries_total: 'COUNTER',
    shapesync_sent_bytes_total: 'COUNTER',
    shapesync_changes_total: 'COUNTER',
    shapesync_commit_to_send_seconds: 'HISTOGRAM',
    shapesync_shapes: 'GAUGE',
    shapesync_log_memory_bytes: 'GAUGE',
    shapesync_log_disk_bytes: 'GAUGE',
    shapesync_snapshot_duration_seconds: 'HISTOGRAM',
    shapesync_auth_failures_total: 'COUNTER',
    shapesync_db_reconnects_total: 'COUNTER',
    shapesync_ticks_behind: 'GAUGE',
    shapesync_lag_seconds: 'GAUGE',
    // the gauges of the hand-written /metrics before, kept
    shapesync_waiting_requests: 'GAUGE',
    shapesync_initial_requests: 'GAUGE',
    shapesync_existing_requests: 'GAUGE',
    shapesync_open_connections: 'GAUGE',
    shapesync_db_ready: 'GAUGE',
    shapesync_last_tick: 'GAUGE',
    shapesync_window_bytes: 'GAUGE',
    shapesync_window_batches: 'GAUGE',
    shapesync_log_entries_total: 'COUNTER',
  };
  for (const [name, type] of Object.entries(want)) {
    assert.ok(m.families.has(name), `${name} missing from:\n${r.text}`);
    assert.equal(m.families.get(name).type, type, name);
  }
  for (const [name, f] of m.families) {
    assert.ok(f.help && f.help.length > 5, `${name} has a HELP line`);
    assert.equal(name.endsWith('_total'), f.type === 'COUNTER', `${name}: counters, and only counters, end in _total`);
    if (f.type === 'HISTOGRAM') {
      const h = m.histogram(name);
      for (let i = 1; i < h.buckets.length; i++) assert.ok(h.buckets[i][1] >= h.buckets[i - 1][1], `${name} cumulative`);
      assert.equal(h.buckets.at(-1)[0], Infinity);
      assert.equal(h.buckets.at(-1)[1], h.count, `${name}: +Inf bucket = count`);
    }
  }
  // every line is a comment or a sample (the parser is lenient; this is not)
  for (const line of r.text.split('\n').filter(Boolean)) {
    assert.match(line, /^(# (HELP|TYPE) [a-z_:]+ .+|[a-z_:]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \S+)$/, line);
  }
  assert.equal(m.value('shapesync_db_ready'), 1);
  assert.ok(m.value('shapesync_last_tick') >= 1);
  assert.ok(m.value('shapesync_open_connections') >= 1, 'this scrape is a connection');
});

test('writes and live clients move the counters; the latency histogram counts exactly the deliveries', async (t) => {
  const before = await metricsNow();
  // three long-poll followers and one SSE stream on the same shape
  const polls = [await rawShape(stack, 'table=items'), await rawShape(stack, 'table=items'), await rawShape(stack, 'table=items')];
  const sseFrom = polls[0];
  const sseRes = await fetch(`${stack.shapeUrl}?table=items&handle=${encodeURIComponent(sseFrom.handle)}` +
    `&offset=${sseFrom.offset}&live=true&live_sse=true`);
  assert.equal(sseRes.status, 200);
  const K = 5;
  const sseDone = readSse(sseRes, { stop: (ms) => changes(ms).length >= K, timeoutMs: 20_000 });
  const pollDone = polls.map((p) => p.live(K, 20_000));
  await waitFor(async () => {
    const m = await metricsNow();
    return m.value('shapesync_live_connections', { kind: 'long_poll' }) >= 3 &&
      m.value('shapesync_live_connections', { kind: 'sse' }) >= 1;
  }, { what: 'three parked long-polls and one SSE stream in shapesync_live_connections' });

  for (let i = 0; i < K; i++) {
    await stack.psql(`INSERT INTO items VALUES (${100 + i}, 'row ${i}')`);
    await sleep(150);
  }
  const got = await Promise.all(pollDone);
  for (const g of got) assert.equal(g.length, K, 'each long-poll follower saw every insert');
  const sse = await sseDone;
  assert.equal(changes(sse.messages).length, K, 'the SSE stream saw every insert');
  // the clients are gone: the gauges come back down
  await waitFor(async () => {
    const m = await metricsNow();
    return m.value('shapesync_live_connections', { kind: 'long_poll' }) === 0 &&
      m.value('shapesync_live_connections', { kind: 'sse' }) === 0;
  }, { what: 'shapesync_live_connections back to 0' });

  const after = await metricsNow();  // quiet: no write, no live client
  const delta = (name, labels) => after.value(name, labels) - before.value(name, labels);
  const deliveries = delta('shapesync_deliveries_total');
  // at least one delivery per client (writes 150 ms apart are usually one each: up to 4 * K)
  assert.ok(deliveries >= 4 && deliveries <= 4 * K, `deliveries ${deliveries}`);
  const h0 = before.histogram('shapesync_commit_to_send_seconds');
  const h1 = after.histogram('shapesync_commit_to_send_seconds');
  assert.equal(h1.count, after.value('shapesync_deliveries_total'), 'histogram count = deliveries');
  assert.equal(h1.count - h0.count, deliveries);
  const meanLatency = (h1.sum - h0.sum) / deliveries;
  t.diagnostic(`${deliveries} deliveries, mean commit-to-send latency ${(meanLatency * 1000).toFixed(2)} ms`);
  assert.ok(meanLatency > 0 && meanLatency < 2, `mean commit-to-send latency ${meanLatency} s`);
  assert.ok(delta('shapesync_changes_total') >= K, 'changes read from the change log');
  assert.ok(delta('shapesync_log_entries_total') >= K);
  assert.ok(delta('shapesync_sent_bytes_total') > 0);
  assert.ok(delta('shapesync_http_requests_total', { route: '/v1/shape', mode: 'live', status: '200' }) >= 3 + 1);
  assert.ok(delta('shapesync_http_requests_total', { route: '/v1/shape', mode: 'initial', status: '200' }) >= 3);
  assert.ok(delta('shapesync_http_requests_total', { route: '/v1/shape', mode: 'catchup', status: '200' }) >= 3);
  assert.equal(after.value('shapesync_shapes'), 1);
  assert.ok(after.value('shapesync_log_memory_bytes') > 0);
  assert.ok(after.histogram('shapesync_snapshot_duration_seconds').count >= 1, 'the shape\'s snapshot was timed');
});

test('the sidecar reports its live state into the database (shapesync.sidecars, shapesync.shapes)', async (t) => {
  const p = await rawShape(stack, 'table=items');
  const ctrl = new AbortController();
  const res = await fetch(`${stack.shapeUrl}?table=items&handle=${encodeURIComponent(p.handle)}` +
    `&offset=${p.offset}&live=true&live_sse=true`, { signal: ctrl.signal });
  assert.equal(res.status, 200);
  try {
    await stack.psql(`INSERT INTO items VALUES (200, 'reported')`);
    const port = new URL(stack.baseUrl).port;
    const [sc] = await waitFor(async () => {
      // a request in every report interval while the SSE client is live, so a
      // report sees both (requests/s counts requests since the previous report)
      await fetch(`${stack.shapeUrl}?table=items&handle=${encodeURIComponent(p.handle)}&offset=${p.offset}`)
        .then((r) => r.arrayBuffer());
      const rows = await select(stack, `SELECT address, version, live_clients, live_clients_by_kind, requests_per_second,
        extract(epoch FROM latency_p50) AS p50, extract(epoch FROM latency_p99) AS p99 FROM shapesync.sidecars
        WHERE address = '127.0.0.1:${port}' AND live_clients >= 1 AND requests_per_second > 0`);
      return rows.length ? rows : null;
    }, { timeoutMs: 15_000, intervalMs: 250, what: 'a live report with the SSE client and its requests in shapesync.sidecars' });
    t.diagnostic(`shapesync.sidecars: ${JSON.stringify(sc)}`);
    assert.equal(sc.version, '0.2.0');
    assert.ok(sc.live_clients_by_kind.sse >= 1, JSON.stringify(sc));
    assert.ok(sc.requests_per_second > 0, JSON.stringify(sc));
    assert.ok(sc.p50 > 0 && sc.p50 <= sc.p99 && sc.p99 < 10, `p50/p99 ${sc.p50}/${sc.p99}`);
    const [sh] = await waitFor(async () => {
      const rows = await select(stack, `SELECT live_clients, requests_per_second, log_bytes, last_used IS NOT NULL AS used
        FROM shapesync.shapes WHERE handle = '${p.handle}' AND live_clients >= 1 AND log_bytes > 0`);
      return rows.length ? rows : null;
    }, { timeoutMs: 10_000, what: 'the shape\'s live client and log bytes in shapesync.shapes' });
    assert.equal(sh.used, true);
  } finally {
    ctrl.abort();
  }
  // the stream is gone: the next reports say so
  await waitFor(async () => {
    const rows = await select(stack, `SELECT live_clients FROM shapesync.shapes WHERE handle = '${p.handle}'`);
    return rows[0]?.live_clients === 0;
  }, { timeoutMs: 10_000, what: 'live_clients back to 0 in shapesync.shapes' });
  const m = await metricsNow();
  assert.ok(m.value('shapesync_ticks_behind') >= 0 && m.value('shapesync_ticks_behind') < 5);
  assert.ok(m.value('shapesync_lag_seconds') >= 0 && m.value('shapesync_lag_seconds') < 5);
});

test('GET /dashboard/data answers from the SQL views as the least-privilege sidecar role; GET /dashboard is the page', async () => {
  const r = await fetch(`${stack.baseUrl}/dashboard/data`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  const d = JSON.parse(text);
  assert.deepEqual(Object.keys(d).sort(), ['consumers', 'problems', 'shapes', 'sync']);
  assert.ok(Array.isArray(d.problems));
  assert.equal(typeof d.sync.ticks_per_second, 'number');
  const shape = d.shapes.find((s) => s.table === 'public.items');
  assert.ok(shape, text);
  assert.equal(shape.state, 'active');
  const port = new URL(stack.baseUrl).port;
  assert.ok(d.consumers.some((c) => c.address === `127.0.0.1:${port}` && c.version === '0.2.0'), text);

  const page = await fetch(`${stack.baseUrl}/dashboard?token=${TOKEN}`);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
  const html = await page.text();
  assert.match(html, /<canvas|getContext/);
  assert.doesNotMatch(html, /<(script|link|img)[^>]+(src|href)=["']?(https?:)?\/\//i, 'no external asset');
});

test('a lost database connection counts as a reconnect once the follower is back', async () => {
  const before = (await metricsNow()).value('shapesync_db_reconnects_total');
  assert.equal(before, 0);
  // cut every connection of the sidecar's role (the tick follower among them)
  await stack.psql(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'shapesync_sidecar'`);
  await waitFor(async () => {
    const m = await metricsNow();
    return m.value('shapesync_db_reconnects_total') === 1 && m.value('shapesync_db_ready') === 1;
  }, { timeoutMs: 15_000, what: 'shapesync_db_reconnects_total = 1 and the follower back' });
});
