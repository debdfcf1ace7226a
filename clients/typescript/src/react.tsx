// The React hooks: useSyncedShape (useShape + zod + optimistic state),
// useSyncedMutation (TanStack Query), useSyncStatus, useConflicts.
import { useShape } from '@electric-sql/react'
import { useMutation, type UseMutationResult } from '@tanstack/react-query'
import { createContext, createElement, useContext, useMemo, useRef, useSyncExternalStore, type ReactNode } from 'react'
import type { z } from 'zod'
import type { Conflict, Resolution, SyncClient, SyncState, SyncStatus } from './client.js'
import { ShapeValidationError } from './errors.js'
import { keyOf, pickKey } from './overlay.js'
import type { MutationResult, Row, TokenFunction } from './types.js'

const SyncContext = createContext<SyncClient | null>(null)

/** Makes `client` the SyncClient of the hooks below it. */
export function SyncProvider({ client, children }: { client: SyncClient; children?: ReactNode }) {
  return createElement(SyncContext.Provider, { value: client }, children)
}

/** The SyncClient given, or the one of the nearest SyncProvider. */
export function useSyncClient(client?: SyncClient): SyncClient {
  const c = useContext(SyncContext)
  const r = client ?? c
  if (!r) throw new Error('shapesync: no SyncClient: wrap the app in <SyncProvider client={…}> or pass `client`')
  return r
}

function useClientVersion(client: SyncClient): number {
  return useSyncExternalStore(client.subscribe, client.getVersion, client.getVersion)
}

/** A zod object schema's columns (the shape's columns when none are given). */
function columnsOf(schema: unknown): string[] | undefined {
  const shape = (schema as { shape?: Record<string, unknown> } | undefined)?.shape
  return shape && typeof shape === 'object' ? Object.keys(shape) : undefined
}

function issuePath(path: readonly PropertyKey[]): string {
  return path.map((p) => String(p)).join('.')
}

export interface UseSyncedShapeOptions<S extends z.ZodType<Row> | undefined = undefined> {
  table: string
  where?: string
  /** Values of `$1`, `$2`… in `where`. */
  params?: Record<string, string> | string[]
  /** The columns; by default the schema's keys (or every column the token may read). */
  columns?: string[]
  /** Every row is checked with it; rows that fail are left out and reported in `error`. */
  schema?: S
  /** Primary-key columns (default ['id']). */
  primaryKey?: string[]
  /**
   * Whether a row belongs to this shape, for optimistic state: an insert or
   * update made here shows up only where it matches (default: everywhere).
   */
  match?: (row: Row) => boolean
  /**
   * This shape's own token instead of the client's (a shape-scoped token with
   * a `shape` claim, docs/auth.md); called again with refresh: true after a 401.
   */
  token?: TokenFunction
  client?: SyncClient
}

type RowOf<S> = S extends z.ZodType<infer T> ? T : Row

export interface SyncedShapeResult<T> {
  /** The rows (validated, optimistic state included). */
  data: T[]
  isLoading: boolean
  status: SyncState
  /** A ShapeValidationError naming the first bad row and field, or the stream's error. */
  error: Error | null
  /** How many rows failed validation. */
  invalidRows: number
  lastSyncedAt?: number
}

/**
 * A shape of `table` kept in sync (@electric-sql/react's useShape), every row
 * checked against `schema`, with this client's unconfirmed mutations laid over
 * it.
 */
