-- Trigger CPU per changed row: EXPLAIN (ANALYZE) of an UPDATE of rows
-- 1..:nrows, rolled back.  Run after explain_warmup.sql in the same session,
-- as many times as wanted (psql -f warmup -f update -f update ...).  The
-- driver reads, from psql -At output, "Trigger <name>: time=... calls=...",
-- "Execution Time: ..." and the SCHED line: the backend's own time on CPU and
-- waiting for a CPU during the statement (/proc/self/schedstat, in ns), which
-- tells how much of the wall-clock times above other load took.
SELECT split_part(s, ' ', 1) AS cpu0, split_part(s, ' ', 2) AS wait0
  FROM pg_read_file('/proc/self/schedstat') s \gset
BEGIN;
EXPLAIN (ANALYZE, COSTS OFF) UPDATE t SET amount = amount + 1 WHERE id <= :nrows;
ROLLBACK;
SELECT 'SCHED', split_part(s, ' ', 1)::bigint - :cpu0, split_part(s, ' ', 2)::bigint - :wait0
  FROM pg_read_file('/proc/self/schedstat') s;
