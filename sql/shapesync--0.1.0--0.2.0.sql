-- shapesync 0.1.0 -> 0.2.0: hostile input and least privilege.
--
--  * check_shape(): the request checks of get_or_create_shape() with the
--    error returned as data (rejected filters no longer reach the server
--    log); constant folding is bounded (shapesync.filter_fold_timeout,
--    shapesync.filter_max_constant_bytes, in the library).
--  * check_row_security(): get_or_create_shape() refuses a table whose
--    row-level security applies to the caller (SQLSTATE SS002); one line
--    added to its body, after the column checks.
--  * grant_sidecar()/revoke_sidecar() and shapesync.sidecar_roles: a
--    least-privilege role for shapesyncd.

\echo Use "ALTER EXTENSION shapesync UPDATE TO '0.2.0'" to load this file. \quit

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

CREATE OR REPLACE FUNCTION shapesync.get_or_create_shape(rel pg_catalog.regclass, where_clause text, columns text[],
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

REVOKE ALL ON FUNCTION shapesync.check_row_security(pg_catalog.regclass),
                       shapesync.check_shape(pg_catalog.regclass, text, text[]) FROM PUBLIC;

------------------------------------------------------------------------
-- Least privilege for the sidecar (docs/security.md)
--
-- shapesync.grant_sidecar(role) gives a role exactly what shapesyncd
-- needs: read the change log, ticks and registry, register shapes, store
-- snapshots, report offsets, tick and maintain the log when there is no
-- worker, and SELECT on every tracked table (track() grants new ones to
-- the roles recorded in shapesync.sidecar_roles).
------------------------------------------------------------------------

CREATE TABLE shapesync.sidecar_roles (
    roleid     oid PRIMARY KEY,
    granted_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('shapesync.sidecar_roles', '');
COMMENT ON TABLE shapesync.sidecar_roles IS
    'Roles given the sidecar''s privileges by shapesync.grant_sidecar(): shapesync.track() grants them SELECT on each table it starts tracking.';

CREATE FUNCTION shapesync.grant_sidecar(role name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid oid;
    t   record;
BEGIN
    SELECT r.oid INTO rid FROM pg_catalog.pg_roles r WHERE r.rolname = grant_sidecar.role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" does not exist', grant_sidecar.role
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it first, e.g. CREATE ROLE shapesync_sidecar LOGIN PASSWORD ''...''.';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA shapesync TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT ON shapesync.tracked, shapesync.ticks, shapesync.log_state, '
                   'shapesync.changes, shapesync.shapes TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON shapesync.shape_snapshots TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT, INSERT ON shapesync.shape_snapshot_chunks TO %I', grant_sidecar.role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION '
                   'shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[]), '
                   'shapesync.check_shape(pg_catalog.regclass, text, text[]), '
                   'shapesync.check_row_security(pg_catalog.regclass), '
                   'shapesync.parse_where(pg_catalog.regclass, text, text[]), '
                   'shapesync.wait_for_writers(pg_catalog.regclass), '
                   'shapesync.invalidate_shape(text, text), '
                   'shapesync.report_shape(text, bigint, text), '
                   'shapesync.report_shapes(text[], text[]), '
                   'shapesync.consumer_report(text, bigint), '
                   'shapesync.batch(bigint), '
                   'shapesync.row_values_or_null(oid, int4, bytea), '
                   'shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8), '
                   'shapesync.tick(boolean), '
                   'shapesync.maintain(interval, interval) TO %I', grant_sidecar.role);
    INSERT INTO shapesync.sidecar_roles (roleid) VALUES (rid) ON CONFLICT (roleid) DO NOTHING;
    FOR t IN SELECT c.oid::pg_catalog.regclass AS rel, n.nspname
               FROM shapesync.tracked k
               JOIN pg_catalog.pg_class c ON c.oid = k.relid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', t.nspname, grant_sidecar.role);
        EXECUTE format('GRANT SELECT ON %s TO %I', t.rel, grant_sidecar.role);
    END LOOP;
END
$$;
COMMENT ON FUNCTION shapesync.grant_sidecar(name) IS
    'Grant a role what shapesyncd needs and nothing more (see docs/security.md), including SELECT on every tracked table, now and when more are tracked.';

CREATE FUNCTION shapesync.revoke_sidecar(role name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_sidecar.role) THEN
        RAISE EXCEPTION 'role "%" does not exist', revoke_sidecar.role
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('REVOKE SELECT ON shapesync.tracked, shapesync.ticks, shapesync.log_state, '
                   'shapesync.changes, shapesync.shapes FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON shapesync.shape_snapshots FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE SELECT, INSERT ON shapesync.shape_snapshot_chunks FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION '
                   'shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[]), '
                   'shapesync.check_shape(pg_catalog.regclass, text, text[]), '
                   'shapesync.check_row_security(pg_catalog.regclass), '
                   'shapesync.parse_where(pg_catalog.regclass, text, text[]), '
                   'shapesync.wait_for_writers(pg_catalog.regclass), '
                   'shapesync.invalidate_shape(text, text), '
                   'shapesync.report_shape(text, bigint, text), '
                   'shapesync.report_shapes(text[], text[]), '
                   'shapesync.consumer_report(text, bigint), '
                   'shapesync.batch(bigint), '
                   'shapesync.row_values_or_null(oid, int4, bytea), '
                   'shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8), '
                   'shapesync.tick(boolean), '
                   'shapesync.maintain(interval, interval) FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE USAGE ON SCHEMA shapesync FROM %I', revoke_sidecar.role);
    FOR t IN SELECT k.relid::pg_catalog.regclass AS rel FROM shapesync.tracked k LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM %I', t.rel, revoke_sidecar.role);
    END LOOP;
    DELETE FROM shapesync.sidecar_roles s
     WHERE s.roleid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_sidecar.role);
END
$$;
COMMENT ON FUNCTION shapesync.revoke_sidecar(name) IS
    'Take back what grant_sidecar() gave a role (USAGE on the schemas of tracked tables is left).';

REVOKE ALL ON shapesync.sidecar_roles FROM PUBLIC;
REVOKE ALL ON FUNCTION shapesync.grant_sidecar(name), shapesync.revoke_sidecar(name) FROM PUBLIC;

-- ==== mutations (issue 12) ====
--
-- Writes (docs/mutations.md): shapesync.apply_mutations() and its helpers,
-- write settings and conflict policies, idempotent mutation ids; row
-- versions: shapesync.row_version(xmin), and the change log's version
-- column (the new row's xmin as an xid8 when a subtransaction wrote it),
-- returned by batch() (new output column, so batch() is re-created; the
-- roles given it by grant_sidecar() get it back).

ALTER TABLE shapesync.changes ADD COLUMN version pg_catalog.xid8;
COMMENT ON COLUMN shapesync.changes.version IS
    'I/U rows: the new row''s version (its xmin as an xid8) when it differs from xid, i.e. when a subtransaction wrote the row; NULL means the version is xid.';

DROP FUNCTION shapesync.batch(bigint);
CREATE FUNCTION shapesync.batch(tick_id bigint)
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
    IF batch.tick_id > 0 AND batch.tick_id <= horizon THEN
        RAISE EXCEPTION 'the change log no longer holds tick %', batch.tick_id
            USING ERRCODE = 'SS001',
                  DETAIL = format('Changes visible in tick %s were truncated; batches are complete only after it.', horizon),
                  HINT = 'Re-sync the shapes that need older changes (shapesync.log_retention keeps them longer).';
    END IF;
    SELECT t.snap INTO cur_snap FROM shapesync.ticks t WHERE t.tick_id = batch.tick_id;
    SELECT t.snap INTO prev_snap FROM shapesync.ticks t
     WHERE t.tick_id < batch.tick_id ORDER BY t.tick_id DESC LIMIT 1;
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
    IF batch.tick_id > 0 AND (SELECT s.horizon_tick FROM shapesync.log_state s) >= batch.tick_id THEN
        RAISE EXCEPTION 'the change log no longer holds tick %', batch.tick_id
            USING ERRCODE = 'SS001',
                  DETAIL = 'It was truncated while being read.',
                  HINT = 'Re-sync the shapes that need older changes (shapesync.log_retention keeps them longer).';
    END IF;
END
$$;
COMMENT ON FUNCTION shapesync.batch(bigint) IS
    'Changes of a tick (visible in its snapshot, not in the previous tick''s), one row per change (records expanded), decoded, ordered by transaction (tx_max_seq) and within it in the order the changes were made; seq is the seq of the record holding the change; with the new row''s version for I/U; SQLSTATE SS001 when the change log no longer holds them all.';
REVOKE ALL ON FUNCTION shapesync.batch(bigint) FROM PUBLIC;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT a.rolname FROM shapesync.sidecar_roles s JOIN pg_catalog.pg_roles a ON a.oid = s.roleid LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION shapesync.batch(bigint) TO %I', r.rolname);
    END LOOP;
END
$$;


------------------------------------------------------------------------
-- Writes (issue 12, docs/mutations.md): the database half of
-- POST /v1/mutations.
--
-- shapesync.apply_mutations(mutations, idempotency_key, allow_partial)
-- applies a batch of client mutations as the CALLER (the token's role,
-- with request.jwt.claims set): grants, row-level security and triggers
-- decide as for any statement of that role.  Each mutation runs in its
-- own subtransaction so that one refusal does not hide the others'
-- outcomes; unless every mutation is applied (or allow_partial and no
-- input is invalid), the whole batch is rolled back inside the function
-- and the outcomes are returned.  Values are bound as parameters
-- (jsonb_populate_record ... USING), identifiers are quoted with %I.
--
-- Idempotency: the outcome of every mutation of a committed batch is
-- stored in shapesync.mutation_log under its id (and the whole response
-- under the request's idempotency key in shapesync.mutation_requests),
-- scoped to the calling principal (role + "sub" claim); advisory
-- transaction locks on the ids serialise concurrent replays.  Kept for
-- shapesync.mutation_retention.
--
-- Conflicts: a mutation whose base version is not the row's current
-- version is resolved by the table's policy (shapesync.write_policies):
-- reject, merge, last_write_wins or a user function.
------------------------------------------------------------------------

CREATE FUNCTION shapesync.row_version(xmin pg_catalog.xid) RETURNS pg_catalog.xid8
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'shapesync_row_version';
COMMENT ON FUNCTION shapesync.row_version(pg_catalog.xid) IS
    'The version of a row from its xmin system column: the xid8 of the (sub)transaction that wrote the live tuple. Select shapesync.row_version(t.xmin)::text next to each snapshot row.';

CREATE TABLE shapesync.write_policies (
    relid           oid PRIMARY KEY REFERENCES shapesync.tracked (relid) ON DELETE CASCADE,
    writable        boolean NOT NULL DEFAULT true,
    conflict_policy text NOT NULL DEFAULT 'reject'
                    CHECK (conflict_policy IN ('reject', 'merge', 'last_write_wins', 'function')),
    resolver        pg_catalog.regprocedure,
    CHECK ((conflict_policy = 'function') = (resolver IS NOT NULL))
);
SELECT pg_catalog.pg_extension_config_dump('shapesync.write_policies', '');
COMMENT ON TABLE shapesync.write_policies IS
    'Write settings of tracked tables for shapesync.apply_mutations(); a tracked table without a row is writable with conflict policy reject.';
COMMENT ON COLUMN shapesync.write_policies.resolver IS
    'conflict_policy function: the function (base jsonb, mine jsonb, theirs jsonb) RETURNS jsonb that resolves conflicts.';

CREATE TABLE shapesync.mutation_log (
    id         uuid PRIMARY KEY,
    principal  text NOT NULL,
    result     jsonb NOT NULL,
    txid       pg_catalog.xid8 NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mutation_log_applied_at_idx ON shapesync.mutation_log USING btree (applied_at);
COMMENT ON TABLE shapesync.mutation_log IS
    'Outcome of every mutation of a committed shapesync.apply_mutations() batch, by client mutation id: a replay returns it and changes nothing. Deleted after shapesync.mutation_retention.';
COMMENT ON COLUMN shapesync.mutation_log.principal IS
    'Who sent it: the role (SET ROLE''s, else the session user) and the "sub" claim of request.jwt.claims; another principal reusing the id is refused.';
COMMENT ON INDEX shapesync.mutation_log_applied_at_idx IS
    'Retention deletes by age.';

CREATE TABLE shapesync.mutation_requests (
    principal       text NOT NULL,
    idempotency_key text NOT NULL,
    response        jsonb NOT NULL,
    txid            pg_catalog.xid8 NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, idempotency_key)
);
CREATE INDEX mutation_requests_created_at_idx ON shapesync.mutation_requests USING btree (created_at);
COMMENT ON TABLE shapesync.mutation_requests IS
    'Response of every committed shapesync.apply_mutations() call made with an idempotency key (the Idempotency-Key header), per principal. Deleted after shapesync.mutation_retention.';
COMMENT ON INDEX shapesync.mutation_requests_created_at_idx IS
    'Retention deletes by age.';

------------------------------------------------------------------------
-- Settings of a table (run as the extension owner)
------------------------------------------------------------------------

CREATE FUNCTION shapesync.set_writable(rel pg_catalog.regclass, writable boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM shapesync.tracked t WHERE t.relid = rel::oid) THEN
        RAISE EXCEPTION 'table "%" is not tracked', rel::text
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run shapesync.track() on the table first.';
    END IF;
    INSERT INTO shapesync.write_policies AS p (relid, writable) VALUES (rel::oid, set_writable.writable)
    ON CONFLICT (relid) DO UPDATE SET writable = excluded.writable;
END
$$;
COMMENT ON FUNCTION shapesync.set_writable(pg_catalog.regclass, boolean) IS
    'Allow (true, the default) or refuse (false) writes to a tracked table through shapesync.apply_mutations().';

CREATE FUNCTION shapesync.set_conflict_policy(rel pg_catalog.regclass, policy text) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
    pol text := policy;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM shapesync.tracked t WHERE t.relid = rel::oid) THEN
        RAISE EXCEPTION 'table "%" is not tracked', rel::text
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run shapesync.track() on the table first.';
    END IF;
    IF pol NOT IN ('reject', 'merge', 'last_write_wins') THEN
        -- a function name, parsed as a regprocedure (never as SQL)
        BEGIN
            fn := to_regprocedure(pol || '(jsonb, jsonb, jsonb)');
        EXCEPTION WHEN OTHERS THEN
            fn := NULL;
        END;
        IF fn IS NULL THEN
            RAISE EXCEPTION 'invalid conflict policy "%"', pol
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'A policy is reject, merge, last_write_wins or the name of a function (base jsonb, mine jsonb, theirs jsonb) RETURNS jsonb.',
                      HINT = 'Schema-qualify the function''s name.';
        END IF;
        IF (SELECT p.prorettype FROM pg_proc p WHERE p.oid = fn) <> 'jsonb'::regtype
           OR (SELECT p.proretset OR p.prokind <> 'f' FROM pg_proc p WHERE p.oid = fn) THEN
            RAISE EXCEPTION 'conflict policy function % must return a single jsonb', fn::text
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        pol := 'function';
    END IF;
    INSERT INTO shapesync.write_policies AS p (relid, conflict_policy, resolver)
    VALUES (rel::oid, pol, fn)
    ON CONFLICT (relid) DO UPDATE SET conflict_policy = excluded.conflict_policy, resolver = excluded.resolver;
END
$$;
COMMENT ON FUNCTION shapesync.set_conflict_policy(pg_catalog.regclass, text) IS
    'Conflict policy of a tracked table for shapesync.apply_mutations(): reject (default), merge, last_write_wins, or the name of a function (base jsonb, mine jsonb, theirs jsonb) RETURNS jsonb, called as the writer.';

CREATE VIEW shapesync.write_settings AS
    SELECT t.relid::pg_catalog.regclass AS relid,
           coalesce(p.writable, true) AS writable,
           coalesce(p.conflict_policy, 'reject') AS conflict_policy,
           p.resolver
      FROM shapesync.tracked t
      LEFT JOIN shapesync.write_policies p ON p.relid = t.relid;
COMMENT ON VIEW shapesync.write_settings IS
    'Write settings of every tracked table (shapesync.set_writable, shapesync.set_conflict_policy).';

------------------------------------------------------------------------
-- SECURITY DEFINER helpers: what a writer role may read or write of the
-- extension's own tables, and nothing else.  The principal is computed
-- here, never passed in.
------------------------------------------------------------------------

-- (plpgsql, not sql: a LANGUAGE sql function with SET is neither inlined
-- nor plan-cached, so it would be parsed and planned on every call)
CREATE FUNCTION shapesync.mutation_principal() RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE WHEN current_setting('role') = 'none' THEN session_user::text ELSE current_setting('role') END
           || '/' || coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub', '');
END
$$;
COMMENT ON FUNCTION shapesync.mutation_principal() IS
    'Who is writing: the role (SET ROLE''s, else the session user), "/", and the "sub" claim of request.jwt.claims.';

CREATE FUNCTION shapesync.write_target(rel pg_catalog.regclass,
                                       OUT tracked boolean, OUT writable boolean,
                                       OUT conflict_policy text, OUT resolver text)
    LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT t.relid IS NOT NULL, coalesce(p.writable, true), coalesce(p.conflict_policy, 'reject'),
           p.resolver::oid::regproc::text
      INTO tracked, writable, conflict_policy, resolver
      FROM (SELECT rel::oid AS relid) r
      LEFT JOIN shapesync.tracked t ON t.relid = r.relid
      LEFT JOIN shapesync.write_policies p ON p.relid = r.relid;
END
$$;
COMMENT ON FUNCTION shapesync.write_target(pg_catalog.regclass) IS
    'Is a table tracked and writable, and its conflict policy (for shapesync.apply_mutations(), which runs as the writer).';

CREATE FUNCTION shapesync.mutation_lookup(ids uuid[], idempotency_key text) RETURNS jsonb
    LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who text := shapesync.mutation_principal();
    r   jsonb;
BEGIN
    IF idempotency_key IS NOT NULL THEN
        SELECT q.response INTO r FROM shapesync.mutation_requests q
         WHERE q.principal = who AND q.idempotency_key = mutation_lookup.idempotency_key;
        IF FOUND THEN
            RETURN jsonb_build_object('request', r);
        END IF;
    END IF;
    SELECT jsonb_object_agg(l.id::text, CASE WHEN l.principal = who THEN l.result ELSE 'null'::jsonb END)
      INTO r FROM shapesync.mutation_log l WHERE l.id = ANY (ids);
    RETURN jsonb_build_object('mutations', coalesce(r, '{}'));
END
$$;
COMMENT ON FUNCTION shapesync.mutation_lookup(uuid[], text) IS
    'Stored outcomes of the caller''s mutation ids (JSON null for an id another principal used) or the stored response of its idempotency key.';

CREATE FUNCTION shapesync.purge_mutations(retention interval DEFAULT NULL, max_rows int DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz;
    n1     bigint;
    n2     bigint;
BEGIN
    cutoff := now() - coalesce(retention, shapesync.setting_interval('shapesync.mutation_retention', '7 days'));
    WITH d AS (DELETE FROM shapesync.mutation_log l
                WHERE l.ctid = ANY (ARRAY(SELECT x.ctid FROM shapesync.mutation_log x
                                           WHERE x.applied_at < cutoff ORDER BY x.applied_at
                                           LIMIT max_rows FOR UPDATE SKIP LOCKED))
               RETURNING 1)
    SELECT count(*) INTO n1 FROM d;
    WITH d AS (DELETE FROM shapesync.mutation_requests q
                WHERE q.ctid = ANY (ARRAY(SELECT x.ctid FROM shapesync.mutation_requests x
                                           WHERE x.created_at < cutoff ORDER BY x.created_at
                                           LIMIT max_rows FOR UPDATE SKIP LOCKED))
               RETURNING 1)
    SELECT count(*) INTO n2 FROM d;
    RETURN n1 + n2;
END
$$;
COMMENT ON FUNCTION shapesync.purge_mutations(interval, int) IS
    'Delete stored mutation outcomes and idempotency keys older than retention (default shapesync.mutation_retention, 7 days), at most max_rows of each (NULL: all); returns how many. apply_mutations() calls it for a few rows on every committed batch.';

CREATE FUNCTION shapesync.mutation_record(results jsonb, idempotency_key text, response jsonb) RETURNS void
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who text := shapesync.mutation_principal();
    me  xid8 := pg_current_xact_id();
BEGIN
    IF jsonb_typeof(results) <> 'array' OR jsonb_array_length(results) > 10000 THEN
        RAISE EXCEPTION 'invalid mutation results'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- a result over 64 kB is kept without the server row (a replay then
    -- reports the conflict without it: the client refetches the row)
    INSERT INTO shapesync.mutation_log (id, principal, result, txid)
    SELECT (r ->> 'id')::uuid, who,
           CASE WHEN octet_length(r::text) > 65536 THEN r - 'row' ELSE r END, me
      FROM jsonb_array_elements(results) AS r
     WHERE r ->> 'status' IN ('applied', 'conflict', 'rejected');
    IF idempotency_key IS NOT NULL THEN
        INSERT INTO shapesync.mutation_requests (principal, idempotency_key, response, txid)
        VALUES (who, idempotency_key,
                CASE WHEN octet_length(response::text) > 1048576
                     THEN response - 'results' || '{"results_dropped": true}' ELSE response END, me);
    END IF;
    -- bounded storage: every write deletes more expired rows than it adds
    PERFORM shapesync.purge_mutations(NULL, 2 * jsonb_array_length(results) + 16);
END
$$;
COMMENT ON FUNCTION shapesync.mutation_record(jsonb, text, jsonb) IS
    'Store the outcomes of a committed batch for replays, under the caller''s principal (called by shapesync.apply_mutations()); deletes expired ones.';

------------------------------------------------------------------------
-- Applying mutations (SECURITY INVOKER: the writer's privileges and
-- row-level security decide; no SET search_path, so that the table's own
-- triggers run with the session's path)
------------------------------------------------------------------------

-- Typed, canonical text of some column values of a table: {col: text or null}.
CREATE FUNCTION shapesync.mutation_texts(rel pg_catalog.regclass, vals jsonb, field text) RETURNS jsonb
    LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    cols text[];
    k    text;
    v    jsonb;
    r    jsonb;
BEGIN
    IF vals IS NULL OR vals = '{}'::jsonb THEN
        RETURN '{}'::jsonb;
    END IF;
    SELECT array_agg(e.key ORDER BY e.key) INTO cols FROM jsonb_each(vals) e;
    FOREACH k IN ARRAY cols LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = rel AND a.attname::text = k AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column "%" of table "%" does not exist', k, rel::text
                USING ERRCODE = 'undefined_column', COLUMN = field || '.' || k;
        END IF;
    END LOOP;
    BEGIN
        EXECUTE format('SELECT pg_catalog.jsonb_object_agg(u.k, u.v) '
                       'FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) r, '
                       'unnest($2::text[], ARRAY[%s]::text[]) u(k, v)',
                       rel, (SELECT string_agg(format('r.%I::text', c), ', ' ORDER BY o) FROM unnest(cols) WITH ORDINALITY x(c, o)))
           INTO r USING vals, cols;
    EXCEPTION WHEN data_exception OR datatype_mismatch OR invalid_text_representation THEN
        -- name the column that does not convert
        FOREACH k IN ARRAY cols LOOP
            BEGIN
                EXECUTE format('SELECT r.%I::text FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) r', k, rel)
                   USING jsonb_build_object(k, vals -> k);
            EXCEPTION WHEN OTHERS THEN
                RAISE EXCEPTION 'invalid value for column "%" of table "%": %', k, rel::text, SQLERRM
                    USING ERRCODE = SQLSTATE, COLUMN = field || '.' || k;
            END;
        END LOOP;
        RAISE;
    END;
    RETURN r;
END
$$;
COMMENT ON FUNCTION shapesync.mutation_texts(pg_catalog.regclass, jsonb, text) IS
    'Column values of a mutation converted to the table''s types and back to text (canonical, for comparisons); errors name the field (e.g. values.title).';

-- Raise a bad-input error about a field of a mutation.
CREATE FUNCTION shapesync.mutation_input_error(field text, message text, hint text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RAISE EXCEPTION '%', message
        USING ERRCODE = 'invalid_parameter_value', COLUMN = field, HINT = coalesce(hint, '');
END
$$;
COMMENT ON FUNCTION shapesync.mutation_input_error(text, text, text) IS
    'Raise invalid_parameter_value naming the field of a mutation (errors of apply_mutations() carry it as their column name).';

-- What apply_mutation() needs to know of a table, as the caller sees it:
-- computed once per table name per apply_mutations() call.  Raises nothing:
-- apply_mutation() raises for a missing, untracked, read-only or keyless
-- table, in the order it checks the mutation's fields.
CREATE FUNCTION shapesync.mutation_table(name text) RETURNS jsonb
    LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    rel      regclass;
    tgt      record;
    pk       text[];
    pkcon    name;
    readable text[];
BEGIN
    BEGIN
        rel := pg_catalog.to_regclass(name);
    EXCEPTION WHEN OTHERS THEN
        rel := NULL;
    END;
    IF rel IS NULL THEN
        RETURN '{"rel": null}';
    END IF;
    SELECT * INTO tgt FROM shapesync.write_target(rel);
    IF NOT tgt.tracked THEN
        RETURN jsonb_build_object('rel', rel::oid, 'tracked', false);
    END IF;
    SELECT array_agg(a.attname::text ORDER BY x.o), c.conname INTO pk, pkcon
      FROM pg_catalog.pg_constraint c
      CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY x(attnum, o)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = x.attnum
     WHERE c.conrelid = rel AND c.contype = 'p'
     GROUP BY c.conname;
    -- what the caller may read of the row (conflicts return these columns)
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO readable
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
       AND pg_catalog.has_column_privilege(rel, a.attnum, 'SELECT');
    RETURN jsonb_build_object(
        'rel', rel::oid, 'tracked', true, 'writable', tgt.writable,
        'conflict_policy', tgt.conflict_policy, 'resolver', tgt.resolver,
        'pk', pk, 'pkcon', pkcon, 'readable', readable,
        'columns', (SELECT coalesce(jsonb_object_agg(a.attname, true), '{}') FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped),
        'pk_cond', (SELECT string_agg(format('t.%I = k.%I', c, c), ' AND ') FROM unnest(pk) c),
        'sel_sql', format('SELECT t.xmin, (SELECT pg_catalog.jsonb_object_agg(u.k, u.v) '
                          'FROM unnest($2::text[], ARRAY[%s]::text[]) u(k, v)) '
                          'FROM ONLY %s t, pg_catalog.jsonb_populate_record(NULL::%s, $1) k WHERE %s',
                          (SELECT string_agg(format('t.%I::text', c), ', ' ORDER BY o) FROM unnest(readable) WITH ORDINALITY x(c, o)),
                          rel, rel, (SELECT string_agg(format('t.%I = k.%I', c, c), ' AND ') FROM unnest(pk) c)));
END
$$;
COMMENT ON FUNCTION shapesync.mutation_table(text) IS
    'A table of shapesync.apply_mutations() by name, as the caller sees it: OID, write settings, primary key, readable columns, the statement that reads a row. Computed once per table per call.';

-- Apply one mutation; returns its result, or raises (the caller catches).
-- chains: row id -> {"orig": version before this request wrote it, "cur": version it wrote}
-- tbl: shapesync.mutation_table(m ->> 'table'), or NULL when that is not a non-empty string
CREATE FUNCTION shapesync.apply_mutation(m jsonb, chains jsonb, tbl jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $$
DECLARE
    k          text;
    rel        regclass;
    tgt_policy text;
    tgt_fn     text;
    op         text;
    pk         text[];
    pkcon      name;
    key        jsonb;
    vals       jsonb;
    base       jsonb;
    base_ver   xid8;
    base_vals  jsonb;
    key_txt    jsonb;
    vals_txt   jsonb;
    row_id     text;
    readable   text[];
    can_read   boolean;
    pk_cond    text;
    sel_sql    text;
    cur_xmin   xid;
    cur_row    jsonb;
    cur_ver    xid8;
    new_xmin   xid;
    rc         bigint;
    decision   text;       -- apply | conflict | resolved
    write_vals jsonb;      -- values written by an update (columns -> json)
    fn_result  jsonb;
    resolved   text;
    attempt    int := 0;
    chain      jsonb;
    res        jsonb;
    cols       text;
    reason     text;
    conv_sql   text;
    write_sql  text;
    converted  boolean := false;
BEGIN
    IF jsonb_typeof(m) IS DISTINCT FROM 'object' THEN
        PERFORM shapesync.mutation_input_error('', 'a mutation must be a JSON object');
    END IF;
    FOR k IN SELECT e.key FROM jsonb_each(m) e LOOP
        IF k NOT IN ('id', 'table', 'op', 'key', 'values', 'base') THEN
            PERFORM shapesync.mutation_input_error(k, format('unknown field "%s"', k),
                'A mutation has id, table, op, key, values and base.');
        END IF;
    END LOOP;

    -- table: tracked and writable (a missing table and an untracked one get the same answer)
    IF jsonb_typeof(m -> 'table') IS DISTINCT FROM 'string' OR m ->> 'table' = '' THEN
        PERFORM shapesync.mutation_input_error('table', 'table must be a non-empty string');
    END IF;
    rel := (tbl ->> 'rel')::oid::regclass;
    IF rel IS NULL OR NOT (tbl ->> 'tracked')::boolean THEN
        RAISE EXCEPTION 'table "%" does not exist', m ->> 'table'
            USING ERRCODE = 'undefined_table', COLUMN = 'table',
                  HINT = 'Only tables tracked by shapesync are writable; write a qualified name as schema.table and quote names that need it ("My Table").';
    END IF;
    IF NOT (tbl ->> 'writable')::boolean THEN
        RAISE EXCEPTION 'table "%" is read-only for mutations', rel::text
            USING ERRCODE = 'insufficient_privilege', COLUMN = 'table',
                  DETAIL = 'shapesync.set_writable() turned writes through shapesync off for this table.';
    END IF;

    op := m ->> 'op';
    IF jsonb_typeof(m -> 'op') IS DISTINCT FROM 'string' OR op NOT IN ('insert', 'update', 'delete') THEN
        PERFORM shapesync.mutation_input_error('op', 'op must be "insert", "update" or "delete"');
    END IF;

    tgt_policy := tbl ->> 'conflict_policy';
    tgt_fn := tbl ->> 'resolver';
    IF jsonb_typeof(tbl -> 'pk') = 'array' THEN
        pk := ARRAY(SELECT jsonb_array_elements_text(tbl -> 'pk'));
    END IF;
    pkcon := tbl ->> 'pkcon';
    IF pk IS NULL THEN
        RAISE EXCEPTION 'table "%" has no primary key', rel::text
            USING ERRCODE = 'invalid_table_definition', COLUMN = 'table';
    END IF;

    -- key
    key := m -> 'key';
    IF key IS NOT NULL AND jsonb_typeof(key) = 'null' THEN
        key := NULL;
    END IF;
    IF key IS NOT NULL AND jsonb_typeof(key) <> 'object' THEN
        PERFORM shapesync.mutation_input_error('key', 'key must be a JSON object of the primary key columns');
    END IF;
    IF key IS NULL AND op <> 'insert' THEN
        PERFORM shapesync.mutation_input_error('key', format('%s needs a key', op),
            format('Send "key": {%s}.', (SELECT string_agg(format('"%s": ...', c), ', ') FROM unnest(pk) c)));
    END IF;

    -- values
    vals := m -> 'values';
    IF vals IS NOT NULL AND jsonb_typeof(vals) = 'null' THEN
        vals := NULL;
    END IF;
    IF vals IS NOT NULL AND jsonb_typeof(vals) <> 'object' THEN
        PERFORM shapesync.mutation_input_error('values', 'values must be a JSON object of columns');
    END IF;
    IF op = 'delete' AND vals IS NOT NULL AND vals <> '{}'::jsonb THEN
        PERFORM shapesync.mutation_input_error('values', 'a delete takes no values');
    END IF;
    IF op = 'update' AND (vals IS NULL OR vals = '{}'::jsonb) THEN
        PERFORM shapesync.mutation_input_error('values', 'an update needs values');
    END IF;
    vals := coalesce(vals, '{}');

    -- the key's columns, all of them, nothing else, no NULL
    IF key IS NOT NULL THEN
        FOR k IN SELECT e.key FROM jsonb_each(key) e LOOP
            IF NOT k = ANY (pk) THEN
                PERFORM shapesync.mutation_input_error('key.' || k,
                    format('"%s" is not a primary key column of table "%s"', k, rel::text));
            END IF;
        END LOOP;
        FOREACH k IN ARRAY pk LOOP
            IF NOT key ? k OR jsonb_typeof(key -> k) = 'null' THEN
                PERFORM shapesync.mutation_input_error('key.' || k, format('the key needs primary key column "%s"', k));
            END IF;
        END LOOP;
    END IF;
    -- key and values to canonical text in one statement (what
    -- mutation_texts() computes for each); on any error, mutation_texts()
    -- again, one after the other, raises it naming the field
    IF NOT EXISTS (SELECT 1 FROM jsonb_object_keys(vals) c WHERE NOT (tbl -> 'columns') ? c) THEN
        SELECT string_agg(format('(SELECT pg_catalog.jsonb_object_agg(u.k, u.v) '
                                 'FROM pg_catalog.jsonb_populate_record(NULL::%s, $%s) r, '
                                 'unnest($%s::text[], ARRAY[%s]::text[]) u(k, v))',
                                 rel, p.n, p.n + 1,
                                 (SELECT string_agg(format('r.%I::text', c), ', ' ORDER BY c) FROM jsonb_object_keys(p.v) c)),
                          ', ' ORDER BY p.n)
          INTO conv_sql
          FROM (VALUES (1, key), (3, vals)) p(n, v)
         WHERE p.v IS NOT NULL AND p.v <> '{}'::jsonb;
        BEGIN
            IF conv_sql IS NOT NULL THEN
                EXECUTE 'SELECT ' || conv_sql INTO key_txt, vals_txt
                  USING key, ARRAY(SELECT c FROM jsonb_object_keys(key) c ORDER BY c),
                        vals, ARRAY(SELECT c FROM jsonb_object_keys(vals) c ORDER BY c);
            END IF;
            IF key IS NULL OR key = '{}'::jsonb THEN
                vals_txt := key_txt;
                key_txt := CASE WHEN key IS NOT NULL THEN '{}'::jsonb END;
            END IF;
            IF vals = '{}'::jsonb THEN
                vals_txt := '{}';
            END IF;
            converted := true;
        EXCEPTION WHEN OTHERS THEN
            converted := false;
        END;
    END IF;
    IF NOT converted THEN
        IF key IS NOT NULL THEN
            key_txt := shapesync.mutation_texts(rel, key, 'key');
        END IF;
        vals_txt := shapesync.mutation_texts(rel, vals, 'values');
    END IF;
    -- a key column in values must be the key: no key change
    IF key IS NOT NULL THEN
        FOREACH k IN ARRAY pk LOOP
            IF vals ? k THEN
                IF (vals_txt ->> k) IS DISTINCT FROM (key_txt ->> k) THEN
                    PERFORM shapesync.mutation_input_error('values.' || k,
                        format('values change primary key column "%s"', k),
                        'A mutation cannot change a row''s key: delete the row and insert a new one.');
                END IF;
                vals := vals - k;
            END IF;
        END LOOP;
    ELSIF NOT EXISTS (SELECT 1 FROM unnest(pk) c WHERE NOT vals ? c OR jsonb_typeof(vals -> c) = 'null') THEN
        -- an insert with its whole key in values
        key := (SELECT jsonb_object_agg(c, vals -> c) FROM unnest(pk) c);
        key_txt := (SELECT jsonb_object_agg(c, vals_txt -> c) FROM unnest(pk) c);
        vals := vals - pk;
    END IF;
    -- (an insert without its whole key lets column defaults fill it: no conflict check)
    IF op = 'update' AND vals = '{}'::jsonb THEN
        PERFORM shapesync.mutation_input_error('values', 'an update needs values besides the key');
    END IF;

    -- base
    base := m -> 'base';
    IF base IS NOT NULL AND jsonb_typeof(base) = 'null' THEN
        base := NULL;
    END IF;
    IF base IS NOT NULL THEN
        IF jsonb_typeof(base) <> 'object' THEN
            PERFORM shapesync.mutation_input_error('base', 'base must be a JSON object {"version": ..., "values": {...}}');
        END IF;
        FOR k IN SELECT e.key FROM jsonb_each(base) e LOOP
            IF k NOT IN ('version', 'values') THEN
                PERFORM shapesync.mutation_input_error('base.' || k, format('unknown field "%s"', k));
            END IF;
        END LOOP;
        IF base ? 'version' AND jsonb_typeof(base -> 'version') <> 'null' THEN
            IF jsonb_typeof(base -> 'version') NOT IN ('string', 'number') OR (base ->> 'version') !~ '^[0-9]{1,20}$' THEN
                PERFORM shapesync.mutation_input_error('base.version', 'base.version must be a row version (a decimal xid8, as a string)');
            END IF;
            base_ver := (base ->> 'version')::xid8;
        END IF;
        base_vals := base -> 'values';
        IF base_vals IS NOT NULL AND jsonb_typeof(base_vals) = 'null' THEN
            base_vals := NULL;
        END IF;
        IF base_vals IS NOT NULL AND jsonb_typeof(base_vals) <> 'object' THEN
            PERFORM shapesync.mutation_input_error('base.values', 'base.values must be a JSON object of columns');
        END IF;
        -- validated and canonical, for merge
        base_vals := shapesync.mutation_texts(rel, base_vals, 'base.values');
    END IF;

    -- what the caller may read of the row (conflicts return these columns)
    IF jsonb_typeof(tbl -> 'readable') = 'array' THEN
        readable := ARRAY(SELECT jsonb_array_elements_text(tbl -> 'readable'));
    END IF;
    can_read := key IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM unnest(pk) c WHERE NOT c = ANY (coalesce(readable, '{}')));
    IF key IS NOT NULL THEN
        pk_cond := tbl ->> 'pk_cond';
        row_id := rel::oid::text || ':' || key_txt::text;
        chain := chains -> row_id;
        sel_sql := tbl ->> 'sel_sql';
    END IF;

    -- read, decide, write only if the row is still the one read (compare
    -- and swap on xmin); a concurrent change makes us read again
    LOOP
        attempt := attempt + 1;
        IF attempt > 10 THEN
            RAISE EXCEPTION 'row of table "%" changed too often while being written', rel::text
                USING ERRCODE = 'serialization_failure';
        END IF;
        cur_xmin := NULL;
        cur_row := NULL;
        cur_ver := NULL;
        IF can_read THEN
            EXECUTE sel_sql INTO cur_xmin, cur_row USING key, readable;
            IF cur_xmin IS NOT NULL THEN
                cur_ver := shapesync.row_version(cur_xmin);
            END IF;
        END IF;

        decision := 'apply';
        resolved := NULL;
        write_vals := vals;
        reason := NULL;

        IF op = 'insert' THEN
            IF cur_xmin IS NOT NULL THEN
                decision := 'conflict';
                reason := 'a row with this key exists';
            END IF;
        ELSIF NOT can_read THEN
            NULL;   -- the write itself raises insufficient_privilege
        ELSIF cur_xmin IS NULL THEN
            decision := 'conflict';
            reason := 'the row does not exist (deleted, or not visible to you)';
        ELSIF base_ver IS NOT NULL AND cur_ver IS DISTINCT FROM base_ver
              -- a row this request wrote already, from the version the client based on
              AND NOT (chain IS NOT NULL AND chain ->> 'cur' = cur_ver::text
                       AND chain ->> 'orig' = base_ver::text) THEN
            decision := 'conflict';
            reason := 'the row changed since its base version';
        END IF;
        -- (no base version: applies unconditionally)

        -- conflicts the policy may resolve (a missing row is resolved only by a function)
        IF decision = 'conflict' AND NOT (op <> 'insert' AND cur_xmin IS NULL AND tgt_policy <> 'function')
           AND NOT (op = 'delete' AND cur_xmin IS NULL) THEN
            IF tgt_policy = 'last_write_wins' THEN
                decision := 'apply';
                resolved := 'last_write_wins';
                IF op = 'insert' THEN
                    op := 'upsert';
                END IF;
            ELSIF tgt_policy = 'merge' AND op <> 'insert' THEN
                -- apply when none of the columns this mutation changes (a
                -- delete: every column it saw) changed since base
                IF base_vals IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM jsonb_object_keys(CASE WHEN op = 'delete' THEN base_vals ELSE vals END) c
                        WHERE NOT base_vals ? c
                           OR NOT c = ANY (coalesce(readable, '{}'))
                           OR (base_vals ->> c) IS DISTINCT FROM (cur_row ->> c))
                   AND (op = 'update' OR base_vals <> '{}'::jsonb) THEN
                    decision := 'apply';
                    resolved := 'merge';
                ELSE
                    reason := CASE WHEN op = 'delete'
                                   THEN 'the row changed since its base version'
                                   ELSE 'a column this mutation changes changed since its base version' END;
                END IF;
            ELSIF tgt_policy = 'function' THEN
                EXECUTE format('SELECT %s($1, $2, $3)', tgt_fn)
                   INTO fn_result
                  USING base_vals,
                        CASE WHEN op = 'delete' THEN NULL
                             ELSE coalesce(base_vals, '{}') || coalesce(key_txt, '{}') || vals_txt END,
                        cur_row;
                IF fn_result IS NULL THEN
                    reason := format('the conflict function %s returned NULL', tgt_fn);
                ELSIF jsonb_typeof(fn_result) = 'null' THEN
                    -- the row must not exist
                    decision := 'apply';
                    resolved := 'function';
                    op := 'delete';
                ELSIF jsonb_typeof(fn_result) = 'object' THEN
                    decision := 'apply';
                    resolved := 'function';
                    write_vals := fn_result - pk;
                    PERFORM shapesync.mutation_texts(rel, write_vals, 'resolver');
                    FOREACH k IN ARRAY pk LOOP
                        IF fn_result ? k AND (fn_result ->> k) IS DISTINCT FROM (key_txt ->> k) THEN
                            RAISE EXCEPTION 'conflict function % changed the key', tgt_fn
                                USING ERRCODE = 'invalid_parameter_value';
                        END IF;
                    END LOOP;
                    IF cur_xmin IS NULL THEN
                        op := 'insert';
                        vals := write_vals;
                    ELSE
                        op := CASE WHEN write_vals = '{}'::jsonb THEN 'keep' ELSE 'update' END;
                    END IF;
                ELSE
                    RAISE EXCEPTION 'conflict function % must return a JSON object, JSON null or NULL', tgt_fn
                        USING ERRCODE = 'invalid_parameter_value';
                END IF;
            END IF;
        END IF;

        IF decision = 'conflict' THEN
            RETURN jsonb_build_object('status', 'conflict', 'reason', reason,
                                      'row', cur_row, 'server_version', cur_ver::text);
        END IF;

        rc := 0;
        new_xmin := NULL;
        IF op = 'insert' THEN
            cols := (SELECT string_agg(format('%I', c), ', ') FROM jsonb_object_keys(coalesce(key, '{}') || vals) c);
            write_sql := format('INSERT INTO %s AS t (%s) SELECT %s FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) r',
                                rel, cols,
                                (SELECT string_agg(format('r.%I', c), ', ') FROM jsonb_object_keys(coalesce(key, '{}') || vals) c),
                                rel);
            IF can_read THEN
                EXECUTE write_sql || format(' ON CONFLICT ON CONSTRAINT %I DO NOTHING RETURNING t.xmin', pkcon)
                   INTO new_xmin USING coalesce(key, '{}') || vals;
            ELSE
                -- no key given (column defaults make it), or a key the caller may not
                -- read: no conflict check, and nothing to return (INTO needs a RETURNING)
                EXECUTE write_sql USING coalesce(key, '{}') || vals;
            END IF;
            GET DIAGNOSTICS rc = ROW_COUNT;
            IF rc = 0 THEN
                CONTINUE;   -- inserted concurrently: read it
            END IF;
        ELSIF op IN ('update', 'upsert') THEN
            IF op = 'upsert' THEN
                write_vals := vals;
            END IF;
            IF write_vals = '{}'::jsonb THEN
                op := 'keep';   -- nothing to change: the row stays as it is
                rc := 1;
                new_xmin := cur_xmin;
            ELSE
                EXECUTE format('UPDATE ONLY %s t SET (%s) = ROW(%s) '
                           'FROM pg_catalog.jsonb_populate_record(NULL::%s, $1) r, '
                           'pg_catalog.jsonb_populate_record(NULL::%s, $2) k '
                           'WHERE %s AND ($3::xid IS NULL OR t.xmin = $3)%s',
                           rel,
                           (SELECT string_agg(format('%I', c), ', ') FROM jsonb_object_keys(write_vals) c),
                           (SELECT string_agg(format('r.%I', c), ', ') FROM jsonb_object_keys(write_vals) c),
                           rel, rel, pk_cond,
                           CASE WHEN can_read THEN ' RETURNING t.xmin' ELSE '' END)
               INTO new_xmin USING write_vals, key, cur_xmin;
            GET DIAGNOSTICS rc = ROW_COUNT;
            END IF;
        ELSIF op = 'delete' THEN
            EXECUTE format('DELETE FROM ONLY %s t USING pg_catalog.jsonb_populate_record(NULL::%s, $1) k '
                           'WHERE %s AND ($2::xid IS NULL OR t.xmin = $2)', rel, rel, pk_cond)
               USING key, cur_xmin;
            GET DIAGNOSTICS rc = ROW_COUNT;
        ELSIF op = 'keep' THEN
            rc := 1;
            new_xmin := cur_xmin;
        END IF;

        IF rc = 0 THEN
            IF NOT can_read THEN
                RETURN jsonb_build_object('status', 'conflict', 'reason', 'the row does not exist (deleted, or not visible to you)',
                                          'row', NULL, 'server_version', NULL);
            END IF;
            -- the row changed under us: read it again; unchanged, a policy hides it from this write
            EXECUTE sel_sql INTO new_xmin, fn_result USING key, readable;
            IF new_xmin IS NOT NULL AND new_xmin = cur_xmin THEN
                RAISE EXCEPTION 'row-level security policy for table "%" does not allow this %', rel::text, op
                    USING ERRCODE = 'insufficient_privilege', COLUMN = 'key';
            END IF;
            CONTINUE;
        END IF;

        res := jsonb_build_object('status', 'applied');
        IF resolved IS NOT NULL THEN
            res := res || jsonb_build_object('resolved_by', resolved);
        END IF;
        IF new_xmin IS NOT NULL AND op <> 'delete' THEN
            res := res || jsonb_build_object('version', shapesync.row_version(new_xmin)::text);
        END IF;
        IF key_txt IS NOT NULL THEN
            res := res || jsonb_build_object('_row', row_id,
                '_orig', coalesce(chain ->> 'orig', cur_ver::text),
                '_cur', CASE WHEN new_xmin IS NOT NULL AND op <> 'delete' THEN shapesync.row_version(new_xmin)::text END);
        END IF;
        RETURN res;
    END LOOP;
END
$$;
COMMENT ON FUNCTION shapesync.apply_mutation(jsonb, jsonb, jsonb) IS
    'One mutation of shapesync.apply_mutations(), as the caller: validate, read the row, resolve a stale base by the table''s policy, write with compare-and-swap on xmin. Raises on refusal and bad input.';

CREATE FUNCTION shapesync.apply_mutations(mutations jsonb, idempotency_key text DEFAULT NULL,
                                          allow_partial boolean DEFAULT false) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $$
DECLARE
    n           int;
    i           int;
    m           jsonb;
    mid         text;
    res         jsonb;
    results     jsonb := '[]';
    looked      jsonb;
    stored      jsonb;
    ids         text[];
    seen        text[] := '{}';
    chains      jsonb := '{}';
    applied_now int := 0;
    not_applied int := 0;
    invalid     boolean := false;
    rolled_back boolean := false;
    st          text;
    msg         text;
    det         text;
    hnt         text;
    fld         text;
    response    jsonb;
    top_txid    bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'shapesync.apply_mutations() must run at isolation level READ COMMITTED'
            USING ERRCODE = 'active_sql_transaction',
                  DETAIL = 'It reads each row''s latest committed version and the outcomes of concurrent replays.';
    END IF;
    IF mutations IS NULL OR jsonb_typeof(mutations) <> 'array' THEN
        RAISE EXCEPTION 'mutations must be a JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Send {"mutations": [{"id": ..., "table": ..., "op": ..., "key": {...}, "values": {...}}]}.';
    END IF;
    n := jsonb_array_length(mutations);
    IF n > 10000 THEN
        RAISE EXCEPTION 'too many mutations in one request: %', n
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = 'At most 10000 mutations are applied in one call.',
                  HINT = 'Send them in smaller batches.';
    END IF;
    IF idempotency_key IS NOT NULL AND (idempotency_key = '' OR octet_length(idempotency_key) > 255) THEN
        RAISE EXCEPTION 'idempotency key must be 1 to 255 bytes long'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- serialise concurrent replays: the key, then the ids in order (held
    -- until the caller's transaction ends, so a replay waits for the
    -- first attempt to commit or roll back, then sees its outcome)
    IF idempotency_key IS NOT NULL THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(21323, pg_catalog.hashtext(idempotency_key));
    END IF;
    SELECT array_agg(DISTINCT lower(e ->> 'id') ORDER BY lower(e ->> 'id')) INTO ids
      FROM jsonb_array_elements(mutations) e
     WHERE jsonb_typeof(e) = 'object' AND jsonb_typeof(e -> 'id') = 'string'
       AND (e ->> 'id') ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$';
    ids := ARRAY(SELECT DISTINCT x::uuid::text FROM unnest(coalesce(ids, '{}')) x ORDER BY 1);
    FOREACH mid IN ARRAY ids LOOP
        PERFORM pg_catalog.pg_advisory_xact_lock(21322, pg_catalog.hashtext(mid));
    END LOOP;
    looked := shapesync.mutation_lookup(ids::uuid[], idempotency_key);
    IF looked ? 'request' THEN
        RETURN (looked -> 'request') || '{"replayed": true}';
    END IF;
    stored := looked -> 'mutations';

    DECLARE
        tables jsonb := '{}';   -- table name -> shapesync.mutation_table(name): once per table per call
        tname  text;
    BEGIN
        FOR i IN 0 .. n - 1 LOOP
            m := mutations -> i;
            mid := NULL;
            IF jsonb_typeof(m) = 'object' AND jsonb_typeof(m -> 'id') = 'string'
               AND (m ->> 'id') ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
                mid := (m ->> 'id')::uuid::text;
            END IF;

            IF mid IS NULL THEN
                res := jsonb_build_object('status', 'rejected', 'code', '22023', 'field', 'id',
                                          'reason', 'id must be a UUID string', 'invalid', true);
                invalid := true;
            ELSIF mid = ANY (seen) THEN
                res := jsonb_build_object('status', 'rejected', 'code', '22023', 'field', 'id',
                                          'reason', 'the same mutation id appears twice in the request', 'invalid', true);
                invalid := true;
            ELSIF stored ? mid AND jsonb_typeof(stored -> mid) = 'null' THEN
                res := jsonb_build_object('status', 'rejected', 'code', '42501', 'field', 'id',
                                          'reason', 'this mutation id was already used by someone else');
            ELSIF stored ? mid THEN
                res := (stored -> mid) || '{"replayed": true}';
            ELSE
                BEGIN
                    tname := NULL;
                    IF jsonb_typeof(m -> 'table') = 'string' AND m ->> 'table' <> '' THEN
                        tname := m ->> 'table';
                        IF NOT tables ? tname THEN
                            tables := tables || jsonb_build_object(tname, shapesync.mutation_table(tname));
                        END IF;
                    END IF;
                    res := shapesync.apply_mutation(m, chains, tables -> tname);
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT,
                                            fld = COLUMN_NAME;
                    -- retryable as a whole (deadlock, serialization): the caller retries the request
                    IF st LIKE '40%' THEN
                        RAISE;
                    END IF;
                    res := jsonb_build_object('status', 'rejected', 'code', st, 'reason', msg)
                        || CASE WHEN coalesce(fld, '') <> '' THEN jsonb_build_object('field', fld) ELSE '{}' END
                        || CASE WHEN coalesce(det, '') <> '' THEN jsonb_build_object('detail', det) ELSE '{}' END
                        || CASE WHEN coalesce(hnt, '') <> '' THEN jsonb_build_object('hint', hnt) ELSE '{}' END;
                    -- input that can never apply: the whole request is a 400
                    IF st LIKE '22%' OR st IN ('42P01', '42703', '42804', '42846', '42P18', '42601') THEN
                        invalid := true;
                        res := res || '{"invalid": true}';
                    END IF;
                END;
            END IF;
            IF mid IS NOT NULL THEN
                seen := seen || mid;
            END IF;
            res := jsonb_build_object('id', coalesce(to_jsonb(mid), m -> 'id')) || res;

            IF res ->> 'status' = 'applied' AND NOT res ? 'replayed' THEN
                applied_now := applied_now + 1;
                IF res ? '_row' THEN
                    chains := chains || jsonb_build_object(res ->> '_row',
                                  jsonb_build_object('orig', res -> '_orig', 'cur', res -> '_cur'));
                END IF;
            ELSIF NOT res ? 'replayed' THEN
                not_applied := not_applied + 1;
            END IF;
            results := results || jsonb_build_array(res - '_row' - '_orig' - '_cur');
        END LOOP;

        -- all or none, unless partial application was asked for (never with invalid input)
        IF not_applied > 0 AND (invalid OR NOT allow_partial) THEN
            RAISE EXCEPTION 'batch rolled back' USING ERRCODE = 'SS010';
        END IF;
    EXCEPTION WHEN SQLSTATE 'SS010' THEN
        rolled_back := true;
    END;

    IF rolled_back THEN
        SELECT jsonb_agg(CASE WHEN r ->> 'status' = 'applied' AND NOT r ? 'replayed'
                              THEN jsonb_build_object('id', r -> 'id', 'status', 'aborted',
                                                      'reason', 'not applied: another mutation of the request was not (all or none)')
                              ELSE r END ORDER BY o)
          INTO results FROM jsonb_array_elements(results) WITH ORDINALITY x(r, o);
        RETURN jsonb_build_object('txid', NULL, 'committed', false, 'invalid', invalid,
                                  'results', coalesce(results, '[]'));
    END IF;

    IF applied_now > 0 THEN
        top_txid := (pg_catalog.pg_current_xact_id()::text::numeric % 4294967296)::bigint;
    ELSE
        -- a replay: the transaction that applied them
        SELECT (r ->> 'txid')::bigint INTO top_txid FROM jsonb_array_elements(results) r
         WHERE r ? 'txid' AND r ->> 'status' = 'applied' LIMIT 1;
    END IF;
    -- each new outcome remembers its transaction's txid (for replays)
    SELECT jsonb_agg(CASE WHEN NOT r ? 'replayed' AND r ->> 'status' = 'applied'
                          THEN r || jsonb_build_object('txid', top_txid) ELSE r END ORDER BY o)
      INTO results FROM jsonb_array_elements(results) WITH ORDINALITY x(r, o);
    results := coalesce(results, '[]');
    response := jsonb_build_object('txid', top_txid, 'committed', true, 'invalid', false, 'results', results);
    IF applied_now + not_applied > 0 OR idempotency_key IS NOT NULL THEN
        PERFORM shapesync.mutation_record(
            (SELECT coalesce(jsonb_agg(r), '[]') FROM jsonb_array_elements(results) r WHERE NOT r ? 'replayed'),
            idempotency_key, response);
    END IF;
    RETURN response;
END
$$;
COMMENT ON FUNCTION shapesync.apply_mutations(jsonb, text, boolean) IS
    'Apply a batch of client mutations as the caller, all or none (or, with allow_partial, every mutation that can be), each mutation id at most once; returns {"txid", "committed", "invalid", "results": [{"id", "status": applied|conflict|rejected|aborted, ...}]}. See docs/mutations.md.';

------------------------------------------------------------------------
-- Writer roles (the roles tokens name: SET ROLE by the sidecar)
------------------------------------------------------------------------

CREATE FUNCTION shapesync.grant_writer(role name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = grant_writer.role) THEN
        RAISE EXCEPTION 'role "%" does not exist', grant_writer.role
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA shapesync TO %I', grant_writer.role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION '
                   'shapesync.apply_mutations(jsonb, text, boolean), '
                   'shapesync.apply_mutation(jsonb, jsonb, jsonb), '
                   'shapesync.mutation_table(text), '
                   'shapesync.mutation_texts(pg_catalog.regclass, jsonb, text), '
                   'shapesync.mutation_input_error(text, text, text), '
                   'shapesync.write_target(pg_catalog.regclass), '
                   'shapesync.mutation_lookup(uuid[], text), '
                   'shapesync.mutation_record(jsonb, text, jsonb), '
                   'shapesync.mutation_principal(), '
                   'shapesync.purge_mutations(interval, int) TO %I', grant_writer.role);
END
$$;
COMMENT ON FUNCTION shapesync.grant_writer(name) IS
    'Let a role call shapesync.apply_mutations() (what it may write is still decided by its own grants and row-level security).';

CREATE FUNCTION shapesync.revoke_writer(role name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_writer.role) THEN
        RAISE EXCEPTION 'role "%" does not exist', revoke_writer.role
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('REVOKE EXECUTE ON FUNCTION '
                   'shapesync.apply_mutations(jsonb, text, boolean), '
                   'shapesync.apply_mutation(jsonb, jsonb, jsonb), '
                   'shapesync.mutation_table(text), '
                   'shapesync.mutation_texts(pg_catalog.regclass, jsonb, text), '
                   'shapesync.mutation_input_error(text, text, text), '
                   'shapesync.write_target(pg_catalog.regclass), '
                   'shapesync.mutation_lookup(uuid[], text), '
                   'shapesync.mutation_record(jsonb, text, jsonb), '
                   'shapesync.mutation_principal(), '
                   'shapesync.purge_mutations(interval, int) FROM %I', revoke_writer.role);
    EXECUTE format('REVOKE USAGE ON SCHEMA shapesync FROM %I', revoke_writer.role);
END
$$;
COMMENT ON FUNCTION shapesync.revoke_writer(name) IS
    'Take back what shapesync.grant_writer() gave a role.';

REVOKE ALL ON shapesync.write_policies, shapesync.mutation_log, shapesync.mutation_requests,
              shapesync.write_settings FROM PUBLIC;
REVOKE ALL ON FUNCTION shapesync.set_writable(pg_catalog.regclass, boolean),
                       shapesync.set_conflict_policy(pg_catalog.regclass, text),
                       shapesync.mutation_principal(),
                       shapesync.write_target(pg_catalog.regclass),
                       shapesync.mutation_lookup(uuid[], text),
                       shapesync.purge_mutations(interval, int),
                       shapesync.mutation_record(jsonb, text, jsonb),
                       shapesync.mutation_texts(pg_catalog.regclass, jsonb, text),
                       shapesync.mutation_input_error(text, text, text),
                       shapesync.mutation_table(text),
                       shapesync.apply_mutation(jsonb, jsonb, jsonb),
                       shapesync.apply_mutations(jsonb, text, boolean),
                       shapesync.grant_writer(name),
                       shapesync.revoke_writer(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION shapesync.row_version(pg_catalog.xid) TO PUBLIC;
GRANT SELECT ON shapesync.write_settings TO PUBLIC;

-- ==== end of mutations (issue 12) ====

-- ==== auth (issue 11) ====
------------------------------------------------------------------------
-- Shape authorization (issue 11, docs/auth.md)
--
-- A shape asked for on behalf of a role with JWT claims is the client's
-- filter AND the role's SELECT policies on the table, folded with the
-- claims (effective_where, in the library); its columns are those the role
-- may SELECT.  Policy and grant changes invalidate the table's shapes.
-- The calls without a role keep their behaviour (SQLSTATE SS002 when
-- row-level security applies to the caller).
------------------------------------------------------------------------

CREATE FUNCTION shapesync.effective_where(rel pg_catalog.regclass, role name, claims jsonb,
                                          where_clause text, params text[] DEFAULT NULL,
                                          columns text[] DEFAULT NULL,
                                          OUT canonical_where text, OUT template text,
                                          OUT template_sql text, OUT consts text[],
                                          OUT policy_applied boolean, OUT shape_columns text[])
    RETURNS record
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_effective_where';
COMMENT ON FUNCTION shapesync.effective_where(pg_catalog.regclass, name, jsonb, text, text[], text[]) IS
    'The effective shape of a request on behalf of role with claims: the filter AND the role''s SELECT policies on the table, their column-free parts evaluated once as the role with request.jwt.claims set; the columns the role may SELECT. Role NULL: the caller''s own rights (SS002 under row-level security).';

CREATE FUNCTION shapesync.check_shape(rel pg_catalog.regclass, where_clause text, params text[],
                                      role name, claims jsonb, columns text[] DEFAULT NULL,
                                      OUT canonical_where text, OUT error_field text, OUT error_code text,
                                      OUT error_message text, OUT error_detail text, OUT error_hint text,
                                      OUT error_position int, OUT policy_applied boolean,
                                      OUT shape_columns text[])
    RETURNS record
    LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_check_shape_as';
COMMENT ON FUNCTION shapesync.check_shape(pg_catalog.regclass, text, text[], name, jsonb, text[]) IS
    'What get_or_create_shape() on behalf of role with claims would refuse (role, columns, policies, the filter), returned as data; the effective canonical_where, whether a policy applied and the shape''s columns when it is valid.';

-- Same registration as get_or_create_shape(rel, where_clause, columns,
-- options, params), with the effective filter and columns: keep the two
-- in step.
CREATE FUNCTION shapesync.get_or_create_shape(rel pg_catalog.regclass, where_clause text, columns text[],
                                              options text, params text[], role name, claims jsonb)
    RETURNS TABLE (handle text, created boolean, shape_id int, canonical_where text,
                   policy_applied boolean, shape_columns text[])
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET DateStyle = 'ISO, DMY'
    SET IntervalStyle = 'iso_8601'
    SET TimeZone = 'UTC'
    SET extra_float_digits = 1
    SET enable_seqscan = off
AS $$
DECLARE
    def  text;
    dkey text;
    h    text;
    sid  int;
    us   bigint;
    cw   text;
    tmpl text;
    tsql text;
    cs   text[];
    tid  int;
    tkey text;
    pol  boolean;
    cols text[];
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'shape table must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM shapesync.tracked t WHERE t.relid = rel::oid) THEN
        RAISE EXCEPTION 'table "%" is not tracked', rel::text
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run shapesync.track() on the table first.';
    END IF;
    -- GRANT and REVOKE take no lock on the table: the grant event trigger
    -- takes this key exclusively before it looks for shapes to invalidate, so
    -- it waits for this registration (which holds it from before it reads the
    -- role's privileges) and this registration for it (docs/auth.md)
    PERFORM pg_catalog.pg_advisory_xact_lock_shared((1936220528::bigint << 32) | rel::oid::bigint);
    -- role, columns, policies and the filter (the caller is the role outside this function)
    SELECT e.canonical_where, e.template, e.template_sql, e.consts, e.policy_applied, e.shape_columns
      INTO cw, tmpl, tsql, cs, pol, cols
      FROM shapesync.effective_where(rel, role, claims, where_clause, params, columns) e;
    IF tmpl IS NOT NULL THEN
        tkey := encode(sha256(convert_to(tmpl, 'UTF8')), 'hex');
    END IF;
    IF role IS NOT NULL AND NOT EXISTS (SELECT 1 FROM shapesync.served_roles s
                                         WHERE s.roleid = (SELECT r.oid FROM pg_roles r WHERE r.rolname = role)) THEN
        INSERT INTO shapesync.served_roles (roleid)
        SELECT r.oid FROM pg_roles r WHERE r.rolname = role
        ON CONFLICT DO NOTHING;
    END IF;

    def := json_build_object('relid', rel::oid, 'where', cw, 'columns', cols,
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
            RETURN QUERY SELECT h, false, sid, cw, pol, cols;
            RETURN;
        END IF;

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
                cols, coalesce(options, ''), tid, cs)
        ON CONFLICT DO NOTHING
        RETURNING s.shape_id INTO sid;
        IF FOUND THEN
            PERFORM shapesync.invalidate_table_cache(rel::oid);
            RETURN QUERY SELECT h, true, sid, cw, pol, cols;
            RETURN;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[], name, jsonb) IS
    'The active shape for a request on behalf of role with claims: its definition is the effective filter (the filter AND the role''s folded SELECT policies) and the columns the role may SELECT, so users with the same effective filter share a handle. Refused: a role the caller is not a member of (SS012), a column the role may not SELECT (SS013), a policy that cannot be folded, e.g. with a subquery (SS011).';

CREATE FUNCTION shapesync.ddl_command_relids(command pg_ddl_command) RETURNS oid[]
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_ddl_command_relids';
COMMENT ON FUNCTION shapesync.ddl_command_relids(pg_ddl_command) IS
    'The tables of a GRANT or REVOKE on tables that gives or takes SELECT (table or column), for the ddl_command_end event trigger; empty for other commands.';

CREATE FUNCTION shapesync.ddl_command_grantees(command pg_ddl_command) RETURNS oid[]
    LANGUAGE c VOLATILE STRICT PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'shapesync_ddl_command_grantees';
COMMENT ON FUNCTION shapesync.ddl_command_grantees(pg_ddl_command) IS
    'The grantees of a GRANT or REVOKE on tables (0 for PUBLIC), for the ddl_command_end event trigger; empty for other commands.';

CREATE TABLE shapesync.served_roles (
    roleid          oid PRIMARY KEY,
    first_served_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE shapesync.served_roles IS
    'Roles shapes were asked for on behalf of (get_or_create_shape with a role): a GRANT or REVOKE of SELECT to PUBLIC or to a role one of them has the privileges of invalidates the table''s shapes.';

-- Invalidate the shapes of tracked table relid and log an S change; reason 'ddl: <tag>'.
CREATE FUNCTION shapesync.invalidate_for_auth_change(relid oid, reason text) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM shapesync.tracked t WHERE t.relid = invalidate_for_auth_change.relid) THEN
        RETURN;
    END IF;
    UPDATE shapesync.shape_registry s
       SET state = 'invalid', invalidated_at = now(), reason = invalidate_for_auth_change.reason
     WHERE s.relid = invalidate_for_auth_change.relid AND s.state = 'active';
    PERFORM shapesync.log_schema_change(invalidate_for_auth_change.relid, invalidate_for_auth_change.reason);
END
$$;
COMMENT ON FUNCTION shapesync.invalidate_for_auth_change(oid, text) IS
    'A policy or grant of a tracked table changed: invalidate its shapes and log an S change.';

CREATE FUNCTION shapesync.on_auth_ddl_command_end() RETURNS event_trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    -- first wait for the registrations running on the tables of a GRANT or
    -- REVOKE (they hold this key shared; see get_or_create_shape with a
    -- role): the query below then sees the shapes, and the served roles,
    -- that they made (key: 'shap' << 32 | table oid, in table order)
    PERFORM pg_catalog.pg_advisory_xact_lock((1936220528::bigint << 32) | k.relid::bigint)
       FROM (SELECT DISTINCT g.relid
               FROM pg_event_trigger_ddl_commands() c
              CROSS JOIN LATERAL unnest(shapesync.ddl_command_relids(c.command)) AS g(relid)
               JOIN shapesync.tracked t ON t.relid = g.relid
              WHERE c.command_tag IN ('GRANT', 'REVOKE')
              ORDER BY g.relid) k;
    FOR r IN SELECT DISTINCT x.relid, c.command_tag
               FROM pg_event_trigger_ddl_commands() c
               CROSS JOIN LATERAL (
                   SELECT p.polrelid AS relid FROM pg_policy p
                    WHERE c.classid = 'pg_policy'::regclass AND p.oid = c.objid
                   UNION ALL
                   -- a function that a policy calls directly, redefined (CREATE OR
                   -- REPLACE) or altered: the policy's folded value may change
                   SELECT p.polrelid FROM pg_depend d JOIN pg_policy p ON p.oid = d.objid
                    WHERE c.classid = 'pg_proc'::regclass
                      AND c.command_tag IN ('CREATE FUNCTION', 'ALTER FUNCTION')
                      AND d.classid = 'pg_policy'::regclass AND d.refclassid = 'pg_proc'::regclass
                      AND d.refobjid = c.objid
                   UNION ALL
                   -- a grant of SELECT that may change what a served role reads
                   SELECT g.relid FROM unnest(shapesync.ddl_command_relids(c.command)) AS g(relid)
                    WHERE c.command_tag IN ('GRANT', 'REVOKE')
                      AND EXISTS (SELECT 1 FROM unnest(shapesync.ddl_command_grantees(c.command)) AS e(roleid)
                                   WHERE e.roleid = 0
                                      OR EXISTS (SELECT 1 FROM shapesync.served_roles s
                                                  WHERE pg_has_role(s.roleid, e.roleid, 'USAGE')))) x
               JOIN shapesync.tracked t ON t.relid = x.relid
    LOOP
        PERFORM shapesync.invalidate_for_auth_change(r.relid, 'ddl: ' || r.command_tag);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'shapesync could not invalidate shapes after a policy or grant change: %', SQLERRM;
END
$$;
COMMENT ON FUNCTION shapesync.on_auth_ddl_command_end() IS
    'Event trigger: CREATE/ALTER POLICY, GRANT/REVOKE of SELECT on a tracked table to PUBLIC or a role a served role has the privileges of, and CREATE OR REPLACE/ALTER FUNCTION of a function one of its policies calls directly, invalidate its shapes and log an S change.';

CREATE FUNCTION shapesync.on_auth_sql_drop() RETURNS event_trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    -- a dropped policy's identity names its table: {schema, table, policy}
    FOR r IN SELECT DISTINCT t.relid, tg_tag AS tag
               FROM pg_event_trigger_dropped_objects() d
               JOIN shapesync.tracked t
                 ON t.relid = to_regclass(format('%I.%I', d.address_names[1], d.address_names[2]))
              WHERE d.object_type = 'policy' AND cardinality(d.address_names) = 3
    LOOP
        PERFORM shapesync.invalidate_for_auth_change(r.relid, 'ddl: ' || r.tag);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'shapesync could not invalidate shapes after a policy was dropped: %', SQLERRM;
END
$$;
COMMENT ON FUNCTION shapesync.on_auth_sql_drop() IS
    'Event trigger: a dropped policy of a tracked table invalidates its shapes and logs an S change.';

-- ALTER TABLE ... ENABLE/DISABLE/FORCE ROW LEVEL SECURITY is an ALTER TABLE:
-- shapesync_ddl_command_end already invalidates the table's shapes.
CREATE EVENT TRIGGER shapesync_auth_ddl_command_end ON ddl_command_end
    WHEN TAG IN ('CREATE POLICY', 'ALTER POLICY', 'GRANT', 'REVOKE', 'CREATE FUNCTION', 'ALTER FUNCTION')
    EXECUTE FUNCTION shapesync.on_auth_ddl_command_end();
COMMENT ON EVENT TRIGGER shapesync_auth_ddl_command_end IS
    'Invalidates the shapes of a tracked table after CREATE/ALTER POLICY, GRANT or REVOKE on it, or a change of a function one of its policies calls directly.';

CREATE EVENT TRIGGER shapesync_auth_sql_drop ON sql_drop
    WHEN TAG IN ('DROP POLICY', 'DROP OWNED')
    EXECUTE FUNCTION shapesync.on_auth_sql_drop();
COMMENT ON EVENT TRIGGER shapesync_auth_sql_drop IS
    'Invalidates the shapes of a tracked table after one of its policies is dropped.';

-- grant_sidecar()/revoke_sidecar() record sidecar roles in
-- shapesync.sidecar_roles: a row there also grants (a deleted row revokes)
-- EXECUTE on the functions above that shapesyncd calls.
CREATE FUNCTION shapesync.on_sidecar_role_change() RETURNS trigger
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rname name;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT r.rolname INTO rname FROM pg_catalog.pg_roles r WHERE r.oid = NEW.roleid;
        IF FOUND THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION '
                           'shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[], name, jsonb), '
                           'shapesync.check_shape(pg_catalog.regclass, text, text[], name, jsonb, text[]), '
                           'shapesync.effective_where(pg_catalog.regclass, name, jsonb, text, text[], text[]) TO %I', rname);
        END IF;
    ELSE
        SELECT r.rolname INTO rname FROM pg_catalog.pg_roles r WHERE r.oid = OLD.roleid;
        IF FOUND THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION '
                           'shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[], name, jsonb), '
                           'shapesync.check_shape(pg_catalog.regclass, text, text[], name, jsonb, text[]), '
                           'shapesync.effective_where(pg_catalog.regclass, name, jsonb, text, text[], text[]) FROM %I', rname);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION shapesync.on_sidecar_role_change() IS
    'Trigger of shapesync.sidecar_roles: grant_sidecar() also grants, revoke_sidecar() also revokes, EXECUTE on the authorization functions (get_or_create_shape and check_shape with a role, effective_where).';
CREATE TRIGGER sidecar_roles_auth_grants AFTER INSERT OR DELETE ON shapesync.sidecar_roles
    FOR EACH ROW EXECUTE FUNCTION shapesync.on_sidecar_role_change();

REVOKE ALL ON FUNCTION shapesync.effective_where(pg_catalog.regclass, name, jsonb, text, text[], text[]),
                       shapesync.check_shape(pg_catalog.regclass, text, text[], name, jsonb, text[]),
                       shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[], name, jsonb),
                       shapesync.ddl_command_relids(pg_ddl_command),
                       shapesync.ddl_command_grantees(pg_ddl_command),
                       shapesync.invalidate_for_auth_change(oid, text),
                       shapesync.on_auth_ddl_command_end(),
                       shapesync.on_auth_sql_drop(),
                       shapesync.on_sidecar_role_change() FROM PUBLIC;
REVOKE ALL ON shapesync.served_roles FROM PUBLIC;
-- ==== end auth (issue 11) ====

-- ==== monitor (issue 13) ====
-- Monitoring views and functions, sidecar reports, check(), grant_monitor():
-- the statements of sql/monitor.sql, then grant_sidecar()/revoke_sidecar()
-- as in sql/security.sql (they also grant consumer_report_stats()).

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
    'Sync rates and lag: preload on/off, ticker worker running, ticks and changes per second over the last minute, change-log size, live consumers, and the lag (age of the oldest ticked change not yet read by every consumer) with the consumer that has it.';

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
                   'shapesync.cache_stats() TO %I', grant_monitor.role);
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
                   'shapesync.cache_stats() FROM %I', revoke_monitor.role);
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
                       shapesync.grant_monitor(name), shapesync.revoke_monitor(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION shapesync.sync_stats() TO PUBLIC;

CREATE OR REPLACE FUNCTION shapesync.grant_sidecar(role name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid oid;
    t   record;
BEGIN
    SELECT r.oid INTO rid FROM pg_catalog.pg_roles r WHERE r.rolname = grant_sidecar.role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" does not exist', grant_sidecar.role
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it first, e.g. CREATE ROLE shapesync_sidecar LOGIN PASSWORD ''...''.';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA shapesync TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT ON shapesync.tracked, shapesync.ticks, shapesync.log_state, '
                   'shapesync.changes, shapesync.shapes TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON shapesync.shape_snapshots TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT, INSERT ON shapesync.shape_snapshot_chunks TO %I', grant_sidecar.role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION '
                   'shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[]), '
                   'shapesync.check_shape(pg_catalog.regclass, text, text[]), '
                   'shapesync.check_row_security(pg_catalog.regclass), '
                   'shapesync.parse_where(pg_catalog.regclass, text, text[]), '
                   'shapesync.wait_for_writers(pg_catalog.regclass), '
                   'shapesync.invalidate_shape(text, text), '
                   'shapesync.report_shape(text, bigint, text), '
                   'shapesync.report_shapes(text[], text[]), '
                   'shapesync.consumer_report(text, bigint), '
                   'shapesync.consumer_report_stats(text, jsonb), '
                   'shapesync.batch(bigint), '
                   'shapesync.row_values_or_null(oid, int4, bytea), '
                   'shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8), '
                   'shapesync.tick(boolean), '
                   'shapesync.maintain(interval, interval) TO %I', grant_sidecar.role);
    INSERT INTO shapesync.sidecar_roles (roleid) VALUES (rid) ON CONFLICT (roleid) DO NOTHING;
    FOR t IN SELECT c.oid::pg_catalog.regclass AS rel, n.nspname
               FROM shapesync.tracked k
               JOIN pg_catalog.pg_class c ON c.oid = k.relid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', t.nspname, grant_sidecar.role);
        EXECUTE format('GRANT SELECT ON %s TO %I', t.rel, grant_sidecar.role);
    END LOOP;
END
$$;
CREATE OR REPLACE FUNCTION shapesync.revoke_sidecar(role name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_sidecar.role) THEN
        RAISE EXCEPTION 'role "%" does not exist', revoke_sidecar.role
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('REVOKE SELECT ON shapesync.tracked, shapesync.ticks, shapesync.log_state, '
                   'shapesync.changes, shapesync.shapes FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON shapesync.shape_snapshots FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE SELECT, INSERT ON shapesync.shape_snapshot_chunks FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION '
                   'shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[]), '
                   'shapesync.check_shape(pg_catalog.regclass, text, text[]), '
                   'shapesync.check_row_security(pg_catalog.regclass), '
                   'shapesync.parse_where(pg_catalog.regclass, text, text[]), '
                   'shapesync.wait_for_writers(pg_catalog.regclass), '
                   'shapesync.invalidate_shape(text, text), '
                   'shapesync.report_shape(text, bigint, text), '
                   'shapesync.report_shapes(text[], text[]), '
                   'shapesync.consumer_report(text, bigint), '
                   'shapesync.consumer_report_stats(text, jsonb), '
                   'shapesync.batch(bigint), '
                   'shapesync.row_values_or_null(oid, int4, bytea), '
                   'shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8), '
                   'shapesync.tick(boolean), '
                   'shapesync.maintain(interval, interval) FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE USAGE ON SCHEMA shapesync FROM %I', revoke_sidecar.role);
    FOR t IN SELECT k.relid::pg_catalog.regclass AS rel FROM shapesync.tracked k LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM %I', t.rel, revoke_sidecar.role);
    END LOOP;
    DELETE FROM shapesync.sidecar_roles s
     WHERE s.roleid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_sidecar.role);
