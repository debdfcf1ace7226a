// Invariants 1 and 2 over SSE with every path crossing the chunk and segment
// boundaries many times: 1 500-byte chunks, one closed chunk kept in memory,
// transactions larger than a chunk (issue 8: an SSE stream skipped the rows
// of a chunk that went to a segment file before it read them).
import { defineConsistencySuite } from '../lib/consistency.js';

defineConsistencySuite({
  label: 'SSE, 1500 B chunks, 1 chunk in memory',
  sidecarArgs: ['--chunk-bytes', '1500', '--memory-chunks', '1'],
  stream: { liveSse: true },
  bulk: true,
  paceEvery: 2,
  minBankViews: 2, // 1500-byte chunks: many requests per catch-up, fewer up-to-dates on a loaded machine
});
