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
