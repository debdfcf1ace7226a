-- Writes (issue 12, docs/mutations.md): shapesync.apply_mutations(),
-- row versions, conflict policies, idempotency, privileges, bad input.

-- Results without the numbers that change from run to run (versions, txids).
CREATE FUNCTION public.mres(resp jsonb)
    RETURNS TABLE (n int, status text, code text, field text, reason text, "row" text, has text)
    LANGUAGE sql
AS $$
    SELECT o::int, r ->> 'status', r ->> 'code', r ->> 'field', r ->> 'reason', (r -> 'row')::text,
           concat_ws(' ', CASE WHEN r ? 'version' THEN 'version' END,
                          CASE WHEN r ->> 'server_version' IS NOT NULL THEN 'server_version' END,
                          CASE WHEN r ? 'txid' THEN 'txid' END,
                          CASE WHEN r ? 'replayed' THEN 'replayed' END,
                          CASE WHEN r ? 'invalid' THEN 'invalid' END,
                          'resolved_by=' || (r ->> 'resolved_by'))
      FROM jsonb_array_elements(resp -> 'results') WITH ORDINALITY x(r, o)
$$;
CREATE FUNCTION public.mtop(resp jsonb) RETURNS TABLE (committed boolean, invalid boolean, has_txid boolean, replayed boolean)
    LANGUAGE sql
AS $$
    SELECT (resp ->> 'committed')::boolean, (resp ->> 'invalid')::boolean, resp ->> 'txid' IS NOT NULL, resp ? 'replayed'
$$;
-- mutation ids for tests: mid(1) = 'c4ca4238-a0b9-2382-0dcc-509a6f75849b', ...
CREATE FUNCTION public.mid(i int) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT md5(i::text)::uuid::text $$;

CREATE TABLE mut_items (id int PRIMARY KEY, title text, n int, owner text);
INSERT INTO mut_items VALUES (1, 'a', 1, 'u1'), (2, 'b', 2, 'u2');
SELECT shapesync.track('mut_items');
SELECT handle IS NOT NULL AS has_shape FROM shapesync.get_or_create_shape('mut_items', NULL, NULL);

------------------------------------------------------------------------
-- Row versions: row_version(xmin) is what the change log says the row's
-- version is (coalesce(version, xid)), also for rows written inside
-- subtransactions; the response's txid is the 32-bit xid of the stream
------------------------------------------------------------------------
SELECT max(tick_id) AS t0 FROM shapesync.ticks \gset
UPDATE mut_items SET n = 10 WHERE id = 1;
SELECT shapesync.row_version(i.xmin) = coalesce(c.version, c.xid) AS same_version, c.version IS NULL AS top_level
  FROM mut_items i, LATERAL (SELECT * FROM shapesync.changes c WHERE c.relid = 'mut_items'::regclass
                              ORDER BY c.seq DESC LIMIT 1) c
 WHERE i.id = 1;
BEGIN;
SAVEPOINT s1;
UPDATE mut_items SET n = 11 WHERE id = 1;
RELEASE s1;
COMMIT;
SELECT shapesync.row_version(i.xmin) = c.version AS same_version, c.version <> c.xid AS sub_xid
  FROM mut_items i, LATERAL (SELECT * FROM shapesync.changes c WHERE c.relid = 'mut_items'::regclass
                              ORDER BY c.seq DESC LIMIT 1) c
 WHERE i.id = 1;
-- batch() hands the version out (the version of I/U rows, NULL for deletes)
SELECT shapesync.tick(true) IS NOT NULL AS ticked;
SELECT b.op, b.version = coalesce((SELECT c.version FROM shapesync.changes c WHERE c.seq = b.seq), b.xid) AS version_ok,
       b.version = b.xid AS top_level
  FROM generate_series(:t0 + 1, (SELECT max(tick_id) FROM shapesync.ticks)) t, shapesync.batch(t) b
 WHERE b.relid = 'mut_items'::regclass ORDER BY b.seq;
-- frozen, bootstrap and invalid xids belong to no epoch
SELECT shapesync.row_version('2'::xid)::text, shapesync.row_version('0'::xid)::text;
SELECT shapesync.row_version(pg_current_xact_id()::text::xid) = pg_current_xact_id() AS own_xid;

