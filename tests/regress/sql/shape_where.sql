-- shape filters: parsed and validated by PostgreSQL, canonical forms, templates
\set SHOW_CONTEXT never
CREATE TYPE wmood AS ENUM ('sad', 'happy');
CREATE TABLE wt (id int PRIMARY KEY, owner text, n int, n8 bigint, title text, payload text,
                 doc jsonb, tags text[], born date, at timestamptz, mood wmood);
SELECT shapesync.track('wt');
CREATE TABLE other (x int PRIMARY KEY);
CREATE FUNCTION public.wt_userfn(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0';

-- errcode and message of a registration, or its canonical form
CREATE FUNCTION pg_temp.try(w text, p text[] DEFAULT NULL) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text;
    msg text;
    cw text;
BEGIN
    SELECT canonical_where INTO cw FROM shapesync.get_or_create_shape('wt', w, NULL, '', p);
    RETURN 'ok: ' || coalesce(cw, '<whole table>');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN st || ': ' || msg;
END
$$;

-- syntax errors carry the position inside the filter
SELECT * FROM shapesync.get_or_create_shape('wt', 'owner = ''u1'' AND', NULL);
SELECT * FROM shapesync.get_or_create_shape('wt', 'owner = = ''u1''', NULL);
SELECT * FROM shapesync.get_or_create_shape('wt', 'n > 1 AND titel = ''x''', NULL);
SELECT * FROM shapesync.get_or_create_shape('wt', 'owner = ''unterminated', NULL);
SELECT * FROM shapesync.get_or_create_shape('wt', E'n > 1\n  AND n <', NULL);
SELECT * FROM shapesync.get_or_create_shape('wt', 'n = ''abc''', NULL);
-- validation errors too
SELECT * FROM shapesync.get_or_create_shape('wt', 'n > 1 AND n < random()', NULL);
SELECT * FROM shapesync.get_or_create_shape('wt', 'n', NULL);

-- every kind of bad filter
SELECT w, pg_temp.try(w) AS result FROM (VALUES
    ('n'),
    ('n + 1'),
    ('owner'),
    ('n IN (SELECT 1)'),
    ('EXISTS (SELECT 1 FROM other)'),
    ('n = (SELECT max(x) FROM other)'),
    ('other.x = 1'),
    ('wt.n = 1'),
    ('count(*) > 1'),
    ('row_number() OVER () = 1'),
    ('generate_series(1, n) = 1'),
    ('n > random()'),
    ('at < now()'),
    ('born < current_date'),
    ('owner = current_user'),
    ('to_tsvector(title) @@ ''cat'''),
    ('title::date > ''2024-01-01'''),
    ('wt_userfn(n)'),
    ('public.wt_userfn(n)'),
    ('ctid = ''(0,1)'''),
    ('xmin = ''1'''),
    ('wt IS NOT NULL'),
    ('mood = ''happy'''),
    ('owner = ''u1'' COLLATE "C"'),
    ('nextval(''shapesync.change_seq'') > 0'),
    ('n::money > ''1.00''')
) v(w);

-- SQL injection attempts: one expression, nothing else
SELECT w, pg_temp.try(w) AS result FROM (VALUES
    ('1; drop table other'),
    ('true; DELETE FROM other'),
    ('''x''; DELETE FROM other; --'),
    ('true -- ) or 1=1'),
    ('true /* ) or 1=1'),
    ('true) OR (1=1'),
    ('true ORDER BY 1'),
    ('true GROUP BY id'),
    ('true LIMIT 1'),
    ('true FOR UPDATE'),
    ('true UNION SELECT'),
    ('true UNION SELECT FROM other'),
    ('true WINDOW w AS ()'),
    (''''' = '''' OR 1=1'),
    ('owner = ''u1'''' OR ''''1''''=''''1''')
) v(w);
SELECT count(*) AS other_still_there FROM other;

-- params: typed from context, bound with the type's input function
SELECT pg_temp.try('owner = $1', '{u1}');
SELECT pg_temp.try('n = $1', '{42}');
SELECT pg_temp.try('n = $1', '{abc}');
SELECT pg_temp.try('n = $1', NULL);
SELECT pg_temp.try('n = $2', '{1}');
SELECT pg_temp.try('n = $1 OR owner = $2', '{1,"x''; drop table other; --"}');
SELECT pg_temp.try('$1', '{true}');
SELECT pg_temp.try('$1 IS NULL', '{x}');
SELECT pg_temp.try('n = $1', '{NULL}');
SELECT pg_temp.try('born = $1', '{2024-02-29}');
SELECT pg_temp.try('tags @> $1', '{"{a,b}"}');

-- whitespace, keyword case, quoting and params vs literals: one canonical form, one handle
SELECT count(DISTINCT handle) AS handles, min(canonical_where) AS canonical
  FROM (SELECT (shapesync.get_or_create_shape('wt', w, NULL, '', p)).*
          FROM (VALUES ('owner = ''u1''', NULL::text[]),
                       ('OWNER=''u1''', NULL),
                       (E'  owner\n  =  ''u1''  ', NULL),
                       ('"owner" = ''u1''::text', NULL),
                       ('(owner = ''u1'')', NULL),
                       ('owner = $1', '{u1}'),
                       ('owner = ($1)', '{u1}')) v(w, p)) s;
-- constant folding: the same shape
SELECT a.handle = b.handle AS same_handle, a.canonical_where
  FROM shapesync.get_or_create_shape('wt', 'n = 2 + 3', NULL) a,
       shapesync.get_or_create_shape('wt', 'n = 5', NULL) b;
-- different constants: different shapes, one template
SELECT count(DISTINCT r.handle) AS shapes, count(DISTINCT r.template_id) AS templates,
       min(t.template_sql) AS template
  FROM shapesync.shape_registry r JOIN shapesync.shape_templates t USING (template_id)
 WHERE r.relid = 'wt'::regclass
   AND r.canonical_where IN ('(owner = ''u1''::text)', '(owner = ''u2''::text)');
-- the other operand order is another shape
SELECT canonical_where FROM shapesync.get_or_create_shape('wt', '''u1'' = owner', NULL);
-- columns and options are part of the identity
SELECT count(DISTINCT handle) AS handles FROM (
    SELECT handle FROM shapesync.get_or_create_shape('wt', 'owner = ''u1''', NULL)
    UNION ALL SELECT handle FROM shapesync.get_or_create_shape('wt', 'owner = ''u1''', '{id,owner}')
    UNION ALL SELECT handle FROM shapesync.get_or_create_shape('wt', 'owner = ''u1''', NULL, 'replica=full')) s;