END
$$;
-- ==== end monitor (issue 13) ====

-- ==== monitor wiring ====
-- The sidecar serves GET /dashboard/data from shapesync.dashboard_data()
-- (SECURITY DEFINER), which grant_sidecar() and grant_monitor() now grant.
-- Roles granted before this upgrade: run grant_sidecar() again.

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

REVOKE ALL ON FUNCTION shapesync.dashboard_data() FROM PUBLIC;

CREATE OR REPLACE FUNCTION shapesync.grant_sidecar(role name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid oid;
    t   record;
BEGIN
    SELECT r.oid INTO rid FROM pg_catalog.pg_roles r WHERE r.rolname = grant_sidecar.role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" does not exist', grant_sidecar.role
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it first, e.g. CREATE ROLE shapesync_sidecar LOGIN PASSWORD ''...''.';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA shapesync TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT ON shapesync.tracked, shapesync.ticks, shapesync.log_state, '
                   'shapesync.changes, shapesync.shapes TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON shapesync.shape_snapshots TO %I', grant_sidecar.role);
    EXECUTE format('GRANT SELECT, INSERT ON shapesync.shape_snapshot_chunks TO %I', grant_sidecar.role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION '
                   'shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[]), '
                   'shapesync.check_shape(pg_catalog.regclass, text, text[]), '
                   'shapesync.check_row_security(pg_catalog.regclass), '
                   'shapesync.parse_where(pg_catalog.regclass, text, text[]), '
                   'shapesync.wait_for_writers(pg_catalog.regclass), '
                   'shapesync.invalidate_shape(text, text), '
                   'shapesync.report_shape(text, bigint, text), '
                   'shapesync.report_shapes(text[], text[]), '
                   'shapesync.consumer_report(text, bigint), '
                   'shapesync.consumer_report_stats(text, jsonb), '
                   'shapesync.dashboard_data(), '
                   'shapesync.batch(bigint), '
                   'shapesync.batches(bigint, bigint), '
                   'shapesync.batches_packed(bigint, bigint), '
                   'shapesync.text_array_send(text[]), '
                   'shapesync.row_values_or_null(oid, int4, bytea), '
                   'shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8), '
                   'shapesync.tick(boolean), '
                   'shapesync.maintain(interval, interval) TO %I', grant_sidecar.role);
    INSERT INTO shapesync.sidecar_roles (roleid) VALUES (rid) ON CONFLICT (roleid) DO NOTHING;
    FOR t IN SELECT c.oid::pg_catalog.regclass AS rel, n.nspname
               FROM shapesync.tracked k
               JOIN pg_catalog.pg_class c ON c.oid = k.relid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', t.nspname, grant_sidecar.role);
        EXECUTE format('GRANT SELECT ON %s TO %I', t.rel, grant_sidecar.role);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION shapesync.revoke_sidecar(role name) RETURNS void
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_sidecar.role) THEN
        RAISE EXCEPTION 'role "%" does not exist', revoke_sidecar.role
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('REVOKE SELECT ON shapesync.tracked, shapesync.ticks, shapesync.log_state, '
                   'shapesync.changes, shapesync.shapes FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE SELECT, INSERT, UPDATE, DELETE ON shapesync.shape_snapshots FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE SELECT, INSERT ON shapesync.shape_snapshot_chunks FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE EXECUTE ON FUNCTION '
                   'shapesync.get_or_create_shape(pg_catalog.regclass, text, text[], text, text[]), '
                   'shapesync.check_shape(pg_catalog.regclass, text, text[]), '
                   'shapesync.check_row_security(pg_catalog.regclass), '
                   'shapesync.parse_where(pg_catalog.regclass, text, text[]), '
                   'shapesync.wait_for_writers(pg_catalog.regclass), '
                   'shapesync.invalidate_shape(text, text), '
                   'shapesync.report_shape(text, bigint, text), '
                   'shapesync.report_shapes(text[], text[]), '
                   'shapesync.consumer_report(text, bigint), '
                   'shapesync.consumer_report_stats(text, jsonb), '
                   'shapesync.dashboard_data(), '
                   'shapesync.batch(bigint), '
                   'shapesync.batches(bigint, bigint), '
                   'shapesync.batches_packed(bigint, bigint), '
                   'shapesync.text_array_send(text[]), '
                   'shapesync.row_values_or_null(oid, int4, bytea), '
                   'shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8), '
                   'shapesync.tick(boolean), '
                   'shapesync.maintain(interval, interval) FROM %I', revoke_sidecar.role);
    EXECUTE format('REVOKE USAGE ON SCHEMA shapesync FROM %I', revoke_sidecar.role);
    FOR t IN SELECT k.relid::pg_catalog.regclass AS rel FROM shapesync.tracked k LOOP
        EXECUTE format('REVOKE SELECT ON %s FROM %I', t.rel, revoke_sidecar.role);
    END LOOP;
    DELETE FROM shapesync.sidecar_roles s
     WHERE s.roleid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = revoke_sidecar.role);
