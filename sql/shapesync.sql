-- shapesync: change capture, ticks, shape registry and sync health.
-- The first part of the current version's install script: the Makefile concatenates it with
-- retention.sql, snapshots.sql, security.sql, mutations.sql and auth.sql into shapesync--VERSION.sql.

\echo Use "CREATE EXTENSION shapesync" to load this file. \quit

------------------------------------------------------------------------
-- Tracking
------------------------------------------------------------------------

CREATE TABLE shapesync.tracked (
    relid      oid PRIMARY KEY,
    tracked_at timestamptz NOT NULL DEFAULT now(),
    shapes_gen bigint NOT NULL DEFAULT 0
);
SELECT pg_catalog.pg_extension_config_dump('shapesync.tracked', '');
COMMENT ON TABLE shapesync.tracked IS
    'Tables whose changes shapesync captures (maintained by shapesync.track/untrack).';
COMMENT ON COLUMN shapesync.tracked.shapes_gen IS
    'Bumped whenever an active shape of the table stops being active: backends then rebuild their shape cache of the table in full (otherwise they only load shapes added since).';

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
    old_row bytea,
    shape_ops int4[],
    error   text,
    version pg_catalog.xid8
) USING heap;
-- a B record packs a transaction's changes into new_row (at most 8000 bytes
-- of them per record): uncompressed (pglz on every multi-change record cost
-- more CPU than the record saved; the child tables inherit the setting), and
-- kept in the heap page up to a page's size (the children's
-- toast_tuple_target): a page-sized row is one heap and index insert where
-- TOAST would make four 2 kB chunks
ALTER TABLE shapesync.changes ALTER COLUMN new_row SET STORAGE EXTERNAL;
CREATE INDEX changes_xid_idx ON shapesync.changes USING btree (xid);
COMMENT ON TABLE shapesync.changes IS
    'Change log: one record per transaction (shapesync.tx_buffer_size splits big ones) holding its changes: per changed row of a tracked table (I/U/D) that a shape needs, per TRUNCATE (T), per shape filter error (X) and per DDL (S). A transaction''s only change is a plain row of that op; any other record is op B (relid: its first change''s table, layout: its number of changes, new_row: the changes packed), read through shapesync.change_entries(). seq orders records at write time; a transaction''s changes are ordered by ord. Written only by the extension.';
COMMENT ON COLUMN shapesync.changes.shape_ops IS
    'Filtered shapes that see the change: shape_id * 4 + op (1 insert, 2 update, 3 delete); for X rows shape_id * 4.';
COMMENT ON COLUMN shapesync.changes.error IS
    'X rows: the error raised by the shape filter; S rows: the reason (e.g. ddl: ALTER TABLE).';
COMMENT ON COLUMN shapesync.changes.version IS
    'I/U rows: the new row''s version (its xmin as an xid8) when it differs from xid, i.e. when a subtransaction wrote the row; NULL means the version is xid.';
COMMENT ON INDEX shapesync.changes_xid_idx IS
    'Batches are restricted by xid range first.';

