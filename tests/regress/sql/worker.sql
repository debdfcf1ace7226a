-- the ticker background worker (shared_preload_libraries = shapesync,
-- shapesync.database lists contrib_regression)
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN shapesync.worker_pid() IS NOT NULL;
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT shapesync.worker_pid() IS NOT NULL AS worker_running;
SELECT backend_type FROM pg_stat_activity WHERE pid = shapesync.worker_pid();
SELECT worker_pid = shapesync.worker_pid() AS same_pid, ticker_mode FROM shapesync.sync_status;

-- a commit rings the doorbell: the worker ticks without tick() being called
CREATE TABLE bell (id int PRIMARY KEY);
SELECT shapesync.track('bell');
-- a whole-table shape: the trigger logs every change of the table
SELECT created FROM shapesync.get_or_create_shape('bell', NULL, NULL);
SELECT max(tick_id) AS before FROM shapesync.ticks \gset
INSERT INTO bell VALUES (1);
SET my.before = :'before';
DO $$
DECLARE
    found boolean := false;
BEGIN
    FOR i IN 1..100 LOOP
        SELECT EXISTS (SELECT 1 FROM shapesync.ticks t CROSS JOIN LATERAL shapesync.batch(t.tick_id) b
                        WHERE t.tick_id > current_setting('my.before')::bigint
                          AND b.relid = 'bell'::regclass AND b.new_values = '{1}')
          INTO found;
        EXIT WHEN found;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RAISE NOTICE 'the worker ticked the change: %', found;
END
$$;
RESET my.before;

-- status after the tick
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN (SELECT unticked_changes = 0 FROM shapesync.sync_status);
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SELECT last_tick_id > :before AS newer_tick, last_tick_time IS NOT NULL AS has_time,
       unticked_changes, change_log_rows > 0 AS has_rows, oldest_unticked_age
  FROM shapesync.sync_status;

DROP TABLE bell;

-- a database the ticker does not serve: no worker, the sidecar ticks
\set regress_db :DBNAME
CREATE DATABASE shapesync_unserved;
\c shapesync_unserved
CREATE EXTENSION shapesync;
SELECT shapesync.worker_pid() IS NULL AS no_worker, ticker_mode FROM shapesync.sync_status;
\c :regress_db
DROP DATABASE shapesync_unserved;
