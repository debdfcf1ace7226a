// One real stack for the whole vitest run: a throwaway PostgreSQL 15 cluster
// with the extension and the demo's schema (demo/db/schema.sql: lists and
// todos under row-level security), and build/shapesyncd verifying HS256
// tokens. Started with the e2e suite's harness (tests/e2e/lib/stack.js),
// stopped at the end of the run.
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { TestProject } from 'vitest/node'
import { ROOT, SIDECAR_ROLE, startStack } from '../../../../tests/e2e/lib/stack.js'

export interface StackInfo {
  baseUrl: string
  dbUrl: string
  jwtSecret: string
}

declare module 'vitest' {
  export interface ProvidedContext {
    stack: StackInfo
  }
}

export default async function setup(project: TestProject) {
  const jwtSecret = randomBytes(32).toString('hex')
  const schema = readFileSync(join(ROOT, 'demo', 'db', 'schema.sql'), 'utf8')
  const stack = await startStack({
    insecure: false,
    sidecarArgs: ['--jwt-secret', jwtSecret],
    setupSql: `${schema}\nGRANT authenticated TO ${SIDECAR_ROLE};\n`,
  })
  const baseUrl = stack.baseUrl
  project.provide('stack', { baseUrl, dbUrl: stack.dbUrl, jwtSecret })
  return async () => {
    await stack.stop()
  }
}