SELECT shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 2}, "values": {"title": "b2"}}]',
                                        public.mid(1))::jsonb) AS r \gset
SELECT * FROM public.mtop(:'r');
SELECT * FROM public.mres(:'r');
SELECT (:'r'::jsonb -> 'results' -> 0 ->> 'version')::xid8 = shapesync.row_version(i.xmin) AS version_is_rows,
       (:'r'::jsonb ->> 'txid')::bigint = (c.xid::text::bigint % 4294967296) AS txid_is_streams,
       (:'r'::jsonb -> 'results' -> 0 ->> 'version')::xid8 = c.version AS log_has_version
  FROM mut_items i, LATERAL (SELECT * FROM shapesync.changes c WHERE c.relid = 'mut_items'::regclass
                              ORDER BY c.seq DESC LIMIT 1) c
 WHERE i.id = 2;

------------------------------------------------------------------------
-- Two clients edit the same row
------------------------------------------------------------------------
SELECT shapesync.row_version(xmin)::text AS v1 FROM mut_items WHERE id = 1 \gset
-- same column: the second one is a conflict carrying the server row
SELECT shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 1},
        "values": {"title": "from A"}, "base": {"version": "%s", "values": {"title": "a"}}}]', public.mid(2), :'v1')::jsonb) AS ra \gset
SELECT shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 1},
        "values": {"title": "from B"}, "base": {"version": "%s", "values": {"title": "a"}}}]', public.mid(3), :'v1')::jsonb) AS rb \gset
SELECT * FROM public.mres(:'ra');
SELECT * FROM public.mtop(:'rb');
SELECT * FROM public.mres(:'rb');
SELECT (:'rb'::jsonb -> 'results' -> 0 ->> 'server_version') = (:'ra'::jsonb -> 'results' -> 0 ->> 'version') AS server_version_is_As;
SELECT id, title, n FROM mut_items WHERE id = 1;
-- a conflict is not stored: the same id may be sent again, rebased
SELECT count(*) FROM shapesync.mutation_log WHERE id = public.mid(3)::uuid;
SELECT shapesync.row_version(xmin)::text AS v1 FROM mut_items WHERE id = 1 \gset
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 1},
        "values": {"title": "from B"}, "base": {"version": "%s", "values": {"title": "from A"}}}]', public.mid(3), :'v1')::jsonb));

-- different columns under merge: both applied
SELECT shapesync.set_conflict_policy('mut_items', 'merge');
SELECT * FROM shapesync.write_settings WHERE relid = 'mut_items'::regclass;
SELECT shapesync.row_version(xmin)::text AS v1 FROM mut_items WHERE id = 1 \gset
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 1},
        "values": {"title": "A2"}, "base": {"version": "%s", "values": {"title": "from B", "n": 11}}}]', public.mid(4), :'v1')::jsonb));
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 1},
        "values": {"n": 12}, "base": {"version": "%s", "values": {"title": "from B", "n": "11"}}}]', public.mid(5), :'v1')::jsonb));
-- same column under merge: conflict
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 1},
        "values": {"n": 13}, "base": {"version": "%s", "values": {"title": "from B", "n": 11}}}]', public.mid(6), :'v1')::jsonb));
-- merge needs the base value of each changed column
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 1},
        "values": {"owner": "x"}, "base": {"version": "%s", "values": {"title": "from B"}}}]', public.mid(7), :'v1')::jsonb));
SELECT id, title, n, owner FROM mut_items WHERE id = 1;

------------------------------------------------------------------------
-- Conflict semantics of each policy
------------------------------------------------------------------------
CREATE TABLE mut_pol (id int PRIMARY KEY, a text, b text);
SELECT shapesync.track('mut_pol');
CREATE TEMP TABLE cases (k serial, policy text, op text, status text, code text, reason text, "row" text, has text, final text);
-- One case, each step in its own transaction: the client reads row i (its
-- base), someone else changes column b of it (and deletes it for
-- update-vs-delete), then the client's mutation arrives.
CREATE PROCEDURE public.mut_case(op text, i int, vals text, policy text, base_values text DEFAULT NULL)
    LANGUAGE plpgsql AS $$
