// Hostile input on the HTTP side (issue 9, docs/security.md): every malformed
// request is a 4xx JSON answer, nothing crashes the sidecar, one client cannot
// take every connection. Raw sockets (node:net) where fetch would refuse to
// send what an attacker sends.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from '../lib/stack.js';
import { startCluster, startSidecar, cleanupAll, workDir } from '../lib/procs.js';

const PER_ADDRESS = 20;
const METRICS_TOKEN = 'metrics-t0ken';
let cluster;
let sc;
let port;

before(async () => {
  const work = workDir();
  cluster = await startCluster({
    work,
    setupSql: `
      CREATE TABLE items (id bigserial PRIMARY KEY, title text NOT NULL);
      SELECT shapesync.track('items');
      INSERT INTO items (title) VALUES ('one'), ('two');
      CREATE TABLE hidden (id int PRIMARY KEY); -- exists, not tracked
    `,
  });
  sc = await startSidecar({
    dbUrl: cluster.dbUrl,
    work,
    args: ['--max-connections-per-address', String(PER_ADDRESS), '--metrics-token', METRICS_TOKEN,
      '--max-url-bytes', '4096', '--max-header-bytes', '8192', '--max-body-bytes', '200000'],
  });
  port = sc.port;
});

after(async () => {
  await sc?.stop();
  await cluster?.destroy();
  cleanupAll();
});

/**
 * Sends raw bytes; resolves with the status, head, body and whether the server
 * closed the connection (within timeoutMs).
 */
function raw(data, { localAddress, timeoutMs = 5_000, waitClose = true } = {}) {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, localAddress });
    let buf = Buffer.alloc(0);
    let closed = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const text = buf.toString('latin1');
      const sep = text.indexOf('\r\n\r\n');
      const head = sep < 0 ? text : text.slice(0, sep);
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
      resolve({ status: m ? Number(m[1]) : 0, head, body: sep < 0 ? '' : text.slice(sep + 4), closed, text });
    };
    const timer = setTimeout(finish, timeoutMs);
    s.on('error', () => { closed = true; finish(); });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!waitClose && buf.includes('\r\n\r\n')) finish();
    });
    s.on('end', () => { closed = true; finish(); });
    s.on('close', () => { closed = true; finish(); });
    s.on('connect', () => s.write(data));
  });
}

const jsonBody = (r) => {
  try {
    return JSON.parse(r.body);
  } catch {
    return assert.fail(`not a JSON body: ${JSON.stringify(r.text.slice(0, 300))}`);
  }
};

