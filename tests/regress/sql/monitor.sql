-- Monitoring (docs/monitoring.md): sync_status, shapes, sidecars, tables,
-- the sidecars' reports, check() raising each problem, the monitor role.
\set SHOW_CONTEXT never
-- a clean slate: earlier tests leave shapes, consumers and failures behind
DROP EXTENSION shapesync CASCADE;
CREATE EXTENSION shapesync;
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN shapesync.worker_pid() IS NOT NULL;
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
CREATE FUNCTION pg_temp.wait_ticked() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN (SELECT unticked_changes = 0 FROM shapesync.sync_status);
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;

-- all is well: check() is empty
SELECT count(*) AS problems FROM shapesync.check();

------------------------------------------------------------------------
-- sync_status keeps its columns and gains the new ones
------------------------------------------------------------------------
SELECT column_name, data_type FROM information_schema.columns
 WHERE table_schema = 'shapesync' AND table_name = 'sync_status' ORDER BY ordinal_position;
SELECT preload, ticker_running, ticks_per_second > 0 AS ticked, changes_per_second,
       change_log_bytes > 0 AS has_bytes, consumers, lag, lag_ticks, slowest_consumer
  FROM shapesync.sync_status;

CREATE TABLE mon_items (id int PRIMARY KEY, owner text, n int);
SELECT shapesync.track('mon_items');
SELECT handle AS h_all FROM shapesync.get_or_create_shape('mon_items', NULL, NULL) \gset
SELECT handle AS h_u1 FROM shapesync.get_or_create_shape('mon_items', 'owner = ''u1''', NULL) \gset
INSERT INTO mon_items SELECT g, 'u' || (g % 3), g FROM generate_series(1, 30) g;
SELECT pg_temp.wait_ticked();
SELECT changes_per_second > 0 AS changing, change_log_rows FROM shapesync.sync_status;

------------------------------------------------------------------------
-- tables
------------------------------------------------------------------------
SELECT column_name, data_type FROM information_schema.columns
 WHERE table_schema = 'shapesync' AND table_name = 'tables' ORDER BY ordinal_position;
SELECT table_name, active_shapes, invalid_shapes, changes_per_second > 0 AS changing,
       live_clients, requests_per_second
  FROM shapesync.tables;

------------------------------------------------------------------------
-- the sidecars report: sidecars, shapes and tables show it
------------------------------------------------------------------------
SELECT max(tick_id) AS head FROM shapesync.ticks \gset
SELECT shapesync.consumer_report('mon-a', :head);
SELECT shapesync.consumer_report_stats('mon-a', jsonb_build_object(
    'address', '10.0.0.1:3000', 'version', '0.2.0',
    'live_clients', jsonb_build_object('long_poll', 3, 'sse', 2),
    'requests_per_second', 12.5,
    'latency_seconds', jsonb_build_object('p50', 0.004, 'p99', 0.031),
    'shapes', jsonb_build_array(
        jsonb_build_object('handle', :'h_all', 'live_clients', 4, 'requests_per_second', 10, 'log_bytes', 1234),
        jsonb_build_object('handle', :'h_u1', 'live_clients', 1, 'requests_per_second', 2.5, 'log_bytes', 99,
                           'last_used', '2026-01-02T03:04:05Z'),
        jsonb_build_object('handle', 'no-such-shape', 'live_clients', 7))));
-- a sidecar that reports its state before it reads the log
SELECT shapesync.consumer_report_stats('mon-b', jsonb_build_object(
    'live_clients', jsonb_build_object('long_poll', 1),
    'shapes', jsonb_build_array(jsonb_build_object('handle', :'h_all', 'live_clients', 1, 'log_bytes', 2000))));
SELECT column_name, data_type FROM information_schema.columns
 WHERE table_schema = 'shapesync' AND table_name = 'sidecars' ORDER BY ordinal_position;
SELECT consumer_name, address, version, last_seen IS NOT NULL AS seen, last_tick = :head AS at_head,
       lag_ticks, lag, live_clients, live_clients_by_kind, requests_per_second, latency_p50, latency_p99,
       last_report IS NOT NULL AS reported
  FROM shapesync.sidecars;
