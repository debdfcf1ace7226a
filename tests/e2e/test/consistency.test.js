// Invariants 1 and 2 under random concurrent writers, default settings (see
// lib/consistency.js; the -spill variants run it across tiny chunks and segments).
import { defineConsistencySuite } from '../lib/consistency.js';

defineConsistencySuite({ label: 'defaults, long-poll' });
