// Out of descriptors: when accept() fails with EMFILE the sidecar pauses
// accepting (it does not spin on the pending connection), says so once, and
// accepts again once connections close.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SHAPESYNCD, freePort, waitFor } from '../lib/stack.js';
import { startSidecar } from '../lib/procs.js';
import { startCluster, cleanupAll, workDir, syncRaw, tailFile } from '../lib/procs.js';

const NOFILE = 48; // the sidecar's descriptor limit (soft and hard)
const CLIENTS = 80; // idle connections: more than it can accept
let cluster;
let sidecar;
let logFile;
let baseUrl;

before(async () => {
  const work = workDir();
  cluster = await startCluster({
    work,
    setupSql: `CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1); SELECT shapesync.track('items');`,
  });
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  logFile = join(work, 'shapesyncd.log');
  const fd = openSync(logFile, 'a');
  // --max-connections above the descriptor limit: this tests what happens when
  // accept() itself fails (the default limit stays below it, see the last test).
  sidecar = spawn('prlimit', [`--nofile=${NOFILE}:${NOFILE}`, '--', SHAPESYNCD,
    '--database-url', cluster.dbUrl, '--listen', `127.0.0.1:${port}`, '--max-connections', '1000', '--insecure'],
  { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  await waitFor(async () => (await fetch(`${baseUrl}/v1/health`)).status === 200, { what: 'the sidecar to be healthy' });
});

after(async () => {
  if (sidecar && sidecar.exitCode === null) {
    sidecar.kill('SIGTERM');
    await new Promise((r) => { const t = setTimeout(r, 5000); sidecar.once('exit', () => { clearTimeout(t); r(); }); });
  }
  await cluster?.destroy();
  cleanupAll();
});

/** utime + stime of the sidecar, in clock ticks. */
function cpuTicks() {
  const stat = readFileSync(`/proc/${sidecar.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

test('accept pauses while out of descriptors and resumes after', async () => {
  await syncRaw(`${baseUrl}/v1/shape`, 'table=items'); // its pool connection is open
  const port = Number(new URL(baseUrl).port);
  const socks = [];
  for (let i = 0; i < CLIENTS; i++) {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r)); // the kernel completes it; the sidecar may not accept it
    socks.push(s);
  }
  await waitFor(() => readFileSync(logFile, 'utf8').includes('Too many open files'),
    { what: 'the sidecar to report running out of descriptors', timeoutMs: 5_000 });
  const t0 = cpuTicks();
  await sleep(2_000);
  const used = cpuTicks() - t0; // a spinning accept loop burns ~200 ticks here
  assert.ok(used < 40, `sidecar used ${used} clock ticks in 2 s while out of descriptors:\n${tailFile(logFile)}`);
  const log = readFileSync(logFile, 'utf8');
  assert.equal(log.split('Too many open files').length - 1, 1, `one warning per episode:\n${tailFile(logFile)}`);

  for (const s of socks) s.destroy();
  await waitFor(async () => (await fetch(`${baseUrl}/v1/health`, { signal: AbortSignal.timeout(1_000) })).status === 200,
    { what: 'the sidecar to answer again', timeoutMs: 10_000 });
  await waitFor(() => readFileSync(logFile, 'utf8').includes('accepting connections again'),
    { what: 'the sidecar to report accepting again', timeoutMs: 5_000 });
});

test('the soft descriptor limit is raised to the hard one; the default connection limit stays below it', async () => {
  const port = await freePort();
  const log = join(workDir(), 'limits.log');
  const fd = openSync(log, 'a');
  const child = spawn('prlimit', ['--nofile=64:200', '--', SHAPESYNCD, '--database-url', cluster.dbUrl,
    '--listen', `127.0.0.1:${port}`, '--insecure'], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${url}/v1/health`)).status === 200, { what: 'the second sidecar' });
    const limits = readFileSync(`/proc/${child.pid}/limits`, 'utf8');
    assert.match(limits, /Max open files\s+200\s+200/, limits);
    const text = readFileSync(log, 'utf8');
    const m = /descriptor limit 200, at most (\d+) connection/.exec(text);
    assert.ok(m, text);
    assert.ok(Number(m[1]) < 200, `default --max-connections ${m[1]} is not below the descriptor limit`);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => { const t = setTimeout(r, 5000); child.once('exit', () => { clearTimeout(t); r(); }); });
  }
});

test('over --max-connections, new connections get a quick 503 and a log line; after, they get in again', async () => {
  const sc = await startSidecar({ dbUrl: cluster.dbUrl, args: ['--max-connections', '10', '--max-connections-per-address', '0'] });
  const socks = [];
  try {
    for (let i = 0; i < 10; i++) {
      const s = connect({ host: '127.0.0.1', port: sc.port });
      s.on('error', () => {});
      await new Promise((r) => s.once('connect', r));
      socks.push(s);
    }
    // A fresh connection (fetch would reuse one of its own, already counted).
    const t0 = Date.now();
    const answer = await new Promise((resolve) => {
      const s = connect({ host: '127.0.0.1', port: sc.port });
      let got = '';
      s.on('error', () => resolve(got));
      s.on('data', (d) => { got += d; });
      s.on('close', () => resolve(got));
      s.on('connect', () => s.write('GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n'));
    });
    assert.match(answer, /^HTTP\/1\.1 503 /, answer);
    assert.match(answer, /retry-after: 5/i);
    assert.ok(Date.now() - t0 < 1000, `refusal took ${Date.now() - t0} ms`);
    await waitFor(() => readFileSync(sc.logFile, 'utf8').includes('refusing connections: 10 open (--max-connections 10)'),
      { what: 'the refusal log line' });
  } finally {
    for (const s of socks) s.destroy();
  }
  await waitFor(async () => (await fetch(`${sc.baseUrl}/v1/health`, { headers: { connection: 'close' } })).status === 200,
    { what: 'connections to be accepted again' });
  await sc.stop();
});
