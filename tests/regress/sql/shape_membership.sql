-- shape membership in the trigger: which shapes see which change, as what
\set SHOW_CONTEXT never
CREATE TABLE mt (id int PRIMARY KEY, owner text, n int, title text, note text);
SELECT shapesync.track('mt');

-- shape labels, and shape_ops shown as "label:op"
CREATE TABLE labels (label text PRIMARY KEY, shape_id int UNIQUE);
CREATE FUNCTION pg_temp.shape(label text, rel regclass, w text, cols text[] DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO labels SELECT label, g.shape_id FROM shapesync.get_or_create_shape(rel, w, cols) g
$$;
CREATE FUNCTION pg_temp.ops(a int4[]) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(coalesce(l.label, '?') || ':' ||
                      CASE x % 4 WHEN 1 THEN 'insert' WHEN 2 THEN 'update'
                                 WHEN 3 THEN 'delete' ELSE 'error' END, ' ' ORDER BY l.label)
      FROM unnest(a) x LEFT JOIN labels l ON l.shape_id = x / 4
$$;
CREATE FUNCTION pg_temp.log(after bigint, rel regclass)
RETURNS TABLE (n bigint, op text, id text, ops text) LANGUAGE sql AS $$
    -- n: the change's position among all changes logged after seq `after`
    SELECT c.n, c.op, coalesce(c.new_row, c.old_row)->>'id', pg_temp.ops(c.shape_ops)
      FROM (SELECT row_number() OVER (ORDER BY l.seq, l.ord) AS n, l.*
              FROM shapesync.change_log l WHERE l.seq > after) c
     WHERE c.table_name = rel ORDER BY c.n
$$;

-- a tracked table without shapes: the trigger writes nothing
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset
INSERT INTO mt VALUES (100, 'nobody', 0, 't', NULL);
UPDATE mt SET n = 1 WHERE id = 100;
DELETE FROM mt WHERE id = 100;
SELECT count(*) AS log_rows FROM shapesync.changes WHERE seq > :s0;

SELECT pg_temp.shape('u1', 'mt', 'owner = ''u1''');
SELECT pg_temp.shape('u2', 'mt', 'owner = ''u2''');
SELECT pg_temp.shape('u1_cols', 'mt', 'owner = ''u1''', '{id,owner,n}');
SELECT pg_temp.shape('not1', 'mt', 'n <> 1');
SELECT pg_temp.shape('big', 'mt', 'n > 10 AND owner IS NOT NULL');

-- the transition table: no->yes insert, yes->yes update, yes->no delete
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset
INSERT INTO mt VALUES (1, 'u1', 1, 'first', NULL);         -- u1, u1_cols in; not1: 1 <> 1 false
UPDATE mt SET n = 2 WHERE id = 1;                          -- not1 moves in
UPDATE mt SET title = 'renamed' WHERE id = 1;              -- u1_cols: no column of it changed
UPDATE mt SET n = NULL WHERE id = 1;                       -- NULL <> 1 is NULL: not1 moves out
UPDATE mt SET owner = 'u2' WHERE id = 1;                   -- from u1 to u2
UPDATE mt SET n = 11 WHERE id = 1;                         -- not1 and big move in
UPDATE mt SET owner = NULL WHERE id = 1;                   -- out of u2 and big
UPDATE mt SET note = 'x' WHERE id = 1;                     -- only not1 sees it
UPDATE mt SET note = 'x' WHERE id = 1;                     -- nothing changed: no shape sees it
DELETE FROM mt WHERE id = 1;                               -- not1: delete
INSERT INTO mt VALUES (2, 'u3', 1, 'other', NULL);         -- nobody: no log row
SELECT * FROM pg_temp.log(:s0, 'mt');

-- a whole-table shape: every change is logged, filtered shapes still listed
SELECT created FROM shapesync.get_or_create_shape('mt', NULL, NULL);
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset
UPDATE mt SET n = 3 WHERE id = 2;
INSERT INTO mt VALUES (3, 'u1', 1, NULL, NULL);
DELETE FROM mt;
SELECT * FROM pg_temp.log(:s0, 'mt');
SELECT shapesync.invalidate_shape(handle, 'test') FROM shapesync.shapes
 WHERE table_name = 'mt'::regclass AND where_clause IS NULL AND state = 'active';

-- many kinds of filters, evaluated in the writer's backend
CREATE TABLE kt (id int PRIMARY KEY, n int, n8 bigint, price numeric, title text,
                 doc jsonb, tags text[], r int4range, born date, at timestamptz, v varchar(10));
SELECT shapesync.track('kt');
SELECT pg_temp.shape(l, 'kt', w) FROM (VALUES
    ('between', 'n BETWEEN 1 AND 10'),
    ('in', 'n IN (1, 2, 3)'),
    ('int8_int4', 'n8 = 5'),
    ('numeric', 'price > 9.99'),
    ('like', 'title LIKE ''ab%'''),
    ('ilike', 'title ILIKE ''%CAT%'''),
    ('regex', 'title ~ ''^a.c$'''),
    ('jsonb_contains', 'doc @> ''{"a": 1}'''),
    ('jsonb_field', 'doc ->> ''k'' = ''v'''),
    ('jsonb_path', '(doc #>> ''{x,y}'')::int > 1'),
    ('any_tags', '''x'' = ANY (tags)'),
    ('overlap_tags', 'tags && ARRAY[''a'', ''b'']'),
    ('range', 'r @> 5'),
    ('in_range', 'int4range(1, 10) @> n'),
    ('fts', 'to_tsvector(''english'', title) @@ to_tsquery(''english'', ''cats'')'),
    ('cast_text', 'n::text = ''7'''),
    ('date', 'born >= ''2024-01-01'' AND born < ''2024-02-01'''),
    ('timestamptz', 'at >= ''2024-01-01 00:00:00+00'''),
    ('varchar', 'v = ''abc'''),
    ('coalesce', 'coalesce(title, ''none'') = ''none'''),
    ('case', 'CASE WHEN n > 100 THEN true ELSE false END'),
    ('distinct', 'title IS DISTINCT FROM ''abc'' AND n IS NULL'),
    ('lower', 'lower(title) = ''abc''')
) v(l, w);
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset
INSERT INTO kt (id, n) VALUES (1, 2);
INSERT INTO kt (id, n8) VALUES (2, 5);
INSERT INTO kt (id, price) VALUES (3, 10);
INSERT INTO kt (id, title) VALUES (4, 'abc');
INSERT INTO kt (id, title) VALUES (5, 'Black Cats');
INSERT INTO kt (id, doc) VALUES (6, '{"a": 1, "k": "v", "x": {"y": "2"}}');
INSERT INTO kt (id, tags) VALUES (7, '{x,b}');
INSERT INTO kt (id, r) VALUES (8, '[1,6)');
INSERT INTO kt (id, n) VALUES (9, 7);
INSERT INTO kt (id, born, at) VALUES (10, '2024-01-31', '2024-01-01 01:00:00+01');
INSERT INTO kt (id, v, n) VALUES (11, 'abc', 101);
SELECT * FROM pg_temp.log(:s0, 'kt');

-- per-user shapes (hash-indexed template): only the owner's shapes are candidates
CREATE TABLE ut (id int PRIMARY KEY, owner_id int, v text);
SELECT shapesync.track('ut');
SELECT pg_temp.shape('user' || i, 'ut', 'owner_id = ' || i) FROM generate_series(1, 200) i;
SELECT pg_temp.shape('user7_v', 'ut', 'owner_id = 7 AND v = ''x''');
SELECT pg_temp.shape('user7_int8', 'ut', 'owner_id = 7::bigint');
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset
INSERT INTO ut VALUES (1, 7, 'x'), (2, 8, 'y'), (3, 999, 'z'), (4, NULL, 'x');
UPDATE ut SET owner_id = 9 WHERE id = 1;
UPDATE ut SET v = 'x' WHERE id = 2;
SELECT * FROM pg_temp.log(:s0, 'ut');
SELECT relid, valid, whole_table_shapes, filtered_shapes, templates, filters
  FROM shapesync.cache_stats() WHERE relid = 'ut'::regclass;

-- savepoints: a rolled-back change leaves no log row, whatever its shapes
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset
BEGIN;
UPDATE ut SET owner_id = 1 WHERE id = 3;
SAVEPOINT a;
UPDATE ut SET owner_id = 2 WHERE id = 3;
ROLLBACK TO SAVEPOINT a;
UPDATE ut SET owner_id = 3 WHERE id = 3;
COMMIT;
SELECT * FROM pg_temp.log(:s0, 'ut');

DROP TABLE mt, kt, ut, labels;
