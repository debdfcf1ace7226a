// Timings for the browser tests and the benchmark (only with ?instrument=1):
// clicks on todo controls, every change of a todo's rendered state (a
// MutationObserver: the DOM as React committed it), and each POST
// /v1/mutations. Times are performance.timeOrigin + performance.now(): one
// clock for every page of the browser.
export interface DemoEvent {
  type: 'click' | 'render' | 'post'
  t: number
  id?: string
  action?: string
  title?: string
  done?: string
  /** post: mutation ids, answer time, status */
  ids?: string[]
  end?: number
  status?: number
}

declare global {
  interface Window {
    __demo?: { events: DemoEvent[] }
  }
}

const now = () => performance.timeOrigin + performance.now()

export function instrument() {
  const events: DemoEvent[] = []
  window.__demo = { events }

  document.addEventListener('click', (e) => {
    const el = (e.target as HTMLElement | null)?.closest<HTMLElement>('[data-action]')
    const li = el?.closest<HTMLElement>('[data-testid="todo"]')
    if (el) events.push({ type: 'click', t: now(), action: el.dataset.action, id: li?.dataset.id })
  }, true)

  const seen = new Map<string, string>()
  const record = (li: HTMLElement) => {
    const id = li.dataset.id
    if (!id) return
    const state = `${li.dataset.title}\u0000${li.dataset.done}`
    if (seen.get(id) === state) return
    seen.set(id, state)
    events.push({ type: 'render', t: now(), id, title: li.dataset.title, done: li.dataset.done })
  }
  new MutationObserver((records) => {
    const t = now()
    for (const r of records) {
      const targets = r.type === 'attributes' ? [r.target] : [...r.addedNodes]
      for (const n of targets) {
        if (!(n instanceof HTMLElement)) continue
        const lis = n.matches('[data-testid="todo"]') ? [n] : [...n.querySelectorAll<HTMLElement>('[data-testid="todo"]')]
        for (const li of lis) record(li)
      }
    }
    void t
  }).observe(document.documentElement, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-title', 'data-done'] })

  const realFetch = window.fetch.bind(window)
  window.fetch = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url
    if (init?.method !== 'POST' || !url.includes('/v1/mutations')) return realFetch(input, init)
    const ev: DemoEvent = { type: 'post', t: now() }
    try {
      ev.ids = JSON.parse(String(init.body)).mutations.map((m: { id: string }) => m.id)
    } catch { /* not ours */ }
    events.push(ev)
    const res = await realFetch(input, init)
    ev.end = now()
    ev.status = res.status
    return res
  }
}
