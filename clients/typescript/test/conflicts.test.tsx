// useConflicts against the real sidecar: two users edit the same row from
// the same version; the one who comes second (offline, then back) gets a
// conflict with mine / base / theirs, and each way of resolving it reaches the
// database and the other user's shape.
import { act, renderHook, waitFor } from '@testing-library/react'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { MutationConflictError, useConflicts, useSyncedMutation, useSyncedShape, useSyncStatus, type SyncClient } from '../src/index.js'
import { makeClient, psql, uuid, wrapper } from './support/helpers.js'

const Todo = z.object({ id: z.string(), list_id: z.string(), title: z.string(), done: z.boolean(), position: z.number() })

function renderUser(client: SyncClient, list: string) {
  const h = renderHook(
    () => ({
      shape: useSyncedShape({ table: 'todos', where: `list_id = '${list}'`, schema: Todo }),
      mutation: useSyncedMutation({ table: 'todos', schema: Todo }),
      conflicts: useConflicts(),
      status: useSyncStatus(),
    }),
    { wrapper: wrapper(client) },
  )
  return Object.assign(h, { client })
}

/** A shared list with one todo, and alice and bob both showing it. */
async function twoUsers(title = 'original') {
  const list = `c-${uuid().slice(0, 8)}`
  const id = uuid()
  await psql(`INSERT INTO lists VALUES ('${list}', 'conflicts', NULL);
    INSERT INTO todos (id, list_id, title, position) VALUES ('${id}', '${list}', '${title}', 1);`)
  const alice = renderUser(makeClient('alice'), list)
  const bob = renderUser(makeClient('bob'), list)
  for (const u of [alice, bob]) await waitFor(() => expect(u.result.current.shape.data).toHaveLength(1), { timeout: 15_000 })
  return { list, id, alice, bob }
}

