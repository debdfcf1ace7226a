------------------------------------------------------------------------
-- Monitoring (docs/monitoring.md): SETOF-record functions with views on
-- top, the sidecars' live reports, check() for alerting, and
-- grant_monitor() for a read-only monitoring role.
--
-- The same statements end the 0.1.0 -> 0.2.0 upgrade script: every
-- statement here must run after shapesync.sql, retention.sql,
-- snapshots.sql and security.sql (CREATE OR REPLACE VIEW only appends
-- columns to sync_status and shapes).
------------------------------------------------------------------------

-- What the sidecars report (consumer_report_stats()): live state, lost on
-- a crash and worth nothing after shapesync.consumer_timeout.
CREATE UNLOGGED TABLE shapesync.consumer_reports (
    consumer_name        text PRIMARY KEY,
    reported_at          timestamptz NOT NULL DEFAULT now(),
    address              text,
    version              text,
    live_clients         int NOT NULL DEFAULT 0,
    live_clients_by_kind jsonb NOT NULL DEFAULT '{}',
    requests_per_second  double precision,
    latency_p50          interval,
    latency_p99          interval
);
COMMENT ON TABLE shapesync.consumer_reports IS
    'The last live report of each sidecar (shapesync.consumer_report_stats()); reports older than shapesync.consumer_timeout are ignored and deleted.';
COMMENT ON COLUMN shapesync.consumer_reports.latency_p50 IS
    'Commit-to-send latency (commit of a change to its bytes written to a client), median over the last minute.';
COMMENT ON COLUMN shapesync.consumer_reports.latency_p99 IS
    'Commit-to-send latency, 99th percentile over the last minute.';

CREATE UNLOGGED TABLE shapesync.shape_reports (
    consumer_name       text NOT NULL,
    handle              text NOT NULL,
    live_clients        int NOT NULL DEFAULT 0,
    requests_per_second double precision NOT NULL DEFAULT 0,
    log_bytes           bigint,
    last_used           timestamptz,
    PRIMARY KEY (consumer_name, handle)
);
CREATE INDEX shape_reports_handle ON shapesync.shape_reports (handle);
COMMENT ON INDEX shapesync.shape_reports_handle IS
    'shapesync.shapes looks a shape''s reports up by handle.';
COMMENT ON TABLE shapesync.shape_reports IS
    'Per shape, what each sidecar last reported about it (shapesync.consumer_report_stats()); replaced by each report.';

