// The wire contract of POST /v1/mutations (docs/mutations.md): what a client
// sends, and the JSON that shapesync.apply_mutations() answers with.

/** A row as the kit sees it: column name → value (parsed by the shape stream). */
export type Row = Record<string, unknown>

export type MutationOp = 'insert' | 'update' | 'delete'

/** One mutation of a POST /v1/mutations body. */
export interface Mutation {
  /** Client mutation id (a UUID): the unit of idempotency; a replay uses the same id. */
  id: string
  /** `table` or `schema.table`, SQL identifier syntax. */
  table: string
  op: MutationOp
  /** Every primary-key column (update and delete; optional for insert). */
  key?: Row
  /** insert: the row; update: the changed columns. */
  values?: Row
  /** The row the client based the mutation on: its version (a decimal string) and values. */
  base?: { version?: string | null; values?: Row }
}

export type MutationStatus = 'applied' | 'conflict' | 'rejected' | 'aborted'

/** The outcome of one mutation (`results[i]` of the response, in request order). */
export interface MutationResult {
  id: string
  status: MutationStatus
  /** applied: the row's new version (insert/update). */
  version?: string | null
  /** applied: the transaction's 32-bit xid, as in the shape stream's `txids` header. */
  txid?: number | null
  /** conflict: the current server row (text values), or null when it is gone or hidden. */
  row?: Record<string, string | null> | null
  /** conflict: the version of `row`. */
  server_version?: string | null
  reason?: string
  /** rejected: the SQLSTATE. */
  code?: string
  /** rejected as bad input: which field (`values.done`, `key.id`, …). */
  field?: string
  detail?: string
  hint?: string
  invalid?: boolean
  replayed?: boolean
  resolved_by?: string
}

/** The body of a POST /v1/mutations answer (200 and 400 alike). */
export interface MutationResponse {
  txid: number | null
  committed: boolean
  invalid: boolean
  replayed?: boolean
  results: MutationResult[]
}

/**
 * Returns the bearer token to send. Called with `refresh: true` after the
 * server answered 401 (expired or revoked token): fetch a new one then.
 */
export type TokenFunction = (opts: { refresh: boolean }) => string | null | undefined | Promise<string | null | undefined>
