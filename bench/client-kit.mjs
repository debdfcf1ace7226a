// Client kit benchmark (issue 14), printed as a bench/RESULTS.md section:
//
//  1. Click → rendered in the other browser: the demo (demo/dist behind its
//     server) in two headless Chromium contexts, users alice and bob, on the
//     shared list of a real stack (PostgreSQL + shapesyncd with JWT auth).
//     N edits (toggling one todo), alternately from each side, one at a time;
//     times from the pages' own instrumentation (demo/src/instrument.ts: the
//     click, the POST, the MutationObserver that sees the other page's DOM
//     change), all on one clock (performance.timeOrigin + now()), and each
//     write's commit timestamp (track_commit_timestamp).
//  2. What the kit adds to an app bundle, minified + gzip: esbuild bundles of
//     an app that already uses react, @electric-sql/react, TanStack Query and
//     zod, without and with the kit's hooks (clients/typescript/dist).
//
//   node bench/client-kit.mjs [--edits 200]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { cpus, totalmem, tmpdir, release, loadavg } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { startDemo, events, shownTodos, percentile } from '../demo/e2e/harness.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const EDITS = Number(arg('edits', 200));

// ---------------------------------------------------------------- bundle size

async function bundleSize() {
  const dir = mkdtempSync(join(tmpdir(), 'shapesync-bundle-'));
  try {
    const base = `
      import { createRoot } from 'react-dom/client'
      import { useShape } from '@electric-sql/react'
      import { QueryClient, QueryClientProvider, useMutation } from '@tanstack/react-query'
      import { z } from 'zod'
      globalThis.app = { createRoot, useShape, QueryClient, QueryClientProvider, useMutation, z }
    `;
    const kit = `${base}
      import { createSyncClient, SyncProvider, useSyncedShape, useSyncedMutation, useSyncStatus, useConflicts } from '@shapesync/react'
      globalThis.kit = { createSyncClient, SyncProvider, useSyncedShape, useSyncedMutation, useSyncStatus, useConflicts }
    `;
    const own = `
      export { createSyncClient, SyncProvider, useSyncedShape, useSyncedMutation, useSyncStatus, useConflicts } from '@shapesync/react'
    `;
    const sizes = {};
    for (const [name, src, external] of [
      ['app', base, []],
      ['app+kit', kit, []],
      ['kit alone', own, ['react', 'react-dom', '@electric-sql/client', '@electric-sql/react', '@tanstack/react-query', 'zod', 'idb']],
      ['kit + idb', own, ['react', 'react-dom', '@electric-sql/client', '@electric-sql/react', '@tanstack/react-query', 'zod']],
    ]) {
      const entry = join(dir, `${name.replace(/\W+/g, '-')}.js`);
      writeFileSync(entry, src);
      const out = await build({
        entryPoints: [entry],
        bundle: true,
        minify: true,
        format: 'esm',
        platform: 'browser',
        write: false,
        external,
        define: { 'process.env.NODE_ENV': '"production"' },
        nodePaths: [join(ROOT, 'node_modules')],
        logLevel: 'silent',
      });
      const code = out.outputFiles[0].contents;
      sizes[name] = { min: code.length, gzip: gzipSync(code, { level: 9 }).length };
    }
    return sizes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- click → render

async function clickToRender() {
  const demo = await startDemo();
  try {
    const alice = await demo.openUser('alice');
    const bob = await demo.openUser('bob');
    const [todo] = await shownTodos(alice.page);
    const id = todo.id;
    const sel = `[data-testid="todo"][data-id="${id}"]`;
    // warm-up: a few edits not counted (first POST, JIT, connection pools)
    const samples = [];
    for (let i = -10; i < EDITS; i++) {
      const [from, to] = i % 2 === 0 ? [alice, bob] : [bob, alice];
      const done = !(await shownTodos(from.page)).find((x) => x.id === id).done;
      await from.page.click(`${sel} [data-action="toggle"]`);
      await to.page.waitForSelector(`${sel}[data-done="${done}"]`, { timeout: 10_000 });
      await from.page.waitForSelector('[data-testid="status"][data-pending="0"]', { timeout: 10_000 });
      if (i < 0) continue;
      const fe = await events(from.page);
      const click = fe.filter((e) => e.type === 'click' && e.id === id).at(-1);
      const post = fe.filter((e) => e.type === 'post' && e.t >= click.t).at(0);
      const render = (await events(to.page)).filter((e) => e.type === 'render' && e.id === id && e.done === String(done) && e.t >= click.t).at(0);
      const commit = await demo.commitTime(id);
      samples.push({ click: render.t - click.t, commit: render.t - commit, postToRender: render.t - post.t, post: post.end - post.t, clickToPost: post.t - click.t });
    }
    const stat = (k) => {
      const xs = samples.map((s) => s[k]).sort((a, b) => a - b);
      return { median: percentile(xs, 50), p99: percentile(xs, 99), max: xs.at(-1) };
    };
    return { n: samples.length, click: stat('click'), commit: stat('commit'), postToRender: stat('postToRender'), post: stat('post'), clickToPost: stat('clickToPost') };
  } finally {
    await demo.close();
  }
}

// ---------------------------------------------------------------- report

const kb = (n) => `${(n / 1024).toFixed(1)} kB`;
const ms = (n) => `${n.toFixed(1)} ms`;

const loadBefore = loadavg()[0];
const sizes = await bundleSize();
const lat = await clickToRender();
const loadAfter = loadavg()[0];
const pkg = (p) => JSON.parse(readFileSync(join(ROOT, 'node_modules', p, 'package.json'), 'utf8')).version;
const chromium = execFileSync(process.env.CHROMIUM || '/usr/bin/chromium', ['--version']).toString().trim();
let commit = 'unknown';
try {
  commit = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']).toString().trim();
} catch { /* not a checkout */ }
const date = new Date().toISOString().replace('T', ' ').slice(0, 16);

console.log(`## Client kit (issue 14)

_Generated by \`scripts/bench-client.sh --write\` (\`node bench/client-kit.mjs --edits ${EDITS}\`) on ${date} UTC, commit ${commit}._

- Machine: ${cpus().length} CPUs (${cpus()[0]?.model.trim()}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Linux ${release()}; Node ${process.version}; ${chromium} (headless, playwright-core ${pkg('playwright-core')}). Browser, PostgreSQL, shapesyncd and the demo server share these CPUs; the machine's 1-minute load average was ${loadBefore.toFixed(1)} before the run and ${loadAfter.toFixed(1)} after it (other work on the same machine included).
- Stack: a throwaway PostgreSQL 15 cluster (scripts/pgcluster.sh, fsync off, track_commit_timestamp on) with demo/db/schema.sql, shapesyncd with \`--jwt-secret\`, the built demo (demo/dist) behind demo/server/serve.js (static files, tokens, \`/v1/*\` proxied to shapesyncd, keep-alive).
- Two browser contexts (alice and bob) on the shared list; ${lat.n} edits (toggling one todo's done), alternately from each side, one at a time, after 10 not counted. Times from the pages' instrumentation (demo/src/instrument.ts) on one clock: the click, the POST /v1/mutations (sent … answered), and the MutationObserver in the other page that sees the todo's new state in the DOM; and the write's commit timestamp from PostgreSQL.

### Click in one browser → rendered in the other

| interval | median | p99 | max |
|---|---:|---:|---:|
| **click → rendered in the other browser** | **${ms(lat.click.median)}** | **${ms(lat.click.p99)}** | ${ms(lat.click.max)} |
| commit → rendered in the other browser | ${ms(lat.commit.median)} | ${ms(lat.commit.p99)} | ${ms(lat.commit.max)} |
| POST sent → rendered in the other browser | ${ms(lat.postToRender.median)} | ${ms(lat.postToRender.p99)} | ${ms(lat.postToRender.max)} |
| POST /v1/mutations round trip (in the clicking browser) | ${ms(lat.post.median)} | ${ms(lat.post.p99)} | ${ms(lat.post.max)} |
| click → POST sent (optimistic render, outbox) | ${ms(lat.clickToPost.median)} | ${ms(lat.clickToPost.p99)} | ${ms(lat.clickToPost.max)} |

The commit time is PostgreSQL's own (\`track_commit_timestamp\`, \`pg_xact_commit_timestamp(xmin)\` of the todo after each edit), on the same machine clock as the pages' \`performance.timeOrigin + now()\`. The other browser often renders the change before the clicking browser has the POST's answer.

### What the kit adds to an app bundle

esbuild ${pkg('esbuild')}, \`--bundle --minify\`, ESM for browsers, \`NODE_ENV=production\`; gzip level 9. "app" already uses react-dom, @electric-sql/react (useShape), TanStack Query and zod; "app + kit" also uses the kit's hooks (clients/typescript/dist).

| bundle | minified | min + gzip |
|---|---:|---:|
| app | ${kb(sizes.app.min)} | ${kb(sizes.app.gzip)} |
| app + kit | ${kb(sizes['app+kit'].min)} | ${kb(sizes['app+kit'].gzip)} |
| **added by the kit** | **${kb(sizes['app+kit'].min - sizes.app.min)}** | **${kb(sizes['app+kit'].gzip - sizes.app.gzip)}** |
| the kit's own code (every dependency external) | ${kb(sizes['kit alone'].min)} | ${kb(sizes['kit alone'].gzip)} |
| the kit's own code + idb | ${kb(sizes['kit + idb'].min)} | ${kb(sizes['kit + idb'].gzip)} |`);