CREATE FUNCTION shapesync.consumer_report_stats(consumer text, stats jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    timeout interval := shapesync.setting_interval('shapesync.consumer_timeout', '1 hour');
    kinds   jsonb;
    lat     jsonb;
    shapes  jsonb;
    k       text;
    gone    bigint;
BEGIN
    IF consumer = '' THEN
        RAISE EXCEPTION 'consumer name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(stats) <> 'object' THEN
        RAISE EXCEPTION 'consumer statistics must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got a JSON %s.', jsonb_typeof(stats));
    END IF;
    FOREACH k IN ARRAY ARRAY['address', 'version'] LOOP
        IF stats ? k AND jsonb_typeof(stats -> k) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'invalid "%" in consumer statistics', k
                USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It must be a string.';
        END IF;
    END LOOP;
    IF stats ? 'requests_per_second' AND jsonb_typeof(stats -> 'requests_per_second') NOT IN ('number', 'null') THEN
        RAISE EXCEPTION 'invalid "requests_per_second" in consumer statistics'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'It must be a number.';
    END IF;
    kinds := coalesce(stats -> 'live_clients', '{}');
    IF jsonb_typeof(kinds) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(kinds) e WHERE jsonb_typeof(e.value) <> 'number') THEN
        RAISE EXCEPTION 'invalid "live_clients" in consumer statistics'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'It must be an object of client kinds to counts, e.g. {"long_poll": 3, "sse": 1}.';
    END IF;
    lat := coalesce(stats -> 'latency_seconds', '{}');
    IF jsonb_typeof(lat) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_each(lat) e
                   WHERE e.key IN ('p50', 'p99') AND jsonb_typeof(e.value) NOT IN ('number', 'null')) THEN
        RAISE EXCEPTION 'invalid "latency_seconds" in consumer statistics'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'It must be an object with numbers p50 and p99 (seconds), e.g. {"p50": 0.004, "p99": 0.03}.';
    END IF;
    shapes := coalesce(stats -> 'shapes', '[]');
    IF jsonb_typeof(shapes) <> 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(shapes) e
                   WHERE jsonb_typeof(e) <> 'object' OR jsonb_typeof(e -> 'handle') IS DISTINCT FROM 'string') THEN
        RAISE EXCEPTION 'invalid "shapes" in consumer statistics'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'It must be an array of objects, each with a string "handle".';
    END IF;

    INSERT INTO shapesync.consumer_reports AS r
           (consumer_name, reported_at, address, version, live_clients, live_clients_by_kind,
            requests_per_second, latency_p50, latency_p99)
    VALUES (consumer, now(), stats ->> 'address', stats ->> 'version',
            (SELECT coalesce(sum((e.value #>> '{}')::numeric), 0)::int FROM jsonb_each(kinds) e), kinds,
            (stats ->> 'requests_per_second')::double precision,
            make_interval(secs => (lat ->> 'p50')::double precision),
            make_interval(secs => (lat ->> 'p99')::double precision))
    ON CONFLICT (consumer_name) DO UPDATE
       SET reported_at = excluded.reported_at, address = excluded.address, version = excluded.version,
           live_clients = excluded.live_clients, live_clients_by_kind = excluded.live_clients_by_kind,
           requests_per_second = excluded.requests_per_second,
           latency_p50 = excluded.latency_p50, latency_p99 = excluded.latency_p99;

    -- the report is the whole picture: shapes it no longer holds go
    DELETE FROM shapesync.shape_reports r
     WHERE r.consumer_name = consumer
       AND r.handle NOT IN (SELECT e ->> 'handle' FROM jsonb_array_elements(shapes) e);
    INSERT INTO shapesync.shape_reports AS r
           (consumer_name, handle, live_clients, requests_per_second, log_bytes, last_used)
    SELECT DISTINCT ON (x.handle)
           consumer, x.handle, coalesce(x.live_clients, 0), coalesce(x.requests_per_second, 0), x.log_bytes,
           coalesce(x.last_used,
                    CASE WHEN coalesce(x.live_clients, 0) > 0 OR coalesce(x.requests_per_second, 0) > 0
                         THEN now() END)
      FROM jsonb_to_recordset(shapes) AS x(handle text, live_clients int, requests_per_second double precision,
                                            log_bytes bigint, last_used timestamptz)
     ORDER BY x.handle
    ON CONFLICT (consumer_name, handle) DO UPDATE
       SET live_clients = excluded.live_clients, requests_per_second = excluded.requests_per_second,
           log_bytes = excluded.log_bytes, last_used = coalesce(excluded.last_used, r.last_used);

    -- sidecars gone for longer than shapesync.consumer_timeout
    DELETE FROM shapesync.consumer_reports r WHERE r.reported_at < now() - timeout;
    GET DIAGNOSTICS gone = ROW_COUNT;
    IF gone > 0 THEN
        DELETE FROM shapesync.shape_reports s
         WHERE NOT EXISTS (SELECT 1 FROM shapesync.consumer_reports r WHERE r.consumer_name = s.consumer_name);
    END IF;
END
$$;
COMMENT ON FUNCTION shapesync.consumer_report_stats(text, jsonb) IS
    'A sidecar reports its live state (address, version, live clients by kind, requests/s, commit-to-send latency p50/p99, and per shape live clients, requests/s, log bytes, last use) every few seconds, off the tick path; see docs/monitoring.md for the JSON. Shown in shapesync.sidecars, shapesync.shapes and shapesync.tables.';

-- The first tick at or after ts (tick times grow with tick ids), or NULL.
CREATE FUNCTION shapesync.tick_at(ts timestamptz) RETURNS bigint
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lo  bigint;
    hi  bigint;
    mid bigint;
    t   timestamptz;
BEGIN
    SELECT min(k.tick_id), max(k.tick_id) INTO lo, hi FROM shapesync.ticks k;
    IF hi IS NULL OR (SELECT k.tick_time FROM shapesync.ticks k WHERE k.tick_id = hi) < ts THEN
        RETURN NULL;
    END IF;
    -- binary search over the primary key: O(log ticks) look-ups
    WHILE lo < hi LOOP
        mid := lo + (hi - lo) / 2;
        SELECT k.tick_time INTO t FROM shapesync.ticks k WHERE k.tick_id >= mid ORDER BY k.tick_id LIMIT 1;
        IF t >= ts THEN
            hi := mid;
        ELSE
            lo := mid + 1;
        END IF;
    END LOOP;
    RETURN (SELECT k.tick_id FROM shapesync.ticks k WHERE k.tick_id >= lo ORDER BY k.tick_id LIMIT 1);
END
$$;
COMMENT ON FUNCTION shapesync.tick_at(timestamptz) IS
    'The first tick recorded at or after a time (binary search over tick ids), NULL if none.';

-- The error an X row of the log reports for a shape, if any.
CREATE FUNCTION shapesync.shape_filter_error(handle text) RETURNS text
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s   record;
    lo  pg_snapshot;
    hi  pg_snapshot;
    err text;
BEGIN
    SELECT r.relid, r.shape_id, r.created_at, r.invalidated_at, r.canonical_where INTO s
      FROM shapesync.shape_registry r WHERE r.handle = shape_filter_error.handle;
    IF NOT FOUND OR s.canonical_where IS NULL THEN
        RETURN NULL;
    END IF;
    -- its X rows were written after it was registered, so after the last
    -- tick before that, and read by a sidecar before it was invalidated:
    -- only that xid range of the log is read
    SELECT k.snap INTO lo FROM shapesync.ticks k
     WHERE k.tick_id < coalesce(shapesync.tick_at(s.created_at), (SELECT max(m.tick_id) + 1 FROM shapesync.ticks m))
     ORDER BY k.tick_id DESC LIMIT 1;
    IF s.invalidated_at IS NOT NULL THEN
        SELECT k.snap INTO hi FROM shapesync.ticks k WHERE k.tick_id = shapesync.tick_at(s.invalidated_at);
    END IF;
    SELECT e.error INTO err FROM shapesync.changes c
     CROSS JOIN LATERAL shapesync.change_entries(c.op, c.relid, c.layout, c.new_row, c.old_row,
                                                 c.shape_ops, c.error, c.version) e
     WHERE c.op IN ('X', 'B') AND e.op = 'X' AND e.relid = s.relid AND e.shape_ops @> ARRAY[s.shape_id * 4]
       AND c.xid >= coalesce(pg_snapshot_xmin(lo), '0'::xid8)
       AND (hi IS NULL OR c.xid < pg_snapshot_xmax(hi))
     LIMIT 1;
    RETURN err;
END
$$;
COMMENT ON FUNCTION shapesync.shape_filter_error(text) IS
    'The error that a shape''s filter raised on a written row (its X row in the change log), NULL if none is in the log.';

------------------------------------------------------------------------
-- sync_status: the ticker, rates, log size and lag
------------------------------------------------------------------------

CREATE FUNCTION shapesync.sync_stats(
    OUT preload boolean,
    OUT ticker_running boolean,
    OUT ticks_per_second double precision,
    OUT changes_per_second double precision,
    OUT change_log_bytes bigint,
    OUT consumers int,
    OUT lag interval,
    OUT lag_ticks bigint,
    OUT slowest_consumer text)
    RETURNS SETOF record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'shapesync_sync_stats';
COMMENT ON FUNCTION shapesync.sync_stats() IS
    'Sync rates and lag: preload on/off, ticker worker running, ticks and change-log records per second over the last minute (changes_per_second: records, one per transaction and per 8000 bytes of its changes, since issue 15), change-log size, live consumers, and the lag (age of the oldest ticked change not yet read by every consumer) with the consumer that has it.';

CREATE OR REPLACE VIEW shapesync.sync_status AS
    SELECT s.*, m.* FROM shapesync.status() s CROSS JOIN shapesync.sync_stats() m;
COMMENT ON VIEW shapesync.sync_status IS
    'Sync health (see shapesync.status() and shapesync.sync_stats()).';

------------------------------------------------------------------------
-- shapes: what the sidecars report per shape, summed over them
------------------------------------------------------------------------

CREATE OR REPLACE VIEW shapesync.shapes AS
    SELECT s.handle, s.shape_id, s.relid::pg_catalog.regclass AS table_name,
           s.canonical_where AS where_clause, s.columns, s.options, s.state, s.reason,
           s.created_at, s.invalidated_at, s.snapshot_rows, s.last_offset,
           coalesce(l.live_clients, 0) AS live_clients,
           coalesce(l.requests_per_second, 0) AS requests_per_second,
           l.log_bytes, l.last_used
      FROM shapesync.shape_registry s
      LEFT JOIN (SELECT r.handle, pg_catalog.sum(r.live_clients)::bigint AS live_clients,
                        pg_catalog.sum(r.requests_per_second) AS requests_per_second,
                        pg_catalog.max(r.log_bytes) AS log_bytes, pg_catalog.max(r.last_used) AS last_used
                   FROM shapesync.shape_reports r
                   JOIN shapesync.consumer_reports c ON c.consumer_name = r.consumer_name
                  WHERE c.reported_at > pg_catalog.now()
                                        - shapesync.setting_interval('shapesync.consumer_timeout', '1 hour')
                  GROUP BY r.handle) l ON l.handle = s.handle;
COMMENT ON VIEW shapesync.shapes IS
    'Shapes and their state, for people and the sidecar; live_clients and requests_per_second are summed over the sidecars'' reports, log_bytes is the largest in-memory log a sidecar holds for it.';

------------------------------------------------------------------------
-- sidecars: the consumers of the change log and their live state
------------------------------------------------------------------------

CREATE FUNCTION shapesync.sidecar_stats(
    OUT consumer_name text,
    OUT address text,
    OUT version text,
    OUT last_seen timestamptz,
    OUT last_tick bigint,
    OUT lag_ticks bigint,
    OUT lag interval,
    OUT live_clients int,
    OUT live_clients_by_kind jsonb,
    OUT requests_per_second double precision,
    OUT latency_p50 interval,
    OUT latency_p99 interval,
    OUT last_report timestamptz)
    RETURNS SETOF record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'shapesync_sidecar_stats';
COMMENT ON FUNCTION shapesync.sidecar_stats() IS
    'Each sidecar seen within shapesync.consumer_timeout: position (last_tick read) and lag from shapesync.consumer_report(), live clients, requests/s and commit-to-send latency p50/p99 over the last minute from shapesync.consumer_report_stats().';

CREATE VIEW shapesync.sidecars AS
    SELECT * FROM shapesync.sidecar_stats();
COMMENT ON VIEW shapesync.sidecars IS
    'The sidecars (consumers of the change log): see shapesync.sidecar_stats().';

------------------------------------------------------------------------
-- tables: tracked tables, their shapes and changes per second
------------------------------------------------------------------------

CREATE FUNCTION shapesync.table_stats(
    OUT table_name pg_catalog.regclass,
    OUT tracked_at timestamptz,
    OUT active_shapes int,
    OUT invalid_shapes int,
    OUT changes_per_second double precision,
    OUT live_clients bigint,
    OUT requests_per_second double precision)
    RETURNS SETOF record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'shapesync_table_stats';
COMMENT ON FUNCTION shapesync.table_stats() IS
    'Tracked tables: shapes by state, changes captured into the log per second over the last minute, and the live clients and requests/s of their shapes.';

CREATE VIEW shapesync.tables AS
    SELECT * FROM shapesync.table_stats();
COMMENT ON VIEW shapesync.tables IS
    'Tracked tables with their shapes and change rate: see shapesync.table_stats().';

------------------------------------------------------------------------
-- check(): problems worth an alert
------------------------------------------------------------------------

CREATE FUNCTION shapesync.check(
    OUT severity text,
    OUT problem text,
    OUT subject text,
    OUT message text,
    OUT hint text)
    RETURNS SETOF record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    -- messages read the same whatever the caller's settings
    SET IntervalStyle = 'postgres'
    AS 'MODULE_PATHNAME', 'shapesync_check';
COMMENT ON FUNCTION shapesync.check() IS
    'One row per problem worth an alert (severity critical or warning), none when all is well: SELECT count(*) FROM shapesync.check() is a health probe. Problems: ticker_not_running, ticks_stalled, consumer_lost_changes, consumer_stale, consumer_lagging, change_log_large, shape_build_failed, filter_error; thresholds are the shapesync.alert_* settings.';

------------------------------------------------------------------------
-- dashboard_data(): what the sidecar's GET /dashboard/data answers, in one
-- call (docs/monitoring.md, "Dashboard"). SECURITY DEFINER, so the sidecar's
-- role needs EXECUTE on this one function (grant_sidecar() gives it), not
-- the monitoring views and functions it reads.
------------------------------------------------------------------------

CREATE FUNCTION shapesync.dashboard_data() RETURNS json
    LANGUAGE sql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.json_build_object(
  'sync', (SELECT pg_catalog.json_build_object(
                    'lag_seconds', EXTRACT(epoch FROM st.lag),
                    'ticks_per_second', st.ticks_per_second,
                    'changes_per_second', st.changes_per_second,
                    'ticker_running', st.ticker_running,
                    'change_log_bytes', st.change_log_bytes,
                    'last_tick', st.last_tick_id)
             FROM shapesync.sync_status st),
  'problems', coalesce((SELECT pg_catalog.json_agg(c) FROM shapesync.check() c), '[]'::json),
  'shapes', coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'handle', s.handle, 'table', s.table_name::text, 'where', s.where_clause, 'state', s.state,
      'rows', s.snapshot_rows, 'log_bytes', s.log_bytes, 'last_offset', s.last_offset,
      'live_clients', s.live_clients, 'requests_per_second', s.requests_per_second,
      'created_at', s.created_at, 'last_used', s.last_used) ORDER BY s.created_at)
    FROM shapesync.shapes s WHERE s.state = 'active'), '[]'::json),
  'consumers', coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
      'name', d.consumer_name, 'address', d.address, 'version', d.version, 'last_seen', d.last_seen,
      'last_tick', d.last_tick, 'lag_ticks', d.lag_ticks, 'lag_seconds', EXTRACT(epoch FROM d.lag),
      'live_clients', d.live_clients, 'requests_per_second', d.requests_per_second,
      'latency_p50_seconds', EXTRACT(epoch FROM d.latency_p50),
      'latency_p99_seconds', EXTRACT(epoch FROM d.latency_p99)) ORDER BY d.consumer_name)
    FROM shapesync.sidecars d), '[]'::json))
