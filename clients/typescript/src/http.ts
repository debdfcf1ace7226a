// POST /v1/mutations: one request, with the bearer token, a token refresh on
// 401, and retries of 503 (the request is idempotent: mutation ids).
import { SyncHttpError } from './errors.js'
import type { Mutation, MutationResponse } from './types.js'

export interface MutationTransport {
  /** Absolute URL of the mutations endpoint (`…/v1/mutations`). */
  url: string
  /** The token to send; `refresh: true` after a 401. Null/undefined: no Authorization header. */
  getToken: (refresh: boolean) => Promise<string | null | undefined>
  fetch: typeof fetch
}

export interface PostOptions {
  /** `?allow_partial=true`: commit the mutations that applied, report the others. */
  allowPartial?: boolean
  /** The `Idempotency-Key` header (the whole request). */
  idempotencyKey?: string
  signal?: AbortSignal
  /** How many times a 503 is retried (default 3); network errors are not retried here. */
  retries?: number
  /** First retry delay in ms, doubled each time (default 200). */
  retryDelayMs?: number
}

export interface PostResult {
  /** 200 (the call completed: check `committed` and each status) or 400 (invalid input). */
  status: number
  body: MutationResponse
}

function isMutationResponse(b: unknown): b is MutationResponse {
  return typeof b === 'object' && b !== null && Array.isArray((b as MutationResponse).results)
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = () => { clearTimeout(t); reject(signal!.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
  })

/**
 * Send `mutations` in one request. Resolves with the mutation response (HTTP
 * 200 or 400); throws SyncHttpError for 401 (after one refresh), 403, 413 and
 * other answers without a mutation response, and the fetch error when the
 * network failed (offline: nothing is known about the request's fate, and
 * sending the same ids again is safe).
 */
export async function postMutations(t: MutationTransport, mutations: Mutation[], o: PostOptions = {}): Promise<PostResult> {
  const url = o.allowPartial ? `${t.url}${t.url.includes('?') ? '&' : '?'}allow_partial=true` : t.url
  const body = JSON.stringify({ mutations })
  let refreshed = false
  let retries = o.retries ?? 3
  let delay = o.retryDelayMs ?? 200
  for (;;) {
    const token = await t.getToken(refreshed)
    const headers: Record<string, string> = { 'Content-Type': 'application/json' }
    if (token) headers.Authorization = `Bearer ${token}`
    if (o.idempotencyKey) headers['Idempotency-Key'] = o.idempotencyKey
    const res = await t.fetch(url, { method: 'POST', headers, body, signal: o.signal })
    const text = await res.text()
    let parsed: unknown = text
    try {
      parsed = text === '' ? null : JSON.parse(text)
    } catch { /* not JSON: kept as text */ }
    if ((res.status === 200 || res.status === 400) && isMutationResponse(parsed)) {
      return { status: res.status, body: parsed }
    }
    if (res.status === 401 && !refreshed) {
      refreshed = true
      continue
    }
    if ((res.status === 503 || res.status === 502 || res.status === 504) && retries > 0) {
      retries--
      await sleep(delay, o.signal)
      delay *= 2
      continue
    }
    throw new SyncHttpError(res.status, parsed)
  }
}