END
$$;

CREATE OR REPLACE FUNCTION shapesync.grant_monitor(role name DEFAULT 'shapesync_monitor') RETURNS void
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

CREATE OR REPLACE FUNCTION shapesync.revoke_monitor(role name DEFAULT 'shapesync_monitor') RETURNS void
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

-- ==== end monitor wiring ====

-- ==== filters (issue 15): range index and guard-free LIKE ====
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
REVOKE ALL ON FUNCTION shapesync.membership_stats() FROM PUBLIC;
-- ==== end filters (issue 15) ====
-- ==== issue 15: one change-log record per transaction ====
-- A transaction's changes are buffered in the backend and written as one
-- record at pre-commit (op B packs several); batch(), the change_log view
-- and shape_filter_error() (above) read records through change_entries().
-- B records (at most 8000 bytes of changes each) are kept uncompressed
-- (recurses to changes_0..2), in the heap page up to a page's size.
ALTER TABLE shapesync.changes ALTER COLUMN new_row SET STORAGE EXTERNAL;
ALTER TABLE shapesync.changes_0 SET (toast_tuple_target = 8160);
ALTER TABLE shapesync.changes_1 SET (toast_tuple_target = 8160);
ALTER TABLE shapesync.changes_2 SET (toast_tuple_target = 8160);
COMMENT ON FUNCTION shapesync.sync_stats() IS
    'Sync rates and lag: preload on/off, ticker worker running, ticks and change-log records per second over the last minute (changes_per_second: records, one per transaction and per 8000 bytes of its changes, since issue 15), change-log size, live consumers, and the lag (age of the oldest ticked change not yet read by every consumer) with the consumer that has it.';
