-- Shape authorization (issue 11, docs/auth.md): a shape asked for on behalf
-- of a role with JWT claims is the client's filter AND the role's SELECT
-- policies, folded with the claims into constants.

CREATE ROLE auth_sidecar LOGIN;
CREATE ROLE auth_user NOLOGIN;          -- the role a token selects ("authenticated")
CREATE ROLE auth_stranger NOLOGIN;      -- a role the sidecar is not a member of
GRANT auth_user TO auth_sidecar;
SELECT shapesync.grant_sidecar('auth_sidecar');

-- Supabase's convention: the claims in request.jwt.claims, read by SQL functions
CREATE SCHEMA auth;
GRANT USAGE ON SCHEMA auth TO PUBLIC;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb $$;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
    AS $$ SELECT (auth.jwt() ->> 'sub')::uuid $$;
CREATE FUNCTION auth.sub() RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT auth.jwt() ->> 'sub' $$;

CREATE TABLE docs (id int PRIMARY KEY, owner_id uuid, tenant text, published boolean NOT NULL DEFAULT false,
                   title text, secret text);
SELECT shapesync.track('docs');
GRANT SELECT (id, owner_id, tenant, published, title) ON docs TO auth_user;
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
-- permissive: own rows, or published ones; restrictive: same tenant
CREATE POLICY own ON docs FOR SELECT TO auth_user USING (owner_id = auth.uid());
CREATE POLICY pub ON docs FOR ALL TO PUBLIC USING (published);
CREATE POLICY tenant ON docs AS RESTRICTIVE FOR SELECT TO auth_user USING (tenant = auth.jwt() ->> 'tenant');
-- not for SELECT, or not for this role: ignored
CREATE POLICY ins ON docs FOR INSERT TO auth_user WITH CHECK (true);
CREATE POLICY other ON docs FOR SELECT TO auth_stranger USING (true);
INSERT INTO docs VALUES
    (1, '00000000-0000-0000-0000-00000000000a', 't1', false, 'a1', 's1'),
    (2, '00000000-0000-0000-0000-00000000000a', 't2', false, 'a2', 's2'),
    (3, '00000000-0000-0000-0000-00000000000b', 't1', false, 'b1', 's3'),
    (4, '00000000-0000-0000-0000-00000000000b', 't1', true,  'b2', 's4');

-- rows a role sees with these claims, according to PostgreSQL itself
CREATE FUNCTION visible(role name, claims jsonb) RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE
    r int[];
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', role);
    PERFORM set_config('request.jwt.claims', claims::text, true);
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO r FROM docs;
    RESET ROLE;
    RETURN r;
END
$$;
-- rows of a filter, as the superuser
CREATE FUNCTION rows_where(w text) RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE
    r int[];
BEGIN
    EXECUTE format('SELECT coalesce(array_agg(id ORDER BY id), ''{}'') FROM docs WHERE %s', coalesce(w, 'true')) INTO r;
    RETURN r;
END
$$;

------------------------------------------------------------------------
-- the effective shape, as the sidecar asks for it
------------------------------------------------------------------------
SET ROLE auth_sidecar;
-- without a role, as before: row-level security applies to the sidecar (SS002)
SELECT error_field, error_code, error_message FROM shapesync.check_shape('docs', NULL);
-- user A: policies folded to constants; permitted columns only
SELECT canonical_where, error_code, policy_applied, shape_columns
  FROM shapesync.check_shape('docs', NULL, NULL, 'auth_user',
                             '{"sub": "00000000-0000-0000-0000-00000000000a", "tenant": "t1"}');
-- with the client's filter
SELECT canonical_where, policy_applied
  FROM shapesync.check_shape('docs', 'title <> $1', '{zz}', 'auth_user',
                             '{"sub": "00000000-0000-0000-0000-00000000000a", "tenant": "t1"}');
SELECT handle AS h_a, shape_id AS sid_a, canonical_where AS w_a
  FROM shapesync.get_or_create_shape('docs', NULL, NULL, '', NULL, 'auth_user',
       '{"sub": "00000000-0000-0000-0000-00000000000a", "tenant": "t1", "iat": 1}') \gset
-- the same effective filter (other claims differ): the same shape
SELECT handle = :'h_a' AS same_handle, created, policy_applied, shape_columns
  FROM shapesync.get_or_create_shape('docs', NULL, NULL, '', NULL, 'auth_user',
       '{"sub": "00000000-0000-0000-0000-00000000000a", "tenant": "t1", "iat": 2, "role": "auth_user"}');
