// The demo's entry: pick a user (?user=alice|bob), make the SyncClient for
// them, and render the app inside TanStack Query's and the kit's providers.
import { QueryClient, QueryClientProvider } from '@tanstack/react-query'
import { createSyncClient, SyncProvider, type SyncClient } from '@shapesync/react'
import { StrictMode } from 'react'
import { createRoot } from 'react-dom/client'
import { App } from './App'
import { instrument } from './instrument'
import './styles.css'

const params = new URLSearchParams(location.search)
if (params.has('instrument')) instrument()

const USERS = ['alice', 'bob']
const user = params.get('user')
const root = createRoot(document.getElementById('root')!)

if (!user || !USERS.includes(user)) {
  root.render(
    <div className="login">
      <h1>shapesync todos</h1>
      <p>Sign in as</p>
      {USERS.map((u) => (
        <a key={u} className="button" href={`?user=${u}`}>{u}</a>
      ))}
      <p className="hint">Open one user in a second window to see the other's edits live.</p>
    </div>,
  )
} else {
  // Tokens come from the demo server (signed with the sidecar's secret) and
  // are short-lived: the kit asks again after a 401. Fetched through the
  // client's offline-aware fetch, so an offline page waits instead of failing.
  const client: SyncClient = createSyncClient({
    url: location.origin,
    offline: { storageKey: user },
    token: async () => {
      const r = await client.fetch(`/api/token?user=${encodeURIComponent(user)}`)
      if (!r.ok) throw new Error(`token: HTTP ${r.status}`)
      return ((await r.json()) as { token: string }).token
    },
  })
  if (sessionStorage.getItem('demo-offline') === '1') client.setOffline(true)
  const queryClient = new QueryClient()
  ;(window as unknown as { __sync?: SyncClient }).__sync = client
  root.render(
    <StrictMode>
      <QueryClientProvider client={queryClient}>
        <SyncProvider client={client}>
          <App user={user} />
        </SyncProvider>
      </QueryClientProvider>
    </StrictMode>,
  )
  if ('serviceWorker' in navigator && import.meta.env.PROD) {
    navigator.serviceWorker.register('/sw.js').catch((e) => console.warn('service worker:', e))
  }
}