COMMENT ON TABLE shapesync.changes IS
    'Change log: one record per transaction (shapesync.tx_buffer_size splits big ones) holding its changes: per changed row of a tracked table (I/U/D) that a shape needs, per TRUNCATE (T), per shape filter error (X) and per DDL (S). A transaction''s only change is a plain row of that op; any other record is op B (relid: its first change''s table, layout: its number of changes, new_row: the changes packed), read through shapesync.change_entries(). seq orders records at write time; a transaction''s changes are ordered by ord. Written only by the extension.';
COMMENT ON FUNCTION shapesync.status() IS
    'Sync health: ticker, last tick, change-log records written since it (unticked_changes, an estimate: one record per transaction, more for transactions larger than shapesync.tx_buffer_size), changes in the log (change_log_rows), and an upper bound of the age of the oldest unticked change.';

CREATE FUNCTION shapesync.change_entries(op "char", relid oid, layout int4, new_row bytea, old_row bytea,
                                         shape_ops int4[], error text, version pg_catalog.xid8)
    RETURNS TABLE (ord bigint, relid oid, op "char", layout int4, new_row bytea, old_row bytea,
                   shape_ops int4[], error text, version pg_catalog.xid8)
    LANGUAGE c STABLE PARALLEL SAFE ROWS 10
    AS 'MODULE_PATHNAME', 'shapesync_change_entries';
