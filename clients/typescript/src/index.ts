// @shapesync/react: React hooks for shapesync on top of @electric-sql/react,
// TanStack Query and zod. See README.md.
export { SyncClient, createSyncClient, uuid } from './client.js'
export type { SyncClientOptions, SyncState, SyncStatus, Conflict, Resolution } from './client.js'
export {
  SyncProvider,
  useSyncClient,
  useSyncedShape,
  useSyncedMutation,
  useSyncStatus,
  useConflicts,
} from './react.js'
export type {
  UseSyncedShapeOptions,
  SyncedShapeResult,
  UseSyncedMutationOptions,
  SyncedMutation,
  MutationInput,
  ConflictWithActions,
} from './react.js'
export { postMutations } from './http.js'
export type { MutationTransport, PostOptions, PostResult } from './http.js'
export { applyOverlay, keyOf, pickKey } from './overlay.js'
export { openIdbOutbox, memoryOutbox } from './outbox.js'
export type { OutboxStore, QueuedMutation } from './outbox.js'
export {
  ShapeValidationError,
  MutationRejectedError,
  MutationConflictError,
  MutationDiscardedError,
  SyncHttpError,
} from './errors.js'
export type { Mutation, MutationOp, MutationResult, MutationResponse, MutationStatus, Row, TokenFunction } from './types.js'
