import { defineConfig } from 'vitest/config'

// The hooks run in jsdom and talk to a real shapesyncd + PostgreSQL, started
// once for the run by test/support/global-setup.ts (tests/e2e/lib/stack.js).
// Files run one at a time: they share that stack, and the machine has 2 cores.
export default defineConfig({
  test: {
    environment: './test/support/jsdom-node-abort.ts',
    globalSetup: ['./test/support/global-setup.ts'],
    setupFiles: ['./test/support/setup.ts'],
    include: ['test/**/*.test.{ts,tsx}'],
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
})
