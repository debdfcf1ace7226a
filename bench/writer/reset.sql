-- Between runs: back to :nrows rows, empty logs, no dead tuples, clean buffers.
SET search_path = :"schema";
SET session_replication_role = replica;	-- no capture triggers for the clean-up
DELETE FROM t WHERE id > :nrows;
RESET session_replication_role;
TRUNCATE shapesync.changes;
\if :pgq
SELECT format('TRUNCATE %s', queue_data_pfx) FROM pgq.queue \gexec
\endif
VACUUM t;
-- fresh statistics for the ticker's plans (tick() finds the last tick with
-- ORDER BY tick_id DESC LIMIT 1; planned on a tiny table and never
-- re-analysed, that is a seq scan + sort whose cost grows with every tick)
ANALYZE shapesync.ticks;
CHECKPOINT;
