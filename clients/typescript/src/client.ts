// SyncClient: what the hooks share for one user of one shapesync server.
//
//  - the token (a function, called again with refresh=true after a 401);
//  - one fetch for every request, which holds requests and answers while the
//    client is offline (the browser says so, or setOffline(true));
//  - the shape streams the hooks opened: for each row of them, its version
//    (the `version` header of snapshot rows and change messages, sent back as
//    `base.version`), and the txids seen at each up-to-date;
//  - the pending mutations, laid over the shapes' rows (optimistic state) from
//    the moment they are made until their txid arrives on a stream, and the
//    outbox that sends them in order (IndexedDB: survives a reload, replayed
//    with the same mutation ids);
//  - conflicts returned by the server, until resolved;
//  - a sync status (connecting, syncing, up-to-date, offline, error).
//
// Everything observable goes through subscribe()/getVersion(), the
// useSyncExternalStore contract: a listener is called after each change.
import { FetchError, isChangeMessage, isControlMessage, type Message, type ShapeStream, type ShapeStreamOptions } from '@electric-sql/client'
import {
  MutationConflictError,
  MutationDiscardedError,
  MutationRejectedError,
  SyncHttpError,
} from './errors.js'
import { postMutations, type MutationTransport, type PostOptions, type PostResult } from './http.js'
import { memoryOutbox, openIdbOutbox, type OutboxStore } from './outbox.js'
import { applyOverlay, keyOf, pickKey } from './overlay.js'
import type { Mutation, MutationOp, MutationResult, Row, TokenFunction } from './types.js'

export interface SyncClientOptions {
  /**
   * Where shapesyncd (or a proxy in front of it) answers: `/v1/shape` and
   * `/v1/mutations` are under it. Absolute, or relative to the page.
   */
  url: string
  /** The bearer token; called again with `{ refresh: true }` after a 401. */
  token?: TokenFunction
  /**
   * Offline queue: `{ storageKey }` keeps pending mutations in IndexedDB
   * database `shapesync-outbox:<storageKey>` (use the user's id: a queue is
   * only replayed with its own user's token); `false` keeps them in memory.
   * Default: IndexedDB with storage key `default` where IndexedDB exists.
   */
  offline?: { storageKey: string } | false
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch
  /**
   * How long an applied mutation's optimistic state waits for its txid on a
   * stream before it is dropped anyway (a change that no open shape shows).
   * Default 15000 ms.
   */
  txidTimeoutMs?: number
  /** Retry delays of the outbox after a network error or a 5xx (ms; default 250 → 5000). */
  retry?: { initialDelayMs?: number; maxDelayMs?: number }
  /** Mutations per request (default 100). */
  maxBatch?: number
  /** Backoff of the shape streams (the official client's option). */
  backoffOptions?: ShapeStreamOptions['backoffOptions']
}

export type SyncState = 'connecting' | 'syncing' | 'up-to-date' | 'offline' | 'error'

/** What useSyncStatus() returns. */
export interface SyncStatus {
  state: SyncState
  /** The browser is online and the client was not set offline. */
  online: boolean
  /** Mutations made and not yet confirmed on a stream (queued, in flight, or awaiting their txid). */
  pendingWrites: number
  /** Of those, how many are waiting in the outbox to be sent. */
  queuedWrites: number
  /** Date.now() of the last up-to-date on any stream. */
  lastSyncedAt?: number
  /**
   * Milliseconds between the server's answer to the last confirmed mutation
   * (its commit) and its txid's arrival on a stream: how far the stream lags
   * behind writes.
   */
  lagMs?: number
  /** Milliseconds from making the last confirmed mutation to seeing it on a stream. */
  roundTripMs?: number
  /** Why the state is `error`. */
  error?: Error
  /** Open shape streams. */
  shapes: number
}

/** A mutation the server answered `conflict` to; resolve it with useConflicts(). */
export interface Conflict {
  /** The id of the (first) mutation that conflicted: what resolve() takes. */
  id: string
  /** Every mutation of this row that conflicted (updates of one row are one conflict). */
  ids: string[]
  table: string
  op: MutationOp
  key: Row
  /** What this client tried to write, all its updates of the row together (null for a delete). */
  mine: Row | null
  /** The row as this client last saw it (`base.values`). */
  base: Row | null
  /** The server's row now (parsed like the stream's rows), null when it is gone or hidden. */
  theirs: Row | null
  /** The version of `theirs`: the base of a resolution. */
  serverVersion: string | null
  reason: string
  /** Date.now() when it was reported. */
  at: number
}

/** How to resolve a conflict: keep mine, take theirs, or write this merged row. */
export type Resolution = 'mine' | 'theirs' | Row

type PendingState = 'local' | 'queued' | 'sending' | 'awaiting'

interface Pending {
  mutation: Mutation
  state: PendingState
  /** base.version to be filled in when sent (the row's latest known version then). */
  autoBase: boolean
  seq?: number
  txid?: number
  /** Version the server gave the row (applied insert/update). */
  version?: string | null
  madeAt: number
  appliedAt?: number
  timer?: ReturnType<typeof setTimeout>
  waiters: { resolve: (r: MutationResult) => void; reject: (e: unknown) => void }[]
  discarded?: boolean
  /** The server's decision, once known. */
  outcome?: 'applied' | 'failed'
  /** The previous own mutation of the same row when this one was made. */
  prev?: Pending
}