$$;
COMMENT ON FUNCTION shapesync.dashboard_data() IS
    'The sidecar dashboard''s data as one JSON object: sync (lag, ticks/s, changes/s from sync_status), problems (check()), shapes (active shapes), consumers (sidecars).';

------------------------------------------------------------------------
-- A monitoring role: reads every monitoring view, writes nothing.
--
-- Roles are cluster-wide and outlive DROP EXTENSION, so the extension
-- script creates none; grant_monitor() creates a NOLOGIN role when asked
-- to (its caller needs CREATEROLE) and grants it what monitoring needs.
------------------------------------------------------------------------

CREATE FUNCTION shapesync.grant_monitor(role name DEFAULT 'shapesync_monitor') RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = grant_monitor.role) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', grant_monitor.role);
        RAISE NOTICE 'created role "%" (NOLOGIN)', grant_monitor.role
            USING HINT = format('Grant it to the roles that monitor sync: GRANT %I TO ...', grant_monitor.role);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA shapesync TO %I', grant_monitor.role);
    EXECUTE format('GRANT SELECT ON shapesync.sync_status, shapesync.shapes, shapesync.sidecars, shapesync.tables, '
                   'shapesync.consumer_status, shapesync.log_tables, shapesync.tracked_tables TO %I',
                   grant_monitor.role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION shapesync.status(), shapesync.worker_pid(), shapesync.sync_stats(), '
                   'shapesync.sidecar_stats(), shapesync.table_stats(), shapesync.check(), '
                   'shapesync.cache_stats(), shapesync.membership_stats(), shapesync.dashboard_data() TO %I', grant_monitor.role);
