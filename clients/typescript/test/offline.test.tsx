// The offline queue (IndexedDB; fake-indexeddb in jsdom): mutations made
// offline are shown at once, survive a "reload" (a new client on the same
// storage key), and are replayed on reconnect in order, with their original
// ids, once. And useSyncStatus through it all.
import { act, renderHook, waitFor } from '@testing-library/react'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { openIdbOutbox, useSyncedMutation, useSyncedShape, useSyncStatus, type SyncClient } from '../src/index.js'
import { makeClient, psql, token, uuid, wrapper } from './support/helpers.js'

const Todo = z.object({ id: z.string(), list_id: z.string(), title: z.string(), done: z.boolean(), position: z.number() })

function renderTodos(client: SyncClient, list: string) {
  return renderHook(
    () => ({
      shape: useSyncedShape({ table: 'todos', where: `list_id = '${list}'`, schema: Todo, match: (r) => r.list_id === list }),
      mutation: useSyncedMutation({ table: 'todos', schema: Todo }),
      status: useSyncStatus(),
    }),
    { wrapper: wrapper(client) },
  )
}

/** POST bodies as sent: mutation ids and ops, in order. */
function postLog() {
  const sent: { id: string; op: string; title?: unknown }[][] = []
  const f: typeof fetch = async (input, init) => {
    if (init?.method === 'POST') {
      sent.push(JSON.parse(String(init.body)).mutations.map((m: { id: string; op: string; values?: { title?: unknown } }) =>
        ({ id: m.id, op: m.op, title: m.values?.title })))
    }
    return fetch(input, init)
  }
  return { sent, fetch: f }
}

describe('offline queue', () => {
  it('keeps offline edits through a reload and replays them in order with the same ids', async () => {
    const list = `o-${uuid().slice(0, 8)}`
    await psql(`INSERT INTO lists VALUES ('${list}', 'offline', 'alice')`)
    const existing = uuid()
    await psql(`INSERT INTO todos (id, list_id, title, position) VALUES ('${existing}', '${list}', 'before', 1)`)
    const storageKey = `alice-${uuid()}`
    const log = postLog()

    // page 1: syncs, goes offline, makes four edits
    const c1 = makeClient('alice', { offline: { storageKey }, fetch: log.fetch })
    const page1 = renderTodos(c1, list)
    await waitFor(() => expect(page1.result.current.shape.data).toHaveLength(1), { timeout: 15_000 })
    act(() => c1.setOffline(true))
    expect(page1.result.current.status.state).toBe('offline')
    const a = uuid()
    const b = uuid()
    act(() => {
      void page1.result.current.mutation.insert({ id: a, list_id: list, title: 'A', done: false, position: 2 })
      void page1.result.current.mutation.insert({ id: b, list_id: list, title: 'B', done: false, position: 3 })
      void page1.result.current.mutation.update({ id: a }, { title: 'A edited' }) // depends on the insert before it
      void page1.result.current.mutation.update({ id: existing }, { done: true })
    })
    await waitFor(() => expect(page1.result.current.status.queuedWrites).toBe(4))
    expect(page1.result.current.shape.data.map((t) => t.title)).toEqual(['before', 'A edited', 'B'])
    expect(page1.result.current.shape.data[0]!.done).toBe(true)
    expect(log.sent).toHaveLength(0)
    // the outbox is in IndexedDB, in order
    await c1.ready
    const stored = await (await openIdbOutbox(storageKey)).load()
    expect(stored.map((q) => q.mutation.op)).toEqual(['insert', 'insert', 'update', 'update'])
    const ids = stored.map((q) => q.mutation.id)
    page1.unmount()
    c1.close() // the page goes away

    // page 2 (a reload), still offline: the edits are shown from the outbox
    const c2 = makeClient('alice', { offline: { storageKey }, fetch: log.fetch })
    c2.setOffline(true)
    const page2 = renderTodos(c2, list)
    await c2.ready
    await waitFor(() => expect(page2.result.current.status.pendingWrites).toBe(4))
    // the rows page 1 had (kept in IndexedDB) with the queued edits over them
    await waitFor(() => expect(page2.result.current.shape.data.map((t) => t.title)).toEqual(['before', 'A edited', 'B']))
    expect(page2.result.current.shape.data[0]!.done).toBe(true)
    expect(page2.result.current.shape.isLoading).toBe(true)
    expect(await psql(`SELECT count(*) FROM todos WHERE list_id = '${list}'`)).toBe('1')
    expect(log.sent).toHaveLength(0)

    // online: replayed in one request, in order, same ids; the shape converges
    act(() => c2.setOffline(false))
    await waitFor(() => expect(page2.result.current.status.pendingWrites).toBe(0), { timeout: 15_000 })
    expect(log.sent).toHaveLength(1)
    expect(log.sent[0]!.map((m) => m.id)).toEqual(ids)
    expect(await psql(`SELECT string_agg(title || ':' || done, ',' ORDER BY position) FROM todos WHERE list_id = '${list}'`))
      .toBe('before:true,A edited:false,B:false')
    await waitFor(() => expect(page2.result.current.shape.data.map((t) => t.title)).toEqual(['before', 'A edited', 'B']))
    expect(page2.result.current.status.state).toBe('up-to-date')
    expect(await (await openIdbOutbox(storageKey)).load()).toEqual([])
    // each mutation was applied once
    expect(await psql(`SELECT count(*) FROM shapesync.mutation_log WHERE id IN (${ids.map((i) => `'${i}'`).join(',')})`)).toBe('4')
  })

  it("never replays one user's queue with another user's token (one outbox per storage key)", async () => {
    const key = `k-${uuid()}`
    const c1 = makeClient('alice', { offline: { storageKey: `${key}-alice` } })
    c1.setOffline(true)
    void c1.submit({ table: 'todos', op: 'insert', values: { id: uuid(), list_id: 'alice', title: 'alice offline' } }).catch(() => {})
    await c1.ready
    await waitFor(async () => expect(await (await openIdbOutbox(`${key}-alice`)).load()).toHaveLength(1))
    c1.close()
    const c2 = makeClient('bob', { offline: { storageKey: `${key}-bob` } })
    await c2.ready
    expect(c2.status.pendingWrites).toBe(0)
    expect(await (await openIdbOutbox(`${key}-alice`)).load()).toHaveLength(1)
  })
})

