// Errors the kit surfaces. Each is a class, so callers can tell them apart with
// instanceof and read typed fields instead of parsing messages.
import type { MutationResult, Row } from './types.js'

/** A row of a shape that does not match its zod schema: names the row and the field. */
export class ShapeValidationError extends Error {
  readonly name = 'ShapeValidationError'
  constructor(
    /** The shape's table. */
    readonly table: string,
    /** The row's key in the stream (`"public"."todos"/"7"`), or its primary key as JSON. */
    readonly rowKey: string,
    /** The first failing field, as a dotted path (`done`, `tags.0`); '' for the row itself. */
    readonly field: string,
    /** zod's message for that field. */
    readonly issue: string,
    /** How many rows of the shape failed (they are left out of `data`). */
    readonly invalidRows: number,
  ) {
    super(`row ${rowKey} of ${table}: ${field || '(row)'}: ${issue}` +
      (invalidRows > 1 ? ` (and ${invalidRows - 1} more invalid rows)` : ''))
  }
}

/** The server refused a mutation (`rejected`): SQLSTATE, reason and, for bad input, the field. */
export class MutationRejectedError extends Error {
  readonly name = 'MutationRejectedError'
  readonly code?: string
  readonly field?: string
  constructor(readonly result: MutationResult) {
    super(result.reason ?? `mutation ${result.id} was rejected (${result.code ?? 'no code'})`)
    this.code = result.code
    this.field = result.field
  }
}

/** The row changed since the mutation's base version (`conflict`); see useConflicts(). */
export class MutationConflictError extends Error {
  readonly name = 'MutationConflictError'
  constructor(
    readonly result: MutationResult,
    /** The current server row (text values), null when it is gone. */
    readonly theirs: Row | null,
  ) {
    super(result.reason ?? `mutation ${result.id} conflicts with the server's row`)
  }
}

/** An HTTP answer that is not a mutation outcome: 401/403/413, or a 5xx after retries. */
export class SyncHttpError extends Error {
  readonly name = 'SyncHttpError'
  constructor(
    readonly status: number,
    readonly body: unknown,
    message?: string,
  ) {
    super(message ?? `HTTP ${status}${typeof body === 'object' && body && 'message' in body ? `: ${(body as { message: unknown }).message}` : ''}`)
  }
}

/** The mutation was dropped before the server decided it (discarded, or the client was closed). */
export class MutationDiscardedError extends Error {
  readonly name = 'MutationDiscardedError'
  constructor(readonly id: string, reason: string) {
    super(`mutation ${id} discarded: ${reason}`)
  }
}