END
$$;
COMMENT ON FUNCTION shapesync.grant_monitor(name) IS
    'Let a role read every monitoring view and function (sync_status, shapes, sidecars, tables, check(), ...) and nothing else; creates it NOLOGIN if it does not exist (needs CREATEROLE).';

CREATE FUNCTION shapesync.revoke_monitor(role name DEFAULT 'shapesync_monitor') RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_monitor.role) THEN
        RAISE EXCEPTION 'role "%" does not exist', revoke_monitor.role
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('REVOKE SELECT ON shapesync.sync_status, shapesync.shapes, shapesync.sidecars, shapesync.tables, '
                   'shapesync.consumer_status, shapesync.log_tables, shapesync.tracked_tables FROM %I',
                   revoke_monitor.role);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION shapesync.status(), shapesync.worker_pid(), shapesync.sync_stats(), '
                   'shapesync.sidecar_stats(), shapesync.table_stats(), shapesync.check(), '
                   'shapesync.cache_stats(), shapesync.membership_stats(), shapesync.dashboard_data() FROM %I', revoke_monitor.role);
END
$$;
COMMENT ON FUNCTION shapesync.revoke_monitor(name) IS
    'Take back what grant_monitor() gave a role (the role itself and USAGE on the schema stay).';

-- sync_status stays readable by everyone, as in 0.1.0; the rest is for
-- roles given grant_monitor() (and grant_sidecar() for the report).
REVOKE ALL ON shapesync.consumer_reports, shapesync.shape_reports FROM PUBLIC;
REVOKE ALL ON shapesync.sidecars, shapesync.tables FROM PUBLIC;
REVOKE ALL ON FUNCTION shapesync.consumer_report_stats(text, jsonb), shapesync.tick_at(timestamptz),
                       shapesync.shape_filter_error(text), shapesync.sync_stats(),
                       shapesync.sidecar_stats(), shapesync.table_stats(), shapesync.check(),
                       shapesync.grant_monitor(name), shapesync.revoke_monitor(name),
                       shapesync.dashboard_data() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION shapesync.sync_stats() TO PUBLIC;