SELECT handle AS h_b, shape_id AS sid_b, canonical_where AS w_b
  FROM shapesync.get_or_create_shape('docs', NULL, NULL, '', NULL, 'auth_user',
       '{"sub": "00000000-0000-0000-0000-00000000000b", "tenant": "t1"}') \gset
RESET ROLE;
SELECT :'h_a' <> :'h_b' AS distinct_handles;
-- one template for every user: equality-indexed like explicit per-user shapes
SELECT count(DISTINCT template_id) AS templates, min(template_sql) AS template_sql
  FROM shapesync.shape_registry r JOIN shapesync.shape_templates t USING (template_id)
 WHERE r.handle IN (:'h_a', :'h_b');
-- the explicit filter with the same meaning is the same shape
SELECT handle = :'h_a' AS same_as_explicit
  FROM shapesync.get_or_create_shape('docs',
       'tenant = ''t1'' AND (owner_id = ''00000000-0000-0000-0000-00000000000a'' OR published)',
       '{id,owner_id,tenant,published,title}');
-- the folded filter selects what row-level security shows
SELECT visible('auth_user', '{"sub": "00000000-0000-0000-0000-00000000000a", "tenant": "t1"}') AS rls_a,
       rows_where(:'w_a') AS shape_a,
       visible('auth_user', '{"sub": "00000000-0000-0000-0000-00000000000b", "tenant": "t1"}') AS rls_b,
       rows_where(:'w_b') AS shape_b;
-- no claims: nobody's rows
SELECT canonical_where FROM shapesync.effective_where('docs', 'auth_user', NULL, NULL);

------------------------------------------------------------------------
-- live changes: the trigger's membership agrees with SET ROLE + claims
------------------------------------------------------------------------
-- replay a shape's ops from the change log over its snapshot
CREATE FUNCTION replay(sid int, snapshot int[], since bigint) RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE
    r   record;
    s   int[] := snapshot;
    o   int;
BEGIN
    FOR r IN SELECT c.new_row, c.old_row, c.shape_ops FROM shapesync.change_log c
              WHERE c.table_name = 'docs'::regclass AND c.seq > since ORDER BY c.seq, c.ord LOOP
        FOREACH o IN ARRAY coalesce(r.shape_ops, '{}') LOOP
            CONTINUE WHEN o / 4 <> sid;
            IF r.old_row IS NOT NULL THEN
                s := array_remove(s, (r.old_row ->> 'id')::int);
            END IF;
            IF o % 4 IN (1, 2) THEN
                s := array_append(s, (r.new_row ->> 'id')::int);
            END IF;
        END LOOP;
    END LOOP;
    RETURN (SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest(s) x);
END
$$;
SELECT visible('auth_user', '{"sub": "00000000-0000-0000-0000-00000000000a", "tenant": "t1"}') AS snap_a \gset
SELECT visible('auth_user', '{"sub": "00000000-0000-0000-0000-00000000000b", "tenant": "t1"}') AS snap_b \gset
SELECT coalesce(max(seq), 0) AS seq0 FROM shapesync.changes \gset
INSERT INTO docs VALUES (5, '00000000-0000-0000-0000-00000000000a', 't1', false, 'a3', 's5'),
                        (6, '00000000-0000-0000-0000-00000000000b', 't1', false, 'b3', 's6'),
                        (7, NULL, 't1', false, 'nobody', 's7');
UPDATE docs SET title = 'a1 edited' WHERE id = 1;                                      -- update
UPDATE docs SET owner_id = '00000000-0000-0000-0000-00000000000b' WHERE id = 5;         -- A out, B in
UPDATE docs SET owner_id = '00000000-0000-0000-0000-00000000000a' WHERE id = 3;         -- B out, A in
UPDATE docs SET tenant = 't2' WHERE id = 6;                                             -- restrictive: B out
UPDATE docs SET published = true WHERE id = 7;                                          -- both in
UPDATE docs SET id = 11 WHERE id = 1;                                                   -- key change
UPDATE docs SET secret = 'changed' WHERE id = 11;                                       -- column not in shape
DELETE FROM docs WHERE id = 4;                                                          -- both out
SELECT replay(:sid_a, :'snap_a', :seq0) AS live_a,
       visible('auth_user', '{"sub": "00000000-0000-0000-0000-00000000000a", "tenant": "t1"}') AS rls_a,
       replay(:sid_b, :'snap_b', :seq0) AS live_b,
       visible('auth_user', '{"sub": "00000000-0000-0000-0000-00000000000b", "tenant": "t1"}') AS rls_b;

