-- shapesync.dashboard_data(): the JSON behind the sidecar's GET /dashboard/data
-- (docs/monitoring.md), and who may call it: grant_sidecar() and
-- grant_monitor() roles, nobody else.
\set SHOW_CONTEXT never
CREATE TABLE dash_items (id int PRIMARY KEY, owner text);
SELECT shapesync.track('dash_items');
SELECT handle AS h FROM shapesync.get_or_create_shape('dash_items', 'owner = ''a''', NULL) \gset
SELECT shapesync.consumer_report_stats('dash-sc', ('{"address": "127.0.0.1:3999", "version": "0.2.0", '
       '"live_clients": {"long_poll": 2, "sse": 1}, "requests_per_second": 3.5, '
       '"latency_seconds": {"p50": 0.004, "p99": 0.03}, '
       '"shapes": [{"handle": "' || :'h' || '", "live_clients": 3, "requests_per_second": 1.5, "log_bytes": 100}]}')::jsonb);

-- its shape: sync, problems, shapes, consumers
SELECT k FROM json_object_keys(shapesync.dashboard_data()) k ORDER BY k;
SELECT k FROM json_object_keys(shapesync.dashboard_data()->'sync') k ORDER BY k;
SELECT json_typeof(d->'problems') AS problems, json_typeof(d->'shapes') AS shapes,
       json_typeof(d->'consumers') AS consumers, json_typeof(d->'sync'->'ticks_per_second') AS tps
  FROM shapesync.dashboard_data() d;
-- the shape, with what the sidecar reported about it
SELECT s->>'table' AS tbl, s->>'where' AS "where", s->>'state' AS state, s->>'live_clients' AS live,
       s->>'requests_per_second' AS rps, s->>'log_bytes' AS log_bytes, s->>'created_at' IS NOT NULL AS has_created
  FROM json_array_elements(shapesync.dashboard_data()->'shapes') s WHERE s->>'handle' = :'h';
-- the sidecar
SELECT c->>'address' AS address, c->>'version' AS version, c->>'live_clients' AS live,
       c->>'requests_per_second' AS rps, c->>'latency_p50_seconds' AS p50, c->>'latency_p99_seconds' AS p99
  FROM json_array_elements(shapesync.dashboard_data()->'consumers') c WHERE c->>'name' = 'dash-sc';
-- problems are check()'s rows
SELECT json_array_length(shapesync.dashboard_data()->'problems') = (SELECT count(*) FROM shapesync.check())
       AS same_problems;
-- a retired shape is not listed
SELECT shapesync.invalidate_shape(:'h', 'regress');
SELECT count(*) AS listed FROM json_array_elements(shapesync.dashboard_data()->'shapes') s WHERE s->>'handle' = :'h';

-- who may call it
CREATE ROLE regress_dash_sidecar;
CREATE ROLE regress_dash_monitor;
CREATE ROLE regress_dash_nobody;
SELECT shapesync.grant_sidecar('regress_dash_sidecar');
SELECT shapesync.grant_monitor('regress_dash_monitor');
SET ROLE regress_dash_sidecar;
SELECT json_typeof(shapesync.dashboard_data()->'consumers') AS sidecar_reads;
-- through the function only: not the views it reads
SELECT count(*) FROM shapesync.check();
SELECT count(*) FROM shapesync.sidecars;
RESET ROLE;
SET ROLE regress_dash_monitor;
SELECT json_typeof(shapesync.dashboard_data()->'consumers') AS monitor_reads;
RESET ROLE;
SET ROLE regress_dash_nobody;
SELECT shapesync.dashboard_data();
RESET ROLE;
SELECT shapesync.revoke_sidecar('regress_dash_sidecar');
SELECT shapesync.revoke_monitor('regress_dash_monitor');
SELECT has_function_privilege('regress_dash_sidecar', 'shapesync.dashboard_data()', 'EXECUTE') AS sidecar_after,
       has_function_privilege('regress_dash_monitor', 'shapesync.dashboard_data()', 'EXECUTE') AS monitor_after;

-- clean up
DROP OWNED BY regress_dash_sidecar, regress_dash_monitor, regress_dash_nobody;
DROP ROLE regress_dash_sidecar, regress_dash_monitor, regress_dash_nobody;
DELETE FROM shapesync.shape_reports WHERE consumer_name = 'dash-sc';
DELETE FROM shapesync.consumer_reports WHERE consumer_name = 'dash-sc';
DROP TABLE dash_items;
