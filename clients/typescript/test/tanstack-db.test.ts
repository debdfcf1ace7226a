// The TanStack DB example collection against the real sidecar: insert,
// update and delete persist through POST /v1/mutations and settle when their
// txid arrives on the collection's stream; a refused write rolls back.
import { createCollection } from '@tanstack/db'
import { describe, expect, it } from 'vitest'
import { shapesyncCollectionOptions } from '../src/tanstack-db.js'
import { makeClient, psql, uuid } from './support/helpers.js'

interface Todo extends Record<string, unknown> {
  id: string
  list_id: string
  title: string
  done: boolean
}

describe('shapesyncCollectionOptions (TanStack DB)', () => {
  it('inserts, updates and deletes; each transaction settles on its txid', async () => {
    const list = `t-${uuid().slice(0, 8)}`
    await psql(`INSERT INTO lists VALUES ('${list}', 'tanstack db', 'alice')`)
    const client = makeClient('alice')
    const todos = createCollection(shapesyncCollectionOptions<Todo>(client, {
      id: `todos-${list}`,
      table: 'todos',
      where: `list_id = '${list}'`,
      columns: ['id', 'list_id', 'title', 'done'],
      getKey: (t) => t.id,
    }))
    try {
      await todos.preload()
      expect(todos.toArray).toEqual([])

      const id = uuid()
      const ins = todos.insert({ id, list_id: list, title: 'from tanstack db', done: false })
      expect(todos.get(id)?.title).toBe('from tanstack db') // optimistic
      await ins.isPersisted.promise
      expect(await psql(`SELECT title FROM todos WHERE id = '${id}'`)).toBe('from tanstack db')
      // persisted means the txid came back on the stream: the row is synced state now
      const txid = Number(await psql(`SELECT txid FROM shapesync.mutation_log ORDER BY applied_at DESC LIMIT 1`)) % 2 ** 32
      expect(await todos.utils.awaitTxId(txid, 1_000)).toBe(true)

      const upd = todos.update(id, (d) => { d.done = true })
      await upd.isPersisted.promise
      expect(await psql(`SELECT done FROM todos WHERE id = '${id}'`)).toBe('t')
      expect(todos.get(id)?.done).toBe(true)

      const del = todos.delete(id)
      await del.isPersisted.promise
      expect(await psql(`SELECT count(*) FROM todos WHERE id = '${id}'`)).toBe('0')
      expect(todos.get(id)).toBeUndefined()
    } finally {
      await todos.cleanup()
    }
  })

  it('rolls back a write the server refuses', async () => {
    const client = makeClient('alice')
    const todos = createCollection(shapesyncCollectionOptions<Todo>(client, {
      id: `todos-shared-${uuid()}`,
      table: 'todos',
      where: "list_id = 'shared'",
      columns: ['id', 'list_id', 'title', 'done'],
      getKey: (t) => t.id,
    }))
    try {
      await todos.preload()
      const id = uuid()
      // alice may not write into bob's list (RLS WITH CHECK)
      const tx = todos.insert({ id, list_id: 'bob', title: 'sneaky', done: false })
      await expect(tx.isPersisted.promise).rejects.toMatchObject({ name: 'MutationRejectedError', code: '42501' })
      expect(todos.get(id)).toBeUndefined()
      expect(await psql(`SELECT count(*) FROM todos WHERE id = '${id}'`)).toBe('0')
    } finally {
      await todos.cleanup()
    }
  })
})