-- blank filters are whole-table shapes
SELECT count(DISTINCT handle) AS handles, bool_and(canonical_where IS NULL) AS whole_table
  FROM (SELECT (shapesync.get_or_create_shape('wt', w, NULL)).* FROM (VALUES (NULL), (''), (E' \n\t')) v(w)) s;

-- canonical forms and templates of many kinds of filters
CREATE TEMP TABLE kinds AS
SELECT v.ord, g.handle, g.canonical_where
  FROM unnest(ARRAY[
    'n BETWEEN 1 AND 10',
    'n IN (1, 2, 3)',
    'n8 = 5',
    'n8 = n',
    'title LIKE ''ab%''',
    'title ILIKE ''%CAT%''',
    'title ~ ''^a''',
    'doc @> ''{"a": 1}''',
    'doc ->> ''k'' = ''v''',
    '''x'' = ANY (tags)',
    'tags && ARRAY[''a'', ''b'']',
    'int4range(1, 10) @> n',
    'to_tsvector(''english'', title) @@ to_tsquery(''english'', ''cat'')',
    'payload::int > 10',
    'n::text = ''5''',
    'born >= ''2024-01-01'' AND born < date ''2024-02-01''',
    'at >= ''2024-01-01 00:00:00+02''',
    'coalesce(owner, ''nobody'') = ''nobody''',
    'CASE WHEN n > 0 THEN owner ELSE title END = ''x''',
    'owner IS DISTINCT FROM ''u1'' AND n IS NOT NULL',
    'NOT (n <> 1) OR greatest(n, 0) = 3',
    'lower(owner) = ''u1'''
  ]) WITH ORDINALITY v(w, ord)
  CROSS JOIN LATERAL shapesync.get_or_create_shape('wt', v.w, NULL) g;
SELECT k.canonical_where, t.template_sql, r.consts
  FROM kinds k JOIN shapesync.shape_registry r USING (handle)
  JOIN shapesync.shape_templates t USING (template_id)
 ORDER BY k.ord;

-- not tracked, NULL table
CREATE TABLE wt_untracked (id int PRIMARY KEY);
SELECT * FROM shapesync.get_or_create_shape('wt_untracked', 'id = 1', NULL);
SELECT * FROM shapesync.get_or_create_shape(NULL, 'id = 1', NULL);
-- parse_where on its own (what get_or_create_shape stores)
SELECT canonical_where, template_sql, consts, length(template) > 0 AS has_template
  FROM shapesync.parse_where('wt', 'owner = $1 AND n > 3', '{u9}');

DROP TABLE kinds;
DROP TABLE wt, other, wt_untracked;
DROP FUNCTION public.wt_userfn(int);
DROP TYPE wmood;
