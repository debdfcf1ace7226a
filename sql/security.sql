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
COMMENT ON FUNCTION shapesync.revoke_sidecar(name) IS
    'Take back what grant_sidecar() gave a role (USAGE on the schemas of tracked tables is left).';

REVOKE ALL ON shapesync.sidecar_roles FROM PUBLIC;
REVOKE ALL ON FUNCTION shapesync.grant_sidecar(name), shapesync.revoke_sidecar(name) FROM PUBLIC;
