// useSyncedMutation against the real sidecar: the optimistic row shows at
// once and stays (no flicker) until its txid arrives on the stream — not when
// the POST returns —, a refused write is rolled back, a 401 refreshes the
// token, and a lost answer is replayed with the same mutation id.
import { act, renderHook, waitFor } from '@testing-library/react'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { MutationRejectedError, useSyncedMutation, useSyncedShape, useSyncStatus, type SyncClient } from '../src/index.js'
import { makeClient, psql, recordingFetch, token, uuid, wrapper } from './support/helpers.js'

const Todo = z.object({
  id: z.string(),
  list_id: z.string(),
  title: z.string(),
  done: z.boolean(),
  position: z.number(),
})

async function newList(owner: string | null) {
  const id = `l-${uuid().slice(0, 8)}`
  await psql(`INSERT INTO lists VALUES ('${id}', 'test list', ${owner === null ? 'NULL' : `'${owner}'`})`)
  return id
}

/** The todos of one list, a mutation of todos and the status; every render's titles are recorded. */
function renderTodos(client: SyncClient, list: string) {
  const renders: string[][] = []
  const hook = renderHook(
    () => {
      const shape = useSyncedShape({ table: 'todos', where: `list_id = '${list}'`, schema: Todo, match: (r) => r.list_id === list })
      const mutation = useSyncedMutation({ table: 'todos', schema: Todo })
      const status = useSyncStatus()
      renders.push(shape.data.map((t) => t.title))
      return { shape, mutation, status }
    },
    { wrapper: wrapper(client) },
  )
  return { ...hook, renders }
}

