// The TanStack DB path: an Electric collection (@tanstack/electric-db-collection)
// over a shapesync shape, whose onInsert / onUpdate / onDelete write through
// POST /v1/mutations and return the request's { txid }. TanStack DB keeps the
// optimistic state until that txid arrives on the collection's own stream.
//
//   const todos = createCollection(shapesyncCollectionOptions(client, {
//     id: 'todos', table: 'todos', where: "list_id = 'shared'", getKey: (t) => t.id,
//   }))
//   const tx = todos.insert({ id, list_id: 'shared', title: 'milk', done: false })
//   await tx.isPersisted.promise  // applied, and seen on the stream
//
// One TanStack DB transaction is one request, all or none. Writes go without
// a base version (the collection does not keep the stream's row versions), so
// they apply unconditionally: the conflict checks of useSyncedMutation are not
// available on this path.
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import type { SyncClient } from './client.js'
import { SyncHttpError, MutationConflictError, MutationRejectedError } from './errors.js'
import type { Mutation, Row } from './types.js'

export interface ShapesyncCollectionConfig<T extends Row> {
  /** The collection's id (default: the table). */
  id?: string
  table: string
  where?: string
  params?: Record<string, string> | string[]
  columns?: string[]
  getKey: (row: T) => string | number
  /** Primary-key columns (default ['id']). */
  primaryKey?: string[]
}

type Write = Omit<Mutation, 'id'>

/** Send one transaction's mutations; its txid, or the first failure as an error. */
async function write(client: SyncClient, mutations: Write[]): Promise<number> {
  const { status, body } = await client.post(mutations)
  const bad = body.results.find((r) => r.status !== 'applied')
  if (status !== 200 || !body.committed || body.txid === null || bad) {
    if (bad?.status === 'conflict') throw new MutationConflictError(bad, bad.row ?? null)
    if (bad) throw new MutationRejectedError(bad)
    throw new SyncHttpError(status, body, 'the mutations were not committed')
  }
  return body.txid
}

function keyOf(row: Row, pk: readonly string[]): Row {
  return Object.fromEntries(pk.map((c) => [c, row[c]]))
}

/** Options for TanStack DB's createCollection(): a shapesync shape, written through the client. */
export function shapesyncCollectionOptions<T extends Row>(client: SyncClient, c: ShapesyncCollectionConfig<T>) {
  const pk = c.primaryKey ?? ['id']
  const params: Record<string, unknown> = { table: c.table }
  if (c.where) params.where = c.where
  if (c.params) params.params = c.params
  if (c.columns) params.columns = c.columns
  return electricCollectionOptions<T>({
    id: c.id ?? c.table,
    getKey: c.getKey,
    shapeOptions: client.shapeOptions(params as never) as never,
    onInsert: async ({ transaction }) => ({
      txid: await write(client, transaction.mutations.map((m) => ({ table: c.table, op: 'insert', values: m.modified as Row }))),
    }),
    onUpdate: async ({ transaction }) => ({
      txid: await write(client, transaction.mutations.map((m) => ({
        table: c.table,
        op: 'update',
        key: keyOf(m.original as Row, pk),
        values: m.changes as Row,
        base: { values: m.original as Row },
      }))),
    }),
    onDelete: async ({ transaction }) => ({
      txid: await write(client, transaction.mutations.map((m) => ({ table: c.table, op: 'delete', key: keyOf(m.original as Row, pk) }))),
    }),
  })
}
