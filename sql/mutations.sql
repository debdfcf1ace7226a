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