describe('useSyncedMutation', () => {
  it('shows an insert at once, keeps it through the POST, and drops the optimistic state when its txid arrives', async () => {
    const list = await newList(null)
    // live shape answers are held back until the POST has returned and been
    // checked, so the change cannot arrive on the stream before (a fixed delay
    // was not enough on a loaded machine)
    let release!: () => void
    const gate = new Promise<void>((res) => (release = res))
    const slowShapes: typeof fetch = async (input, init) => {
      const r = await fetch(input, init)
      if (String(input).includes('/v1/shape') && String(input).includes('live=true')) await gate
      return r
    }
    const alice = makeClient('alice', { fetch: slowShapes })
    const { result, renders } = renderTodos(alice, list)
    await waitFor(() => expect(result.current.shape.status).toBe('up-to-date'), { timeout: 15_000 })

    const id = uuid()
    let done!: Promise<unknown>
    act(() => {
      done = result.current.mutation.insert({ id, list_id: list, title: 'optimistic milk', done: false, position: 1 })
    })
    // shown before anything came back
    await waitFor(() => expect(result.current.shape.data.map((t) => t.title)).toEqual(['optimistic milk']))
    const firstShown = renders.findIndex((r) => r.includes('optimistic milk'))

    const r = (await done) as { status: string; txid: number }
    expect(r.status).toBe('applied')
    expect(typeof r.txid).toBe('number')
    // the POST has returned: the row is in the database, the stream has not shown it yet
    expect(await psql(`SELECT title FROM todos WHERE id = '${id}'`)).toBe('optimistic milk')
    expect(result.current.status.pendingWrites).toBe(1)
    expect(result.current.shape.data.map((t) => t.title)).toEqual(['optimistic milk'])
    release()

    // the txid arrives on the stream: the optimistic state goes, the server's row stays
    await waitFor(() => expect(result.current.status.pendingWrites).toBe(0), { timeout: 10_000 })
    expect(result.current.shape.data.map((t) => t.title)).toEqual(['optimistic milk'])
    expect(result.current.status.lagMs).toBeGreaterThan(0)
    // never flickered back: every render since it first showed has it
    expect(renders.slice(firstShown).every((titles) => titles.includes('optimistic milk'))).toBe(true)
  })

  it('rolls back a write the server refuses (RLS WITH CHECK) and reports it', async () => {
    const alice = makeClient('alice')
    const { result, renders } = renderTodos(alice, 'bob') // alice cannot see or write bob's list
    await waitFor(() => expect(result.current.shape.status).toBe('up-to-date'), { timeout: 15_000 })
    expect(result.current.shape.data).toEqual([])

    let p!: Promise<unknown>
    act(() => {
      p = result.current.mutation.insert({ id: uuid(), list_id: 'bob', title: 'sneaky', done: false, position: 1 })
    })
    await expect(p).rejects.toBeInstanceOf(MutationRejectedError)
    await waitFor(() => expect(result.current.mutation.isError).toBe(true))
    expect((result.current.mutation.error as MutationRejectedError).code).toBe('42501')
    expect(result.current.shape.data).toEqual([])
    expect(result.current.status.pendingWrites).toBe(0)
    expect(renders.some((t) => t.includes('sneaky'))).toBe(true) // it was shown optimistically
    expect(await psql(`SELECT count(*) FROM todos WHERE title = 'sneaky'`)).toBe('0')
  })

  it('checks values against the schema before anything is sent', async () => {
    const rec = recordingFetch()
    const alice = makeClient('alice', { fetch: rec.fetch })
    const list = await newList('alice')
    const { result } = renderTodos(alice, list)
    await waitFor(() => expect(result.current.shape.status).toBe('up-to-date'), { timeout: 15_000 })
    let p!: Promise<unknown>
    act(() => {
      p = result.current.mutation.insert({ id: uuid(), list_id: list, title: 42 as unknown as string, done: false, position: 1 })
    })
    await expect(p).rejects.toMatchObject({ name: 'ShapeValidationError', field: 'title' })
    expect(rec.log.filter((e) => e.method === 'POST')).toHaveLength(0)
    expect(result.current.shape.data).toEqual([])
  })

  it('updates and deletes rows it shows, with their versions as base', async () => {
    const list = await newList('alice')
    const id = uuid()
    await psql(`INSERT INTO todos (id, list_id, title) VALUES ('${id}', '${list}', 'first')`)
    const rec = recordingFetch()
    const alice = makeClient('alice', { fetch: rec.fetch })
    const { result } = renderTodos(alice, list)
    await waitFor(() => expect(result.current.shape.data).toHaveLength(1), { timeout: 15_000 })

    await act(() => result.current.mutation.update({ id }, { title: 'second', done: true }))
    await waitFor(() => expect(result.current.status.pendingWrites).toBe(0), { timeout: 10_000 })
    expect(await psql(`SELECT title || ' ' || done FROM todos WHERE id = '${id}'`)).toBe('second true')
    const sent = rec.log.filter((e) => e.method === 'POST')
    expect(sent).toHaveLength(1)

    await act(() => result.current.mutation.remove({ id }))
    await waitFor(() => expect(result.current.shape.data).toEqual([]), { timeout: 10_000 })
    expect(await psql(`SELECT count(*) FROM todos WHERE id = '${id}'`)).toBe('0')
  })

  it('sends the base version the stream gave the row, and two quick edits of one row do not conflict with each other', async () => {
    const list = await newList('alice')
    const id = uuid()
    await psql(`INSERT INTO todos (id, list_id, title) VALUES ('${id}', '${list}', 'v1')`)
    const bodies: { mutations: { id: string; base?: { version?: string | null } }[] }[] = []
    const f: typeof fetch = async (input, init) => {
      if (init?.method === 'POST') bodies.push(JSON.parse(String(init.body)))
      return fetch(input, init)
    }
    const alice = makeClient('alice', { fetch: f })
    const { result } = renderTodos(alice, list)
    await waitFor(() => expect(result.current.shape.data).toHaveLength(1), { timeout: 15_000 })
    const version = await psql(`SELECT shapesync.row_version(xmin)::text FROM todos WHERE id = '${id}'`)

    let a!: Promise<unknown>, b!: Promise<unknown>
    act(() => {
      a = result.current.mutation.update({ id }, { title: 'v2' })
      b = result.current.mutation.update({ id }, { done: true })
    })
    await expect(a).resolves.toMatchObject({ status: 'applied' })
    await expect(b).resolves.toMatchObject({ status: 'applied' })
    expect(bodies[0]!.mutations[0]!.base?.version).toBe(version)
    expect(await psql(`SELECT title || ' ' || done FROM todos WHERE id = '${id}'`)).toBe('v2 true')
    await waitFor(() => expect(result.current.status.pendingWrites).toBe(0), { timeout: 10_000 })
    expect(result.current.shape.data[0]).toMatchObject({ title: 'v2', done: true })
  })

  it('refreshes the token after a 401 on POST /v1/mutations', async () => {
    const list = await newList('alice')
    let fresh = false
    const calls: boolean[] = []
    const alice = makeClient('alice', {
      token: ({ refresh }) => {
        calls.push(refresh)
        if (refresh) fresh = true
        return fresh ? token('alice') : token('alice', -3600)
      },
    })
    const r = await alice.submit({ table: 'todos', op: 'insert', values: { id: uuid(), list_id: list, title: 'after refresh' } })
    expect(r.status).toBe('applied')
    expect(calls).toContain(true)
    expect(await psql(`SELECT count(*) FROM todos WHERE list_id = '${list}'`)).toBe('1')
  })

  it('replays a request whose answer was lost with the same mutation id: applied once', async () => {
    const list = await newList('alice')
    let lose = true
    const sentIds: string[][] = []
    const f: typeof fetch = async (input, init) => {
      const r = await fetch(input, init)
      if (init?.method === 'POST') {
        sentIds.push(JSON.parse(String(init.body)).mutations.map((m: { id: string }) => m.id))
        if (lose) {
          lose = false
          await r.text()
          throw new TypeError('network error (the answer was lost)')
        }
      }
      return r
    }
    const alice = makeClient('alice', { fetch: f, retry: { initialDelayMs: 50 } })
    const id = uuid()
    const r = await alice.submit({ table: 'todos', op: 'insert', values: { id, list_id: list, title: 'once' } })
    expect(r.status).toBe('applied')
    expect(r.replayed).toBe(true)
    expect(sentIds.length).toBe(2)
    expect(sentIds[0]).toEqual(sentIds[1])
    expect(await psql(`SELECT count(*) FROM todos WHERE id = '${id}'`)).toBe('1')
    expect(await psql(`SELECT count(*) FROM shapesync.mutation_log WHERE id = '${sentIds[0]![0]}'`)).toBe('1')
  })
})