interface RowMeta {
  version?: string
  value: Row
}

interface StreamInfo {
  table: string
  pk: readonly string[]
  /** message key → row */
  rows: Map<string, RowMeta>
  /** primary key (keyOf) → message key */
  byPk: Map<string, string>
  /** txids of change messages since the last up-to-date */
  batchTxids: Set<number>
  upToDate: boolean
  lastSyncedAt?: number
  error?: Error
  authRetries: number
  unsubscribe: () => void
  /** The shape's definition (table, where, params, columns): its key in the offline cache. */
  shapeKey: string
  /** Rows kept from an earlier page, shown until the stream's first up-to-date. */
  cached?: { rows: Row[]; byPk: Map<string, RowMeta> }
  saveTimer?: ReturnType<typeof setTimeout>
  saved?: boolean
}

const SEEN_TXIDS = 4096

/** Table and primary key of a mutation's row. */
function rowKey(m: Mutation): string {
  const cols = Object.keys(m.key ?? {}).sort()
  return `${m.table}\u0002${keyOf(m.key, cols)}`
}

let clientCounter = 0

/** A short hash of a text (FNV-1a, 32 bits, base 36). */
function textHash(text: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0).toString(36)
}

/** A v4 UUID (crypto.randomUUID where there is one: it needs a secure context). */
export function uuid(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto
  if (c?.randomUUID) return c.randomUUID()
  const b = new Uint8Array(16)
  if (c?.getRandomValues) c.getRandomValues(b)
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256)
  b[6] = (b[6] & 0x0f) | 0x40
  b[8] = (b[8] & 0x3f) | 0x80
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** Text from the server (PostgreSQL's text format) turned into the type `like` has. */
function fromText(text: string | null, like: unknown): unknown {
  if (text === null) return null
  switch (typeof like) {
    case 'boolean':
      return text === 't' || text === 'true'
    case 'number':
      return Number(text)
    case 'bigint':
      try { return BigInt(text) } catch { return text }
    case 'object':
      if (like === null || like instanceof Date) return text
      try { return JSON.parse(text) } catch { return text }
    default:
      return text
  }
}

const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now())

export class SyncClient {
  /** Distinguishes this client's streams in @electric-sql/react's module-wide cache. */
  readonly id = `c${++clientCounter}-${uuid().slice(0, 8)}`
  readonly shapeUrl: string
  readonly mutationsUrl: string
  /** Resolves once the outbox is loaded (and its mutations are laid over the shapes). */
  readonly ready: Promise<void>

  readonly #options: SyncClientOptions
  readonly #fetch: typeof fetch
  readonly #abort = new AbortController()
  readonly #listeners = new Set<() => void>()
  #version = 0
  #closed = false

  #token: string | null | undefined
  #tokenPromise?: Promise<string | null | undefined>
  #refreshPromise?: Promise<string | null | undefined>

  #forcedOffline = false
  #browserOnline = true
  #onlineWaiters = new Set<() => void>()
  #removeWindowListeners?: () => void

  readonly #streams = new Map<ShapeStream<any>, StreamInfo>()
  readonly #seenTxids = new Set<number>()
  /** No stream yet: the status says connecting until the first one (shapes mount after a status badge). */
  #everAttached = false

  readonly #pending = new Map<string, Pending>()
  #outbox!: OutboxStore
  #flushing = false
  #flushAgain = false
  #retryDelay: number
  #retryTimer?: ReturnType<typeof setTimeout>
  #batchLimit: number
  #sendError?: Error

  #conflicts: Conflict[] = []
  #errors: { id: string; table: string; error: Error; at: number }[] = []
  #lagMs?: number
  #roundTripMs?: number
  #status?: SyncStatus

