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

-- Idle, the ticker answers a ring at once; under load (its last tick covered
-- more than one commit, or more than one rang while it ran) the next tick
-- waits until shapesync.tick_min_interval_ms after the previous one. A long
-- interval makes both visible.
CREATE FUNCTION pg_temp.wait_ticked(v int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1000 LOOP
        IF EXISTS (SELECT 1 FROM shapesync.ticks t CROSS JOIN LATERAL shapesync.batch(t.tick_id) b
                    WHERE b.relid = 'bell'::regclass AND b.new_values = ARRAY[v::text]) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    RETURN false;
END
$$;
ALTER SYSTEM SET shapesync.tick_min_interval_ms = 1000;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
INSERT INTO bell VALUES (2);
SELECT pg_temp.wait_ticked(2);
-- one commit soon after the previous tick, nothing else running: no wait
SELECT clock_timestamp() AS t0 \gset
INSERT INTO bell VALUES (3);
SELECT pg_temp.wait_ticked(3), clock_timestamp() - :'t0'::timestamptz < interval '500 ms' AS ticked_at_once;
-- one more commit during a tick is no load: hold the tickers' lock
-- (shapesync.tick()) so that row 5 commits while the ticker is inside the
-- tick that row 4 rang for; the tick of row 6 is not delayed
SELECT pg_advisory_lock(7303830626947563123);
INSERT INTO bell VALUES (4);
SELECT pg_sleep(0.2);
INSERT INTO bell VALUES (5);
SELECT pg_advisory_unlock(7303830626947563123);
SELECT pg_temp.wait_ticked(5);
SELECT clock_timestamp() AS t0 \gset
INSERT INTO bell VALUES (6);
SELECT pg_temp.wait_ticked(6), clock_timestamp() - :'t0'::timestamptz < interval '500 ms' AS ticked_at_once;
-- two are: rows 8 and 9 commit during the tick of row 7, so the tick of
-- row 10 is coalesced (it waits for the rest of the interval)
SELECT pg_advisory_lock(7303830626947563123);
INSERT INTO bell VALUES (7);
SELECT pg_sleep(0.2);
INSERT INTO bell VALUES (8);
INSERT INTO bell VALUES (9);
SELECT pg_advisory_unlock(7303830626947563123);
SELECT pg_temp.wait_ticked(9);
SELECT clock_timestamp() AS t0 \gset
INSERT INTO bell VALUES (10);
SELECT pg_temp.wait_ticked(10), clock_timestamp() - :'t0'::timestamptz >= interval '800 ms' AS coalesced;
ALTER SYSTEM RESET shapesync.tick_min_interval_ms;
SELECT pg_reload_conf();

-- Sustained load: commits back to back, so every tick covers several.
-- The wait between ticks doubles from tick_min_interval_ms (100 ms here)
-- up to tick_max_interval_ms (400 ms): gaps near 400 ms appear. With the
-- maximum at the minimum the gaps stay near 100 ms.
CREATE PROCEDURE pg_temp.steady_writes(first int, seconds float8) LANGUAGE plpgsql AS $$
DECLARE
    i int := first;
    stop timestamptz := clock_timestamp() + make_interval(secs => seconds);
BEGIN
    WHILE clock_timestamp() < stop LOOP
        INSERT INTO bell VALUES (i);
        COMMIT;
        i := i + 1;
    END LOOP;
END
$$;
CREATE FUNCTION pg_temp.tick_gaps_ms(since timestamptz) RETURNS TABLE (longest float8, median float8)
LANGUAGE sql AS $$
    SELECT max(g), percentile_cont(0.5) WITHIN GROUP (ORDER BY g)
      FROM (SELECT extract(epoch FROM t.tick_time - lag(t.tick_time) OVER (ORDER BY t.tick_id)) * 1000 AS g
              FROM shapesync.ticks t WHERE t.tick_time >= since) x
     WHERE g IS NOT NULL
$$;
ALTER SYSTEM SET shapesync.tick_min_interval_ms = 100;
ALTER SYSTEM SET shapesync.tick_max_interval_ms = 400;
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SELECT clock_timestamp() AS t0 \gset
CALL pg_temp.steady_writes(1000000, 2);
SELECT longest >= 350 AS backed_off, longest < 1500 AS bounded FROM pg_temp.tick_gaps_ms(:'t0');
ALTER SYSTEM SET shapesync.tick_max_interval_ms = 100;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT clock_timestamp() AS t0 \gset
CALL pg_temp.steady_writes(2000000, 1.5);
SELECT median < 250 AS stays_at_minimum FROM pg_temp.tick_gaps_ms(:'t0');
ALTER SYSTEM RESET shapesync.tick_min_interval_ms;
ALTER SYSTEM RESET shapesync.tick_max_interval_ms;
SELECT pg_reload_conf();

DROP TABLE bell;

-- a database the ticker does not serve: no worker, the sidecar ticks
\set regress_db :DBNAME
CREATE DATABASE shapesync_unserved;
\c shapesync_unserved
CREATE EXTENSION shapesync;
SELECT shapesync.worker_pid() IS NULL AS no_worker, ticker_mode FROM shapesync.sync_status;
\c :regress_db
DROP DATABASE shapesync_unserved;
