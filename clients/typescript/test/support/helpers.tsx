// What the tests share: tokens for the demo's users, psql, SyncClients that
// are closed after each test, and a React wrapper with the providers.
import { spawn } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { QueryClient, QueryClientProvider } from '@tanstack/react-query'
import type { ReactNode } from 'react'
import { afterEach, inject } from 'vitest'
import { createSyncClient, SyncProvider, type SyncClient, type SyncClientOptions } from '../../src/index.js'

export const stack = () => inject('stack')

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')

/**
 * An HS256 token for `sub` (role authenticated) that expires in `ttlS` seconds
 * (negative: already expired); with `shape`, a shape-scoped token (docs/auth.md).
 */
export function token(sub: string, ttlS = 3600, shape?: Record<string, unknown>): string {
  const claims = { sub, role: 'authenticated', exp: Math.floor(Date.now() / 1000) + ttlS, ...(shape ? { shape } : {}) }
  const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`
  return `${input}.${createHmac('sha256', stack().jwtSecret).update(input).digest('base64url')}`
}

/** Run SQL as the superuser; resolves with psql's unaligned, tuples-only output. */
export function psql(sql: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', stack().dbUrl, '-f', '-'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (err += d))
    p.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`psql exited ${code}: ${err}`))))
    p.stdin.end(sql)
  })
}

const clients: SyncClient[] = []
afterEach(() => {
  for (const c of clients.splice(0)) c.close()
})

/** A SyncClient for user `sub` against the test stack, closed after the test. */
export function makeClient(sub: string, o: Partial<SyncClientOptions> = {}): SyncClient {
  const c = createSyncClient({
    url: stack().baseUrl,
    token: () => token(sub),
    offline: { storageKey: `${sub}-${Math.random().toString(36).slice(2)}` },
    ...o,
  })
  clients.push(c)
  return c
}

/** Providers for renderHook: TanStack Query and the SyncClient. */
export function wrapper(client: SyncClient) {
  const qc = new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } })
  return ({ children }: { children: ReactNode }) => (
    <QueryClientProvider client={qc}>
      <SyncProvider client={client}>{children}</SyncProvider>
    </QueryClientProvider>
  )
}

/** A fetch that records every request (method, URL, status) and delegates to the global one. */
export function recordingFetch() {
  const log: { method: string; url: string; status?: number; error?: string }[] = []
  const f: typeof fetch = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url
    const entry: (typeof log)[number] = { method: init?.method ?? 'GET', url }
    log.push(entry)
    try {
      const r = await fetch(input, init)
      entry.status = r.status
      return r
    } catch (e) {
      entry.error = String((e as Error)?.name ?? e)
      throw e
    }
  }
  return { fetch: f, log }
}

export const uuid = () => crypto.randomUUID()
