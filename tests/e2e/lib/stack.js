// A throwaway shapesync stack for one test file: a PostgreSQL 15 cluster made by
// scripts/pgcluster.sh (with the extension) on a free port, and build/shapesyncd
// on another free port. Everything is stopped and removed by stop(), which also
// runs when the process exits early.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, openSync, readFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const PGCLUSTER = join(ROOT, 'scripts', 'pgcluster.sh');
export const SHAPESYNCD = process.env.SHAPESYNCD || join(ROOT, 'build', 'shapesyncd');
/** The login role the sidecar connects as (scripts/run.sh uses the same name). */
export const SIDECAR_ROLE = 'shapesync_sidecar';

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

/** Run a command, resolve with stdout; reject with stderr on a non-zero exit. */
export function run(cmd, args, { env, input, timeoutMs = 60_000 } = {}) {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...env },
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', (e) => { clearTimeout(timer); rej(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) res(out);
      else rej(new Error(`${cmd} ${args.join(' ')} exited ${code ?? signal}\n${err}`));
    });
    if (input !== undefined) {
      child.stdin.on('error', () => {}); // the child may exit before reading it all
      child.stdin.end(input);
    }
  });
}

function tail(file, lines = 40) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Start a cluster and a sidecar.
 * @param {object} [o]
 * @param {string} [o.setupSql] SQL run (psql, ON_ERROR_STOP) before the sidecar starts
 * @param {number} [o.longPollTimeoutMs] sidecar --long-poll-timeout
 * @param {string[]} [o.sidecarArgs] extra sidecar arguments
 * @param {boolean} [o.preload] false: no shapesync in shared_preload_libraries (the sidecar ticks)
 * @param {boolean} [o.superuserSidecar] true: the sidecar connects as the superuser, not as SIDECAR_ROLE
 * @param {string} [o.extensionVersion] CREATE EXTENSION shapesync VERSION this (default: the default version)
 * @param {boolean} [o.insecure] false: no --insecure (the sidecar then needs a JWT key in sidecarArgs, docs/auth.md);
 *   by default the sidecar runs with --insecure, which changes nothing when sidecarArgs carry a key
 */
export async function startStack(o = {}) {
  if (!existsSync(SHAPESYNCD)) {
    throw new Error(`${SHAPESYNCD} not built: run 'make sidecar'`);
  }
  const work = mkdtempSync(join(tmpdir(), 'shapesync-e2e-'));
  if (process.env.SHAPESYNC_E2E_KEEP) console.error(`e2e: keeping cluster and logs in ${work}`);
  chmodSync(work, 0o755); // the server runs as `postgres` when we are root
  const clusterDir = join(work, 'pg');
  const sidecarLog = join(work, 'shapesyncd.log');
  let sidecar = null;
  let stopped = false;

  const destroySync = () => {
    if (stopped) return;
    stopped = true;
    if (sidecar && sidecar.exitCode === null && sidecar.signalCode === null) {
      try { sidecar.kill('SIGKILL'); } catch { /* gone */ }
    }
    if (!process.env.SHAPESYNC_E2E_KEEP) {
      spawnSync(PGCLUSTER, ['destroy', clusterDir], { stdio: 'ignore' });
      spawnSync('rm', ['-rf', work], { stdio: 'ignore' });
    }
  };
  const onSignal = (sig) => {
    destroySync();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('exit', destroySync);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const unhook = () => {
    process.removeListener('exit', destroySync);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  };

  try {
    const pgPort = await freePort();
    const dbUrl = (await run(PGCLUSTER, ['start', clusterDir, String(pgPort), 'shapesync'], {
      env: {
        SHAPESYNC_PG_FSYNC: 'off',
        ...(o.preload === false ? { SHAPESYNC_PG_PRELOAD: '0' } : {}),
        ...(o.extensionVersion ? { SHAPESYNC_PG_EXTENSION: '0' } : {}),
      },
      timeoutMs: 120_000,
    })).trim().split('\n').pop();

    const psql = (sql) =>
      run('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', dbUrl, '-f', '-'], {
        input: sql,
        env: { PGCONNECT_TIMEOUT: '10' },
      }).then((s) => s.trim());

    // The sidecar runs as a non-superuser login role with exactly what
    // shapesync.grant_sidecar() gives (docs/security.md); setup SQL runs as
    // the superuser, and tables it tracks are granted to the role by track().
    // superuserSidecar: true keeps the superuser (only for tests that need it).
    if (o.extensionVersion) await psql(`CREATE EXTENSION shapesync VERSION '${o.extensionVersion}'`);
    let sidecarDbUrl = dbUrl;
    if (!o.superuserSidecar) {
      await psql(`CREATE ROLE ${SIDECAR_ROLE} LOGIN; SELECT shapesync.grant_sidecar('${SIDECAR_ROLE}');`);
      const u = new URL(dbUrl);
      u.username = SIDECAR_ROLE;
      sidecarDbUrl = u.toString();
    }

    if (o.setupSql) await psql(o.setupSql);

    const httpPort = await freePort();
    const args = ['--database-url', sidecarDbUrl, '--listen', `127.0.0.1:${httpPort}`, '--data-dir', join(work, 'sidecar-data')];
    if (o.longPollTimeoutMs) args.push('--long-poll-timeout', String(o.longPollTimeoutMs));
    if (o.insecure !== false) args.push('--insecure');
    if (o.sidecarArgs) args.push(...o.sidecarArgs);
    const logFd = openSync(sidecarLog, 'a');
    sidecar = spawn(SHAPESYNCD, args, { stdio: ['ignore', logFd, logFd] });
    let exited = null;
    sidecar.on('exit', (code, signal) => { exited = code ?? signal; });

    const baseUrl = `http://127.0.0.1:${httpPort}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (exited !== null) {
        throw new Error(`shapesyncd exited (${exited}) before it was healthy:\n${tail(sidecarLog)}`);
      }
      try {
        const r = await fetch(`${baseUrl}/v1/health`);
        const body = await r.text();
        if (r.status === 200 && JSON.parse(body).status === 'active') break;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) {
        throw new Error(`shapesyncd not healthy after 30 s:\n${tail(sidecarLog)}`);
      }
      await sleep(100);
    }

    const stop = async () => {
      if (stopped) return;
      if (sidecar && exited === null) {
        const gone = new Promise((r) => sidecar.once('exit', r));
        sidecar.kill('SIGTERM');
        const t = setTimeout(() => sidecar.kill('SIGKILL'), 5_000);
        await gone;
        clearTimeout(t);
      }
      if (!process.env.SHAPESYNC_E2E_KEEP) {
        await run(PGCLUSTER, ['destroy', clusterDir]).catch(() => {});
        await run('rm', ['-rf', work]).catch(() => {});
      }
      stopped = true;
      unhook();
    };

    return {
      dbUrl,
      sidecarDbUrl,
      clusterLog: () => tail(join(clusterDir, 'log'), 100000),
      baseUrl,
      shapeUrl: `${baseUrl}/v1/shape`,
      psql,
      stop,
      sidecarLog: () => tail(sidecarLog, 200),
      sidecarExited: () => exited,
    };
  } catch (e) {
    destroySync();
    unhook();
    throw e;
  }
}

/** Poll `check` (sync or async) until it returns truthy or `timeoutMs` passes. */
export async function waitFor(check, { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
        (last instanceof Error ? `: ${last.message}` : ''));
    }
    await sleep(intervalMs);
  }
}
