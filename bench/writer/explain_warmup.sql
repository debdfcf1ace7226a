-- Before explain_update.sql (same psql session): one write builds this
-- backend's shape cache; with :tracked, print its size and build time.
SET search_path = :"schema";
SET jit = off;
UPDATE t SET amount = amount WHERE id = 1;
\if :tracked
SELECT 'CACHE', filtered_shapes + whole_table_shapes, memory_bytes, last_build_us
  FROM shapesync.cache_stats() WHERE relid = 't'::regclass;
\endif
