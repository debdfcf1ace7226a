// Invariants 1 and 2 with every path crossing the chunk and segment boundaries
// many times: 1 500-byte chunks, no closed chunk kept in memory (each one goes to
// a segment file as soon as it closes), transactions larger than a chunk,
// long-poll clients (issue 8: a waiting long-poll lost the rows of a chunk
// that went to a segment file before it read them).
import { defineConsistencySuite } from '../lib/consistency.js';

defineConsistencySuite({
  label: 'long-poll, 1500 B chunks, 0 chunks in memory',
  sidecarArgs: ['--chunk-bytes', '1500', '--memory-chunks', '0'],
  bulk: true,
  paceEvery: 2,
  minBankViews: 2, // 1500-byte chunks: many requests per catch-up, fewer up-to-dates on a loaded machine
});
