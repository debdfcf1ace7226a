// Invariants 1 and 2 (ARCHITECTURE.md) under random concurrent writers: several
// psql processes run generated transactions (inserts, upserts, updates that move
// rows in and out of filters, PK changes, deletes, ROLLBACK, ROLLBACK TO
// SAVEPOINT, deadlocks) while official clients follow filtered, whole-table,
// replica=full, columns and guarded (LIKE) shapes, some created mid-run. At the
// end each client's rows must equal SELECT ... WHERE ...; during the run, every
// up-to-date of a table changed only by balance transfers must show the same total.
// Seed: E2E_SEED=<n> reproduces a run's scripts.
//
// defineConsistencySuite(options) registers the suite in the calling test file:
//   sidecarArgs  extra shapesyncd flags (tiny --chunk-bytes, --memory-chunks 0/1
//                so that every read crosses chunk and segment boundaries)
//   stream       extra ShapeStream options ({ liveSse: true } for SSE)
//   bulk         also write transactions larger than a chunk (30 rows of 200 B)
//   label        names the variant in the test title
//   paceEvery    writers sleep 10-30 ms every paceEvery transactions (default 10)
//   minBankViews up-to-dates the bank client must see during the run (the test's power; default 5)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { startStack, waitFor } from './stack.js';
import { byId, keyed, follow, firstRows, select } from './shape-helpers.js';

