-- shapesync: change capture, ticks, shape registry and sync health.
-- Full install script of the current version (copied to shapesync--VERSION.sql).

\echo Use "CREATE EXTENSION shapesync" to load this file. \quit

------------------------------------------------------------------------
-- Tracking
------------------------------------------------------------------------

CREATE TABLE shapesync.tracked (
    relid      oid PRIMARY KEY,
    tracked_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('shapesync.tracked', '');
COMMENT ON TABLE shapesync.tracked IS
    'Tables whose changes shapesync captures (maintained by shapesync.track/untrack).';

CREATE VIEW shapesync.tracked_tables AS
    SELECT t.relid::pg_catalog.regclass AS relid, t.tracked_at
      FROM shapesync.tracked t;
COMMENT ON VIEW shapesync.tracked_tables IS
    'Tracked tables, by name.';

CREATE FUNCTION shapesync.track(rel pg_catalog.regclass) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_track';
COMMENT ON FUNCTION shapesync.track(pg_catalog.regclass) IS
    'Start capturing the changes of a table (needs a primary key); idempotent.';

CREATE FUNCTION shapesync.untrack(rel pg_catalog.regclass) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_untrack';
COMMENT ON FUNCTION shapesync.untrack(pg_catalog.regclass) IS
    'Stop capturing the changes of a tracked table and invalidate its shapes.';

------------------------------------------------------------------------
-- Change log
------------------------------------------------------------------------

CREATE SEQUENCE shapesync.change_seq AS bigint;
COMMENT ON SEQUENCE shapesync.change_seq IS
    'Order of changes, taken at write time.';

CREATE TABLE shapesync.changes (
    xid     pg_catalog.xid8   NOT NULL,
    seq     bigint            NOT NULL,
    relid   oid               NOT NULL,
    op      "char"            NOT NULL,
    layout  int4              NOT NULL,
    new_row bytea,
    old_row bytea
) USING heap;
CREATE INDEX changes_xid_idx ON shapesync.changes USING btree (xid);
COMMENT ON TABLE shapesync.changes IS
    'Change log: one row per changed row of a tracked table (I/U/D) or per TRUNCATE (T); written only by the capture triggers.';
COMMENT ON INDEX shapesync.changes_xid_idx IS
    'Batches are restricted by xid range first.';

CREATE FUNCTION shapesync.capture() RETURNS trigger
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_capture';
COMMENT ON FUNCTION shapesync.capture() IS
    'Row trigger of tracked tables: writes the change to shapesync.changes.';

CREATE FUNCTION shapesync.capture_truncate() RETURNS trigger
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_capture_truncate';
COMMENT ON FUNCTION shapesync.capture_truncate() IS
    'TRUNCATE trigger of tracked tables: logs a T change and invalidates the table''s shapes.';

CREATE FUNCTION shapesync.row_values(relid oid, layout int4, img bytea) RETURNS text[]
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'shapesync_row_values';
COMMENT ON FUNCTION shapesync.row_values(oid, int4, bytea) IS
    'Decode a row image: output texts by attnum (NULL for NULL and dropped columns); error if the table layout changed.';

CREATE FUNCTION shapesync.row_json(relid oid, layout int4, img bytea) RETURNS json
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'shapesync_row_json';
COMMENT ON FUNCTION shapesync.row_json(oid, int4, bytea) IS
    'Decode a row image as a json object of output texts; error if the table layout changed.';

CREATE FUNCTION shapesync.row_values_or_null(relid oid, layout int4, img bytea) RETURNS text[]
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'shapesync_row_values_or_null';
COMMENT ON FUNCTION shapesync.row_values_or_null(oid, int4, bytea) IS
    'As row_values, but NULL when the table is gone or its layout changed.';

CREATE FUNCTION shapesync.row_json_or_null(relid oid, layout int4, img bytea) RETURNS json
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'shapesync_row_json_or_null';
COMMENT ON FUNCTION shapesync.row_json_or_null(oid, int4, bytea) IS
    'As row_json, but NULL when the table is gone or its layout changed.';

CREATE VIEW shapesync.change_log AS
    SELECT c.xid, c.seq,
           c.relid::pg_catalog.regclass AS table_name,
           CASE c.op WHEN 'I' THEN 'insert' WHEN 'U' THEN 'update'
                     WHEN 'D' THEN 'delete' WHEN 'T' THEN 'truncate' END AS op,
           shapesync.row_json_or_null(c.relid, c.layout, c.new_row) AS new_row,
           shapesync.row_json_or_null(c.relid, c.layout, c.old_row) AS old_row
      FROM shapesync.changes c;
COMMENT ON VIEW shapesync.change_log IS
    'The change log, decoded in the reader''s session (images whose table layout changed show as NULL).';

------------------------------------------------------------------------
-- Ticks (PgQ's snapshot method)
------------------------------------------------------------------------

CREATE TABLE shapesync.ticks (
    tick_id   bigint PRIMARY KEY,
    snap      pg_catalog.pg_snapshot NOT NULL,
    max_seq   bigint NOT NULL,
    tick_time timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE shapesync.ticks IS
    'Ticks: the batch of tick N is every change whose xid is visible in snap(N) and not in snap(N-1).';

INSERT INTO shapesync.ticks (tick_id, snap, max_seq) VALUES (1, pg_catalog.pg_current_snapshot(), 0);

CREATE FUNCTION shapesync.tick(force boolean DEFAULT false) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last_id   bigint;
    last_snap pg_snapshot;
    last_seq  bigint;
    cur_seq   bigint;
    cur_snap  pg_snapshot;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'shapesync.tick() must run at isolation level READ COMMITTED'
            USING ERRCODE = 'active_sql_transaction',
                  DETAIL = 'A tick needs a snapshot taken after the previous tick committed.';
    END IF;

    -- serialise tickers: the previous tick is committed when we get the lock
    PERFORM pg_advisory_xact_lock(7303830626947563123);

    SELECT t.tick_id, t.snap, t.max_seq INTO last_id, last_snap, last_seq
      FROM shapesync.ticks t ORDER BY t.tick_id DESC LIMIT 1;

    -- read the high-water mark BEFORE taking the snapshot (next statement):
    -- every change with seq <= cur_seq then has an xid below the snapshot's xmax
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END
      INTO cur_seq FROM shapesync.change_seq s;

    SELECT pg_current_snapshot() INTO cur_snap;

    IF NOT force AND last_id IS NOT NULL AND cur_seq <= last_seq
       AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(last_snap) AS x(xid)
                        WHERE pg_visible_in_snapshot(x.xid, cur_snap)) THEN
        -- no change was written since, and every transaction that was running
        -- at the last tick still is: nothing can be new
        RETURN NULL;
    END IF;

    INSERT INTO shapesync.ticks (tick_id, snap, max_seq, tick_time)
    VALUES (coalesce(last_id, 0) + 1, cur_snap, greatest(cur_seq, coalesce(last_seq, 0)), now());
    RETURN coalesce(last_id, 0) + 1;
END
$$;
COMMENT ON FUNCTION shapesync.tick(boolean) IS
    'Record a tick (snapshot and seq high-water mark) and return its id, or NULL when nothing can be new (unless force); commit it with synchronous_commit = on, then NOTIFY shapesync.';

CREATE FUNCTION shapesync.batch(tick_id bigint)
    RETURNS TABLE (xid pg_catalog.xid8, seq bigint, tx_max_seq bigint, relid oid, op "char",
                   new_values text[], old_values text[])
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE ROWS 100
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur_snap  pg_snapshot;
    prev_snap pg_snapshot;
BEGIN
    SELECT t.snap INTO cur_snap FROM shapesync.ticks t WHERE t.tick_id = batch.tick_id;
    SELECT t.snap INTO prev_snap FROM shapesync.ticks t
     WHERE t.tick_id < batch.tick_id ORDER BY t.tick_id DESC LIMIT 1;
    IF cur_snap IS NULL OR prev_snap IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT c.xid, c.seq, max(c.seq) OVER (PARTITION BY c.xid) AS tx_max_seq, c.relid, c.op,
               shapesync.row_values_or_null(c.relid, c.layout, c.new_row),
               shapesync.row_values_or_null(c.relid, c.layout, c.old_row)
          FROM shapesync.changes c
         WHERE c.xid >= pg_snapshot_xmin(prev_snap)
           AND c.xid < pg_snapshot_xmax(cur_snap)
           AND pg_visible_in_snapshot(c.xid, cur_snap)
           AND NOT pg_visible_in_snapshot(c.xid, prev_snap)
         ORDER BY 3, 2;
END
$$;
COMMENT ON FUNCTION shapesync.batch(bigint) IS
    'Changes of a tick (visible in its snapshot, not in the previous tick''s), decoded, ordered by (tx_max_seq, seq).';

------------------------------------------------------------------------
-- Shapes registry
------------------------------------------------------------------------

CREATE TABLE shapesync.shapes (
    handle         text PRIMARY KEY,
    relid          oid NOT NULL,
    definition     text NOT NULL,
    where_clause   text,
    columns        text[],
    state          text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'invalid')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    invalidated_at timestamptz,
    reason         text
);
CREATE UNIQUE INDEX shapes_active_definition ON shapesync.shapes (definition) WHERE state = 'active';
CREATE INDEX shapes_relid ON shapesync.shapes (relid) WHERE state = 'active';
COMMENT ON TABLE shapesync.shapes IS
    'Shapes (table, filter, columns); an invalid shape is never revived, its definition gets a new handle.';
COMMENT ON INDEX shapesync.shapes_active_definition IS
    'At most one active shape per definition.';
COMMENT ON INDEX shapesync.shapes_relid IS
    'Active shapes of a table (TRUNCATE, untrack).';

CREATE FUNCTION shapesync.get_or_create_shape(rel pg_catalog.regclass, where_clause text, columns text[],
                                              options text DEFAULT '')
    RETURNS TABLE (handle text, created boolean)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    def text;
    h   text;
    col text;
    us  bigint;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'shape table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM shapesync.tracked t WHERE t.relid = rel::oid) THEN
        RAISE EXCEPTION 'table "%" is not tracked', rel::text
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run shapesync.track() on the table first.';
    END IF;
    IF columns IS NOT NULL THEN
        FOREACH col IN ARRAY columns LOOP
            IF col IS NULL OR NOT EXISTS (SELECT 1 FROM pg_attribute a
                            WHERE a.attrelid = rel::oid AND a.attname = col::name
                              AND a.attnum > 0 AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'column "%" of table "%" does not exist', col, rel::text
                    USING ERRCODE = 'undefined_column';
            END IF;
        END LOOP;
    END IF;

    def := json_build_object('relid', rel::oid, 'where', where_clause, 'columns', columns,
                             'options', coalesce(options, ''))::text;
    LOOP
        SELECT s.handle INTO h FROM shapesync.shapes s
         WHERE s.definition = def AND s.state = 'active';
        IF FOUND THEN
            RETURN QUERY SELECT h, false;
            RETURN;
        END IF;
        us := floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
        h := left(md5(def), 16) || '-' || us::text;
        INSERT INTO shapesync.shapes AS s (handle, relid, definition, where_clause, columns)
        VALUES (h, rel::oid, def, where_clause, columns)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT h, true;
            RETURN;
        END IF;
        -- same definition created concurrently, or a handle collision: look again
    END LOOP;
END
$$;
COMMENT ON FUNCTION shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text) IS
    'The active shape for (table, where, columns, options such as replica and log mode), created if needed; handles are <hash>-<unix us> and never reused.';

CREATE FUNCTION shapesync.invalidate_shape(handle text, reason text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE shapesync.shapes s
       SET state = 'invalid', invalidated_at = now(), reason = invalidate_shape.reason
     WHERE s.handle = invalidate_shape.handle AND s.state = 'active';
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION shapesync.invalidate_shape(text, text) IS
    'Mark an active shape invalid (its clients must refetch); false if it was not active.';

------------------------------------------------------------------------
-- DDL on tracked tables: ALTER TABLE invalidates their shapes, DROP TABLE
-- also unregisters them.  Never fails the DDL: errors become warnings.
------------------------------------------------------------------------

CREATE FUNCTION shapesync.on_ddl_command_end() RETURNS event_trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT c.objid, c.command_tag
               FROM pg_event_trigger_ddl_commands() c
               JOIN shapesync.tracked t ON t.relid = c.objid
              WHERE c.classid = 'pg_class'::regclass AND c.object_type = 'table'
    LOOP
        UPDATE shapesync.shapes s
           SET state = 'invalid', invalidated_at = now(), reason = 'ddl: ' || r.command_tag
         WHERE s.relid = r.objid AND s.state = 'active';
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'shapesync could not invalidate shapes after DDL: %', SQLERRM;
END
$$;
COMMENT ON FUNCTION shapesync.on_ddl_command_end() IS
    'Event trigger: DDL on a tracked table invalidates its shapes.';

CREATE FUNCTION shapesync.on_sql_drop() RETURNS event_trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT d.objid
               FROM pg_event_trigger_dropped_objects() d
               JOIN shapesync.tracked t ON t.relid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
    LOOP
        DELETE FROM shapesync.tracked t WHERE t.relid = r.objid;
        UPDATE shapesync.shapes s
           SET state = 'invalid', invalidated_at = now(), reason = 'drop'
         WHERE s.relid = r.objid AND s.state = 'active';
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'shapesync could not unregister a dropped table: %', SQLERRM;
END
$$;
COMMENT ON FUNCTION shapesync.on_sql_drop() IS
    'Event trigger: a dropped tracked table is unregistered and its shapes invalidated.';

CREATE EVENT TRIGGER shapesync_ddl_command_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION shapesync.on_ddl_command_end();
COMMENT ON EVENT TRIGGER shapesync_ddl_command_end IS
    'Invalidates the shapes of a tracked table after ALTER TABLE.';

CREATE EVENT TRIGGER shapesync_sql_drop ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION shapesync.on_sql_drop();
COMMENT ON EVENT TRIGGER shapesync_sql_drop IS
    'Unregisters a dropped tracked table and invalidates its shapes.';

------------------------------------------------------------------------
-- Doorbell, worker, monitoring
------------------------------------------------------------------------

CREATE FUNCTION shapesync.worker_pid() RETURNS int
    LANGUAGE c VOLATILE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'shapesync_worker_pid';
COMMENT ON FUNCTION shapesync.worker_pid() IS
    'Pid of the ticker background worker serving this database; NULL when none runs (then the sidecar ticks).';

CREATE FUNCTION shapesync.status(
    OUT worker_pid int,
    OUT ticker_mode text,
    OUT last_tick_id bigint,
    OUT last_tick_time timestamptz,
    OUT unticked_changes bigint,
    OUT change_log_rows bigint,
    OUT oldest_unticked_age interval)
    RETURNS SETOF record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'shapesync_status';
COMMENT ON FUNCTION shapesync.status() IS
    'Sync health: ticker, last tick, changes written since it (estimate), log size, and an upper bound of the age of the oldest unticked change.';

CREATE VIEW shapesync.sync_status AS
    SELECT * FROM shapesync.status();
COMMENT ON VIEW shapesync.sync_status IS
    'Sync health (see shapesync.status()).';

------------------------------------------------------------------------
-- Privileges: everything is for the extension owner and roles it grants;
-- only the monitoring objects are public.
------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA shapesync FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA shapesync FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA shapesync FROM PUBLIC;
GRANT USAGE ON SCHEMA shapesync TO PUBLIC;
GRANT EXECUTE ON FUNCTION shapesync.worker_pid() TO PUBLIC;
GRANT EXECUTE ON FUNCTION shapesync.status() TO PUBLIC;
GRANT SELECT ON shapesync.sync_status TO PUBLIC;
GRANT SELECT ON shapesync.tracked_tables TO PUBLIC;