SELECT handle = :'h_all' AS whole_table, live_clients, requests_per_second, log_bytes,
       last_used IS NOT NULL AS used, last_used = '2026-01-02T03:04:05Z' AS reported_last_used
  FROM shapesync.shapes ORDER BY shape_id;
SELECT table_name, live_clients, requests_per_second FROM shapesync.tables;
SELECT consumers, lag, lag_ticks, slowest_consumer FROM shapesync.sync_status;

-- each report replaces the sidecar's picture of its shapes
SELECT shapesync.consumer_report_stats('mon-b', '{}');
SELECT consumer_name, live_clients, live_clients_by_kind, requests_per_second FROM shapesync.sidecars;
SELECT count(*) AS shape_rows FROM shapesync.shape_reports WHERE consumer_name = 'mon-b';
SELECT handle = :'h_all' AS whole_table, live_clients FROM shapesync.shapes ORDER BY shape_id;

-- reports that are not what the sidecar must send
SELECT shapesync.consumer_report_stats('mon-a', '[]');
SELECT shapesync.consumer_report_stats('mon-a', '{"live_clients": {"sse": "many"}}');
SELECT shapesync.consumer_report_stats('mon-a', '{"latency_seconds": {"p50": "fast"}}');
SELECT shapesync.consumer_report_stats('mon-a', '{"shapes": [{"live_clients": 1}]}');
SELECT shapesync.consumer_report_stats('mon-a', '{"address": 12}');
SELECT shapesync.consumer_report_stats('', '{}');

-- a sidecar not seen for shapesync.consumer_timeout stops being counted
UPDATE shapesync.consumer_reports SET reported_at = now() - interval '2 hours' WHERE consumer_name = 'mon-b';
SELECT consumer_name FROM shapesync.sidecars;
SELECT shapesync.consumer_report_stats('mon-a', '{"live_clients": {"long_poll": 3, "sse": 2}}');
SELECT consumer_name FROM shapesync.consumer_reports;

SELECT count(*) AS problems FROM shapesync.check();

------------------------------------------------------------------------
-- check(): each problem on purpose
------------------------------------------------------------------------
SELECT p.parameter_name, p.data_type FROM information_schema.parameters p
  JOIN information_schema.routines r USING (specific_schema, specific_name)
 WHERE r.routine_schema = 'shapesync' AND r.routine_name = 'check' ORDER BY p.ordinal_position;

-- a stale consumer: not seen for shapesync.alert_consumer_stale (1 min)
BEGIN;
UPDATE shapesync.consumers SET last_seen = now() - interval '5 minutes' WHERE consumer_name = 'mon-a';
UPDATE shapesync.consumer_reports SET reported_at = now() - interval '5 minutes' WHERE consumer_name = 'mon-a';
SELECT severity, problem, subject, message, hint FROM shapesync.check();
ROLLBACK;

-- lagging consumers: ticks they have not read, older than shapesync.alert_lag
SELECT shapesync.consumer_report('mon-lag', :head);
SELECT shapesync.tick(true) > :head AS ticked;
SELECT pg_sleep(0.05);
SET shapesync.alert_lag = '10ms';
SELECT severity, problem, subject FROM shapesync.check();
SELECT consumer_name, lag_ticks, lag > interval '0' AS lagging FROM shapesync.sidecars;
SELECT consumers, lag > interval '0' AS lagging, lag_ticks, slowest_consumer FROM shapesync.sync_status;
RESET shapesync.alert_lag;
SELECT count(*) AS problems FROM shapesync.check();
SELECT shapesync.consumer_drop('mon-lag');
SELECT shapesync.consumer_report('mon-a', max(tick_id)) FROM shapesync.ticks;

-- a consumer behind the horizon has lost changes
BEGIN;
UPDATE shapesync.log_state SET horizon_tick = (SELECT max(tick_id) + 1 FROM shapesync.ticks);
SELECT severity, problem, subject FROM shapesync.check();
ROLLBACK;