-- The rows live in three child tables that take turns (PgQ's rotation):
-- writers insert into the current one; shapesync.maintain() makes the
-- oldest one current again after TRUNCATEing it, once every consumer has
-- passed all of its rows and it has been out of use for the retention time.
-- shapesync.changes itself stays empty and reads all three.
CREATE TABLE shapesync.changes_0 () INHERITS (shapesync.changes) WITH (toast_tuple_target = 8160);
CREATE TABLE shapesync.changes_1 () INHERITS (shapesync.changes) WITH (toast_tuple_target = 8160);
CREATE TABLE shapesync.changes_2 () INHERITS (shapesync.changes) WITH (toast_tuple_target = 8160);
CREATE INDEX changes_0_xid_idx ON shapesync.changes_0 USING btree (xid);
CREATE INDEX changes_1_xid_idx ON shapesync.changes_1 USING btree (xid);
CREATE INDEX changes_2_xid_idx ON shapesync.changes_2 USING btree (xid);
COMMENT ON TABLE shapesync.changes_0 IS 'Change-log table 0 of 3 (see shapesync.log_tables).';
COMMENT ON TABLE shapesync.changes_1 IS 'Change-log table 1 of 3 (see shapesync.log_tables).';
COMMENT ON TABLE shapesync.changes_2 IS 'Change-log table 2 of 3 (see shapesync.log_tables).';

CREATE TABLE shapesync.log_state (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    current_table  int NOT NULL CHECK (current_table BETWEEN 0 AND 2),
    switched_at    timestamptz NOT NULL DEFAULT now(),
    horizon_tick   bigint NOT NULL DEFAULT 0,
    truncated_at   timestamptz
);
INSERT INTO shapesync.log_state (current_table) VALUES (0);
COMMENT ON TABLE shapesync.log_state IS
    'Rotation state of the change log: the table writers insert into, when it became current, and the horizon: every truncated change was visible in the snapshot of tick horizon_tick, so batch(N) is complete only for N > horizon_tick.';

CREATE TABLE shapesync.consumers (
    consumer_name text PRIMARY KEY,
    last_tick     bigint NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE shapesync.consumers IS
    'Readers of the change log (sidecars): the last tick each has consumed. A table is truncated only once every consumer has passed all of its rows; a consumer not seen for shapesync.consumer_timeout is dropped and stops holding the log back.';

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

CREATE FUNCTION shapesync.change_entries(op "char", relid oid, layout int4, new_row bytea, old_row bytea,
                                         shape_ops int4[], error text, version pg_catalog.xid8)
    RETURNS TABLE (ord bigint, relid oid, op "char", layout int4, new_row bytea, old_row bytea,
                   shape_ops int4[], error text, version pg_catalog.xid8)
    LANGUAGE c STABLE PARALLEL SAFE ROWS 10
    AS 'MODULE_PATHNAME', 'shapesync_change_entries';
COMMENT ON FUNCTION shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8) IS
    'The changes a change-log record holds (pass its columns): an op B record''s packed changes with their position ord in the transaction, or the record itself as one change with ord 0.';

CREATE VIEW shapesync.change_log AS
    SELECT c.xid, c.seq,
           e.relid::pg_catalog.regclass AS table_name,
           CASE e.op WHEN 'I' THEN 'insert' WHEN 'U' THEN 'update'
                     WHEN 'D' THEN 'delete' WHEN 'T' THEN 'truncate'
                     WHEN 'X' THEN 'shape_error' WHEN 'S' THEN 'schema' END AS op,
           shapesync.row_json_or_null(e.relid, e.layout, e.new_row) AS new_row,
           shapesync.row_json_or_null(e.relid, e.layout, e.old_row) AS old_row,
           e.shape_ops, e.error, e.ord
      FROM shapesync.changes c
     CROSS JOIN LATERAL shapesync.change_entries(c.op, c.relid, c.layout, c.new_row, c.old_row,
                                                 c.shape_ops, c.error, c.version) e;
COMMENT ON VIEW shapesync.change_log IS
    'The change log, one line per change (records of a transaction expanded), decoded in the reader''s session (images whose table layout changed show as NULL); a transaction''s changes in the order it made them are ORDER BY ord, seq within its xid (ord 0: a transaction''s only change).';

------------------------------------------------------------------------
-- Ticks (PgQ's snapshot method)
------------------------------------------------------------------------

CREATE TABLE shapesync.ticks (
    tick_id   bigint PRIMARY KEY,
    snap      pg_catalog.pg_snapshot NOT NULL,
    max_seq   bigint NOT NULL,
    tick_time timestamptz NOT NULL DEFAULT now(),
    tick_xid  pg_catalog.xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
);
COMMENT ON COLUMN shapesync.ticks.tick_xid IS
    'The xid of the transaction that recorded the tick: every xid assigned before it and not visible in snap was still running then.';
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
    last_xid  xid8;
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

    SELECT t.tick_id, t.snap, t.max_seq, t.tick_xid INTO last_id, last_snap, last_seq, last_xid
      FROM shapesync.ticks t ORDER BY t.tick_id DESC LIMIT 1;

    -- read the high-water mark BEFORE taking the snapshot (next statement):
    -- every change with seq <= cur_seq then has an xid below the snapshot's xmax
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END
      INTO cur_seq FROM shapesync.change_seq s;

    SELECT pg_current_snapshot() INTO cur_snap;

    -- Nothing can be new when no change took a seq since the last tick and
    -- every transaction that could hold one of its changes unseen is still
    -- invisible. Those are the last snapshot's xip list and the xids from its
    -- xmax up to the last tick's own xid: pg_current_snapshot()'s xmax is
    -- latestCompletedXid + 1, so a writer above it was running without being
    -- listed, and any writer that took a seq before the last tick read the
    -- high-water mark got its xid before the tick's own. Aborted ones only
    -- cost a needless tick.
    IF NOT force AND last_id IS NOT NULL AND cur_seq <= last_seq
       AND last_xid::text::bigint - pg_snapshot_xmax(last_snap)::text::bigint <= 10000
       AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(last_snap) AS x(xid)
                        WHERE pg_visible_in_snapshot(x.xid, cur_snap))
       AND NOT EXISTS (SELECT 1 FROM generate_series(pg_snapshot_xmax(last_snap)::text::bigint,
                                                     last_xid::text::bigint - 1) AS g(x)
                        WHERE pg_visible_in_snapshot(g.x::text::xid8, cur_snap)) THEN
        RETURN NULL;
    END IF;

    INSERT INTO shapesync.ticks (tick_id, snap, max_seq, tick_time)
    VALUES (coalesce(last_id, 0) + 1, cur_snap, greatest(cur_seq, coalesce(last_seq, 0)), now());
    RETURN coalesce(last_id, 0) + 1;
END
$$;
COMMENT ON FUNCTION shapesync.tick(boolean) IS
    'Record a tick (snapshot and seq high-water mark) and return its id, or NULL when nothing can be new (unless force); commit it with synchronous_commit = on, then NOTIFY shapesync.';

-- The SQL formulation of batch() (below), kept as the reference that the
-- regress test (batch_reader) compares the C reader with.
CREATE FUNCTION shapesync.batch_sql(tick_id bigint)
    RETURNS TABLE (xid pg_catalog.xid8, seq bigint, tx_max_seq bigint, relid oid, op "char",
                   new_values text[], old_values text[], shape_ops int4[], error text,
                   version pg_catalog.xid8)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE ROWS 100
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cur_snap  pg_snapshot;
    prev_snap pg_snapshot;
    horizon   bigint;
BEGIN
    SELECT s.horizon_tick INTO horizon FROM shapesync.log_state s;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'shapesync.batch() must run at isolation level READ COMMITTED'
            USING ERRCODE = 'active_sql_transaction',
                  DETAIL = 'It checks after reading that no rotation truncated what it read, which needs a new snapshot per statement.';
    END IF;
    IF batch_sql.tick_id > 0 AND batch_sql.tick_id <= horizon THEN
        RAISE EXCEPTION 'the change log no longer holds tick %', batch_sql.tick_id
            USING ERRCODE = 'SS001',
                  DETAIL = format('Changes visible in tick %s were truncated; batches are complete only after it.', horizon),
                  HINT = 'Re-sync the shapes that need older changes (shapesync.log_retention keeps them longer).';
    END IF;
    SELECT t.snap INTO cur_snap FROM shapesync.ticks t WHERE t.tick_id = batch_sql.tick_id;
    SELECT t.snap INTO prev_snap FROM shapesync.ticks t
     WHERE t.tick_id < batch_sql.tick_id ORDER BY t.tick_id DESC LIMIT 1;
    IF cur_snap IS NULL OR prev_snap IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT c.xid, c.seq, max(c.seq) OVER (PARTITION BY c.xid) AS tx_max_seq, e.relid, e.op,
               shapesync.row_values_or_null(e.relid, e.layout, e.new_row),
               shapesync.row_values_or_null(e.relid, e.layout, e.old_row),
               e.shape_ops, e.error,
               CASE WHEN e.op IN ('I', 'U') THEN coalesce(e.version, c.xid) END
          FROM shapesync.changes c
         CROSS JOIN LATERAL shapesync.change_entries(c.op, c.relid, c.layout, c.new_row, c.old_row,
                                                     c.shape_ops, c.error, c.version) e
         WHERE c.xid >= pg_snapshot_xmin(prev_snap)
           AND c.xid < pg_snapshot_xmax(cur_snap)
           AND pg_visible_in_snapshot(c.xid, cur_snap)
           AND NOT pg_visible_in_snapshot(c.xid, prev_snap)
         -- transactions by their largest seq (row-lock order), a transaction's
         -- changes in the order it made them: ord across its records (0 for a
         -- transaction's only change), seq between plain rows
         ORDER BY 3, e.ord, 2;
    -- TRUNCATE is not MVCC-safe: a rotation that committed after this
    -- function started may have emptied a table before the query above read
    -- it. Every rotation moves the horizon in the same transaction, and this
    -- statement sees it (VOLATILE: a new snapshot per statement).
    IF batch_sql.tick_id > 0 AND (SELECT s.horizon_tick FROM shapesync.log_state s) >= batch_sql.tick_id THEN
        RAISE EXCEPTION 'the change log no longer holds tick %', batch_sql.tick_id
            USING ERRCODE = 'SS001',
                  DETAIL = 'It was truncated while being read.',
                  HINT = 'Re-sync the shapes that need older changes (shapesync.log_retention keeps them longer).';
    END IF;
END
$$;
COMMENT ON FUNCTION shapesync.batch_sql(bigint) IS
    'The SQL formulation of shapesync.batch(), kept as the reference its regress test compares the C reader with (same rows, order and errors; not granted to the sidecar). Changes of a tick (visible in its snapshot, not in the previous tick''s), one row per change (records expanded), decoded, ordered by transaction (tx_max_seq) and within it in the order the changes were made; seq is the seq of the record holding the change; with the new row''s version for I/U; SQLSTATE SS001 when the change log no longer holds them all.';

-- The batch reader (extension/batch.c): what batch_sql() returns, in the
-- same order and with the same errors, read through the xid indexes,
-- grouped and ordered in memory, each image decoded once.
CREATE FUNCTION shapesync.batch(tick_id bigint)
    RETURNS TABLE (xid pg_catalog.xid8, seq bigint, tx_max_seq bigint, relid oid, op "char",
                   new_values text[], old_values text[], shape_ops int4[], error text,
                   version pg_catalog.xid8)
    LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'shapesync_batch';
COMMENT ON FUNCTION shapesync.batch(bigint) IS
    'Changes of a tick (visible in its snapshot, not in the previous tick''s), one row per change (records expanded), decoded, ordered by transaction (tx_max_seq) and within it in the order the changes were made; seq is the seq of the record holding the change; with the new row''s version for I/U; SQLSTATE SS001 when the change log no longer holds them all. Must run at READ COMMITTED.';

CREATE FUNCTION shapesync.batches(after bigint, upto bigint)
    RETURNS TABLE (tick_id bigint, tick_time_us bigint, xid pg_catalog.xid8, seq bigint, tx_max_seq bigint,
                   relid oid, op "char", new_values text[], old_values text[], shape_ops int4[], error text,
                   version pg_catalog.xid8)
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE ROWS 1000
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'shapesync_batches';
COMMENT ON FUNCTION shapesync.batches(bigint, bigint) IS
    'shapesync.batch(t) for every tick id t in (after, upto], in that order, each row with t and the tick''s time (microseconds since the Unix epoch): the sidecar''s read of a range of ticks, already in order (no sort). SQLSTATE SS001 for a tick the change log no longer holds.';

CREATE FUNCTION shapesync.batches_packed(after bigint, upto bigint)
    RETURNS SETOF bytea
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE ROWS 1000
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'shapesync_batches_packed';
COMMENT ON FUNCTION shapesync.batches_packed(bigint, bigint) IS
    'The rows of shapesync.batches(after, upto), in the same order, each packed into one bytea (network byte order: int2 flags, int8 tick_id, [int8 tick_time_us], int8 xid, int4 relid, int1 op, [int8 version], then, each with an int4 length, [new_values and old_values as text_array_send() gives them], [shape_ops as array_send() gives them], [error]; flags 1, 32, 2, 4, 8, 16 say which bracketed fields are there): what the sidecar reads. SQLSTATE SS001 for a tick the change log no longer holds.';
REVOKE ALL ON FUNCTION shapesync.batches_packed(bigint, bigint) FROM PUBLIC;

CREATE FUNCTION shapesync.text_array_send(a text[]) RETURNS bytea
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'shapesync_text_array_send';
COMMENT ON FUNCTION shapesync.text_array_send(text[]) IS
    'array_send(a) for a one-dimensional text[] (the same bytes), without a function call and a buffer per element: how the sidecar reads batches'' new_values and old_values. Reads nothing but its argument.';

------------------------------------------------------------------------
-- Shapes registry (see docs/shape-membership.md)
------------------------------------------------------------------------

CREATE SEQUENCE shapesync.shape_id_seq AS int;
COMMENT ON SEQUENCE shapesync.shape_id_seq IS
    'Internal shape ids (shape_ops elements are shape_id * 4 + op).';

CREATE TABLE shapesync.shape_templates (
    template_id  int PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
    relid        oid NOT NULL,
    template_key text NOT NULL,
    template     text NOT NULL,
    template_sql text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX shape_templates_key ON shapesync.shape_templates (relid, template_key);
COMMENT ON TABLE shapesync.shape_templates IS
    'Shape filters with their constants lifted out as parameters; shapes that differ only in constants share one template, compiled once per backend.';
COMMENT ON COLUMN shapesync.shape_templates.template_key IS
    'sha256 of template, hex.';
COMMENT ON COLUMN shapesync.shape_templates.template IS
    'The analysed filter with its constants replaced by PARAM_EXTERN params, as nodeToString() text (what the trigger compiles).';
COMMENT ON COLUMN shapesync.shape_templates.template_sql IS
    'The template deparsed, with $n for the constants (for people).';

CREATE TABLE shapesync.shape_registry (
    handle          text PRIMARY KEY,
    shape_id        int NOT NULL UNIQUE DEFAULT nextval('shapesync.shape_id_seq'),
    relid           oid NOT NULL,
    definition      text NOT NULL,
    definition_key  text NOT NULL,
    where_clause    text,
    params          text[],
    canonical_where text,
    columns         text[],
    options         text NOT NULL DEFAULT '',
    template_id     int,
    consts          text[],
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'invalid')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    invalidated_at  timestamptz,
    reason          text,
    snapshot_rows   bigint,
    last_offset     text,
    updated_at      timestamptz
);
ALTER SEQUENCE shapesync.shape_id_seq OWNED BY shapesync.shape_registry.shape_id;
CREATE UNIQUE INDEX shape_registry_active_definition ON shapesync.shape_registry (definition_key)
    WHERE state = 'active';
CREATE INDEX shape_registry_active_relid ON shapesync.shape_registry (relid, shape_id)
    WHERE state = 'active';
COMMENT ON TABLE shapesync.shape_registry IS
    'Shapes (table, canonical filter, columns, options); an invalid shape is never revived, its definition gets a new handle.';
COMMENT ON COLUMN shapesync.shape_registry.where_clause IS
    'The filter as the client sent it; canonical_where is what PostgreSQL made of it (the identity).';
COMMENT ON COLUMN shapesync.shape_registry.consts IS
    'The constants of the filter, in template parameter order, as output text (ISO dates, UTC, iso_8601 intervals).';
COMMENT ON INDEX shapesync.shape_registry_active_definition IS
    'At most one active shape per definition (sha256 of table, canonical where, columns, options).';
COMMENT ON INDEX shapesync.shape_registry_active_relid IS
    'Active shapes of a table, by shape_id: what the capture trigger''s cache loads (incrementally, by shape_id).';

CREATE VIEW shapesync.shapes AS
    SELECT s.handle, s.shape_id, s.relid::pg_catalog.regclass AS table_name,
           s.canonical_where AS where_clause, s.columns, s.options, s.state, s.reason,
           s.created_at, s.invalidated_at, s.snapshot_rows, s.last_offset
      FROM shapesync.shape_registry s;
COMMENT ON VIEW shapesync.shapes IS
    'Shapes and their state, for people and the sidecar.';

CREATE FUNCTION shapesync.invalidate_table_cache(relid oid) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_invalidate_table_cache';
COMMENT ON FUNCTION shapesync.invalidate_table_cache(oid) IS
    'Send a relcache invalidation of the table at commit: backends reload their shape cache of it before their next write.';

CREATE FUNCTION shapesync.parse_where(rel pg_catalog.regclass, where_clause text, params text[] DEFAULT NULL,
                                      OUT canonical_where text, OUT template text,
                                      OUT template_sql text, OUT consts text[])
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_parse_where';
COMMENT ON FUNCTION shapesync.parse_where(pg_catalog.regclass, text, text[]) IS
    'Parse, analyse and validate a shape filter against its table: canonical form, template and constants; errors carry the position inside where_clause.';

CREATE TABLE shapesync.shape_removals (
    relid       oid NOT NULL,
    gen         bigint NOT NULL,
    shape_id    int,
    template_id int,
    consts      text[]
);
CREATE INDEX shape_removals_relid_gen ON shapesync.shape_removals (relid, gen);
COMMENT ON TABLE shapesync.shape_removals IS
    'Shapes that stopped being active, by generation of their table (tracked.shapes_gen), for the last 64 generations: backends take them out of their shape cache instead of rebuilding it; shape_id NULL means too many at once (rebuild).';

-- Registry changes invalidate the table's backend shape caches: a shape that
-- stops being active bumps the table's shapes_gen and is recorded in
-- shape_removals; backends load new shapes and drop removed ones
-- incrementally.
CREATE FUNCTION shapesync.on_registry_update() RETURNS trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    g bigint;
BEGIN
    FOR r IN SELECT o.relid, count(*) AS n
               FROM old_rows o JOIN new_rows n ON n.handle = o.handle
              WHERE o.state = 'active' AND n.state <> 'active'
              GROUP BY o.relid
    LOOP
        UPDATE shapesync.tracked t SET shapes_gen = t.shapes_gen + 1 WHERE t.relid = r.relid
        RETURNING t.shapes_gen INTO g;
        IF g IS NOT NULL THEN
            IF r.n <= 1000 THEN
                INSERT INTO shapesync.shape_removals (relid, gen, shape_id, template_id, consts)
                SELECT o.relid, g, o.shape_id, o.template_id, o.consts
                  FROM old_rows o JOIN new_rows n ON n.handle = o.handle
                 WHERE o.relid = r.relid AND o.state = 'active' AND n.state <> 'active';
            ELSE
                INSERT INTO shapesync.shape_removals (relid, gen) VALUES (r.relid, g);
            END IF;
            DELETE FROM shapesync.shape_removals s WHERE s.relid = r.relid AND s.gen <= g - 64;
        END IF;
        PERFORM shapesync.invalidate_table_cache(r.relid);
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION shapesync.on_registry_update() IS
    'Statement trigger of the registry: shapes leaving the active state are recorded and invalidate their table''s shape caches.';
CREATE TRIGGER shape_registry_state AFTER UPDATE ON shapesync.shape_registry
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION shapesync.on_registry_update();

CREATE FUNCTION shapesync.check_row_security(rel pg_catalog.regclass) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'shapesync_check_row_security';
COMMENT ON FUNCTION shapesync.check_row_security(pg_catalog.regclass) IS
    'Raise SQLSTATE SS002 when row-level security applies to the calling role on the table (shapes do not apply policies to live changes yet).';

CREATE FUNCTION shapesync.check_shape(rel pg_catalog.regclass, where_clause text, params text[] DEFAULT NULL,
                                      OUT canonical_where text, OUT error_field text, OUT error_code text,
                                      OUT error_message text, OUT error_detail text, OUT error_hint text,
                                      OUT error_position int)
    RETURNS record
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_check_shape';
COMMENT ON FUNCTION shapesync.check_shape(pg_catalog.regclass, text, text[]) IS
    'What get_or_create_shape() would refuse in a request (row-level security, the filter), returned as data instead of raised, so that rejected requests write nothing to the server log; canonical_where when the filter is valid.';

CREATE FUNCTION shapesync.get_or_create_shape(rel pg_catalog.regclass, where_clause text, columns text[],
                                              options text DEFAULT '', params text[] DEFAULT NULL)
    RETURNS TABLE (handle text, created boolean, shape_id int, canonical_where text)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET DateStyle = 'ISO, DMY'
    SET IntervalStyle = 'iso_8601'
    SET TimeZone = 'UTC'
    SET extra_float_digits = 1
    -- point lookups only: never a seq scan, even with stale statistics
    -- (a burst of registrations into a just-analysed registry would go quadratic)
    SET enable_seqscan = off
AS $$
DECLARE
    def  text;
    dkey text;
    h    text;
    sid  int;
    col  text;
    us   bigint;
    cw   text;
    tmpl text;
    tsql text;
    cs   text[];
    tid  int;
    tkey text;
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
    -- row-level security that applies to the caller (not to this function's owner) refuses the shape
    PERFORM shapesync.check_row_security(rel);

    IF where_clause IS NOT NULL AND btrim(where_clause, E' \t\r\n\f') <> '' THEN
        SELECT p.canonical_where, p.template, p.template_sql, p.consts INTO cw, tmpl, tsql, cs
          FROM shapesync.parse_where(rel, where_clause, params) p;
        tkey := encode(sha256(convert_to(tmpl, 'UTF8')), 'hex');
    END IF;

    def := json_build_object('relid', rel::oid, 'where', cw, 'columns', columns,
                             'options', coalesce(options, ''))::text;
    dkey := encode(sha256(convert_to(def, 'UTF8')), 'hex');
    LOOP
        -- Planned for this key each time (EXECUTE): a plan cached while the
        -- registry was small can be a scan of every active shape of the
        -- table (its partial relid index qualifies too), which made a burst
        -- of registrations on one connection quadratic.
        EXECUTE 'SELECT s.handle, s.shape_id FROM shapesync.shape_registry s
                  WHERE s.definition_key = $1 AND s.definition = $2 AND s.state = ''active'''
           INTO h, sid USING dkey, def;
        IF h IS NOT NULL THEN
            RETURN QUERY SELECT h, false, sid, cw;
            RETURN;
        END IF;

        -- registrations of a table are serialised, so that its shape_ids are
        -- taken in commit order (backends load new shapes by shape_id)
        PERFORM 1 FROM shapesync.tracked t WHERE t.relid = rel::oid FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'table "%" is not tracked', rel::text
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Run shapesync.track() on the table first.';
        END IF;

        tid := NULL;
        IF tmpl IS NOT NULL THEN
            INSERT INTO shapesync.shape_templates (relid, template_key, template, template_sql)
            VALUES (rel::oid, tkey, tmpl, tsql)
            ON CONFLICT (relid, template_key) DO NOTHING
            RETURNING template_id INTO tid;
            IF tid IS NULL THEN
                SELECT t.template_id INTO tid FROM shapesync.shape_templates t
                 WHERE t.relid = rel::oid AND t.template_key = tkey;
            END IF;
        END IF;

        us := floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
        h := left(dkey, 16) || '-' || us::text;
        INSERT INTO shapesync.shape_registry AS s
               (handle, relid, definition, definition_key, where_clause, params, canonical_where,
                columns, options, template_id, consts)
        VALUES (h, rel::oid, def, dkey, where_clause, params, cw,
                columns, coalesce(options, ''), tid, cs)
        ON CONFLICT DO NOTHING
        RETURNING s.shape_id INTO sid;
        IF FOUND THEN
            PERFORM shapesync.invalidate_table_cache(rel::oid);
            RETURN QUERY SELECT h, true, sid, cw;
            RETURN;
        END IF;
        -- same definition created concurrently, or a handle collision: look again
    END LOOP;
END
$$;
COMMENT ON FUNCTION shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[]) IS
    'The active shape for (table, canonical where, columns, options), created if needed; the filter is parsed and validated by PostgreSQL, $n bound from params; handles are <hash>-<unix us> and never reused. Refused (SQLSTATE SS002) when row-level security applies to the caller on the table.';

CREATE FUNCTION shapesync.wait_for_writers(rel pg_catalog.regclass) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_wait_for_writers';
COMMENT ON FUNCTION shapesync.wait_for_writers(pg_catalog.regclass) IS
    'Wait until every transaction holding a write lock on the table now has ended (new writers are not blocked); call after registering a shape, before its snapshot.';

CREATE FUNCTION shapesync.report_shape(handle text, snapshot_rows bigint, last_offset text) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE shapesync.shape_registry s
       SET snapshot_rows = coalesce(report_shape.snapshot_rows, s.snapshot_rows),
           last_offset = coalesce(report_shape.last_offset, s.last_offset),
           updated_at = now()
     WHERE s.handle = report_shape.handle;
END
$$;
COMMENT ON FUNCTION shapesync.report_shape(text, bigint, text) IS
    'The sidecar reports a shape''s snapshot size and latest offset (shown in shapesync.shapes).';

CREATE FUNCTION shapesync.report_shapes(handles text[], last_offsets text[]) RETURNS void
    LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE shapesync.shape_registry s
       SET last_offset = coalesce(u.last_offset, s.last_offset),
           updated_at = now()
      FROM unnest(handles, last_offsets) AS u(handle, last_offset)
     WHERE s.handle = u.handle;
$$;
COMMENT ON FUNCTION shapesync.report_shapes(text[], text[]) IS
    'The sidecar reports the latest offsets of many shapes at once (shown in shapesync.shapes).';

CREATE FUNCTION shapesync.invalidate_shape(handle text, reason text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE shapesync.shape_registry s
       SET state = 'invalid', invalidated_at = now(), reason = invalidate_shape.reason
     WHERE s.handle = invalidate_shape.handle AND s.state = 'active';
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION shapesync.invalidate_shape(text, text) IS
    'Mark an active shape invalid (its clients must refetch); false if it was not active.';

CREATE FUNCTION shapesync.log_schema_change(relid oid, reason text) RETURNS void
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_log_schema_change';
COMMENT ON FUNCTION shapesync.log_schema_change(oid, text) IS
    'Log an S change for a table (its shapes are invalid from this point of the stream on).';

CREATE FUNCTION shapesync.cache_stats(
    OUT relid pg_catalog.regclass,
    OUT valid boolean,
    OUT whole_table_shapes int,
    OUT filtered_shapes int,
    OUT templates int,
    OUT filters int,
    OUT memory_bytes bigint,
    OUT full_builds bigint,
    OUT incremental_builds bigint,
    OUT last_build_us bigint)
    RETURNS SETOF record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'shapesync_cache_stats';
COMMENT ON FUNCTION shapesync.cache_stats() IS
    'The shape caches of this backend, one row per tracked table it wrote to: shapes, templates, memory, rebuilds.';

CREATE FUNCTION shapesync.membership_stats(
    OUT relid pg_catalog.regclass,
    OUT range_templates int,
    OUT range_filters int,
    OUT scan_filters int,
    OUT guarded_filters int,
    OUT rows_classified bigint,
    OUT filter_evaluations bigint,
    OUT guard_subtransactions bigint)
    RETURNS SETOF record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'shapesync_membership_stats';
COMMENT ON FUNCTION shapesync.membership_stats() IS
    'How the shape caches of this backend classify rows, one row per tracked table it wrote to: templates and filters with a range index, filters evaluated for every row, filters evaluated under the guard, and counters of rows, filter evaluations and guard subtransactions.';

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
        UPDATE shapesync.shape_registry s
           SET state = 'invalid', invalidated_at = now(), reason = 'ddl: ' || r.command_tag
         WHERE s.relid = r.objid AND s.state = 'active';
        PERFORM shapesync.log_schema_change(r.objid, 'ddl: ' || r.command_tag);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'shapesync could not invalidate shapes after DDL: %', SQLERRM;
END
$$;
COMMENT ON FUNCTION shapesync.on_ddl_command_end() IS
    'Event trigger: DDL on a tracked table invalidates its shapes and logs an S change.';

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
        DELETE FROM shapesync.shape_removals s WHERE s.relid = r.objid;
        UPDATE shapesync.shape_registry s
           SET state = 'invalid', invalidated_at = now(), reason = 'drop'
         WHERE s.relid = r.objid AND s.state = 'active';
        PERFORM shapesync.log_schema_change(r.objid, 'drop');
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'shapesync could not unregister a dropped table: %', SQLERRM;
END
$$;
COMMENT ON FUNCTION shapesync.on_sql_drop() IS
    'Event trigger: a dropped tracked table is unregistered, its shapes invalidated and an S change logged.';

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
    'Sync health: ticker, last tick, change-log records written since it (unticked_changes, an estimate: one record per transaction, more for transactions larger than shapesync.tx_buffer_size), changes in the log (change_log_rows), and an upper bound of the age of the oldest unticked change.';

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