DECLARE
    v text;
    r jsonb;
    o text := op;
BEGIN
    PERFORM shapesync.set_conflict_policy('public.mut_pol', policy);
    DELETE FROM public.mut_pol;
    INSERT INTO public.mut_pol VALUES (1, 'a1', 'b1'), (2, 'a2', 'b2');
    SELECT shapesync.row_version(xmin)::text INTO v FROM public.mut_pol WHERE id = i;
    COMMIT;
    UPDATE public.mut_pol SET b = b || '+theirs' WHERE id = i;
    IF o = 'update-vs-delete' THEN
        DELETE FROM public.mut_pol WHERE id = i;
        o := 'update';
    END IF;
    COMMIT;
    r := shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_pol", "op": "%s", "key": {"id": %s}%s, "base": {"version": "%s", "values": %s}}]',
                                          gen_random_uuid(), o, i, CASE WHEN vals <> '' THEN ', "values": ' || vals ELSE '' END, v,
                                          coalesce(base_values, format('{"id": %s, "a": "a%s", "b": "b%s"}', i, i, i)))::jsonb);
    INSERT INTO cases (policy, op, status, code, reason, "row", has, final)
    SELECT policy, op || CASE WHEN base_values IS NOT NULL THEN ' base ' || base_values ELSE '' END,
           m.status, m.code, m.reason, m."row", m.has,
           (SELECT string_agg(format('%s:%s:%s', p.id, p.a, p.b), ' ' ORDER BY p.id) FROM public.mut_pol p)
      FROM public.mres(r) m;
    COMMIT;
END $$;
CREATE FUNCTION public.mut_resolve(base jsonb, mine jsonb, theirs jsonb) RETURNS jsonb
    LANGUAGE sql AS $$
    SELECT CASE WHEN mine IS NULL AND theirs IS NOT NULL THEN NULL          -- delete vs update: conflict
                WHEN theirs IS NULL THEN mine                               -- update vs delete: re-create
                WHEN mine ->> 'a' = 'drop' THEN 'null'::jsonb               -- the row must go
                ELSE jsonb_build_object('a', (theirs ->> 'a') || '|' || (mine ->> 'a'), 'b', theirs -> 'b') END
$$;
DO $$
DECLARE
    p text;
BEGIN
    FOREACH p IN ARRAY ARRAY['reject', 'merge', 'last_write_wins', 'public.mut_resolve'] LOOP
        -- the client changed a, someone else b
        CALL public.mut_case('update', 1, '{"a": "mine"}', p);
        -- both changed b
        CALL public.mut_case('update', 1, '{"b": "mine"}', p);
        -- update vs delete
        CALL public.mut_case('update-vs-delete', 1, '{"a": "mine"}', p);
        -- delete vs update
        CALL public.mut_case('delete', 1, '', p);
        -- delete vs update, the client never saw the changed column
        CALL public.mut_case('delete', 1, '', p, '{"a": "a1"}');
        -- insert on an existing key
        CALL public.mut_case('insert', 2, '{"a": "new"}', p);
    END LOOP;
    -- the function says the row must go
    CALL public.mut_case('update', 1, '{"a": "drop"}', 'public.mut_resolve');