describe('useSyncStatus', () => {
  it('goes connecting → up-to-date, offline with pending writes, syncing, and up-to-date again', async () => {
    const list = `s-${uuid().slice(0, 8)}`
    await psql(`INSERT INTO lists VALUES ('${list}', 'status', NULL)`)
    const c = makeClient('bob')
    const seen: string[] = []
    const { result } = renderHook(() => {
      const s = useSyncStatus()
      if (seen.at(-1) !== s.state) seen.push(s.state)
      useSyncedShape({ table: 'todos', where: `list_id = '${list}'` })
      return s
    }, { wrapper: wrapper(c) })
    await waitFor(() => expect(result.current.state).toBe('up-to-date'), { timeout: 15_000 })
    expect(seen[0]).toBe('connecting')
    expect(result.current.lastSyncedAt).toBeGreaterThan(Date.now() - 60_000)
    expect(result.current.shapes).toBe(1)

    act(() => c.setOffline(true))
    expect(result.current.state).toBe('offline')
    expect(result.current.online).toBe(false)
    let p!: Promise<unknown>
    act(() => {
      p = c.submit({ table: 'todos', op: 'insert', values: { id: uuid(), list_id: list, title: 'queued' } })
    })
    await waitFor(() => expect(result.current.pendingWrites).toBe(1))
    expect(result.current.queuedWrites).toBe(1)

    act(() => c.setOffline(false))
    await p
    await waitFor(() => expect(result.current.state).toBe('up-to-date'), { timeout: 10_000 })
    expect(result.current.pendingWrites).toBe(0)
    expect(seen).toContain('syncing')
    expect(typeof result.current.lagMs).toBe('number')
    expect(result.current.roundTripMs).toBeGreaterThanOrEqual(result.current.lagMs!)
  })

  it('says error when the server refuses the token for good', async () => {
    const c = makeClient('bob', { token: () => token('bob', -3600) }) // expired, and refresh gives the same
    const { result } = renderHook(() => {
      useSyncedShape({ table: 'lists' })
      return useSyncStatus()
    }, { wrapper: wrapper(c) })
    await waitFor(() => expect(result.current.state).toBe('error'), { timeout: 15_000 })
    expect(String(result.current.error)).toMatch(/401|Unauthorized/)
  })
})