COMMENT ON FUNCTION shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8) IS
    'The changes a change-log record holds (pass its columns): an op B record''s packed changes with their position ord in the transaction, or the record itself as one change with ord 0.';

CREATE OR REPLACE VIEW shapesync.change_log AS
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
REVOKE ALL ON FUNCTION shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8) FROM PUBLIC;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT a.rolname FROM shapesync.sidecar_roles s JOIN pg_catalog.pg_roles a ON a.oid = s.roleid LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8) TO %I', r.rolname);
    END LOOP;
END
$$;


-- ==== batch reader in C (issue 16) ====
--
-- shapesync.batch() becomes the C batch reader (extension/batch.c), same
-- signature, rows, order and errors (CREATE OR REPLACE keeps the grants
-- grant_sidecar() gave); the plpgsql formulation stays as
-- shapesync.batch_sql(), the reference of the regress test.  The sidecar reads
-- a range of ticks with shapesync.batches(), in order without a sort.

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
REVOKE ALL ON FUNCTION shapesync.batch_sql(bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION shapesync.batch(tick_id bigint)
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
REVOKE ALL ON FUNCTION shapesync.batches(bigint, bigint) FROM PUBLIC;

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
REVOKE ALL ON FUNCTION shapesync.text_array_send(text[]) FROM PUBLIC;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT a.rolname FROM shapesync.sidecar_roles s JOIN pg_catalog.pg_roles a ON a.oid = s.roleid LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION shapesync.batches(bigint, bigint), '
                       'shapesync.batches_packed(bigint, bigint), '
                       'shapesync.text_array_send(text[]) TO %I', r.rolname);
    END LOOP;
END
$$;