END $$;
SELECT policy, op, status, code, reason, "row", has, final FROM cases ORDER BY k;
-- without a base version a mutation applies unconditionally
SELECT shapesync.set_conflict_policy('mut_pol', 'reject');
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_pol", "op": "update", "key": {"id": 2}, "values": {"a": "blind"}}]', public.mid(9))::jsonb));
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_pol", "op": "delete", "key": {"id": 99}}]', public.mid(10))::jsonb));
SELECT * FROM mut_pol ORDER BY id;
-- policies that do not exist, or are not a resolver
SELECT shapesync.set_conflict_policy('mut_pol', 'first_write_wins');
SELECT shapesync.set_conflict_policy('mut_pol', 'public.mid');
CREATE FUNCTION public.mut_bad_resolver(jsonb, jsonb, jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
SELECT shapesync.set_conflict_policy('mut_pol', 'public.mut_bad_resolver');
SELECT shapesync.set_conflict_policy('mut_pol', 'x''); DROP TABLE mut_pol; --');
SELECT shapesync.set_conflict_policy('public.mut_nope', 'reject');

------------------------------------------------------------------------
-- An offline client: 100 queued mutations while rows change underneath,
-- replayed twice
------------------------------------------------------------------------
CREATE TABLE mut_off (id int PRIMARY KEY, title text, n int NOT NULL DEFAULT 0);
INSERT INTO mut_off SELECT g, 't' || g, g FROM generate_series(1, 100) g;
SELECT shapesync.track('mut_off');
-- what the client saw before going offline
CREATE TEMP TABLE seen AS SELECT id, shapesync.row_version(xmin)::text AS v, title, n FROM mut_off;
-- its queue: update 1..80 (and 20 a second time, from the same base),
-- delete 81..90, insert 101..109
CREATE TEMP TABLE queue AS
    SELECT row_number() OVER (ORDER BY ord) AS k, m FROM (
        SELECT s.id AS ord, jsonb_build_object('id', public.mid(1000 + s.id), 'table', 'mut_off', 'op', 'update',
                    'key', jsonb_build_object('id', s.id), 'values', jsonb_build_object('title', 'offline ' || s.id),
                    'base', jsonb_build_object('version', s.v, 'values', jsonb_build_object('title', s.title))) AS m
          FROM seen s WHERE s.id <= 80
        UNION ALL
        SELECT 80.5, jsonb_build_object('id', public.mid(2020), 'table', 'mut_off', 'op', 'update',
                    'key', '{"id": 20}'::jsonb, 'values', '{"n": 2020}'::jsonb,
                    'base', jsonb_build_object('version', s.v, 'values', jsonb_build_object('n', s.n)))
          FROM seen s WHERE s.id = 20
        UNION ALL
        SELECT s.id, jsonb_build_object('id', public.mid(1000 + s.id), 'table', 'mut_off', 'op', 'delete',
                    'key', jsonb_build_object('id', s.id), 'base', jsonb_build_object('version', s.v))
          FROM seen s WHERE s.id BETWEEN 81 AND 90
        UNION ALL
        SELECT g, jsonb_build_object('id', public.mid(1000 + g), 'table', 'mut_off', 'op', 'insert',
                    'key', jsonb_build_object('id', g), 'values', jsonb_build_object('title', 'new ' || g))
          FROM generate_series(101, 109) g) q;
SELECT count(*) AS queued FROM queue;
-- meanwhile, on the server: rows 1..5 and 81..83 change
UPDATE mut_off SET n = n + 1 WHERE id <= 5 OR id BETWEEN 81 AND 83;
CREATE TEMP TABLE before_state AS SELECT id, title, n FROM mut_off;
SELECT jsonb_agg(m ORDER BY k) AS q FROM queue \gset
-- all or none (the default): 8 conflicts, nothing applied, nothing stored
SELECT shapesync.apply_mutations(:'q') AS r0 \gset
SELECT * FROM public.mtop(:'r0');
SELECT status, count(*) FROM public.mres(:'r0') GROUP BY 1 ORDER BY 1;
SELECT (SELECT count(*) FROM (SELECT * FROM mut_off EXCEPT SELECT * FROM before_state) x) AS changed_rows,
       (SELECT count(*) FROM shapesync.mutation_log l JOIN queue q ON l.id = (q.m ->> 'id')::uuid) AS stored;
-- with allow_partial: every mutation that can apply does, conflicts are reported
SELECT shapesync.apply_mutations(:'q', NULL, true) AS r1 \gset
SELECT * FROM public.mtop(:'r1');
SELECT status, reason, count(*) FROM public.mres(:'r1') GROUP BY 1, 2 ORDER BY 1, 2;
-- which: the mutations of rows 1..5 and 81..83
SELECT string_agg(q.m ->> 'op' || ' ' || (q.m -> 'key' ->> 'id'), ', ' ORDER BY r.n) AS conflicts
  FROM public.mres(:'r1') r JOIN queue q ON q.k = r.n WHERE r.status = 'conflict';
CREATE TEMP TABLE after_first AS SELECT id, title, n, xmin::text AS x FROM mut_off;
SELECT count(*) AS rows, count(*) FILTER (WHERE title LIKE 'offline %') AS offline_titles,
       count(*) FILTER (WHERE title LIKE 'new %') AS inserted,
       (SELECT n FROM mut_off WHERE id = 20) AS n_of_20,
       (SELECT string_agg(id::text, ',' ORDER BY id) FROM mut_off WHERE id BETWEEN 81 AND 90) AS deletes_left
  FROM mut_off;
SELECT count(*) AS log_rows FROM shapesync.changes WHERE relid = 'mut_off'::regclass \gset
-- replayed twice: the stored outcomes, nothing changes
SELECT shapesync.apply_mutations(:'q', NULL, true) AS r2 \gset
SELECT shapesync.apply_mutations(:'q') AS r3 \gset
SELECT * FROM public.mtop(:'r2');
SELECT (SELECT count(*) FROM public.mres(:'r2') WHERE has LIKE '%replayed%') AS replayed2,
       (SELECT count(*) FROM public.mres(:'r3') WHERE has LIKE '%replayed%') AS replayed3,
       (SELECT count(*) FROM (SELECT r ->> 'id', r ->> 'status', r ->> 'version' FROM jsonb_array_elements(:'r1'::jsonb -> 'results') r
                              EXCEPT SELECT r ->> 'id', r ->> 'status', r ->> 'version' FROM jsonb_array_elements(:'r3'::jsonb -> 'results') r) x) AS outcomes_differ,
       (:'r3'::jsonb ->> 'txid') = (:'r1'::jsonb ->> 'txid') AS same_txid,
       (SELECT count(*) FROM (SELECT id, title, n, xmin::text FROM mut_off EXCEPT SELECT * FROM after_first) x) AS rows_changed,
       (SELECT count(*) FROM shapesync.changes WHERE relid = 'mut_off'::regclass) - :log_rows AS new_log_rows;

------------------------------------------------------------------------
-- Idempotency key: the whole response, once
------------------------------------------------------------------------
SELECT shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "insert", "key": {"id": 3}, "values": {"title": "k"}}]', public.mid(11))::jsonb,
                                 'key-1') AS k1 \gset
