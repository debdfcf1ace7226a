// Optimistic state: the server's rows of a shape with the mutations that the
// server has not confirmed yet (queued, in flight, or applied but not yet seen
// on the stream) laid over them, in the order they were made.
import type { Mutation, Row } from './types.js'

/** The identity of a row: its primary-key values as text, in key order. */
export function keyOf(row: Row | undefined, pk: readonly string[]): string {
  if (!row) return ''
  return pk.map((c) => {
    const v = row[c]
    return v === undefined || v === null ? '\u0000' : String(v)
  }).join('\u0001')
}

/** The key columns of `row`, as an object. */
export function pickKey(row: Row, pk: readonly string[]): Row {
  const k: Row = {}
  for (const c of pk) k[c] = row[c]
  return k
}

/**
 * `rows` with `pending` applied in order. Rows keep their positions; inserted
 * rows are appended. `match` says whether a row belongs to the shape (an
 * optimistic insert or update that fails it is left out or taken out); without
 * it every insert is shown. Returns `rows` itself when nothing changes.
 */
export function applyOverlay<T extends Row>(
  rows: readonly T[],
  pending: readonly Mutation[],
  pk: readonly string[],
  match?: (row: T) => boolean,
): readonly T[] {
  if (pending.length === 0) return rows
  const out: (T | undefined)[] = rows.slice()
  const index = new Map<string, number>()
  out.forEach((r, i) => index.set(keyOf(r, pk), i))
  let changed = false
  for (const m of pending) {
    const k = keyOf({ ...(m.key ?? {}), ...(m.values ?? {}) }, pk)
    const at = index.get(k)
    const current = at === undefined ? undefined : out[at]
    if (m.op === 'delete') {
      if (at !== undefined && current) {
        out[at] = undefined
        index.delete(k)
        changed = true
      }
      continue
    }
    let next: T | undefined
    if (m.op === 'insert') {
      next = { ...(m.key ?? {}), ...(m.values ?? {}) } as T
    } else if (current) {
      next = { ...current, ...(m.values ?? {}) }
    } else if (m.base?.values && match) {
      // an update that may move a row into this shape: known only from its base
      next = { ...m.base.values, ...(m.key ?? {}), ...(m.values ?? {}) } as T
    }
    if (!next) continue
    const belongs = !match || match(next)
    if (at !== undefined && current) {
      out[at] = belongs ? next : undefined
      if (!belongs) index.delete(k)
      changed = true
    } else if (belongs) {
      index.set(k, out.length)
      out.push(next)
      changed = true
    }
  }
  return changed ? (out.filter((r) => r !== undefined) as T[]) : rows
}
