// Real processes for the fault and scale-out tests: a PostgreSQL cluster that can
// be stopped and started again (same directory, same port), shapesyncd processes
// started, killed and restarted by the test (several on one database), nginx in
// front of them, a persistent psql session for paced writes, and a fetch wrapper
// that records what the official client sent and received.
//
// Everything started here is registered and removed when the process exits
// (also on SIGINT/SIGTERM), and by cleanupAll().
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, openSync, closeSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, SHAPESYNCD, freePort, run } from './stack.js';

const PGCLUSTER = join(ROOT, 'scripts', 'pgcluster.sh');

// ---------------------------------------------------------------------------
// cleanup registry

const cleanups = new Set();
let hooked = false;

function runCleanupsSync() {
  for (const fn of [...cleanups].reverse()) {
    try { fn(); } catch { /* best effort */ }
  }
  cleanups.clear();
}

function register(fn) {
  if (!hooked) {
    hooked = true;
    process.once('exit', runCleanupsSync);
    for (const sig of ['SIGINT', 'SIGTERM']) {
      process.once(sig, () => {
        runCleanupsSync();
        process.exit(sig === 'SIGINT' ? 130 : 143);
      });
    }
  }
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Stop and remove everything this module started (synchronously). */
export function cleanupAll() {
  runCleanupsSync();
}

/** A fresh directory under the system temp dir, removed at exit unless SHAPESYNC_E2E_KEEP is set. */
export function workDir(prefix = 'shapesync-e2e-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755); // the cluster runs as `postgres` when we are root
  if (process.env.SHAPESYNC_E2E_KEEP) console.error(`e2e: keeping ${dir}`);
  else register(() => spawnSync('rm', ['-rf', dir], { stdio: 'ignore' }));
  return dir;
}

export function tailFile(file, lines = 60) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ---------------------------------------------------------------------------
// PostgreSQL

/**
 * A PostgreSQL 15 cluster (scripts/pgcluster.sh) with the extension, on a free
 * port. stop() and start() keep the directory and the port, so the database
 * comes back with the same URL.
 */
export async function startCluster({ setupSql, work = workDir() } = {}) {
  const dir = join(work, 'pg');
  const port = await freePort();
  const env = { SHAPESYNC_PG_FSYNC: 'off' };
  let destroyed = false;
  const unregister = register(() => {
    if (!process.env.SHAPESYNC_E2E_KEEP) spawnSync(PGCLUSTER, ['destroy', dir], { stdio: 'ignore' });
  });
  const start = async () =>
    (await run(PGCLUSTER, ['start', dir, String(port), 'shapesync'], { env, timeoutMs: 120_000 }))
      .trim().split('\n').pop();
  const dbUrl = await start();
  const psql = (sql) =>
    run('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', dbUrl, '-f', '-'], {
      input: sql,
      env: { PGCONNECT_TIMEOUT: '10' },
    }).then((s) => s.trim());
  if (setupSql) await psql(setupSql);
  return {
    dir,
    port,
    dbUrl,
    psql,
    /** Fast shutdown (pg_ctl stop -m fast); the data directory stays. */
    stop: () => run(PGCLUSTER, ['stop', dir], { timeoutMs: 120_000 }),
    /** Start the same cluster again on the same port. */
    start: async () => {
      const url = await start();
      if (url !== dbUrl) throw new Error(`cluster came back as ${url}, not ${dbUrl}`);
      return url;
    },
    running: () => spawnSync(PGCLUSTER, ['status', dir]).status === 0,
    log: (lines = 60) => tailFile(join(dir, 'log'), lines),
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      unregister();
      if (!process.env.SHAPESYNC_E2E_KEEP) await run(PGCLUSTER, ['destroy', dir]).catch(() => {});
    },
  };
}

/**
 * A long-lived psql session: exec(sql) resolves once the statements ran
 * (a marker echoed after them came back), with the time that happened.
 */