-- the same key with another body: the stored response, the body is not looked at
SELECT shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "insert", "key": {"id": 4}, "values": {"title": "k"}}]', public.mid(12))::jsonb,
                                 'key-1') AS k2 \gset
SELECT * FROM public.mtop(:'k2');
SELECT (:'k1'::jsonb -> 'results') = (:'k2'::jsonb -> 'results') AS same_results, :'k1'::jsonb ->> 'txid' = :'k2'::jsonb ->> 'txid' AS same_txid;
SELECT id, title FROM mut_items WHERE id IN (3, 4) ORDER BY id;
SELECT shapesync.apply_mutations('[]', '');
SELECT shapesync.apply_mutations('[]', repeat('k', 256));

------------------------------------------------------------------------
-- Bad input: each case is rejected with a field, the request is invalid,
-- nothing is applied even with allow_partial
------------------------------------------------------------------------
SELECT shapesync.apply_mutations(NULL);
SELECT shapesync.apply_mutations('{"mutations": []}');
SELECT shapesync.apply_mutations((SELECT jsonb_agg(jsonb_build_object('id', gen_random_uuid())) FROM generate_series(1, 10001)));
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT shapesync.apply_mutations('[]');
ROLLBACK;
SELECT * FROM public.mtop(shapesync.apply_mutations('[]'));
SELECT shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(100), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{"title": "ok"}'::jsonb),
    '"not an object"'::jsonb,
    '{"table": "mut_items", "op": "delete", "key": {"id": 1}}'::jsonb,
    '{"id": "not-a-uuid", "table": "mut_items", "op": "delete", "key": {"id": 1}}'::jsonb,
    jsonb_build_object('id', public.mid(100), 'table', 'mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb),
    jsonb_build_object('id', public.mid(101), 'table', 'mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb, 'extra', 1),
    jsonb_build_object('id', public.mid(102), 'op', 'delete', 'key', '{"id": 1}'::jsonb),
    jsonb_build_object('id', public.mid(103), 'table', 'no_such_table', 'op', 'delete', 'key', '{"id": 1}'::jsonb),
    jsonb_build_object('id', public.mid(104), 'table', 'pg_catalog.pg_class', 'op', 'delete', 'key', '{"oid": 1}'::jsonb),
    jsonb_build_object('id', public.mid(105), 'table', 'a.b.c.d', 'op', 'delete', 'key', '{"id": 1}'::jsonb),
    jsonb_build_object('id', public.mid(106), 'table', 'mut_items', 'op', 'upsert', 'key', '{"id": 1}'::jsonb),
    jsonb_build_object('id', public.mid(107), 'table', 'mut_items', 'op', 'update', 'values', '{"title": "x"}'::jsonb),
    jsonb_build_object('id', public.mid(108), 'table', 'mut_items', 'op', 'update', 'key', '{"title": "x"}'::jsonb, 'values', '{"title": "x"}'::jsonb),
    jsonb_build_object('id', public.mid(109), 'table', 'mut_items', 'op', 'update', 'key', '{"id": null}'::jsonb, 'values', '{"title": "x"}'::jsonb),
    jsonb_build_object('id', public.mid(110), 'table', 'mut_items', 'op', 'update', 'key', '[1]'::jsonb, 'values', '{"title": "x"}'::jsonb),
    jsonb_build_object('id', public.mid(111), 'table', 'mut_items', 'op', 'update', 'key', '{"id": "one"}'::jsonb, 'values', '{"title": "x"}'::jsonb),
    jsonb_build_object('id', public.mid(112), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{"nope": "x"}'::jsonb),
    jsonb_build_object('id', public.mid(113), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{"n": "12abc"}'::jsonb),
    jsonb_build_object('id', public.mid(114), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{"n": 99999999999}'::jsonb),
    jsonb_build_object('id', public.mid(115), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{"id": 2, "title": "x"}'::jsonb),
    jsonb_build_object('id', public.mid(116), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{}'::jsonb),
    jsonb_build_object('id', public.mid(117), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '"x"'::jsonb),
    jsonb_build_object('id', public.mid(118), 'table', 'mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb, 'values', '{"title": "x"}'::jsonb),
    jsonb_build_object('id', public.mid(119), 'table', 'mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb, 'base', '{"version": "abc"}'::jsonb),
    jsonb_build_object('id', public.mid(120), 'table', 'mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb, 'base', '{"version": "1", "values": {"nope": 1}}'::jsonb),
    jsonb_build_object('id', public.mid(121), 'table', 'mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb, 'base', '{"vershun": "1"}'::jsonb),
    jsonb_build_object('id', public.mid(122), 'table', 'mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb, 'base', '[]'::jsonb),
    jsonb_build_object('id', public.mid(123), 'table', 'mut_items', 'op', 'insert', 'values', '{"id": 9, "title": "x", "n": [1]}'::jsonb),
    jsonb_build_object('id', public.mid(124), 'table', 'mut_items', 'op', 'insert', 'key', '{"id": 9}'::jsonb, 'values', '{"title": "valid"}'::jsonb)
    ), NULL, true) AS bad \gset
SELECT * FROM public.mtop(:'bad');
SELECT * FROM public.mres(:'bad');
SELECT id, title FROM mut_items WHERE id = 1;

------------------------------------------------------------------------
-- SQL metacharacters in values, table and column names
------------------------------------------------------------------------
CREATE TABLE "mut we""ird; DROP TABLE mut_items; --" ("i""d; --" int PRIMARY KEY, "va'l)" text, "$1" jsonb);
SELECT shapesync.track('"mut we""ird; DROP TABLE mut_items; --"');
SELECT * FROM public.mres(shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(200), 'table', '"mut we""ird; DROP TABLE mut_items; --"', 'op', 'insert',
                       'key', jsonb_build_object('i"d; --', 1),
                       'values', jsonb_build_object('va''l)', 'x''); DROP TABLE mut_items; -- $1 \', '$1', '{"a": "''; --"}'::jsonb)),
    jsonb_build_object('id', public.mid(201), 'table', '"mut we""ird; DROP TABLE mut_items; --"', 'op', 'update',
                       'key', jsonb_build_object('i"d; --', 1),
                       'values', jsonb_build_object('va''l)', E'\\x00 '' " ) ; -- /* ')))));
SELECT * FROM "mut we""ird; DROP TABLE mut_items; --";
SELECT * FROM public.mres(shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(202), 'table', 'mut_items; DROP TABLE mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb),
    jsonb_build_object('id', public.mid(203), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb,
                       'values', '{"title = title; DROP TABLE mut_items; --": "x"}'::jsonb))));
SELECT count(*) AS mut_items_still_there FROM mut_items;

------------------------------------------------------------------------
-- Read-only tables and untracked tables
------------------------------------------------------------------------
CREATE TABLE mut_untracked (id int PRIMARY KEY);
SELECT shapesync.set_writable('mut_items', false);
SELECT shapesync.set_writable('mut_untracked', false);
SELECT relid, writable, conflict_policy FROM shapesync.write_settings ORDER BY relid::text;
SELECT * FROM public.mres(shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(300), 'table', 'mut_items', 'op', 'delete', 'key', '{"id": 1}'::jsonb),
    jsonb_build_object('id', public.mid(301), 'table', 'mut_untracked', 'op', 'insert', 'key', '{"id": 1}'::jsonb))));
SELECT shapesync.set_writable('mut_items', true);
SELECT count(*) FROM mut_untracked;

------------------------------------------------------------------------
-- As a writer role: grants and row-level security decide
------------------------------------------------------------------------
CREATE ROLE mut_writer;
CREATE ROLE mut_noinsert;
SELECT shapesync.grant_writer('mut_writer');
SELECT shapesync.grant_writer('mut_noinsert');
CREATE TABLE mut_rls (id int PRIMARY KEY, owner text NOT NULL, title text);
INSERT INTO mut_rls VALUES (1, 'u1', 'mine'), (2, 'u2', 'theirs');
SELECT shapesync.track('mut_rls');
ALTER TABLE mut_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY mut_rls_own ON mut_rls
    USING (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub')
    WITH CHECK (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
GRANT SELECT, INSERT, UPDATE, DELETE ON mut_rls TO mut_writer;
GRANT SELECT, UPDATE ON mut_rls TO mut_noinsert;
BEGIN;
SET LOCAL ROLE mut_writer;
SELECT set_config('request.jwt.claims', '{"sub": "u1", "role": "mut_writer"}', true);
SELECT * FROM public.mres(shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(400), 'table', 'mut_rls', 'op', 'insert', 'key', '{"id": 3}'::jsonb, 'values', '{"owner": "u1", "title": "ok"}'::jsonb),
    jsonb_build_object('id', public.mid(401), 'table', 'mut_rls', 'op', 'insert', 'key', '{"id": 4}'::jsonb, 'values', '{"owner": "u2", "title": "forged"}'::jsonb),
    jsonb_build_object('id', public.mid(402), 'table', 'mut_rls', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{"owner": "u2"}'::jsonb),
    jsonb_build_object('id', public.mid(403), 'table', 'mut_rls', 'op', 'update', 'key', '{"id": 2}'::jsonb, 'values', '{"title": "hijack"}'::jsonb),
    jsonb_build_object('id', public.mid(404), 'table', 'mut_items', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{"title": "no grant"}'::jsonb)
    ), NULL, true));
COMMIT;
-- the role cannot read or write the log directly
SET ROLE mut_writer;
SELECT count(*) FROM shapesync.mutation_log;
-- (it may call the helpers, which act only for its own principal)
RESET ROLE;
SELECT * FROM mut_rls ORDER BY id;
SELECT id, principal FROM shapesync.mutation_log WHERE id IN (public.mid(400)::uuid, public.mid(401)::uuid) ORDER BY 2;
-- another principal cannot replay (or read) u1's mutation id
BEGIN;
SET LOCAL ROLE mut_writer;
SELECT set_config('request.jwt.claims', '{"sub": "u2"}', true);
SELECT * FROM public.mres(shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(400), 'table', 'mut_rls', 'op', 'insert', 'key', '{"id": 3}'::jsonb, 'values', '{"owner": "u1", "title": "ok"}'::jsonb))));
COMMIT;
-- a row the writer may read but not update (UPDATE's USING hides it: no error from PostgreSQL)
CREATE TABLE mut_rls2 (id int PRIMARY KEY, owner text NOT NULL, title text);
INSERT INTO mut_rls2 VALUES (1, 'u2', 'public');
SELECT shapesync.track('mut_rls2');
ALTER TABLE mut_rls2 ENABLE ROW LEVEL SECURITY;
CREATE POLICY mut_rls2_read ON mut_rls2 FOR SELECT USING (true);
CREATE POLICY mut_rls2_write ON mut_rls2 FOR UPDATE
    USING (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
GRANT SELECT, UPDATE ON mut_rls2 TO mut_writer;
BEGIN;
SET LOCAL ROLE mut_writer;
SELECT set_config('request.jwt.claims', '{"sub": "u1"}', true);
SELECT * FROM public.mres(shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(405), 'table', 'mut_rls2', 'op', 'update', 'key', '{"id": 1}'::jsonb, 'values', '{"title": "defaced"}'::jsonb))));
COMMIT;
SELECT * FROM mut_rls2;
-- a role without INSERT
BEGIN;
SET LOCAL ROLE mut_noinsert;
SELECT set_config('request.jwt.claims', '{"sub": "u1"}', true);
SELECT * FROM public.mtop(shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(410), 'table', 'mut_rls', 'op', 'insert', 'key', '{"id": 5}'::jsonb, 'values', '{"owner": "u1"}'::jsonb))));
SELECT * FROM public.mres(shapesync.apply_mutations(jsonb_build_array(
    jsonb_build_object('id', public.mid(410), 'table', 'mut_rls', 'op', 'insert', 'key', '{"id": 5}'::jsonb, 'values', '{"owner": "u1"}'::jsonb))));
