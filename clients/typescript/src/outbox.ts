// Where mutations wait until the server has decided them: IndexedDB (through
// idb) in a browser, so offline edits survive a reload, or memory. Beside
// them, the last rows of each shape, so a page reloaded offline shows them.
//
// One database per storage key (one per user: a queue is replayed with the
// token of the user who made it, never another's). One object store,
// `mutations`, keyed by `seq` (IndexedDB's key generator: the order in which
// mutations were made, also across tabs); a replay sends them in that order
// with their original ids. Object store `shapes`: rows and versions of each
// shape at its last up-to-date, keyed by the shape's definition.
import { openDB, type IDBPDatabase } from 'idb'
import type { Mutation } from './types.js'

/** A mutation waiting in the outbox. */
export interface QueuedMutation {
  /** Order of creation: assigned by the store, strictly increasing (IndexedDB's key generator). */
  seq: number
  mutation: Mutation
  /** Date.now() when it was made. */
  createdAt: number
  /** base.version may be advanced to the version of an earlier own write of the row (SyncClient). */
  autoBase?: boolean
}

export interface OutboxStore {
  /** Every queued mutation, in `seq` order. */
  load(): Promise<QueuedMutation[]>
  /** Store a new mutation; resolves with its `seq`. */
  add(entry: Omit<QueuedMutation, 'seq'>): Promise<number>
  remove(seqs: number[]): Promise<void>
  /** The rows a shape had at its last up-to-date (kept by saveShape). */
  loadShape(key: string): Promise<CachedRow[] | undefined>
  saveShape(key: string, rows: CachedRow[]): Promise<void>
  close(): void
}

/** A row of a shape as kept for offline reloads: the stream's key, its value and version. */
export interface CachedRow {
  key: string
  value: Record<string, unknown>
  version?: string
}

const STORE = 'mutations'
const SHAPES = 'shapes'

/** The outbox in IndexedDB database `shapesync-outbox:<storageKey>`. */
export async function openIdbOutbox(storageKey: string): Promise<OutboxStore> {
  const db: IDBPDatabase = await openDB(`shapesync-outbox:${storageKey}`, 2, {
    upgrade(d) {
      if (!d.objectStoreNames.contains(STORE)) d.createObjectStore(STORE, { keyPath: 'seq', autoIncrement: true })
      if (!d.objectStoreNames.contains(SHAPES)) d.createObjectStore(SHAPES)
    },
  })
  return {
    async load() {
      return (await db.getAll(STORE)) as QueuedMutation[]
    },
    async add(entry) {
      return (await db.add(STORE, entry as QueuedMutation)) as number
    },
    async remove(seqs) {
      if (seqs.length === 0) return
      const tx = db.transaction(STORE, 'readwrite')
      await Promise.all([...seqs.map((s) => tx.store.delete(s)), tx.done])
    },
    async loadShape(key) {
      return (await db.get(SHAPES, key)) as CachedRow[] | undefined
    },
    async saveShape(key, rows) {
      await db.put(SHAPES, rows, key)
    },
    close() {
      db.close()
    },
  }
}

/** An outbox that lives as long as the page (no offline persistence). */
export function memoryOutbox(): OutboxStore {
  const rows = new Map<number, QueuedMutation>()
  let next = 1
  return {
    async load() {
      return [...rows.values()].sort((a, b) => a.seq - b.seq)
    },
    async add(entry) {
      const seq = next++
      rows.set(seq, { ...structuredClone(entry), seq })
      return seq
    },
    async remove(seqs) {
      for (const s of seqs) rows.delete(s)
    },
    async loadShape() {
      return undefined
    },
    async saveShape() {},
    close() {},
  }
}