export function psqlSession(dbUrl) {
  const child = spawn('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', dbUrl], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, PGCONNECT_TIMEOUT: '10' },
  });
  const unregister = register(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } });
  let seq = 0;
  let out = '';
  let err = '';
  let exited = null;
  const pending = new Map();
  child.stdin.on('error', () => {});
  child.stdout.on('data', (d) => {
    out += d;
    let i;
    while ((i = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, i);
      out = out.slice(i + 1);
      const m = /^__shapesync_done_(\d+)$/.exec(line);
      if (m && pending.has(Number(m[1]))) {
        const p = pending.get(Number(m[1]));
        pending.delete(Number(m[1]));
        p.resolve(performance.now());
      }
    }
  });
  child.stderr.on('data', (d) => { err += d; });
  child.on('exit', (code, signal) => {
    exited = code ?? signal;
    for (const p of pending.values()) p.reject(new Error(`psql exited (${exited}): ${err.slice(-2000)}`));
    pending.clear();
  });
  return {
    exec(sql) {
      if (exited !== null) return Promise.reject(new Error(`psql exited (${exited}): ${err.slice(-2000)}`));
      const n = ++seq;
      const p = new Promise((resolve, reject) => pending.set(n, { resolve, reject }));
      child.stdin.write(`${sql.trim().replace(/;?$/, ';')}\n\\echo __shapesync_done_${n}\n`);
      return p;
    },
    async close() {
      unregister();
      if (exited !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(t);
    },
    stderr: () => err,
  };
}

// ---------------------------------------------------------------------------
// shapesyncd

/**
 * Spawn build/shapesyncd on `port` (a free one when omitted) against `dbUrl`.
 * The process is not waited for: call waitHealthy(). It runs with --insecure
 * unless `insecure` is false (with a JWT key in `args`, --insecure changes nothing).
 */