COMMIT;
-- a role without grant_writer()
CREATE ROLE mut_nobody;
SET ROLE mut_nobody;
SELECT shapesync.apply_mutations('[]');
RESET ROLE;

------------------------------------------------------------------------
-- Retention
------------------------------------------------------------------------
SELECT count(*) > 0 AS has_rows FROM shapesync.mutation_log;
UPDATE shapesync.mutation_log SET applied_at = applied_at - interval '8 days' WHERE id = public.mid(1)::uuid;
UPDATE shapesync.mutation_requests SET created_at = created_at - interval '8 days';
-- every committed batch deletes a few expired rows
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 2}, "values": {"n": 5}}]', public.mid(500))::jsonb));
SELECT count(*) AS expired_left FROM shapesync.mutation_log WHERE applied_at < now() - interval '7 days';
SELECT count(*) AS keys_left FROM shapesync.mutation_requests;
UPDATE shapesync.mutation_log SET applied_at = applied_at - interval '2 days';
SELECT shapesync.purge_mutations('1 day') > 0 AS purged;
SELECT count(*) FROM shapesync.mutation_log;
-- a forgotten id applies again
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_items", "op": "update", "key": {"id": 2}, "values": {"n": 6}}]', public.mid(500))::jsonb));

-- an insert without a key: the column default makes it (no insert-on-existing-key check)
CREATE TABLE mut_serial (id bigserial PRIMARY KEY, title text NOT NULL);
SELECT shapesync.track('mut_serial');
SELECT * FROM public.mres(shapesync.apply_mutations(format('[{"id": "%s", "table": "mut_serial", "op": "insert", "values": {"title": "made by its default"}}]', public.mid(600))::jsonb));
SELECT id, title FROM mut_serial;
DROP TABLE mut_serial;

DROP TABLE mut_items, mut_pol, mut_off, mut_rls, mut_rls2, mut_untracked, "mut we""ird; DROP TABLE mut_items; --";
SELECT count(*) AS policies_left FROM shapesync.write_policies;
DROP PROCEDURE public.mut_case(text, int, text, text, text);
DROP FUNCTION public.mut_resolve(jsonb, jsonb, jsonb), public.mut_bad_resolver(jsonb, jsonb, jsonb);
SELECT shapesync.revoke_writer('mut_writer');
SELECT shapesync.revoke_writer('mut_noinsert');
DROP ROLE mut_writer, mut_noinsert, mut_nobody;
DROP FUNCTION public.mres(jsonb), public.mtop(jsonb), public.mid(int);
DELETE FROM shapesync.mutation_log;
DELETE FROM shapesync.mutation_requests;