------------------------------------------------------------------------
-- columns
------------------------------------------------------------------------
SET ROLE auth_sidecar;
SELECT error_field, error_code, error_message, error_detail
  FROM shapesync.check_shape('docs', NULL, NULL, 'auth_user', '{}', '{id,secret}');
SELECT error_field, error_code, error_message
  FROM shapesync.check_shape('docs', 'secret = ''s1''', NULL, 'auth_user', '{}');
SELECT error_field, error_code, error_message
  FROM shapesync.check_shape('docs', NULL, NULL, 'auth_user', '{}', '{id,nope}');
SELECT canonical_where IS NOT NULL AS ok, shape_columns
  FROM shapesync.check_shape('docs', NULL, NULL, 'auth_user', '{}', '{id,title}');
SELECT * FROM shapesync.get_or_create_shape('docs', NULL, '{id,secret}', '', NULL, 'auth_user', '{}');

------------------------------------------------------------------------
-- roles
------------------------------------------------------------------------
SELECT error_field, error_code, error_message, error_detail, error_hint
  FROM shapesync.check_shape('docs', NULL, NULL, 'auth_stranger', '{}');
SELECT error_field, error_code, error_message, error_detail
  FROM shapesync.check_shape('docs', NULL, NULL, 'no_such_role', '{}');
SELECT * FROM shapesync.get_or_create_shape('docs', NULL, NULL, '', NULL, 'auth_stranger', '{}');
RESET ROLE;

------------------------------------------------------------------------
-- claims are values, never SQL; policies run as the role
------------------------------------------------------------------------
CREATE TABLE posts (id int PRIMARY KEY, author text, body text);
SELECT shapesync.track('posts');
GRANT SELECT ON posts TO auth_user;
ALTER TABLE posts ENABLE ROW LEVEL SECURITY;
-- current_user is evaluated as the token's role (auth_user): that part folds away
CREATE POLICY mine ON posts FOR SELECT USING (author = auth.sub() OR current_user = 'admin');
INSERT INTO posts VALUES (1, 'x', 'hello'), (2, 'y', 'world');
SELECT canonical_where, consts
  FROM shapesync.effective_where('posts', 'auth_user', '{"sub": "x'' OR true --"}', NULL);
SELECT p.id FROM posts p, shapesync.effective_where('posts', 'auth_user', '{"sub": "x'' OR true --"}', NULL) e
 WHERE p.author = e.consts[1];
-- the same text where the policy casts it to uuid: an error about a value
SELECT error_field, error_code, error_message
  FROM shapesync.check_shape('docs', NULL, NULL, 'auth_user', '{"sub": "x'' OR true --", "tenant": "t1"}');
-- the legacy per-claim settings are set too (request.jwt.claim.sub)
CREATE FUNCTION auth.legacy_sub() RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT current_setting('request.jwt.claim.sub', true) $$;
CREATE POLICY legacy ON posts AS RESTRICTIVE FOR SELECT USING (author = auth.legacy_sub());
SELECT canonical_where FROM shapesync.effective_where('posts', 'auth_user', '{"sub": "x"}', NULL);
-- and nothing of it stays set afterwards
SELECT current_setting('request.jwt.claims', true) IS NULL OR current_setting('request.jwt.claims', true) = '' AS claims_unset;

------------------------------------------------------------------------
-- what cannot be folded is refused
------------------------------------------------------------------------
-- no permissive policy: no rows
CREATE TABLE notes (id int PRIMARY KEY, body text);
SELECT shapesync.track('notes');
GRANT SELECT ON notes TO auth_user;
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
SELECT canonical_where, policy_applied FROM shapesync.effective_where('notes', 'auth_user', '{}', NULL);
CREATE POLICY only_restrictive ON notes AS RESTRICTIVE FOR SELECT USING (id > 0);
SELECT canonical_where, policy_applied FROM shapesync.effective_where('notes', 'auth_user', '{}', 'id < 10');
-- a policy that allows every row adds nothing: the whole-table shape
CREATE POLICY everyone ON notes FOR SELECT USING (auth.jwt() ->> 'role' = 'auth_user');
DROP POLICY only_restrictive ON notes;
SELECT canonical_where, policy_applied FROM shapesync.effective_where('notes', 'auth_user', '{"role": "auth_user"}', NULL);
SELECT canonical_where, policy_applied FROM shapesync.effective_where('notes', 'auth_user', '{"role": "anon"}', NULL);
-- a subquery
CREATE TABLE members (team text, member uuid);
GRANT SELECT ON members TO auth_user;
CREATE POLICY team ON notes FOR SELECT
    USING (body IN (SELECT m.team FROM members m WHERE m.member = auth.uid()));