export async function spawnSidecar({ dbUrl, port, longPollTimeoutMs, args = [], work = workDir(), name = 'shapesyncd', insecure = true }) {
  if (!existsSync(SHAPESYNCD)) throw new Error(`${SHAPESYNCD} not built: run 'make sidecar'`);
  port ??= await freePort();
  const logFile = join(work, `${name}-${port}.log`);
  const dataDir = join(work, `${name}-${port}-data`);
  const argv = ['--database-url', dbUrl, '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir];
  if (longPollTimeoutMs) argv.push('--long-poll-timeout', String(longPollTimeoutMs));
  if (insecure) argv.push('--insecure');
  argv.push(...args);
  const fd = openSync(logFile, 'a');
  const child = spawn(SHAPESYNCD, argv, { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const unregister = register(() => {
    if (child.exitCode === null && child.signalCode === null) {
      try { child.kill('SIGKILL'); } catch { /* gone */ }
    }
  });
  let exit = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exit = { code, signal, at: performance.now() };
      unregister();
      resolve(exit);
    });
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const self = {
    name,
    port,
    pid: child.pid,
    baseUrl,
    shapeUrl: `${baseUrl}/v1/shape`,
    argv,
    dataDir,
    logFile,
    exited,
    exitInfo: () => exit,
    alive: () => exit === null,
    log: (lines = 80) => tailFile(logFile, lines),
    kill: (sig = 'SIGKILL') => { if (exit === null) child.kill(sig); },
    /** Resolve once /v1/health says active; reject if the process exits first. */
    async waitHealthy(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      let last = 'no answer';
      for (;;) {
        if (exit !== null) throw new Error(`${name} exited (${exit.code ?? exit.signal}) before it was healthy:\n${self.log()}`);
        try {
          const r = await fetch(`${baseUrl}/v1/health`, { signal: AbortSignal.timeout(2_000) });
          const body = await r.text();
          last = `${r.status} ${body}`;
          if (r.status === 200 && JSON.parse(body).status === 'active') return self;
        } catch (e) {
          last = String(e.cause?.code ?? e.message);
        }
        if (Date.now() > deadline) throw new Error(`${name} not healthy after ${timeoutMs} ms (last: ${last}):\n${self.log()}`);
        await sleep(100);
      }
    },
    /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit info. */
    async stop(graceMs = 5_000) {
      if (exit !== null) return exit;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const e = await exited;
      clearTimeout(t);
      return e;
    },
  };
  return self;
}

/** spawnSidecar + waitHealthy. */
export async function startSidecar(o) {
  const s = await spawnSidecar(o);
  try {
    return await s.waitHealthy();
  } catch (e) {
    s.kill('SIGKILL');
    throw e;
  }
}

// ---------------------------------------------------------------------------
// nginx

/** The nginx binary, or null when it is not installed. */
export function nginxBinary() {
  for (const p of ['/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx', '/usr/local/bin/nginx']) {
    if (existsSync(p)) return p;
  }
  const r = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

/**
 * nginx on a free loopback port, round-robin over `upstreams` (HOST:PORT list),
 * unbuffered, HTTP/1.1 to the upstreams; with `cache`, a caching proxy that
 * revalidates (proxy_cache_revalidate) and says how in `x-cache-status`. Each response carries the upstream
 * that served it in `x-upstream`.
 */
export async function startNginx({ upstreams, readTimeoutS = 60, cache = false, work = workDir('shapesync-nginx-') }) {
  const bin = nginxBinary();
  if (!bin) throw new Error('nginx not installed');
  const port = await freePort();
  for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs', 'cache']) {
    spawnSync('mkdir', ['-p', join(work, d)]);
  }
  const conf = join(work, 'nginx.conf');
  writeFileSync(conf, `
worker_processes 1;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${work}/client_body;
  proxy_temp_path ${work}/proxy;
  fastcgi_temp_path ${work}/fastcgi;
  uwsgi_temp_path ${work}/uwsgi;
  scgi_temp_path ${work}/scgi;
${cache ? `  proxy_cache_path ${work}/cache levels=1 keys_zone=shapes:1m;` : ''}
  upstream shapesync {
${upstreams.map((u) => `    server ${u} max_fails=0;`).join('\n')}
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://shapesync;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
${cache ? `      proxy_buffering on;
      proxy_cache shapes;
      proxy_cache_revalidate on;
      add_header X-Cache-Status $upstream_cache_status always;` : `      proxy_buffering off;
      proxy_cache off;`}
      proxy_read_timeout ${readTimeoutS}s;
      proxy_send_timeout ${readTimeoutS}s;
      add_header X-Upstream $upstream_addr always;
    }
  }
}
`);
  const logFile = join(work, 'nginx.log');
  const fd = openSync(logFile, 'a');
  const child = spawn(bin, ['-p', work, '-c', conf, '-g', `daemon off; pid ${work}/nginx.pid; error_log stderr;`], {
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  let exit = null;
  const exited = new Promise((r) => child.on('exit', (code, signal) => { exit = code ?? signal; r(exit); }));
  const unregister = register(() => { if (exit === null) child.kill('SIGKILL'); });
  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exit !== null) throw new Error(`nginx exited (${exit}):\n${tailFile(logFile)}`);
    if (await canConnect(port)) break;
    if (Date.now() > deadline) throw new Error(`nginx not listening after 10 s:\n${tailFile(logFile)}`);
    await sleep(50);
  }
  return {
    port,
    baseUrl,
    shapeUrl: `${baseUrl}/v1/shape`,
    log: () => tailFile(logFile),
    async stop() {
      unregister();
      if (exit !== null) return;
      child.kill('SIGTERM'); // fast shutdown
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

// ---------------------------------------------------------------------------
// sockets and requests

/** Resolve true when a TCP connection to 127.0.0.1:port is accepted, false when refused. */
export function canConnect(port, timeoutMs = 2_000) {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    const t = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
    s.once('connect', () => { clearTimeout(t); s.destroy(); resolve(true); });
    s.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

/**
 * A fetch for ShapeStream's `fetchClient` that records every attempt:
 * { url, params (URLSearchParams), start, end, status, headers (plain object) }
 * or { ..., error } when the request failed without a response.
 */
export function recordingFetch() {
  const log = [];
  const inFlight = new Set();
  const fetchClient = async (input, init) => {
    const url = typeof input === 'string' ? input : input.url ?? String(input);
    const entry = { url, params: new URL(url).searchParams, start: performance.now() };
    log.push(entry);
    inFlight.add(entry);
    try {
      const res = await fetch(input, init);
      entry.status = res.status;
      entry.headers = Object.fromEntries(res.headers.entries());
      entry.end = performance.now();
      return res;
    } catch (e) {
      entry.error = String(e.cause?.code ?? e.name ?? e);
      entry.end = performance.now();
      throw e;
    } finally {
      inFlight.delete(entry);
    }
  };
  return {
    fetchClient,
    log,
    /** Requests sent and not answered yet. */
    pending: () => [...inFlight],
    describe: (e) =>
      `${e.params.get('live') === 'true' ? 'live ' : ''}offset=${e.params.get('offset')} handle=${e.params.get('handle')} ` +
      `-> ${e.status ?? e.error} handle=${e.headers?.['electric-handle']} offset=${e.headers?.['electric-offset']}` +
      `${e.headers?.['x-upstream'] ? ` via ${e.headers['x-upstream']}` : ''}`,
  };
}

/** Fast client retries: the tests must not wait out the client's 1 s → 32 s backoff. */
export const FAST_BACKOFF = { initialDelay: 100, maxDelay: 1_000, multiplier: 2 };

/** Parse `<tx>_<op>` into [BigInt, BigInt] (op `inf` is the largest); -1 is before all. */
export function offsetKey(o) {
  if (o === '-1') return [-1n, 0n];
  const [tx, op] = o.split('_');
  return [BigInt(tx), op === 'inf' ? 1n << 64n : BigInt(op)];
}

/** Compare two offsets: negative, zero or positive. */
export function compareOffsets(a, b) {
  const [x, y] = [offsetKey(a), offsetKey(b)];
  if (x[0] !== y[0]) return x[0] < y[0] ? -1 : 1;
  if (x[1] !== y[1]) return x[1] < y[1] ? -1 : 1;
  return 0;
}

// ---------------------------------------------------------------------------
// raw protocol against one server (the official client: shape-helpers.js follow())

/** GET `${shapeUrl}?${query}`: status, headers, text and parsed body. */
export async function getRaw(shapeUrl, query, init) {
  const url = `${shapeUrl}?${query}`;
  const r = await fetch(url, { signal: AbortSignal.timeout(30_000), ...init });
  const text = await r.text();
  let body;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    body = text;
  }
  return { url, status: r.status, headers: r.headers, text, body };
}

const describeRaw = (r) => `GET ${r.url} -> ${r.status} handle=${r.headers.get('electric-handle')} ${r.text.slice(0, 400)}`;
const isUpToDate = (m) => m?.headers?.control === 'up-to-date';

/**
 * Sync a shape from `shapeUrl` with raw requests (`base` = query without
 * offset/handle): snapshot and catch-up to an up-to-date. { handle, offset, messages }.
 */
export async function syncRaw(shapeUrl, base) {
  let r = await getRaw(shapeUrl, `${base}&offset=-1`);
  if (r.status !== 200) throw new Error(describeRaw(r));
  const handle = r.headers.get('electric-handle');
  let offset = r.headers.get('electric-offset');
  const messages = [...r.body];
  for (let i = 0; i < 200; i++) {
    r = await getRaw(shapeUrl, `${base}&handle=${encodeURIComponent(handle)}&offset=${offset}`);
    if (r.status !== 200) throw new Error(describeRaw(r));
    offset = r.headers.get('electric-offset');
    messages.push(...r.body);
    if (isUpToDate(r.body.at(-1))) return { handle, offset, messages };
  }
  throw new Error(`no up-to-date after 200 requests for ${base}`);
}

/** Rows after applying change messages as Shape does (insert sets, update merges, delete removes). */
export function applyMessages(messages) {
  const rows = new Map();
  for (const m of messages) {
    if (m.key === undefined) continue;
    if (m.headers.operation === 'delete') rows.delete(m.key);
    else rows.set(m.key, { ...(rows.get(m.key) ?? {}), ...m.value });
  }
  return [...rows.values()];
}
