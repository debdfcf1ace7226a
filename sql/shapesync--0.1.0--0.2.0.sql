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
        SELECT s.handle, s.shape_id INTO h, sid FROM shapesync.shape_registry s
         WHERE s.definition_key = dkey AND s.definition = def AND s.state = 'active';
        IF FOUND THEN
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
