// useSyncedShape against the real sidecar: row-level security through the
// token, zod validation (bad rows named, never a crash), columns taken from
// the schema, live changes, and a token refreshed after a 401.
import { renderHook, waitFor } from '@testing-library/react'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { ShapeValidationError, useSyncedShape } from '../src/index.js'
import { makeClient, psql, recordingFetch, token, uuid, wrapper } from './support/helpers.js'

const Todo = z.object({
  id: z.string().uuid(),
  list_id: z.string(),
  title: z.string(),
  done: z.boolean(),
  position: z.number(),
})

describe('useSyncedShape', () => {
  it('shows a user their own and the shared lists only (RLS through the token)', async () => {
    const alice = makeClient('alice')
    const { result } = renderHook(() => useSyncedShape({ table: 'todos', schema: Todo }), { wrapper: wrapper(alice) })
    await waitFor(() => expect(result.current.status).toBe('up-to-date'), { timeout: 15_000 })
    const lists = new Set(result.current.data.map((t) => t.list_id))
    expect(lists).toContain('alice')
    expect(lists).toContain('shared')
    // exactly the todos of lists that are alice's or shared (other tests add lists too)
    const visible = await psql(`SELECT count(*) FROM todos t JOIN lists l ON l.id = t.list_id WHERE l.owner IS NULL OR l.owner = 'alice'`)
    expect(result.current.data).toHaveLength(Number(visible))
    const bobs = (await psql(`SELECT string_agg(id, ',') FROM lists WHERE owner = 'bob'`)).split(',')
    expect(bobs).toContain('bob')
    for (const l of bobs) expect(lists).not.toContain(l)
    expect(result.current.data.some((t) => t.title.startsWith("Bob's secret"))).toBe(false)
    expect(result.current.error).toBeNull()
    // the rows are the schema's output: typed values, no other column
    for (const t of result.current.data) {
      expect(typeof t.done).toBe('boolean')
      expect(Object.keys(t).sort()).toEqual(['done', 'id', 'list_id', 'position', 'title'])
    }
  })

  it("asks for the schema's columns when none are given", async () => {
    const rec = recordingFetch()
    const bob = makeClient('bob', { fetch: rec.fetch })
    const Narrow = z.object({ id: z.string(), title: z.string() })
    const { result } = renderHook(() => useSyncedShape({ table: 'todos', where: "list_id = 'bob'", schema: Narrow }), {
      wrapper: wrapper(bob),
    })
    await waitFor(() => expect(result.current.status).toBe('up-to-date'), { timeout: 15_000 })
    const shapeReq = rec.log.find((e) => e.url.includes('/v1/shape'))!
    expect(new URL(shapeReq.url).searchParams.get('columns')).toBe('"id","title"')
    expect(result.current.data.length).toBeGreaterThan(0)
    expect(Object.keys(result.current.data[0]!).sort()).toEqual(['id', 'title'])
  })

  it('names a row that fails the schema, keeps the others, and follows live changes', async () => {
    const list = `v-${uuid().slice(0, 8)}`
    await psql(`INSERT INTO lists VALUES ('${list}', 'validation', NULL);
      INSERT INTO todos (id, list_id, title) VALUES ('${uuid()}', '${list}', 'short'), ('${uuid()}', '${list}', 'also short');`)
    const Short = Todo.extend({ title: z.string().max(12) })
    const alice = makeClient('alice')
    const { result } = renderHook(() => useSyncedShape({ table: 'todos', where: `list_id = '${list}'`, schema: Short }), {
      wrapper: wrapper(alice),
    })
    await waitFor(() => expect(result.current.data).toHaveLength(2), { timeout: 15_000 })
    expect(result.current.error).toBeNull()

    const bad = uuid()
    await psql(`INSERT INTO todos (id, list_id, title) VALUES ('${bad}', '${list}', 'a title that is far too long')`)
    await waitFor(() => expect(result.current.error).toBeInstanceOf(ShapeValidationError), { timeout: 10_000 })
    const err = result.current.error as ShapeValidationError
    expect(err.field).toBe('title')
    expect(err.rowKey).toContain(bad)
    expect(err.invalidRows).toBe(1)
    expect(result.current.data).toHaveLength(2) // the bad row is left out, the others stay

    await psql(`UPDATE todos SET title = 'fixed' WHERE id = '${bad}'`)
    await waitFor(() => expect(result.current.data).toHaveLength(3), { timeout: 10_000 })
    expect(result.current.error).toBeNull()
  })

  it('calls the token function again with refresh: true after a 401, then syncs', async () => {
    const calls: boolean[] = []
    const c = makeClient('alice', {
      // the first token has expired: the server answers 401
      token: ({ refresh }) => {
        calls.push(refresh)
        return refresh ? token('alice') : token('alice', -3600)
      },
    })
    const { result } = renderHook(() => useSyncedShape({ table: 'lists', where: "id = 'alice'" }), { wrapper: wrapper(c) })
    await waitFor(() => expect(result.current.status).toBe('up-to-date'), { timeout: 15_000 })
    expect(calls[0]).toBe(false)
    expect(calls).toContain(true)
    expect(result.current.data.map((r) => r.id)).toEqual(['alice'])
  })

  it('survives a token function that fails once (the token service was down)', async () => {
    let calls = 0
    const c = makeClient('alice', {
      token: () => {
        calls++
        if (calls === 1) throw new Error('token service unavailable')
        return token('alice')
      },
    })
    const { result } = renderHook(() => useSyncedShape({ table: 'lists', where: "id = 'shared'" }), { wrapper: wrapper(c) })
    await waitFor(() => expect(result.current.status).toBe('up-to-date'), { timeout: 15_000 })
    expect(calls).toBeGreaterThanOrEqual(2)
    expect(result.current.data.map((r) => r.id)).toEqual(['shared'])
  })

  it("takes a shape's own token: a shape-scoped one (the gatekeeper pattern) reads its shape", async () => {
    const scoped = (where: string) => () => token('alice', 3600, { table: 'todos', where })
    const c = makeClient('alice', { token: () => 'the client token is not used here' })
    const ok = renderHook(() => useSyncedShape({ table: 'todos', where: "list_id = 'shared'", token: scoped("list_id = 'shared'") }), {
      wrapper: wrapper(c),
    })
    await waitFor(() => expect(ok.result.current.status).toBe('up-to-date'), { timeout: 15_000 })
    expect(ok.result.current.data.length).toBeGreaterThan(0)
    expect(ok.result.current.data.every((t) => t.list_id === 'shared')).toBe(true)
    // the same token for another shape is refused (403): an error, no rows
    const bad = renderHook(() => useSyncedShape({ table: 'todos', where: "list_id = 'alice'", token: scoped("list_id = 'shared'") }), {
      wrapper: wrapper(c),
    })
    await waitFor(() => expect(bad.result.current.status).toBe('error'), { timeout: 15_000 })
    expect(bad.result.current.data).toEqual([])
  })

  it('reports a refused shape as an error (a token without a usable role)', async () => {
    const c = makeClient('alice', { token: () => 'not-a-jwt' })
    const { result } = renderHook(() => useSyncedShape({ table: 'lists' }), { wrapper: wrapper(c) })
    await waitFor(() => expect(result.current.status).toBe('error'), { timeout: 15_000 })
    expect(result.current.error).toBeTruthy()
    expect(result.current.data).toEqual([])
  })
})