export function defineConsistencySuite({ sidecarArgs = [], stream = {}, bulk = false, label = 'defaults', paceEvery = 10, minBankViews = 5 } = {}) {
  const WRITERS = 4;
  const TX_PER_WRITER = Number(process.env.E2E_TX_PER_WRITER || 400);
  const HOT = 200; // ids 1..HOT are shared by all writers
  const BANK = 10; // bank rows, 100 each: the total never changes
  const SEED = Number(process.env.E2E_SEED || Date.now() % 1_000_000);

  let stack;
  const open = [];

  before(async () => {
    stack = await startStack({
      longPollTimeoutMs: 3000,
      sidecarArgs,
      setupSql: `
        CREATE TABLE acc (id int PRIMARY KEY, priority int, grp int NOT NULL DEFAULT 0,
                          payload text, n int NOT NULL DEFAULT 0);
        INSERT INTO acc (id, priority, grp, payload)
          SELECT i, CASE WHEN i % 13 = 0 THEN NULL ELSE i % 11 END, i % 2, 'p' || i FROM generate_series(1, ${HOT}) i;
        CREATE TABLE bank (id int PRIMARY KEY, bal int NOT NULL);
        INSERT INTO bank SELECT i, 100 FROM generate_series(1, ${BANK}) i;
        SELECT shapesync.track('acc'), shapesync.track('bank');
        ALTER DATABASE shapesync SET deadlock_timeout = '50ms';
      `,
    });
  });

  after(async () => {
    for (const f of open) f.close();
    await stack?.stop();
  });

  /** mulberry32 */
  function rng(seed) {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  /** One writer's script: TX_PER_WRITER transactions, paced with short sleeps. */
  function script(w, seed) {
    const r = rng(seed * 31 + w);
    const int = (n) => Math.floor(r() * n);
    const pick = (...xs) => xs[int(xs.length)];
    let next = 1000 + w * 100_000;
    const mine = [];
    const target = () => (mine.length && r() < 0.3 ? pick(...mine) : 1 + int(HOT));
    const prio = () => (r() < 0.05 ? 'NULL' : String(int(11)));
    const word = () => pick('a', 'b7', 'c', '77', 'd', 'e7f', 'g');
    const op = () => {
      const x = r();
      if (bulk && x < 0.03) {
        // larger than a chunk: one transaction's messages span several chunks
        const id = next;
        next += 30;
        for (let k = 0; k < 30; k++) mine.push(id + k);
        return `INSERT INTO acc (id, priority, grp, payload) SELECT ${id} + g, g % 11, g % 2, ` +
          `repeat('${word()}', 60) || g FROM generate_series(0, 29) g;`;
      }
      if (x < 0.16) {
        const id = next++;
        mine.push(id);
        return `INSERT INTO acc (id, priority, grp, payload) VALUES (${id}, ${prio()}, ${int(2)}, '${word()}');`;
      }
      if (x < 0.24) {
        return `INSERT INTO acc (id, priority, grp, payload) VALUES (${1 + int(HOT)}, ${prio()}, ${int(2)}, '${word()}') ` +
          `ON CONFLICT (id) DO UPDATE SET priority = EXCLUDED.priority, payload = acc.payload || 'u';`;
      }
      if (x < 0.44) return `UPDATE acc SET priority = ${prio()} WHERE id = ${target()};`;
      if (x < 0.56) return `UPDATE acc SET n = n + 1, payload = '${word()}' WHERE id = ${target()};`;
      if (x < 0.62) return `UPDATE acc SET grp = 1 - grp WHERE id = ${target()};`;
      if (x < 0.68) {
        const a = 1 + int(HOT);
        return `UPDATE acc SET priority = (coalesce(priority, 0) + 1) % 11 WHERE id BETWEEN ${a} AND ${a + 3};`;
      }
      if (x < 0.78) return `DELETE FROM acc WHERE id = ${target()};`;
      if (x < 0.8) {
        const id = next++;
        mine.push(id);
        return `UPDATE acc SET id = ${id} WHERE id = ${target()};`;
      }
      if (x < 0.85) {
        const id = next++;
        return `INSERT INTO acc (id, priority, payload) VALUES (${id}, 9, 'transient7'); ` +
          `UPDATE acc SET priority = 2 WHERE id = ${id}; DELETE FROM acc WHERE id = ${id};`;
      }
      const a = 1 + int(BANK);
      const b = 1 + ((a + int(BANK - 1)) % BANK);
      const amt = 1 + int(20);
      return `UPDATE bank SET bal = bal - ${amt} WHERE id = ${a}; UPDATE bank SET bal = bal + ${amt} WHERE id = ${b};`;
    };
    const lines = [];
    for (let t = 0; t < TX_PER_WRITER; t++) {
      if (r() < 0.1) {
        const o = op(); // autocommit (a transfer still needs its own transaction)
        lines.push(o.startsWith('UPDATE bank') ? `BEGIN; ${o} COMMIT;` : o);
      } else {
        lines.push('BEGIN;');
        for (let k = 1 + int(4); k > 0; k--) lines.push(op());
        if (r() < 0.3) {
          lines.push('SAVEPOINT s;');
          for (let k = 1 + int(3); k > 0; k--) lines.push(op());
          lines.push(r() < 0.6 ? 'ROLLBACK TO SAVEPOINT s;' : 'RELEASE SAVEPOINT s;');
          if (r() < 0.5) lines.push(op());
        }
        lines.push(r() < 0.85 ? 'COMMIT;' : 'ROLLBACK;');
      }
      if (t % paceEvery === paceEvery - 1) lines.push(`SELECT pg_sleep(0.0${1 + int(3)});`);
    }
    return lines.join('\n') + '\n';
  }

  /** Run one writer's script with psql; resolves with its stderr (SQL errors such as deadlocks). */
  function writer(w) {
    return new Promise((res, rej) => {
      const child = spawn('psql', ['-X', '-q', '-t', '-v', 'ON_ERROR_STOP=0', '-d', stack.dbUrl, '-f', '-'], {
        stdio: ['pipe', 'ignore', 'pipe'],
      });
      let err = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      child.stderr.on('data', (d) => { err += d; });
      child.on('error', (e) => { clearTimeout(timer); rej(e); });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) res(err);
        else rej(new Error(`writer ${w}: psql exited ${code ?? signal}\n${err.slice(-2000)}`));
      });
      child.stdin.on('error', () => {});
      child.stdin.end(script(w, SEED));
    });
  }

  test(`concurrent random writers (${label}): every client equals SELECT at the end (seed ${SEED})`, async () => {
    const shapes = [
      { name: 'filtered', params: { table: 'acc', where: 'priority > 5' }, sql: 'SELECT * FROM acc WHERE priority > 5' },
      { name: 'filtered replica=full', params: { table: 'acc', where: 'priority > 5', replica: 'full' },
        sql: 'SELECT * FROM acc WHERE priority > 5' },
      { name: 'whole table', params: { table: 'acc' }, sql: 'SELECT * FROM acc' },
      { name: 'whole table replica=full', params: { table: 'acc', replica: 'full' }, sql: 'SELECT * FROM acc' },
      { name: 'hash-indexed conjunct + columns', params: { table: 'acc', where: 'grp = $1 AND priority > 3', params: ['1'],
        columns: ['id', 'priority', 'n'] }, sql: 'SELECT id, priority, n FROM acc WHERE grp = 1 AND priority > 3' },
      { name: 'guarded LIKE with params', params: { table: 'acc', where: 'payload LIKE $1', params: ['%7%'] },
        sql: "SELECT * FROM acc WHERE payload LIKE '%7%'" },
    ];
    const lateShapes = [
      { name: 'created mid-run (priority > 3)', params: { table: 'acc', where: 'priority > 3' },
        sql: 'SELECT * FROM acc WHERE priority > 3' },
      { name: 'created mid-run (whole, columns)', params: { table: 'acc', columns: ['id', 'payload'] },
        sql: 'SELECT id, payload FROM acc' },
      { name: 'created mid-run (priority <= 5, full)', params: { table: 'acc', where: 'priority <= 5', replica: 'full' },
        sql: 'SELECT * FROM acc WHERE priority <= 5' },
    ];
    const start = (s) => {
      s.f = follow(stack.shapeUrl, s.params, stream);
      open.push(s.f);
      return s;
    };
    const tStart = Date.now();
    for (const s of shapes) start(s);
    await Promise.all(shapes.map((s) => firstRows(s.f)));

    // The bank: at every up-to-date the client's total must be BANK * 100.
    const bank = follow(stack.shapeUrl, { table: 'bank' }, stream);
    open.push(bank);
    await firstRows(bank);
    const bankViews = [];
    let midTransaction = 0;
    const unsubBank = bank.shape.subscribe(({ rows }) => {
      // The official Shape also notifies when a live response that ends at a
      // chunk boundary inside a transaction arrives after an up-to-date (log
      // chunks may split a transaction, PROTOCOL.md §5.2); such a state is
      // "syncing", never up to date. Invariant 2 is about up-to-dates.
      if (!bank.shape.isUpToDate) {
        midTransaction++;
        return;
      }
      bankViews.push({ n: rows.length, total: rows.reduce((a, b) => a + b.bal, 0) });
    });

    const tFirst = Date.now();
    const t0 = Date.now();
    const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
    let done = false;
    const all = Promise.all(writers).finally(() => { done = true; });
    // Meanwhile the change log rotates as fast as it can (retention 0): tables
    // are truncated under the writers once the sidecar has read them.
    let rotations = 0;
    const rotator = (async () => {
      while (!done) {
        const out = await stack.psql("SELECT rotated FROM shapesync.maintain('0', '1 hour')");
        if (out.endsWith('t')) rotations++;
        await sleep(100);
      }
    })();
    // shapes created while the writers run
    for (const s of lateShapes) {
      await sleep(700);
      if (!done) start(s);
    }
    const outputs = await all;
    await rotator;
    const elapsed = Date.now() - t0;
    for (const s of lateShapes) if (!s.f) start(s);
    unsubBank();

    const tWrote = Date.now();
    // Two sentinel rows written last, in one transaction: every shape holds at
    // least one of them, so once a client has its sentinels it has every earlier write.
    await stack.psql(`INSERT INTO acc (id, priority, grp, payload) VALUES
      (9999998, 0, 1, 'sentinel'), (9999999, 10, 1, 'sentinel7')`);
    const everyShape = [...shapes, ...lateShapes];
    for (const s of everyShape) {
      s.sentinels = (await select(stack, `SELECT id FROM (${s.sql}) q WHERE id >= 9999998`)).map((r) => String(r.id));
      assert.ok(s.sentinels.length > 0, `a sentinel is in ${s.name}`);
    }
    await waitFor(() => everyShape.every((s) => {
      const m = byId(s.f.shape.currentRows);
      return s.sentinels.every((id) => m.has(id));
    }), { what: 'the sentinels in every shape', timeoutMs: 20_000 })
      .catch((e) => {
        throw new Error(`${e.message}: ${everyShape.map((s) => `${s.name}: ${s.f.shape.currentRows.length} rows, ` +
          `errors ${s.f.errors.map(String)}`).join('; ')}`);
      });

    const tSent = Date.now();
    const stats = JSON.parse(await stack.psql(
      `SELECT json_build_object('rows', (SELECT count(*) FROM acc), 'max_n', (SELECT max(n) FROM acc),
         'moved', (SELECT count(*) FROM acc WHERE id >= 1000 AND id < 9999999))`));
    const errors = outputs.join('');
    console.log(`# seed ${SEED}: ${WRITERS} writers x ${TX_PER_WRITER} transactions in ${elapsed} ms; ` +
      `table ${JSON.stringify(stats)}; bank up-to-dates ${bankViews.length}; ` +
      `(and ${midTransaction} notifications while syncing); SQL errors ${(errors.match(/ERROR:/g) ?? []).length} (deadlocks ${(errors.match(/deadlock detected/g) ?? []).length}); ` +
      `times: first rows ${tFirst - tStart} ms, writers ${elapsed} ms, sentinels ${tSent - tWrote} ms; ` +
      `change-log rotations during the run ${rotations}`);
    // The writers' errors are their own (deadlocks, constraint violations), never the capture's.
    const captureErrors = errors.split('\n').filter((l) => /ERROR:.*(relation with OID|shapesync|change log)/.test(l));
    assert.deepEqual(captureErrors, [], 'no writer failed in the capture trigger');
    assert.ok(rotations >= 2, `the change log rotated under the writers (${rotations} times)`);

    const failures = [];
    for (const s of everyShape) {
      const expected = keyed(await select(stack, s.sql));
      const got = keyed(s.f.shape.currentRows);
      try {
        assert.deepEqual(got, expected);
      } catch (e) {
        const diff = [];
        for (const id of new Set([...Object.keys(got), ...Object.keys(expected)])) {
          if (JSON.stringify(got[id]) !== JSON.stringify(expected[id])) {
            diff.push(`${id}: client ${JSON.stringify(got[id])} db ${JSON.stringify(expected[id])}`);
          }
        }
        failures.push(`${s.name} (${JSON.stringify(s.params)}): ${diff.length} rows differ:\n  ${diff.slice(0, 10).join('\n  ')}`);
      }
      if (s.f.errors.length) failures.push(`${s.name}: stream errors ${s.f.errors.map(String).join('; ')}`);
    }
    // The bank total is the same in every state a client was told is up to date.
    const wrong = bankViews.filter((v) => v.n !== BANK || v.total !== BANK * 100);
    if (wrong.length) failures.push(`bank: ${wrong.length} of ${bankViews.length} up-to-dates show a partial transaction: ` +
      JSON.stringify(wrong.slice(0, 5)));
    const bankNow = keyed(await select(stack, 'SELECT * FROM bank'));
    try {
      assert.deepEqual(keyed(bank.shape.currentRows), bankNow);
    } catch {
      failures.push('bank: final rows differ from SELECT');
    }
    assert.equal(failures.length, 0, `seed ${SEED}:\n${failures.join('\n')}`);
    assert.ok(bankViews.length >= minBankViews, `the bank shape saw only ${bankViews.length} up-to-dates during the run`);
    // sanity: the run really moved data
    assert.ok(stats.moved > 50 && stats.max_n > 0, JSON.stringify(stats));
  });
}
