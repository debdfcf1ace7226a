-- change-log retention: rotation over three tables, consumers, horizon.
-- Runs in a database of its own, where no ticker worker runs, so every
-- tick and every maintenance run is this script's.
SELECT current_database() AS regress_db \gset
CREATE DATABASE shapesync_retention;
\c shapesync_retention
SET client_min_messages = warning;
CREATE EXTENSION shapesync;
CREATE TABLE ret (id int PRIMARY KEY, v text);
SELECT shapesync.track('ret');
SELECT created FROM shapesync.get_or_create_shape('ret', NULL, NULL);

CREATE FUNCTION pg_temp.log_rows() RETURNS TABLE (tbl regclass, n bigint)
LANGUAGE sql AS $$
    SELECT c.tableoid::regclass, count(*) FROM shapesync.changes c GROUP BY 1 ORDER BY 1
$$;
CREATE FUNCTION pg_temp.try_batch(t bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT count(*) FROM shapesync.batch(t))::text || ' changes';
EXCEPTION WHEN SQLSTATE 'SS001' THEN
    RETURN 'SS001: ' || SQLERRM;
END
$$;

-- the settings, as maintain() reads them
SELECT shapesync.setting_interval('shapesync.log_retention', '5 min') AS retention,
       shapesync.setting_interval('shapesync.consumer_timeout', '5 min') AS consumer_timeout,
       shapesync.setting_interval('shapesync.no_such_setting', '5 min') AS fallback;

-- writers insert into the current table; the parent reads all three
SELECT table_name, is_current FROM shapesync.log_tables ORDER BY table_no;
INSERT INTO ret VALUES (1, 'a'), (2, 'b');
SELECT * FROM pg_temp.log_rows();
SELECT shapesync.tick(true) AS t1 \gset

-- within the retention time nothing rotates
SELECT dropped_consumers, rotated, truncated_table, horizon_tick, deleted_ticks, waiting_for
  FROM shapesync.maintain('1 hour', '1 hour');

-- a consumer that has read up to tick 1, before those rows
SELECT shapesync.consumer_report('sidecar-a', 1) AS horizon;

-- retention 0: the next table (empty) is truncated and becomes current;
-- a new transaction writes there
SELECT rotated, truncated_table, horizon_tick FROM shapesync.maintain('0', '1 hour');
SELECT table_name FROM shapesync.log_tables WHERE is_current;
INSERT INTO ret VALUES (3, 'c');
SELECT * FROM pg_temp.log_rows();
SELECT shapesync.tick(true) AS t2 \gset
SELECT rotated, truncated_table FROM shapesync.maintain('0', '1 hour');
UPDATE ret SET v = 'dd' WHERE id = 3;
SELECT shapesync.tick(true) AS t3 \gset
SELECT * FROM pg_temp.log_rows();

-- next would be changes_0, whose rows sidecar-a has not read: kept
SELECT rotated, truncated_table, waiting_for FROM shapesync.maintain('0', '1 hour');
SELECT pg_temp.try_batch(:t1);

-- once it has read them, changes_0 is truncated; the horizon is the first
-- tick that saw all of its rows, older ticks are deleted
SELECT shapesync.consumer_report('sidecar-a', :t1) AS horizon;
SELECT rotated, truncated_table, horizon_tick = :t1 AS horizon_is_t1, deleted_ticks
  FROM shapesync.maintain('0', '1 hour');
SELECT * FROM pg_temp.log_rows();
SELECT min(tick_id) = :t1 AS oldest_tick_is_horizon FROM shapesync.ticks;

-- batches up to the horizon are incomplete: SQLSTATE SS001, never a silent gap
SELECT pg_temp.try_batch(:t1);
SELECT pg_temp.try_batch(:t2), pg_temp.try_batch(:t3);
-- a consumer learns the horizon when it reports
SELECT shapesync.consumer_report('sidecar-a', :t3) = :t1 AS horizon_reported;

-- a consumer not seen for consumer_timeout is dropped and logged
SELECT shapesync.consumer_report('sidecar-b', :t2) = :t1 AS horizon_reported;
UPDATE shapesync.consumers SET last_seen = now() - interval '2 hours'
 WHERE consumer_name = 'sidecar-b';
SELECT consumer_name, last_tick = :t2 AS at_t2, ticks_behind, stale
  FROM shapesync.consumer_status ORDER BY 1;
SELECT dropped_consumers, rotated FROM shapesync.maintain('1 day', '1 hour');
SELECT consumer_name FROM shapesync.consumers ORDER BY 1;
SELECT shapesync.consumer_drop('sidecar-a') AS dropped, shapesync.consumer_drop('nobody') AS dropped_nobody;

-- without consumers, the last tick decides: every row seen is truncatable
SELECT rotated, truncated_table FROM shapesync.maintain('0', '1 hour');
SELECT rotated, truncated_table, waiting_for FROM shapesync.maintain('0', '1 hour');
SELECT * FROM pg_temp.log_rows();
INSERT INTO ret VALUES (5, 'e');
SELECT * FROM pg_temp.log_rows();

-- errors
SELECT shapesync.consumer_report('', 1);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM shapesync.batch(1);
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT rotated FROM shapesync.maintain();
ROLLBACK;
-- not for everyone
CREATE ROLE ret_nobody;
SET ROLE ret_nobody;
SELECT shapesync.maintain();
SELECT shapesync.consumer_report('x', 1);
SELECT count(*) >= 0 AS can_watch FROM shapesync.consumer_status;
SELECT count(*) AS log_tables FROM shapesync.log_tables;
RESET ROLE;
DROP ROLE ret_nobody;

\c :regress_db
DROP DATABASE shapesync_retention;