  constructor(options: SyncClientOptions) {
    this.#options = options
    const base = typeof location !== 'undefined' && location?.href ? new URL(options.url, location.href) : new URL(options.url)
    const root = base.href.replace(/\/+$/, '')
    this.shapeUrl = `${root}/v1/shape`
    this.mutationsUrl = `${root}/v1/mutations`
    const f = options.fetch ?? ((...args: Parameters<typeof fetch>) => fetch(...args))
    this.#fetch = this.#wrapFetch(f)
    this.#retryDelay = options.retry?.initialDelayMs ?? 250
    this.#batchLimit = options.maxBatch ?? 100

    if (typeof navigator !== 'undefined' && typeof navigator.onLine === 'boolean') this.#browserOnline = navigator.onLine
    if (typeof window !== 'undefined' && typeof window.addEventListener === 'function') {
      const on = () => this.#setBrowserOnline(true)
      const off = () => this.#setBrowserOnline(false)
      window.addEventListener('online', on)
      window.addEventListener('offline', off)
      this.#removeWindowListeners = () => {
        window.removeEventListener('online', on)
        window.removeEventListener('offline', off)
      }
    }
    this.ready = this.#loadOutbox()
  }

  // ---------------------------------------------------------------- store

  /** useSyncExternalStore's subscribe. */
  subscribe = (listener: () => void): (() => void) => {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** useSyncExternalStore's getSnapshot: a number that changes with every change. */
  getVersion = (): number => this.#version

  #notify() {
    this.#version++
    this.#status = undefined
    for (const l of [...this.#listeners]) {
      try { l() } catch (e) { queueMicrotask(() => { throw e }) }
    }
  }

  // ---------------------------------------------------------------- token

  /** The current token; with `refresh`, a new one from the token function (concurrent calls share it). */
  async getToken(refresh = false): Promise<string | null | undefined> {
    const fn = this.#options.token
    if (!fn) return undefined
    if (refresh) {
      this.#refreshPromise ??= Promise.resolve(fn({ refresh: true })).then((t) => {
        this.#token = t ?? null
        return this.#token
      }).finally(() => { this.#refreshPromise = undefined })
      return this.#refreshPromise
    }
    if (this.#refreshPromise) return this.#refreshPromise
    if (this.#token !== undefined) return this.#token
    this.#tokenPromise ??= Promise.resolve(fn({ refresh: false })).then((t) => {
      this.#token = t ?? null
      return this.#token
    }).finally(() => { this.#tokenPromise = undefined })
    return this.#tokenPromise
  }

  /** Forget the cached token: the next request asks the token function again. */
  clearToken() {
    this.#token = undefined
  }

  #transport(): MutationTransport {
    return { url: this.mutationsUrl, getToken: (refresh) => this.getToken(refresh), fetch: this.#fetch }
  }

  // ---------------------------------------------------------------- online / offline

  get online(): boolean {
    return this.#browserOnline && !this.#forcedOffline
  }

  /**
   * Work offline (true) or online again (false → back to what the browser
   * says): while offline no request is sent and no answer is delivered;
   * mutations wait in the outbox.
   */
  setOffline(offline: boolean) {
    this.#forcedOffline = offline
    this.#onlineChanged()
  }

  #setBrowserOnline(on: boolean) {
    this.#browserOnline = on
    this.#onlineChanged()
  }

  #onlineChanged() {
    if (this.online) {
      for (const w of [...this.#onlineWaiters]) w()
      this.#onlineWaiters.clear()
      this.#retryDelay = this.#options.retry?.initialDelayMs ?? 250
      this.#kick()
    }
    this.#notify()
  }

  #whenOnline(signal?: AbortSignal | null): Promise<void> {
    if (this.online) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const done = () => {
        signal?.removeEventListener('abort', onAbort)
        this.#onlineWaiters.delete(done)
        resolve()
      }
      const onAbort = () => {
        this.#onlineWaiters.delete(done)
        reject(signal?.reason ?? new DOMException('aborted', 'AbortError'))
      }
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#onlineWaiters.add(done)
    })
  }

  #wrapFetch(f: typeof fetch): typeof fetch {
    return async (input, init) => {
      await this.#whenOnline(init?.signal)
      const res = await f(input, init)
      // an answer that arrives while offline is held until online again
      await this.#whenOnline(init?.signal)
      return res
    }
  }

  /** The fetch every request of this client goes through (offline-aware). */
  get fetch(): typeof fetch {
    return this.#fetch
  }

  // ---------------------------------------------------------------- shapes

  /**
   * Options for a ShapeStream (or useShape) of this client: URL, token header,
   * 401 → refresh and retry, the offline-aware fetch, the client's abort signal.
   */
  shapeOptions(params: NonNullable<ShapeStreamOptions['params']>, opts: { token?: TokenFunction } = {}): ShapeStreamOptions {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const client = this
    // A shape's own token (a shape-scoped one, say) instead of the client's.
    const own = opts.token
    let ownToken: string | null | undefined
    const token = async (refresh: boolean) => {
      if (!own) return this.getToken(refresh)
      if (refresh || ownToken === undefined) ownToken = (await own({ refresh })) ?? null
      return ownToken
    }
    const hasToken = Boolean(own ?? this.#options.token)
    const o: ShapeStreamOptions = {
      // The fragment is never sent: it keeps streams of different clients (users),
      // and of shapes with their own token, apart in @electric-sql/react's cache,
      // which keys functions by their text.
      url: `${this.shapeUrl}#${this.id}${own ? `-t${textHash(own.toString())}` : ''}`,
      params,
      fetchClient: this.#fetch,
      signal: this.#abort.signal,
      backoffOptions: {
        initialDelay: 100,
        maxDelay: 5_000,
        multiplier: 2,
        ...this.#options.backoffOptions,
        onFailedAttempt: () => {
          this.#options.backoffOptions?.onFailedAttempt?.()
          this.#notify()
        },
      },
      // `this` is the stream (the official client calls onError on it)
      onError: async function (this: ShapeStream<any>, err: Error) {
        const info = client.#streams.get(this)
        // 401: a new token and the same request again, three times in a row at most
        if (err instanceof FetchError && err.status === 401 && hasToken && (!info || ++info.authRetries <= 3)) {
          try {
            await token(true)
          } catch (e) {
            // the token service failed: wait a little, the next attempt asks again
            console.warn('shapesync: token refresh failed:', e)
            await new Promise((r) => setTimeout(r, 1_000))
          }
          return {}
        }
        client.#notify()
        return undefined
      },
    }
    if (hasToken) {
      o.headers = {
        // a token function that fails sends no token: the 401 that follows
        // asks it again (onError), instead of ending the stream here
        Authorization: async () => {
          const t = await token(false).catch(() => null)
          return t ? `Bearer ${t}` : ''
        },
      }
    }
    return o
  }

  /**
   * Follow `stream` (a shape of `table` whose primary key is `pk`): row versions
   * for base.version, txids for confirming optimistic state. Idempotent.
   */
  attach(stream: ShapeStream<any>, table: string, pk: readonly string[] = ['id']): void {
    if (this.#streams.has(stream) || this.#closed) return
    const params = (stream.options.params ?? {}) as Record<string, unknown>
    const shapeKey = JSON.stringify(Object.keys(params).sort().map((k) => [k, params[k]]))
    const info: StreamInfo = {
      table, pk, rows: new Map(), byPk: new Map(), batchTxids: new Set(), upToDate: false, authRetries: 0,
      unsubscribe: () => {}, shapeKey,
    }
    this.#streams.set(stream, info)
    this.#everAttached = true
    info.unsubscribe = stream.subscribe(
      (messages) => this.#onMessages(info, messages as Message<Row>[]),
      (error) => {
        info.error = error
        this.#notify()
      },
    )
    // attach() runs while a component renders: tell the others afterwards
    queueMicrotask(() => this.#notify())
    // the rows this shape had on an earlier page, until the stream catches up
    void this.ready
      .then(() => this.#outbox.loadShape(shapeKey))
      .then((rows) => {
        if (!rows?.length || info.upToDate || this.#closed) return
        const byPk = new Map<string, RowMeta>()
        for (const r of rows) byPk.set(keyOf(r.value, pk), { value: r.value, version: r.version })
        info.cached = { rows: rows.map((r) => r.value), byPk }
        this.#notify()
      })
      .catch(() => {})
  }

  /** The rows kept from an earlier page for this stream, until its first up-to-date (else undefined). */
  cachedRows(stream: ShapeStream<any>): Row[] | undefined {
    const info = this.#streams.get(stream)
    return info && !info.upToDate ? info.cached?.rows : undefined
  }

  /** Keep the shape's rows for a later page: at once the first time, then at most twice a second. */
  #scheduleSave(info: StreamInfo) {
    if (info.saveTimer || this.#closed) return
    const save = () => {
      const rows = [...info.rows].map(([key, r]) => ({ key, value: r.value, ...(r.version ? { version: r.version } : {}) }))
      void this.ready.then(() => this.#outbox.saveShape(info.shapeKey, rows)).catch(() => {})
    }
    if (!info.saved) {
      info.saved = true
      save()
      return
    }
    info.saveTimer = setTimeout(() => {
      info.saveTimer = undefined
      if (!this.#closed) save()
    }, 500)
  }

  #onMessages(info: StreamInfo, messages: Message<Row>[]) {
    let confirm: Set<number> | undefined
    for (const m of messages) {
      if (isChangeMessage(m)) {
        info.error = undefined
        const h = m.headers as { operation: string; txids?: number[]; version?: string }
        for (const t of h.txids ?? []) info.batchTxids.add(Number(t))
        const cur = info.rows.get(m.key)
        if (h.operation === 'delete') {
          if (cur) info.byPk.delete(keyOf(cur.value, info.pk))
          info.rows.delete(m.key)
        } else {
          const value = h.operation === 'update' && cur ? { ...cur.value, ...m.value } : { ...m.value }
          const version = h.version ?? (h.operation === 'update' ? undefined : undefined)
          info.rows.set(m.key, { value, version })
          info.byPk.set(keyOf(value, info.pk), m.key)
        }
      } else if (isControlMessage(m)) {
        if (m.headers.control === 'up-to-date') {
          info.upToDate = true
          info.cached = undefined
          info.lastSyncedAt = Date.now()
          info.error = undefined
          info.authRetries = 0
          this.#scheduleSave(info)
          if (info.batchTxids.size) {
            confirm ??= new Set()
            for (const t of info.batchTxids) confirm.add(t)
            info.batchTxids.clear()
          }
        } else if (m.headers.control === 'must-refetch') {
          info.rows.clear()
          info.byPk.clear()
          info.batchTxids.clear()
          info.upToDate = false
        }
      }
    }
    if (confirm) this.#confirmTxids(confirm)
    this.#notify()
  }

  /** The row of `table` with this primary key as the streams last showed it, with its version. */
  serverRow(table: string, key: Row, pk: readonly string[] = Object.keys(key)): RowMeta | undefined {
    let best: RowMeta | undefined
    for (const info of this.#streams.values()) {
      if (info.table !== table) continue
      const k = keyOf(key, info.pk.length ? info.pk : pk)
      const mk = info.byPk.get(k)
      const r = mk === undefined ? info.cached?.byPk.get(k) : info.rows.get(mk)
      if (r && (!best || (r.version && !best.version))) best = r
    }
    return best
  }

  #hasStream(table: string) {
    for (const info of this.#streams.values()) if (info.table === table) return true
    return false
  }

  // ---------------------------------------------------------------- optimistic state

  /** Mutations of `table` not yet confirmed on a stream, in the order they were made. */
  pendingMutations(table: string): Mutation[] {
    const out: Mutation[] = []
    for (const p of this.#pending.values()) if (p.mutation.table === table && !p.discarded) out.push(p.mutation)
    return out
  }

  /** `rows` (a shape of `table`) with this client's unconfirmed mutations laid over them. */
  overlay<T extends Row>(table: string, rows: readonly T[], pk: readonly string[] = ['id'], match?: (row: T) => boolean): readonly T[] {
    return applyOverlay(rows, this.pendingMutations(table), pk, match)
  }

  /**
   * Make a mutation: complete its id and base, and lay it over the shapes at
   * once (TanStack Query's onMutate). Send it with send().
   */
  prepare(m: Omit<Mutation, 'id'> & { id?: string }, pk?: readonly string[]): Mutation {
    const mutation: Mutation = { ...m, id: m.id ?? uuid() } as Mutation
    if (this.#pending.has(mutation.id)) return this.#pending.get(mutation.id)!.mutation
    const autoBase = m.base === undefined && (m.op === 'update' || m.op === 'delete')
    if (autoBase && m.key) {
      const keyCols = pk ?? Object.keys(m.key)
      const server = this.serverRow(m.table, m.key, keyCols)
      // base.values: the row as this client shows it (server row + own pending edits)
      let seen: Row | undefined = server?.value
      if (seen) {
        const [shown] = applyOverlay([seen], this.pendingMutations(m.table), keyCols)
        seen = shown ?? seen
      }
      mutation.base = { version: server?.version ?? null, ...(seen ? { values: { ...seen } } : {}) }
    }
    const prev = this.#lastOfRow(mutation)
    this.#pending.set(mutation.id, { mutation, state: 'local', autoBase, madeAt: now(), waiters: [], prev })
    this.#notify()
    return mutation
  }

  /**
   * Queue a prepared mutation (persisted in the outbox first) and send it when
   * online. Resolves with its result once the server applied it; rejects with
   * MutationConflictError / MutationRejectedError / SyncHttpError.
   */
  send(id: string): Promise<MutationResult> {
    const p = this.#pending.get(id)
    if (!p) return Promise.reject(new MutationDiscardedError(id, 'not prepared (or already decided)'))
    const result = new Promise<MutationResult>((resolve, reject) => p.waiters.push({ resolve, reject }))
    if (p.state === 'local') {
      p.state = 'queued'
      // Stored in the outbox and, when online, sent at the same time: a
      // mutation the page loses before both finish is the only one not
      // replayed. Stored ones sent first (ready), so the order holds.
      void this.ready
        .then(() => this.#outbox.add({ mutation: p.mutation, createdAt: Date.now(), ...(p.autoBase ? { autoBase: true } : {}) }))
        .then((seq) => {
          p.seq = seq
          if (p.outcome !== undefined || p.discarded) void this.#outbox.remove([seq]).catch(() => {})
        })
        .catch((e) => console.warn('shapesync: a mutation could not be stored in the offline queue', e))
      void this.ready.then(() => this.#kick())
      this.#notify()
    }
    return result
  }

  /** prepare() + send(). */
  submit(m: Omit<Mutation, 'id'> & { id?: string }, pk?: readonly string[]): Promise<MutationResult> {
    return this.send(this.prepare(m, pk).id)
  }

  /**
   * Take back a mutation's optimistic state (TanStack Query's onError). A
   * mutation not sent yet is also removed from the outbox; one already
   * applied stays applied on the server.
   */
  rollback(id: string) {
    const p = this.#pending.get(id)
    if (!p) return
    if (p.state === 'sending') {
      p.discarded = true
    } else {
      this.#finish(p, undefined, new MutationDiscardedError(id, 'rolled back'))
    }
    this.#notify()
  }

  /** Resolves true when `txid` has been seen on a stream of this client (false after `timeoutMs`). */
  awaitTxId(txid: number, timeoutMs = 15_000): Promise<boolean> {
    if (this.#seenTxids.has(txid)) return Promise.resolve(true)
    return new Promise((resolve) => {
      const t = setTimeout(() => { unsub(); resolve(false) }, timeoutMs)
      const unsub = this.subscribe(() => {
        if (this.#seenTxids.has(txid)) {
          clearTimeout(t)
          unsub()
          resolve(true)
        }
      })
    })
  }

  #confirmTxids(txids: Set<number>) {
    for (const t of txids) {
      this.#seenTxids.delete(t)
      this.#seenTxids.add(t)
    }
    while (this.#seenTxids.size > SEEN_TXIDS) this.#seenTxids.delete(this.#seenTxids.values().next().value as number)
    for (const p of [...this.#pending.values()]) {
      if (p.state === 'awaiting' && p.txid !== undefined && txids.has(p.txid)) this.#confirmed(p)
    }
  }

  #confirmed(p: Pending, timedOut = false) {
    if (p.timer) clearTimeout(p.timer)
    this.#pending.delete(p.mutation.id)
    if (!timedOut && p.appliedAt !== undefined) {
      const t = now()
      this.#lagMs = Math.max(0, t - p.appliedAt)
      this.#roundTripMs = t - p.madeAt
    }
  }

  // ---------------------------------------------------------------- outbox

  async #loadOutbox() {
    const o = this.#options.offline
    try {
      if (o === false || typeof indexedDB === 'undefined') this.#outbox = memoryOutbox()
      else this.#outbox = await openIdbOutbox(o?.storageKey ?? 'default')
    } catch (e) {
      // private browsing modes may refuse IndexedDB: keep working, in memory
      console.warn('shapesync: IndexedDB unavailable, the offline queue is kept in memory:', e)
      this.#outbox = memoryOutbox()
    }
    const stored = await this.#outbox.load()
    if (this.#closed) return
    if (stored.length) {
      // stored mutations come first: they were made before anything of this page
      const later = [...this.#pending.entries()]
      this.#pending.clear()
      for (const q of stored) {
        if (later.some(([id]) => id === q.mutation.id)) continue
        this.#pending.set(q.mutation.id, {
          mutation: q.mutation,
          state: 'queued',
          autoBase: Boolean(q.autoBase),
          seq: q.seq,
          madeAt: now(),
          waiters: [],
          prev: this.#lastOfRow(q.mutation),
        })
      }
      for (const [id, p] of later) this.#pending.set(id, p)
      this.#notify()
    }
    this.#kick()
  }

  #kick() {
    if (this.#closed || this.#retryTimer) return
    void this.#flush()
  }

  #scheduleRetry() {
    if (this.#closed || this.#retryTimer) return
    const max = this.#options.retry?.maxDelayMs ?? 5_000
    const delay = this.#retryDelay
    this.#retryDelay = Math.min(max, this.#retryDelay * 2)
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined
      this.#kick()
    }, delay)
  }

  /** The batch to send next: queued mutations in order, bases filled in. */
  #nextBatch(): Pending[] {
    const batch: Pending[] = []
    for (const p of this.#pending.values()) {
      if (batch.length >= this.#batchLimit) break
      if (p.state === 'sending') return [] // one request at a time keeps the order
      if (p.state !== 'queued' || p.discarded) continue
      batch.push(p)
    }
    // base.version is the version the user's edit was based on, except that an
    // earlier own write of the same row that the server applied since is the
    // new base (the user saw it: it was laid over the row). In one request,
    // successive mutations of a row share the first one's base (the server's rule).
    const inBatch = new Set(batch)
    for (const p of batch) {
      if (!p.autoBase) continue
      let q = p.prev
      while (q && q.outcome === 'failed') q = q.prev
      if (q?.outcome === 'applied') {
        p.mutation.base = { ...p.mutation.base, version: q.mutation.op === 'delete' ? null : q.version ?? null }
      } else if (q && inBatch.has(q)) {
        p.mutation.base = { ...p.mutation.base, version: q.mutation.base?.version ?? null }
      }
      p.prev = undefined
    }
    return batch
  }

  /** The latest pending mutation of the same row (for chaining bases). */
  #lastOfRow(m: Mutation): Pending | undefined {
    if (!m.key) return undefined
    const rk = rowKey(m)
    let last: Pending | undefined
    for (const q of this.#pending.values()) {
      if (q.mutation.id !== m.id && !q.discarded && q.mutation.key && rowKey(q.mutation) === rk) last = q
    }
    return last
  }

  async #flush(): Promise<void> {
    if (this.#flushing) {
      this.#flushAgain = true
      return
    }
    this.#flushing = true
    try {
      do {
        this.#flushAgain = false
        while (!this.#closed && this.online) {
          const batch = this.#nextBatch()
          if (batch.length === 0) break
          for (const p of batch) p.state = 'sending'
          this.#notify()
          let res: PostResult
          try {
            res = await postMutations(this.#transport(), batch.map((p) => p.mutation), {
              allowPartial: true,
              signal: this.#abort.signal,
              retries: 1,
            } satisfies PostOptions)
          } catch (e) {
            for (const p of batch) if (p.state === 'sending') p.state = 'queued'
            if (this.#closed) return
            if (e instanceof SyncHttpError && e.status === 413 && batch.length > 1) {
              this.#batchLimit = Math.max(1, Math.ceil(batch.length / 2))
              continue
            }
            if (e instanceof SyncHttpError && e.status >= 400 && e.status < 500 && e.status !== 401 && e.status !== 408 && e.status !== 429) {
              // refused for good (403, a 413 of one mutation, …): each mutation fails with it
              for (const p of batch) this.#finish(p, undefined, e)
              this.#sendError = undefined
              this.#notify()
              continue
            }
            // network error, 5xx, 401 after a refresh: keep the queue, try again later
            this.#sendError = e instanceof Error ? e : new Error(String(e))
            this.#notify()
            if (this.online) this.#scheduleRetry()
            return
          }
          this.#sendError = undefined
          this.#retryDelay = this.#options.retry?.initialDelayMs ?? 250
          this.#batchLimit = this.#options.maxBatch ?? 100
          await this.#settle(batch, res)
        }
      } while (this.#flushAgain && !this.#closed)
    } finally {
      this.#flushing = false
    }
  }

  async #settle(batch: Pending[], res: PostResult) {
    const byId = new Map(res.body.results.map((r) => [r.id, r]))
    const done: number[] = []
    for (const p of batch) {
      const r = byId.get(p.mutation.id)
      if (!r) {
        this.#finish(p, undefined, new SyncHttpError(res.status, res.body, `no result for mutation ${p.mutation.id}`))
        if (p.seq !== undefined) done.push(p.seq)
        continue
      }
      if (r.status === 'aborted') {
        // rolled back because another mutation of the request was bad input: send again
        p.state = 'queued'
        continue
      }
      if (p.seq !== undefined) done.push(p.seq)
      if (r.status === 'applied') {
        p.outcome = 'applied'
        p.state = 'awaiting'
        p.txid = r.txid ?? res.body.txid ?? undefined
        p.version = r.version
        p.appliedAt = now()
        for (const w of p.waiters.splice(0)) w.resolve(r)
        if (p.discarded || p.txid === undefined || this.#seenTxids.has(p.txid) || !this.#hasStream(p.mutation.table)) {
          this.#confirmed(p, p.discarded || p.txid === undefined || !this.#hasStream(p.mutation.table))
        } else {
          const ms = this.#options.txidTimeoutMs ?? 15_000
          p.timer = setTimeout(() => {
            if (this.#pending.get(p.mutation.id) === p) {
              this.#confirmed(p, true)
              this.#notify()
            }
          }, ms)
        }
      } else if (r.status === 'conflict') {
        const theirs = this.#parseServerRow(p.mutation, r)
        const m = p.mutation
        const rk = rowKey(m)
        // several updates of one row (an offline queue that edited it twice) are one conflict
        const same = m.op === 'update' && m.key
          ? this.#conflicts.find((c) => c.op === 'update' && rowKey({ ...m, key: c.key, table: c.table }) === rk)
          : undefined
        const conflict: Conflict = same
          ? { ...same, ids: [...same.ids, m.id], mine: { ...(same.mine ?? {}), ...(m.values ?? {}) }, theirs, serverVersion: r.server_version ?? null, at: Date.now() }
          : {
            id: m.id,
            ids: [m.id],
            table: m.table,
            op: m.op,
            key: m.key ?? {},
            mine: m.op === 'delete' ? null : { ...(m.values ?? {}) },
            base: m.base?.values ? { ...m.base.values } : null,
            theirs,
            serverVersion: r.server_version ?? null,
            reason: r.reason ?? 'the row changed since its base version',
            at: Date.now(),
          }
        this.#conflicts = same
          ? this.#conflicts.map((c) => (c === same ? conflict : c))
          : [...this.#conflicts.filter((c) => c.id !== m.id), conflict]
        this.#finish(p, undefined, new MutationConflictError(r, theirs))
      } else {
        const err = new MutationRejectedError(r)
        this.#errors = [...this.#errors.slice(-19), { id: p.mutation.id, table: p.mutation.table, error: err, at: Date.now() }]
        this.#finish(p, undefined, err)
      }
    }
    this.#notify()
    if (done.length) await this.#outbox.remove(done).catch(() => {})
  }

  /** Remove a pending mutation (its optimistic state) and settle its waiters. */
  #finish(p: Pending, result?: MutationResult, error?: unknown) {
    if (p.timer) clearTimeout(p.timer)
    p.outcome ??= error === undefined ? 'applied' : 'failed'
    if (this.#pending.get(p.mutation.id) === p) this.#pending.delete(p.mutation.id)
    p.discarded = true
    if (p.seq !== undefined && (p.state === 'queued' || p.state === 'local')) void this.#outbox.remove([p.seq]).catch(() => {})
    for (const w of p.waiters.splice(0)) {
      if (error !== undefined) w.reject(error)
      else w.resolve(result!)
    }
  }

  #parseServerRow(m: Mutation, r: MutationResult): Row | null {
    if (!r.row) return null
    const key = m.key ?? {}
    const known = this.serverRow(m.table, key)
    if (known && r.server_version && known.version === r.server_version) return { ...known.value }
    const sample: Row = { ...(m.base?.values ?? {}), ...(known?.value ?? {}), ...(m.values ?? {}), ...key }
    const out: Row = {}
    for (const [c, v] of Object.entries(r.row)) out[c] = fromText(v, sample[c])
    return out
  }

  // ---------------------------------------------------------------- conflicts

  get conflicts(): readonly Conflict[] {
    return this.#conflicts
  }

  /** Rejected mutations (the last 20): id, table, error. */
  get rejections() {
    return this.#errors
  }

  /**
   * Resolve a conflict. 'theirs' keeps the server's row (nothing is sent);
   * 'mine' writes what this client tried again; an object writes those
   * columns. The follow-up mutation is based on the server's version, so it
   * applies unless the row changed once more (then it is a new conflict).
   */
  async resolveConflict(id: string, choice: Resolution): Promise<MutationResult | null> {
    const c = this.#conflicts.find((x) => x.id === id)
    if (!c) return null
    this.#conflicts = this.#conflicts.filter((x) => x.id !== id)
    this.#notify()
    if (choice === 'theirs') return null
    const values = choice === 'mine' ? c.mine : choice
    const base = { version: c.serverVersion, values: c.theirs ?? undefined }
    if (c.op === 'delete' && choice === 'mine') {
      if (!c.theirs) return null // already gone
      return this.submit({ table: c.table, op: 'delete', key: c.key, base })
    }
    if (!values) return null
    const written = Object.fromEntries(Object.entries(values).filter(([k]) => !(k in c.key)))
    if (!c.theirs) {
      // the row is gone: write it again, whole
      return this.submit({ table: c.table, op: 'insert', key: c.key, values: { ...(c.base ?? {}), ...written, ...c.key } })
    }
    return this.submit({ table: c.table, op: 'update', key: c.key, values: written, base })
  }

  /** Drop a conflict without writing anything (same as resolving it with 'theirs'). */
  dismissConflict(id: string) {
    void this.resolveConflict(id, 'theirs')
  }

  // ---------------------------------------------------------------- status

  /** The sync status; the same object until something changes. */
  get status(): SyncStatus {
    if (this.#status) return this.#status
    let pendingWrites = 0
    let queuedWrites = 0
    let writing = false
    for (const p of this.#pending.values()) {
      if (p.discarded) continue
      pendingWrites++
      if (p.state === 'queued' || p.state === 'local') queuedWrites++
      if (p.state !== 'awaiting') writing = true
    }
    let lastSyncedAt: number | undefined
    let anyLoading = false
    let anyConnecting = false
    let error: Error | undefined = this.#sendError instanceof SyncHttpError ? this.#sendError : undefined
    for (const [stream, info] of this.#streams) {
      if (info.lastSyncedAt !== undefined) lastSyncedAt = Math.max(lastSyncedAt ?? 0, info.lastSyncedAt)
      const e = info.error ?? (stream.error instanceof Error ? stream.error : undefined)
      if (e) error ??= e
      if (!info.upToDate) {
        if (stream.isConnected() || info.rows.size > 0) anyLoading = true
        else anyConnecting = true
      } else if (!stream.isUpToDate) {
        anyLoading = true
      }
    }
    const online = this.online
    let state: SyncState
    if (!online) state = 'offline'
    else if (error) state = 'error'
    else if (anyConnecting || (this.#streams.size === 0 && writing && this.#sendError)) state = 'connecting'
    else if (this.#streams.size === 0 && !writing && lastSyncedAt === undefined && this.#everAttached === false) state = 'connecting'
    else if (anyLoading || writing) state = 'syncing'
    else state = 'up-to-date'
    this.#status = {
      state,
      online,
      pendingWrites,
      queuedWrites,
      lastSyncedAt,
      lagMs: this.#lagMs,
      roundTripMs: this.#roundTripMs,
      error,
      shapes: this.#streams.size,
    }
    return this.#status
  }

  // ---------------------------------------------------------------- direct writes

  /**
   * Send mutations at once, outside the outbox and the optimistic state (TanStack
   * DB's handlers, scripts): one request, all or none unless `allowPartial`.
   */
  post(mutations: (Omit<Mutation, 'id'> & { id?: string })[], o: PostOptions = {}): Promise<PostResult> {
    return postMutations(this.#transport(), mutations.map((m) => ({ ...m, id: m.id ?? uuid() }) as Mutation), {
      signal: this.#abort.signal,
      ...o,
    })
  }

  // ---------------------------------------------------------------- lifecycle

  /** Stop every stream and timer. Queued mutations stay in the outbox for the next client. */
  close() {
    if (this.#closed) return
    this.#closed = true
    this.#abort.abort()
    if (this.#retryTimer) clearTimeout(this.#retryTimer)
    this.#removeWindowListeners?.()
    for (const [, info] of this.#streams) {
      info.unsubscribe()
      if (info.saveTimer) clearTimeout(info.saveTimer)
    }
    this.#streams.clear()
    for (const p of this.#pending.values()) {
      if (p.timer) clearTimeout(p.timer)
      for (const w of p.waiters.splice(0)) w.reject(new MutationDiscardedError(p.mutation.id, 'the client was closed'))
    }
    for (const w of this.#onlineWaiters) w()
    this.#onlineWaiters.clear()
    void this.ready.then(() => this.#outbox?.close(), () => {})
    this.#notify()
  }

  get closed() {
    return this.#closed
  }
}

/** Create a SyncClient (see SyncClientOptions). */
export function createSyncClient(options: SyncClientOptions): SyncClient {
  return new SyncClient(options)
}

export { pickKey }