describe('useConflicts', () => {
  it("reports mine / base / theirs, and resolve('mine') writes mine on top of theirs", async () => {
    const { id, alice, bob } = await twoUsers()
    // alice goes offline and edits; bob edits the same column meanwhile
    const aliceC = alice.client
    act(() => aliceC.setOffline(true))
    let mine!: Promise<unknown>
    act(() => {
      mine = alice.result.current.mutation.update({ id }, { title: 'alice was here' })
    })
    await act(() => bob.result.current.mutation.update({ id }, { title: 'bob was here' }))
    expect(await psql(`SELECT title FROM todos WHERE id = '${id}'`)).toBe('bob was here')
    expect(alice.result.current.shape.data[0]!.title).toBe('alice was here') // optimistic, offline

    act(() => aliceC.setOffline(false))
    await expect(mine).rejects.toBeInstanceOf(MutationConflictError)
    await waitFor(() => expect(alice.result.current.conflicts).toHaveLength(1), { timeout: 10_000 })
    const c = alice.result.current.conflicts[0]!
    expect(c.op).toBe('update')
    expect(c.key).toEqual({ id })
    expect(c.mine).toEqual({ title: 'alice was here' })
    expect(c.base).toMatchObject({ title: 'original' })
    expect(c.theirs).toMatchObject({ title: 'bob was here', done: false })
    expect(typeof c.serverVersion).toBe('string')
    // alice's optimistic edit was taken back: she sees bob's row
    await waitFor(() => expect(alice.result.current.shape.data[0]!.title).toBe('bob was here'), { timeout: 10_000 })

    await act(async () => {
      const r = await alice.result.current.conflicts[0]!.resolve('mine')
      expect(r?.status).toBe('applied')
    })
    expect(alice.result.current.conflicts).toHaveLength(0)
    expect(await psql(`SELECT title FROM todos WHERE id = '${id}'`)).toBe('alice was here')
    await waitFor(() => expect(bob.result.current.shape.data[0]!.title).toBe('alice was here'), { timeout: 10_000 })
  })

  it("resolve('theirs') sends nothing; a merged row is written as given", async () => {
    const { id, alice, bob } = await twoUsers()
    const aliceC = alice.client
    for (const round of ['theirs', 'merged'] as const) {
      act(() => aliceC.setOffline(true))
      act(() => {
        void alice.result.current.mutation.update({ id }, { title: `alice ${round}`, done: true })
      })
      await act(() => bob.result.current.mutation.update({ id }, { title: `bob ${round}` }))
      act(() => aliceC.setOffline(false))
      await waitFor(() => expect(alice.result.current.conflicts).toHaveLength(1), { timeout: 10_000 })
      const before = await psql(`SELECT xmin FROM todos WHERE id = '${id}'`)
      if (round === 'theirs') {
        await act(async () => {
          expect(await alice.result.current.conflicts[0]!.resolve('theirs')).toBeNull()
        })
        expect(await psql(`SELECT xmin FROM todos WHERE id = '${id}'`)).toBe(before)
        await waitFor(() => expect(alice.result.current.shape.data[0]).toMatchObject({ title: 'bob theirs', done: false }))
      } else {
        const c = alice.result.current.conflicts[0]!
        await act(async () => {
          await c.resolve({ title: `${c.theirs!.title} + ${c.mine!.title}`, done: true })
        })
        expect(await psql(`SELECT title || ' ' || done FROM todos WHERE id = '${id}'`)).toBe('bob merged + alice merged true')
        await waitFor(() => expect(bob.result.current.shape.data[0]).toMatchObject({ title: 'bob merged + alice merged', done: true }), { timeout: 10_000 })
      }
      expect(alice.result.current.conflicts).toHaveLength(0)
    }
  })

  it("an edit of a row deleted meanwhile: theirs is null, resolve('mine') writes the row again", async () => {
    const { id, list, alice, bob } = await twoUsers('to be deleted')
    const aliceC = alice.client
    act(() => aliceC.setOffline(true))
    act(() => {
      void alice.result.current.mutation.update({ id }, { done: true })
    })
    await act(() => bob.result.current.mutation.remove({ id }))
    act(() => aliceC.setOffline(false))
    await waitFor(() => expect(alice.result.current.conflicts).toHaveLength(1), { timeout: 10_000 })
    expect(alice.result.current.conflicts[0]!.theirs).toBeNull()
    await act(async () => {
      await alice.result.current.conflicts[0]!.resolve('mine')
    })
    expect(await psql(`SELECT title || ' ' || done || ' ' || list_id FROM todos WHERE id = '${id}'`)).toBe(`to be deleted true ${list}`)
    await waitFor(() => expect(bob.result.current.shape.data).toHaveLength(1), { timeout: 10_000 })
  })

  it('several offline updates of one row are one conflict, resolved with all of them', async () => {
    const { id, alice, bob } = await twoUsers()
    act(() => alice.client.setOffline(true))
    act(() => {
      void alice.result.current.mutation.update({ id }, { title: 'alice 1' })
      void alice.result.current.mutation.update({ id }, { done: true })
      void alice.result.current.mutation.update({ id }, { title: 'alice 2' })
    })
    await act(() => bob.result.current.mutation.update({ id }, { title: 'bob' }))
    act(() => alice.client.setOffline(false))
    await waitFor(() => expect(alice.result.current.status.pendingWrites).toBe(0), { timeout: 10_000 })
    expect(alice.result.current.conflicts).toHaveLength(1)
    const c = alice.result.current.conflicts[0]!
    expect(c.ids).toHaveLength(3)
    expect(c.mine).toEqual({ title: 'alice 2', done: true })
    await act(async () => {
      await c.resolve('mine')
    })
    expect(await psql(`SELECT title || ' ' || done FROM todos WHERE id = '${id}'`)).toBe('alice 2 true')
    await waitFor(() => expect(bob.result.current.shape.data[0]).toMatchObject({ title: 'alice 2', done: true }), { timeout: 10_000 })
  })
})