const get = (q, init) => fetch(`${sc.shapeUrl}?${q}`, init);
const post = (q, body) => fetch(`${sc.shapeUrl}?${q}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });

async function stillAlive() {
  assert.ok(sc.alive(), `sidecar died:\n${sc.log()}`);
  const r = await fetch(`${sc.baseUrl}/v1/health`);
  assert.equal(r.status, 200);
}

test('(1) a POST body nested 60 000 levels deep is a 400, not a crash', async () => {
  const body = `{"foo": ${'['.repeat(60000)}${']'.repeat(60000)}}`;
  assert.ok(body.length > 120_000);
  const r = await post('table=items&offset=-1', body);
  assert.equal(r.status, 400);
  const j = await r.json();
  assert.equal(j.error, 'Invalid JSON in request body');
  assert.match(j.details, /deeper than 32/);
  // nested in a subset key, and in params
  const r2 = await post('table=items&offset=-1', `{"where": "true", "params": {"1": ${'['.repeat(5000)}${']'.repeat(5000)}}}`);
  assert.equal(r2.status, 400);
  // a number out of range (found by the fuzzer: it escaped as an exception, a 500)
  const r4 = await post('table=items&offset=-1', '{"where": 1e999}');
  assert.equal(r4.status, 400);
  assert.equal((await r4.json()).error, 'Invalid JSON in request body');
  const r3 = await get(`table=items&offset=-1&subset__params=${encodeURIComponent(`{"1":${'['.repeat(100)}${']'.repeat(100)}}`)}`);
  assert.equal(r3.status, 400);
  await stillAlive();
});

test('(5) a NUL byte in any parameter is a 400 naming it, never a shorter filter', async () => {
  let r = await get('table=items&offset=-1&where=true%00%20AND%20false');
  assert.equal(r.status, 400);
  assert.deepEqual(await r.json(), { message: 'Invalid request', errors: { where: ['must not contain a NUL byte (%00)'] } });
  r = await get('table=items%00junk&offset=-1');
  assert.equal(r.status, 400);
  assert.deepEqual((await r.json()).errors, { table: ['must not contain a NUL byte (%00)'] });
  r = await get('table=items&offset=-1&where=title%3D%241&params%5B1%5D=one%00two');
  assert.deepEqual((await r.json()).errors, { 'params[1]': ['must not contain a NUL byte (%00)'] });
  // POST body: \u0000 inside a JSON string
  r = await post('table=items&offset=-1', JSON.stringify({ where: 'true\u0000 AND false' }));
  assert.equal(r.status, 400);
  assert.deepEqual((await r.json()).errors, { subset: { where: ['must not contain a NUL byte (%00)'] } });
});

test('(6) invalid UTF-8 in table, where, params or a POST body is a 400 naming it', async () => {
  for (const [q, field] of [
    ['table=%FF&offset=-1', 'table'],
    ['table=items&offset=-1&where=title%3D%27%C3%28%27', 'where'],
    ['table=items&offset=-1&where=title%3D%241&params%5B1%5D=%E2%82', 'params[1]'],
    ['table=items&offset=-1&columns=%FF', 'columns'],
  ]) {
    const r = await get(q);
    assert.equal(r.status, 400, q);
    assert.deepEqual((await r.json()).errors, { [field]: ['must be valid UTF-8'] }, q);
  }
  // A bad byte in a parameter name: the name cannot be echoed.
  let r = await get('table=items&offset=-1&%FF=1');
  assert.equal(r.status, 400);
  assert.deepEqual((await r.json()).errors, { query: ['parameter names must be valid UTF-8'] });
  // Raw invalid bytes in a POST body: invalid JSON.
  r = await fetch(`${sc.shapeUrl}?table=items&offset=-1`, {
    method: 'POST', body: Buffer.from([0x7b, 0x22, 0x77, 0x68, 0x65, 0x72, 0x65, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]),
  });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error, 'Invalid JSON in request body');
  await stillAlive();
});

test('(7) params={"1":"…"} (JSON object form) is honoured; a huge index gets a clear message', async () => {
  const r = await get(`table=items&offset=-1&where=${encodeURIComponent('title = $1')}&params=${encodeURIComponent('{"1":"one"}')}`);
  assert.equal(r.status, 200, await r.clone().text());
  const rows = (await r.json()).filter((m) => m.key);
  assert.deepEqual(rows.map((m) => m.value.title), ['one']);
  // the same shape as params[1]=one
  const r2 = await get(`table=items&offset=-1&where=${encodeURIComponent('title = $1')}&params%5B1%5D=one`);
  assert.equal(r2.headers.get('electric-handle'), r.headers.get('electric-handle'));
  const r3 = await get(`table=items&offset=-1&where=${encodeURIComponent('title = $1')}&params%5B99999999999%5D=x`);
  assert.equal(r3.status, 400);
  assert.deepEqual((await r3.json()).errors,
    { params: ['Parameter $99999999999 is out of range: parameters are numbered from 1 to 65535'] });
});

test('(7) oversized URL is 414, oversized headers 431, oversized body 413 — JSON, then closed', async () => {
  let r = await raw(`GET /v1/shape?table=items&offset=-1&where=${'a'.repeat(5000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(r.status, 414, r.text.slice(0, 200));
  assert.match(jsonBody(r).error, /URI too long/);
  assert.ok(r.closed);
  r = await raw(`GET /v1/shape?table=items&offset=-1&where=${'a'.repeat(20000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.equal(r.status, 414, r.text.slice(0, 200));
  let pad = '';
  for (let i = 0; i < 20; i++) pad += `X-Pad-${i}: ${'b'.repeat(500)}\r\n`;
  r = await raw(`GET /v1/health HTTP/1.1\r\nHost: x\r\n${pad}\r\n`);
  assert.equal(r.status, 431, r.text.slice(0, 200));
  assert.deepEqual(jsonBody(r), { error: 'Request header fields too large' });
  assert.ok(r.closed);
  r = await raw(`POST /v1/shape?table=items&offset=-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n${'{'.repeat(300000)}`);
  assert.equal(r.status, 413);
  assert.deepEqual(jsonBody(r), { error: 'Request body too large' });
});

test('(7) malformed framing: a 400 (or 501) JSON answer, then the connection closes', async () => {
  const head = 'POST /v1/shape?table=items&offset=-1 HTTP/1.1\r\nHost: x\r\n';
  const cases = [
    ['Transfer-Encoding: xchunked + Content-Length', 'Transfer-Encoding: xchunked\r\nContent-Length: 2\r\n\r\n{}', 400],
    ['Content-Length + Transfer-Encoding: xchunked', 'Content-Length: 2\r\nTransfer-Encoding: xchunked\r\n\r\n{}', 400],
    ['Transfer-Encoding: xchunked alone', 'Transfer-Encoding: xchunked\r\n\r\n{}', 501],
    ['CL + TE chunked', 'Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n', 400],
    ['TE chunked + CL', 'Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n', 400],
    ['two Content-Lengths', 'Content-Length: 2\r\nContent-Length: 3\r\n\r\n{} ', 400],
    ['negative Content-Length', 'Content-Length: -1\r\n\r\n{}', 400],
    ['bad chunk size', 'Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n', 400],
  ];
  for (const [what, rest, status] of cases) {
    const r = await raw(head + rest);
    assert.equal(r.status, status, `${what}: ${JSON.stringify(r.text.slice(0, 200))}`);
    assert.ok(typeof jsonBody(r).error === 'string', what);
    assert.match(r.head, /connection: close/i, what);
    assert.ok(r.closed, `${what}: connection left open`);
  }
  // A well-formed chunked POST still works.
  const ok = await raw(`${head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n`);
  assert.equal(ok.status, 200, ok.text.slice(0, 300));
  await stillAlive();
});

test('(11) /metrics needs its token', async () => {
  let r = await fetch(`${sc.baseUrl}/metrics`);
  assert.equal(r.status, 401);
  assert.equal(r.headers.get('www-authenticate'), 'Bearer');
  r = await fetch(`${sc.baseUrl}/metrics`, { headers: { authorization: 'Bearer wrong' } });
  assert.equal(r.status, 401);
  r = await fetch(`${sc.baseUrl}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  assert.equal(r.status, 200);
  assert.match(await r.text(), /shapesync_open_connections/);
  r = await fetch(`${sc.baseUrl}/metrics?token=${METRICS_TOKEN}`);
  assert.equal(r.status, 200);
});

test('(11) an untracked table gets the same answer as a missing one', async () => {
  const missing = await (await get('table=no_such_table&offset=-1')).json();
  const hidden = await (await get('table=hidden&offset=-1')).json();
  assert.deepEqual(hidden.errors.table.map((m) => m.replaceAll('hidden', 'X')),
    missing.errors.table.map((m) => m.replaceAll('no_such_table', 'X')));
  assert.match(hidden.errors.table[0], /does not exist/);
  assert.doesNotMatch(JSON.stringify(hidden), /track/);
  // the operator is told which (the log is rate-limited: the first one is enough here)
  await waitFor(() => /table "public"."no_such_table": does not exist/.test(readFileSync(sc.logFile, 'utf8')),
    { what: 'the log line for the missing table' });
});

test('(8) one address cannot take every connection: over its limit it gets a quick 503; others still get in', async () => {
  const socks = [];
  const refused = [];
  try {
    for (let i = 0; i < PER_ADDRESS + 5; i++) {
      const s = connect({ host: '127.0.0.1', port });
      s.on('error', () => {});
      let got = '';
      s.on('data', (d) => { got += d; });
      const closedP = new Promise((r) => s.once('close', r));
      await new Promise((r) => s.once('connect', r));
      socks.push({ s, got: () => got, closedP });
    }
    // The ones over the limit are answered and closed at once, unasked.
    const t0 = Date.now();
    await waitFor(() => socks.filter((x) => x.got().startsWith('HTTP/1.1 503')).length >= 5,
      { what: 'five 503 answers', timeoutMs: 3_000 });
    const elapsed = Date.now() - t0;
    for (const x of socks) if (x.got().startsWith('HTTP/1.1 503')) refused.push(x);
    assert.ok(elapsed < 2_000, `refusals took ${elapsed} ms`);
    assert.match(refused[0].got(), /retry-after: 5/i);
    assert.match(refused[0].got(), /too_many_connections/);
    await Promise.all(refused.map((x) => x.closedP));
    // Another address is served meanwhile.
    const other = await raw('GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { localAddress: '127.0.0.2' });
    assert.equal(other.status, 200, other.text);
    // This address, over its limit, is refused too.
    const again = await raw('GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(again.status, 503);
    await waitFor(() => readFileSync(sc.logFile, 'utf8').includes('refusing connections from 127.0.0.1'),
      { what: 'the refusal log line' });
  } finally {
    for (const x of socks) x.s.destroy();
  }
  // Once they close, the address gets in again.
  await waitFor(async () => (await raw('GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).status === 200,
    { what: 'the address to be served again', timeoutMs: 5_000 });
  const log = readFileSync(sc.logFile, 'utf8');
  const lines = log.split('\n').filter((l) => l.includes('refusing connections from'));
  assert.ok(lines.length <= 2, `refusal lines are rate-limited, got ${lines.length}`);
  await sleep(10);
});

test('(12) a connection silent for --idle-timeout is closed: before its first request, between requests, inside a head', async () => {
  const idle = await startSidecar({ dbUrl: cluster.dbUrl, work: workDir(), args: ['--idle-timeout', '800'] });
  try {
    // Resolves with what the server sent and when it closed (ms after connecting).
    const session = (steps) => new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: idle.port });
      let got = '';
      const t0 = Date.now();
      const timer = setTimeout(() => { s.destroy(); reject(new Error(`not closed within 8 s; got ${JSON.stringify(got)}`)); }, 8_000);
      s.on('error', () => {});
      s.on('data', (d) => { got += d.toString('latin1'); });
      s.on('close', () => { clearTimeout(timer); resolve({ got, closedAfter: Date.now() - t0 }); });
      s.on('connect', async () => {
        for (const [delay, text] of steps) {
          await sleep(delay);
          if (!s.destroyed) s.write(text);
        }
      });
    });
    const health = 'GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n';
    const answers = (got) => (got.match(/HTTP\/1\.1 200/g) || []).length;

    // Nothing sent at all.
    const silent = await session([]);
    assert.equal(silent.got, '');
    assert.ok(silent.closedAfter >= 700 && silent.closedAfter < 4_000, `closed after ${silent.closedAfter} ms`);

    // Two requests, each after a pause shorter than the timeout, on one connection: both answered,
    // then the connection is closed once it has been silent for the timeout.
    const kept = await session([[400, health], [500, health]]);
    assert.equal(answers(kept.got), 2, kept.got);
    assert.ok(kept.closedAfter >= 1_500 && kept.closedAfter < 5_000, `closed after ${kept.closedAfter} ms`);

    // A head that never ends (slowloris): closed without an answer.
    const slow = await session([[0, 'GET /v1/health HTTP/1.1\r\nHost: x\r\n']]);
    assert.equal(answers(slow.got), 0, slow.got);
    assert.ok(slow.closedAfter >= 700 && slow.closedAfter < 4_000, `closed after ${slow.closedAfter} ms`);

    // Requests sent back to back (pipelined) are all answered.
    const piped = await session([[0, health + health + health]]);
    assert.equal(answers(piped.got), 3, piped.got);
    assert.ok(idle.alive());
  } finally {
    await idle.stop();
  }
});