SELECT error_field, error_code, error_message, error_detail
  FROM shapesync.check_shape('notes', NULL, NULL, 'auth_user', '{}');
SELECT * FROM shapesync.get_or_create_shape('notes', NULL, NULL, '', NULL, 'auth_user', '{}');
DROP POLICY team ON notes;
-- a user-defined function of a column
CREATE FUNCTION auth.is_visible(n int) RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT n > 0 $$;
CREATE POLICY udf ON notes FOR SELECT USING (auth.is_visible(id));
SELECT error_field, error_code, error_message, error_detail
  FROM shapesync.check_shape('notes', NULL, NULL, 'auth_user', '{}');
DROP POLICY udf ON notes;
-- the owner is not subject to row-level security: no policy applies
SELECT canonical_where, policy_applied, shape_columns
  FROM shapesync.effective_where('notes', current_user, '{}', 'id = 1');

------------------------------------------------------------------------
-- policy and grant changes invalidate the table's shapes
------------------------------------------------------------------------
CREATE FUNCTION new_docs_shape() RETURNS text LANGUAGE sql AS $$
    SELECT handle FROM shapesync.get_or_create_shape('docs', NULL, NULL, '', NULL, 'auth_user',
           '{"sub": "00000000-0000-0000-0000-00000000000a", "tenant": "t1"}') $$;
CREATE FUNCTION docs_shapes() RETURNS TABLE (state text, reason text) LANGUAGE sql AS $$
    SELECT state, reason FROM shapesync.shapes WHERE table_name = 'docs'::regclass
     GROUP BY state, reason ORDER BY state, reason $$;
SELECT count(*) AS active_before FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
ALTER POLICY own ON docs USING (owner_id = auth.uid() AND title IS NOT NULL);
SELECT * FROM docs_shapes();
SELECT new_docs_shape() IS NOT NULL AS created;
CREATE POLICY pub2 ON docs FOR SELECT USING (title = 'x');
SELECT count(*) AS active FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
SELECT new_docs_shape() IS NOT NULL AS created;
DROP POLICY pub2 ON docs;
SELECT count(*) AS active FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
SELECT new_docs_shape() IS NOT NULL AS created;
GRANT SELECT (secret) ON docs TO auth_user;
SELECT count(*) AS active FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
SELECT new_docs_shape() IS NOT NULL AS created;
REVOKE SELECT (secret) ON docs FROM auth_user;
SELECT count(*) AS active FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
SELECT new_docs_shape() IS NOT NULL AS created;
-- a grant on another table, a grant of something else than SELECT, a
-- grant to a role no shape was served for: docs's shapes stay
GRANT SELECT ON members TO auth_stranger;
GRANT INSERT, UPDATE ON docs TO auth_user;
CREATE ROLE auth_writer;
GRANT SELECT ON docs TO auth_writer;
SELECT count(*) AS active FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
-- a function a policy calls directly (tenant: auth.jwt(); own: auth.uid()),
-- redefined or altered, invalidates; a new function, or one no policy of
-- the table calls (auth.sub()), does not
CREATE FUNCTION auth.unrelated() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
CREATE OR REPLACE FUNCTION auth.sub() RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT auth.jwt() ->> 'sub' $$;
SELECT count(*) AS active FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb $$;
SELECT count(*) AS active FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
SELECT new_docs_shape() IS NOT NULL AS created;
ALTER FUNCTION auth.uid() COST 50;
SELECT count(*) AS active FROM shapesync.shapes WHERE table_name = 'docs'::regclass AND state = 'active';
SELECT new_docs_shape() IS NOT NULL AS created;
ALTER TABLE docs DISABLE ROW LEVEL SECURITY;
SELECT * FROM docs_shapes();
SELECT op, error FROM shapesync.change_log WHERE table_name = 'docs'::regclass AND op = 'schema' ORDER BY seq;
-- without row-level security: no policy, the permitted columns
SELECT canonical_where, policy_applied, shape_columns
  FROM shapesync.effective_where('docs', 'auth_user', '{}', NULL);

------------------------------------------------------------------------
-- clean up
------------------------------------------------------------------------
DROP TABLE docs, posts, notes, members;
DROP FUNCTION visible(name, jsonb), rows_where(text), replay(int, int[], bigint), new_docs_shape(), docs_shapes();
DROP SCHEMA auth CASCADE;
SELECT shapesync.revoke_sidecar('auth_sidecar');
DROP OWNED BY auth_sidecar, auth_user, auth_stranger;
DROP OWNED BY auth_writer;
DROP ROLE auth_sidecar, auth_user, auth_stranger, auth_writer;
