// jsdom, except that AbortController/AbortSignal stay Node's own: the kit
// passes its signals to fetch, and Node's fetch (undici) accepts only Node's
// AbortSignal. Everything else (document, window, IndexedDB via
// fake-indexeddb, events) is jsdom's.
import type { Environment } from 'vitest/environments'
import { builtinEnvironments } from 'vitest/environments'

const jsdom = builtinEnvironments.jsdom

export default <Environment>{
  name: 'jsdom-node-abort',
  transformMode: 'web',
  async setup(global, options) {
    const { AbortController, AbortSignal } = global
    const env = await jsdom.setup(global, options)
    global.AbortController = AbortController
    global.AbortSignal = AbortSignal
    return env
  },
}
