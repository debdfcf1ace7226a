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
  sidecar = spawn('prlimit', [`--nofile=${NOFILE}:${NOFILE}`, '--', SHAPESYNCD,
    '--database-url', cluster.dbUrl, '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  await waitFor(async () => (await fetch(`${baseUrl}/v1/health`)).status === 200, { what: 'the sidecar to be healthy' });
});

after(async () => {
  if (sidecar && sidecar.exitCode === null) {
    sidecar.kill('SIGTERM');
    await new Promise((r) => { sidecar.once('exit', r); setTimeout(r, 5000); });
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
