// Helpers shared by the shape tests (shapes, consistency, sse): following a shape
// with the official client, raw protocol requests, SSE parsing, table contents.
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import { ShapeStream, Shape } from './electric.js';
import { waitFor } from './stack.js';
import { getRaw } from './procs.js';

export const isControl = (m, c) => m?.headers?.control === c;
export const changes = (msgs) => msgs.filter((m) => m.key !== undefined);

/** A Map from String(row.id) to the row. */
export const byId = (rows) => new Map(rows.map((r) => [String(r.id), r]));

/** Rows as a plain object keyed by id, sorted, for deepEqual with readable diffs. */
export function keyed(rows) {
  const out = {};
  for (const r of [...rows].sort((a, b) => Number(a.id) - Number(b.id))) out[String(r.id)] = { ...r };
  return out;
}

/**
 * Wait until a followed shape's rows equal `rows()` (the database's, both
 * through `normalize`); otherwise fail with both sides, the client's errors
 * and `context()` (e.g. the sidecar's log).
 */
export async function assertConsistent(f, rows, what, { normalize = keyed, timeoutMs = 15_000, context = () => '' } = {}) {
  let last = null;
  try {
    await waitFor(async () => {
      last = { client: normalize(f.shape.currentRows), db: normalize(await rows()) };
      return isDeepStrictEqual(last.client, last.db);
    }, { timeoutMs, intervalMs: 100, what });
  } catch (e) {
    assert.deepEqual(last?.client, last?.db, `${what}: client rows differ from SELECT (${e.message}; client errors: ` +
      `${f.errors.map(String).join('; ')})\n${context()}`);
  }
}

/**
 * Follow a shape with ShapeStream + Shape. Records every message and every
 * error; onError returns nothing, so a 4xx stops the stream (visible in errors).
 */
export function follow(url, params, options = {}) {
  const ac = new AbortController();
  const errors = [];
  const messages = [];
  const stream = new ShapeStream({
    url,
    params,
    signal: ac.signal,
    onError: (e) => { errors.push(e); },
    ...options,
  });
  const shape = new Shape(stream);
  const unsubscribe = stream.subscribe((msgs) => { messages.push(...msgs); }, (e) => errors.push(e));
  let closed = false;
  return {
    stream,
    shape,
    errors,
    messages,
    close() {
      if (closed) return;
      closed = true;
      unsubscribe();
      ac.abort();
      shape.unsubscribeAll();
      stream.unsubscribeAll();
    },
  };
}

/** Resolve `p`, or reject after `ms` with `what` (the timer is always cleared). */
export async function within(p, ms, what) {
  let timer;
  try {
    return await Promise.race([
      p,
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`${typeof what === 'function' ? what() : what} (after ${ms} ms)`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The first up-to-date rows of a followed shape. */
export function firstRows(f, ms = 15_000) {
  return within(f.shape.rows, ms, () => `no snapshot (errors: ${f.errors.map(String).join('; ')})`);
}

/** Rows of a SELECT as an array of objects (json_agg through psql). */
export async function select(stack, sql) {
  const out = await stack.psql(`SELECT coalesce(json_agg(q), '[]'::json) FROM (${sql}) q`);
  return JSON.parse(out);
}

/** GET /v1/shape with a query string; returns status, headers and the parsed body. */
export function getShape(stack, query, init) {
  return getRaw(stack.shapeUrl, query, init);
}

/** Describe a response for assertion messages. */
export const describe = (r) =>
  `GET ${r.url} -> ${r.status} electric-handle=${r.headers.get('electric-handle')} ${r.text.slice(0, 600)}`;

/**
 * A raw protocol follower: snapshot + catch-up to up-to-date, then live
 * long-polls on demand. `base` is the query without offset/handle/live.
 */
export async function rawShape(stack, base) {
  const snapshot = [];
  let r = await getShape(stack, `${base}&offset=-1`);
  assert.equal(r.status, 200, describe(r));
  const handle = r.headers.get('electric-handle');
  let offset = r.headers.get('electric-offset');
  snapshot.push(...r.body);
  for (let i = 0; i < 100; i++) {
    r = await getShape(stack, `${base}&handle=${encodeURIComponent(handle)}&offset=${offset}`);
    assert.equal(r.status, 200, describe(r));
    offset = r.headers.get('electric-offset');
    snapshot.push(...r.body);
    if (isControl(r.body.at(-1), 'up-to-date')) break;
  }
  const self = {
    handle,
    offset,
    snapshot,
    schema: JSON.parse(r.headers.get('electric-schema') ?? 'null'),
    /**
     * Long-poll until `n` change messages arrived after the current offset
     * (or `timeoutMs` passed); returns the change messages.
     */
    async live(n, timeoutMs = 10_000) {
      const got = [];
      const deadline = Date.now() + timeoutMs;
      while (got.length < n && Date.now() < deadline) {
        const q = `${base}&handle=${encodeURIComponent(handle)}&offset=${self.offset}&live=true&cursor=1`;
        const res = await getShape(stack, q);
        assert.equal(res.status, 200, describe(res));
        assert.ok(Array.isArray(res.body), describe(res));
        self.offset = res.headers.get('electric-offset');
        got.push(...changes(res.body));
      }
      return got;
    },
  };
  return self;
}

/**
 * Read `data:` events from an SSE response until `stop(messages)` is true,
 * the stream ends or `timeoutMs` passes. Returns { messages, events, comments, ended }.
 */
export async function readSse(res, { stop = () => false, timeoutMs = 5000 } = {}) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  const messages = [];
  const events = [];
  const comments = [];
  let buf = '';
  let ended = false;
  const deadline = Date.now() + timeoutMs;
  try {
    while (!stop(messages) && Date.now() < deadline) {
      let timer;
      const chunk = await Promise.race([
        reader.read(),
        new Promise((r) => { timer = setTimeout(() => r({ timeout: true }), Math.max(1, deadline - Date.now())); }),
      ]);
      clearTimeout(timer);
      if (chunk.timeout) break;
      if (chunk.done) {
        ended = true;
        break;
      }
      buf += dec.decode(chunk.value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        events.push(event);
        for (const line of event.split('\n')) {
          if (line.startsWith('data: ')) messages.push(JSON.parse(line.slice(6)));
          else if (line.startsWith(':')) comments.push(line);
          else if (line !== '') throw new Error(`unexpected SSE line ${JSON.stringify(line)}`);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return { messages, events, comments, ended, rest: buf };
}
