// Per test file: IndexedDB (fake-indexeddb: jsdom has none), and React
// Testing Library's cleanup after each test (vitest runs without globals).
import 'fake-indexeddb/auto'
import { cleanup } from '@testing-library/react'
import { afterEach } from 'vitest'

afterEach(() => {
  cleanup()
})