export function useSyncedShape<S extends z.ZodType<Row> | undefined = undefined>(
  opts: UseSyncedShapeOptions<S>,
): SyncedShapeResult<RowOf<S>> {
  const client = useSyncClient(opts.client)
  const pk = opts.primaryKey ?? ['id']
  const columns = opts.columns ?? columnsOf(opts.schema)
  const paramsKey = JSON.stringify([opts.table, opts.where ?? null, opts.params ?? null, columns ?? null])
  const shapeOptions = useMemo(() => {
    const p: Record<string, unknown> = { table: opts.table }
    if (opts.where) p.where = opts.where
    if (opts.params) p.params = opts.params
    if (columns) p.columns = columns
    return client.shapeOptions(p as never, { token: opts.token })
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, paramsKey, opts.token === undefined])
  const shape = useShape<Row>(shapeOptions as never)
  // follow the stream for versions and txids (idempotent; before any message
  // can arrive, since the stream's first request is still in flight)
  client.attach(shape.stream, opts.table, pk)
  const version = useClientVersion(client)

  // before the stream's first up-to-date: the rows kept from an earlier page
  // (offline after a reload), if any
  const cached = shape.isLoading ? client.cachedRows(shape.stream) : undefined
  const serverRows = cached ?? shape.data
  const rows = useMemo(
    () => client.overlay(opts.table, serverRows, pk, opts.match),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [client, serverRows, version, opts.table, opts.match, pk.join(',')],
  )

  const cache = useRef<{ schema: unknown; results: WeakMap<object, { ok: true; value: Row } | { ok: false; field: string; issue: string }> } | undefined>(undefined)
  if (!cache.current || cache.current.schema !== opts.schema) cache.current = { schema: opts.schema, results: new WeakMap() }
  const checked = useMemo(() => {
    const schema = opts.schema
    if (!schema) return { data: rows as Row[], error: null as ShapeValidationError | null, invalid: 0 }
    const results = cache.current!.results
    const data: Row[] = []
    let first: { row: Row; field: string; issue: string } | undefined
    let invalid = 0
    for (const row of rows) {
      let r = results.get(row)
      if (!r) {
        const parsed = schema.safeParse(row)
        r = parsed.success
          ? { ok: true, value: parsed.data as Row }
          : { ok: false, field: issuePath(parsed.error.issues[0]?.path ?? []), issue: parsed.error.issues[0]?.message ?? 'invalid' }
        results.set(row, r)
      }
      if (r.ok) data.push(r.value)
      else {
        invalid++
        first ??= { row, field: r.field, issue: r.issue }
      }
    }
    const error = first
      ? new ShapeValidationError(opts.table, JSON.stringify(pickKey(first.row, pk), (_k, v) => (typeof v === 'bigint' ? v.toString() : v)), first.field, first.issue, invalid)
      : null
    return { data, error, invalid }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [rows, opts.schema, opts.table])

  const streamError = shape.error instanceof Error ? shape.error : null
  let status: SyncState
  if (!client.online) status = 'offline'
  else if (streamError) status = 'error'
  else if (shape.isLoading) status = shape.stream.isConnected() ? 'syncing' : 'connecting'
  else status = 'up-to-date'

  return {
    data: checked.data as RowOf<S>[],
    isLoading: shape.isLoading,
    status,
    error: streamError ?? checked.error,
    invalidRows: checked.invalid,
    lastSyncedAt: shape.lastSyncedAt,
  }
}

/** What useSyncedMutation's mutate takes. */
export interface MutationInput<T extends Row = Row> {
  op: 'insert' | 'update' | 'delete'
  key?: Partial<T>
  values?: Partial<T>
  /** Default: the row as this client sees it, with its version. */
  base?: { version?: string | null; values?: Row }
  /** Default: a new UUID. */
  id?: string
}

export interface UseSyncedMutationOptions<S extends z.ZodType<Row> | undefined = undefined> {
  table: string
  /** Inserts are checked against it, updates against its partial form (a zod object). */
  schema?: S
  primaryKey?: string[]
  client?: SyncClient
  onSuccess?: (result: MutationResult, input: MutationInput<RowOf<S>>) => void
  onError?: (error: Error, input: MutationInput<RowOf<S>>) => void
}

export type SyncedMutation<T extends Row> = UseMutationResult<MutationResult, Error, MutationInput<T>, { id: string }> & {
  /** Insert a row; resolves with the server's result (rejects on conflict or refusal). */
  insert: (values: Partial<T>) => Promise<MutationResult>
  /** Update columns of the row with this key. */
  update: (key: Partial<T>, values: Partial<T>) => Promise<MutationResult>
  /** Delete the row with this key. */
  remove: (key: Partial<T>) => Promise<MutationResult>
}

/**
 * A TanStack Query mutation that writes through POST /v1/mutations: the
 * change is shown at once (onMutate), taken back on error (onError), and its
 * optimistic state is dropped when its txid arrives on a stream — not when
 * the POST returns — so the UI never flickers back. Offline, it waits in the
 * outbox (the mutation stays pending) and is sent when the client is online.
 */
export function useSyncedMutation<S extends z.ZodType<Row> | undefined = undefined>(
  opts: UseSyncedMutationOptions<S>,
): SyncedMutation<RowOf<S>> {
  type T = RowOf<S>
  const client = useSyncClient(opts.client)
  const pk = opts.primaryKey ?? ['id']
  const latest = useRef(opts)
  latest.current = opts
  const mutation = useMutation<MutationResult, Error, MutationInput<T>, { id: string }>({
    // the outbox decides when to send; TanStack's own offline pause would keep
    // the mutation out of it
    networkMode: 'always',
    retry: false,
    onMutate: (input) => {
      const o = latest.current
      const schema = o.schema as (z.ZodType<Row> & { partial?: () => z.ZodType<Row> }) | undefined
      if (schema && input.op !== 'delete') {
        const s = input.op === 'update' && typeof schema.partial === 'function' ? schema.partial() : schema
        const row = input.op === 'insert' ? { ...(input.key ?? {}), ...(input.values ?? {}) } : input.values ?? {}
        const parsed = s.safeParse(row)
        if (!parsed.success) {
          const i = parsed.error.issues[0]
          throw new ShapeValidationError(o.table, JSON.stringify(input.key ?? pickKey(row as Row, pk)), issuePath(i?.path ?? []), i?.message ?? 'invalid', 1)
        }
      }
      const key = input.key ?? (input.op === 'insert' ? pickKey(input.values ?? {}, pk) : undefined)
      const m = client.prepare({ id: input.id, table: o.table, op: input.op, key: key as Row | undefined, values: input.values as Row | undefined, base: input.base }, pk)
      input.id = m.id
      return { id: m.id }
    },
    mutationFn: (input) => {
      if (!input.id) throw new Error('shapesync: mutation without id (onMutate did not run)')
      return client.send(input.id)
    },
    onError: (error, input, ctx) => {
      if (ctx) client.rollback(ctx.id)
      latest.current.onError?.(error, input)
    },
    onSuccess: (result, input) => latest.current.onSuccess?.(result, input),
  })
  const { mutateAsync } = mutation
  const helpers = useMemo(() => {
    const run = (input: MutationInput<T>) => {
      const p = mutateAsync({ ...input, id: input.id ?? undefined })
      p.catch(() => {}) // the error is also in `error` / useConflicts(): fire-and-forget is fine
      return p
    }
    return {
      insert: (values: Partial<T>) => run({ op: 'insert', values }),
      update: (key: Partial<T>, values: Partial<T>) => run({ op: 'update', key, values }),
      remove: (key: Partial<T>) => run({ op: 'delete', key }),
    }
  }, [mutateAsync])
  return { ...mutation, ...helpers } as SyncedMutation<T>
}

/** The client's sync status (re-renders when it changes). */
export function useSyncStatus(client?: SyncClient): SyncStatus {
  const c = useSyncClient(client)
  const get = () => c.status
  return useSyncExternalStore(c.subscribe, get, get)
}

export interface ConflictWithActions extends Conflict {
  /** 'mine', 'theirs' or a merged row: sends the follow-up mutation ('theirs' sends nothing). */
  resolve: (choice: Resolution) => Promise<MutationResult | null>
  dismiss: () => void
}

/** Conflicts the server returned, each with resolve('mine' | 'theirs' | merged). */
export function useConflicts(client?: SyncClient): ConflictWithActions[] {
  const c = useSyncClient(client)
  const get = () => c.conflicts
  const list = useSyncExternalStore(c.subscribe, get, get)
  // theirs: the stream's current row when it has caught up with the conflict
  const version = useClientVersion(c)
  return useMemo(() => list.map((x) => {
    const server = c.serverRow(x.table, x.key)
    const theirs = server && x.serverVersion && server.version && server.version !== x.serverVersion
      ? x.theirs // the row moved on again: keep what the server answered (a new conflict will tell)
      : server?.value ?? x.theirs
    return {
      ...x,
      theirs: x.theirs === null ? null : theirs,
      resolve: (choice: Resolution) => c.resolveConflict(x.id, choice),
      dismiss: () => c.dismissConflict(x.id),
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }), [c, list, version])
}

export { keyOf }