-- a big change log, through a tiny threshold
SET shapesync.alert_log_bytes = '8kB';
SELECT severity, problem, subject, message ~ 'more than shapesync.alert_log_bytes \(8192 bytes\)' AS says_why
  FROM shapesync.check();
RESET shapesync.alert_log_bytes;

-- changes that wait for a tick longer than shapesync.alert_tick_delay
-- (holding the tickers' lock: a tick that starts meanwhile, for example on a
-- spurious wake-up of the worker, would see the uncommitted change's seq)
-- (the change is written at once, taking its seq, rather than at commit)
BEGIN;
SELECT pg_advisory_xact_lock(7303830626947563123);
SET LOCAL shapesync.tx_buffer_size = 0;
INSERT INTO mon_items VALUES (100, 'u1', 1);
SELECT pg_sleep(0.05);
SET LOCAL shapesync.alert_tick_delay = '10ms';
SELECT severity, problem, subject, hint FROM shapesync.check();
ROLLBACK;
SELECT shapesync.tick(true) IS NOT NULL AS ticked;

-- the ticker worker down: reported until the launcher restarts it
-- (the launcher restarts it quickly: on a loaded machine the gap can be
-- missed, so terminate it again, up to 20 times, until check() is seen in it)
DO $$
DECLARE
    old   int;
    found boolean := false;
BEGIN
    FOR attempt IN 1..20 LOOP
        FOR i IN 1..200 LOOP
            EXIT WHEN shapesync.worker_pid() IS NOT NULL;
            PERFORM pg_sleep(0.05);
        END LOOP;
        old := shapesync.worker_pid();
        PERFORM pg_terminate_backend(old);
        FOR i IN 1..200000 LOOP
            IF EXISTS (SELECT 1 FROM shapesync.check() c
                        WHERE c.problem = 'ticker_not_running' AND c.severity = 'critical') THEN
                found := true;
                EXIT;
            END IF;
            EXIT WHEN shapesync.worker_pid() IS DISTINCT FROM old AND shapesync.worker_pid() IS NOT NULL;
        END LOOP;
        EXIT WHEN found;
    END LOOP;
    RAISE NOTICE 'ticker_not_running reported: %', found;
    FOR i IN 1..200 LOOP
        EXIT WHEN shapesync.worker_pid() IS NOT NULL;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
$$;
SELECT shapesync.worker_pid() IS NOT NULL AS worker_back;
SELECT count(*) AS problems FROM shapesync.check();

-- a shape that failed to build (the sidecar retires it so)
SELECT handle AS h_build FROM shapesync.get_or_create_shape('mon_items', 'n > 5', NULL) \gset
SELECT shapesync.invalidate_shape(:'h_build', 'snapshot failed: division by zero');
SELECT severity, problem, subject,
       replace(message, :'h_build', 'H') AS message, hint
  FROM shapesync.check();

-- a filter that raises on a written row (its X row), retired by the sidecar
SELECT handle AS h_div FROM shapesync.get_or_create_shape('mon_items', '100 / n > 1', NULL) \gset
UPDATE mon_items SET n = 0 WHERE id = 1;
SELECT op, error FROM shapesync.change_log WHERE op = 'shape_error';
SELECT shapesync.shape_filter_error(:'h_div') AS filter_error;
SELECT shapesync.invalidate_shape(:'h_div', 'division by zero');
-- an administrator's invalidation is no failure
SELECT shapesync.invalidate_shape(:'h_u1', 'no longer needed');
SELECT shapesync.shape_filter_error(:'h_u1') AS no_filter_error;
SELECT severity, problem, subject, replace(replace(message, :'h_div', 'H'), :'h_build', 'H') AS message
  FROM shapesync.check();
SELECT table_name, active_shapes, invalid_shapes FROM shapesync.tables;

-- failures are reported for shapesync.alert_window
SET shapesync.alert_window = '1s';
SELECT pg_sleep(1.1);
SELECT count(*) AS problems FROM shapesync.check();
RESET shapesync.alert_window;

------------------------------------------------------------------------
-- The monitor role: reads everything, writes nothing
------------------------------------------------------------------------
SELECT shapesync.grant_monitor('regress_mon_group');
SELECT rolcanlogin FROM pg_roles WHERE rolname = 'regress_mon_group';
SELECT shapesync.grant_monitor('regress_mon_group');  -- again: no new role, no notice
CREATE ROLE regress_mon_user;
GRANT regress_mon_group TO regress_mon_user;
CREATE ROLE regress_mon_nobody;

SET ROLE regress_mon_user;
SELECT count(*) AS sync_status FROM shapesync.sync_status;
SELECT count(*) AS shapes FROM shapesync.shapes;
SELECT count(*) AS sidecars FROM shapesync.sidecars;
SELECT count(*) AS tables FROM shapesync.tables;
SELECT count(*) AS problems FROM shapesync.check();
SELECT count(*) >= 0 AS consumer_status FROM shapesync.consumer_status;
SELECT count(*) AS log_tables FROM shapesync.log_tables;
SELECT count(*) AS tracked_tables FROM shapesync.tracked_tables;
SELECT count(*) >= 0 AS cache_stats FROM shapesync.cache_stats();
SELECT count(*) >= 0 AS membership_stats FROM shapesync.membership_stats();
SELECT count(*) AS status FROM shapesync.status();
-- no sidecar function, no write, no data
SELECT shapesync.consumer_report_stats('evil', '{}');
SELECT shapesync.consumer_report('evil', 1);
SELECT * FROM shapesync.get_or_create_shape('mon_items', NULL, NULL);
SELECT shapesync.invalidate_shape(:'h_all', 'evil');
SELECT shapesync.tick(true);
INSERT INTO shapesync.consumer_reports (consumer_name) VALUES ('evil');
UPDATE shapesync.shape_registry SET state = 'invalid';
DELETE FROM shapesync.consumers;
SELECT count(*) FROM shapesync.changes;
SELECT count(*) FROM shapesync.shape_reports;
SELECT count(*) FROM mon_items;
SELECT shapesync.grant_monitor('regress_mon_user');
RESET ROLE;

SET ROLE regress_mon_nobody;
SELECT count(*) FROM shapesync.shapes;
SELECT count(*) FROM shapesync.sidecars;
SELECT count(*) FROM shapesync.tables;
SELECT count(*) FROM shapesync.check();
SELECT count(*) FROM shapesync.sidecar_stats();
SELECT count(*) FROM shapesync.consumer_reports;
-- sync_status stays readable by everyone, as in 0.1.0
SELECT count(*) AS sync_status FROM shapesync.sync_status;
RESET ROLE;

-- grant_sidecar() lets a sidecar report its state
CREATE ROLE regress_mon_sidecar;
SELECT shapesync.grant_sidecar('regress_mon_sidecar');
SET ROLE regress_mon_sidecar;
SELECT shapesync.consumer_report_stats('mon-sc', '{"version": "0.2.0"}');
SELECT count(*) AS shapes FROM shapesync.shapes;
RESET ROLE;
SELECT consumer_name, version FROM shapesync.sidecars WHERE consumer_name = 'mon-sc';

-- revoke_monitor() takes it back
SELECT shapesync.revoke_monitor('regress_mon_group');
SET ROLE regress_mon_user;
SELECT count(*) FROM shapesync.shapes;
RESET ROLE;
SELECT shapesync.revoke_monitor('regress_mon_nope');

-- clean up
SELECT shapesync.revoke_sidecar('regress_mon_sidecar');
DROP OWNED BY regress_mon_group, regress_mon_user, regress_mon_nobody, regress_mon_sidecar;
DROP ROLE regress_mon_group, regress_mon_user, regress_mon_nobody, regress_mon_sidecar;
SELECT shapesync.consumer_drop('mon-a');
DELETE FROM shapesync.consumer_reports;
DELETE FROM shapesync.shape_reports;
DROP TABLE mon_items;
