-- the backend shape cache: lazy build, incremental adds, rebuild on removal,
-- TRUNCATE and DDL ('T'/'S' rows), the shapes view and report_shape()
\set SHOW_CONTEXT never
CREATE TABLE ct (id int PRIMARY KEY, owner text, n int);
SELECT shapesync.track('ct');
CREATE FUNCTION pg_temp.log(after bigint)
RETURNS TABLE (n bigint, op text, id text, ops text, error text) LANGUAGE sql AS $$
    SELECT c.seq - after, c.op, coalesce(c.new_row, c.old_row)->>'id',
           (SELECT string_agg(s.where_clause || ':' || CASE x % 4 WHEN 1 THEN 'insert' WHEN 2 THEN 'update'
                                                       WHEN 3 THEN 'delete' ELSE 'error' END, ' '
                              ORDER BY s.where_clause)
              FROM unnest(c.shape_ops) x JOIN shapesync.shapes s ON s.shape_id = x / 4),
           c.error
      FROM shapesync.change_log c WHERE c.seq > after AND c.table_name = 'ct'::regclass ORDER BY c.seq
$$;
CREATE FUNCTION pg_temp.cache(OUT filtered int, OUT whole int, OUT templates int, OUT filters int,
                              OUT full_builds bigint, OUT has_memory boolean)
LANGUAGE sql AS $$
    SELECT filtered_shapes, whole_table_shapes, templates, filters, full_builds, memory_bytes > 0
      FROM shapesync.cache_stats() WHERE relid = 'ct'::regclass
$$;

-- built lazily by the first write
SELECT count(*) AS caches FROM shapesync.cache_stats() WHERE relid = 'ct'::regclass;
SELECT handle AS h1 FROM shapesync.get_or_create_shape('ct', 'owner = ''a''', NULL) \gset
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO ct VALUES (1, 'a', 1);
SELECT * FROM pg_temp.cache();

-- a shape of a known template is added without a rebuild
SELECT handle AS h2 FROM shapesync.get_or_create_shape('ct', 'owner = ''b''', NULL) \gset
INSERT INTO ct VALUES (2, 'b', 2);
SELECT * FROM pg_temp.cache();
SELECT incremental_builds >= 1 AS incremental FROM shapesync.cache_stats() WHERE relid = 'ct'::regclass;
-- a new template too
SELECT handle AS h3 FROM shapesync.get_or_create_shape('ct', 'n > 1', '{id,n}') \gset
UPDATE ct SET n = 5 WHERE id = 1;
SELECT * FROM pg_temp.cache();
-- a shape registered in the writer's own transaction is seen by its next write
BEGIN;
SELECT created FROM shapesync.get_or_create_shape('ct', 'owner = ''c''', NULL);
INSERT INTO ct VALUES (3, 'c', 0);
COMMIT;
-- ... and forgotten if that transaction rolls back
BEGIN;
SELECT created FROM shapesync.get_or_create_shape('ct', 'owner = ''d''', NULL);
INSERT INTO ct VALUES (4, 'd', 0);
ROLLBACK;
INSERT INTO ct VALUES (4, 'd', 0);
SELECT * FROM pg_temp.log(:s0);
SELECT * FROM pg_temp.cache();

-- a shape leaving the active state is taken out of the cache (no rebuild)
SELECT shapesync.invalidate_shape(:'h2', 'gone');
SELECT last_value AS s0 FROM shapesync.change_seq \gset
UPDATE ct SET n = 6 WHERE id = 2;
UPDATE ct SET n = 7 WHERE id = 1;
SELECT * FROM pg_temp.log(:s0);
SELECT * FROM pg_temp.cache();

-- the shapes view and report_shape()
SELECT shapesync.report_shape(:'h1', 42, '0_0');
SELECT handle = :'h1' AS h1, table_name, where_clause, columns, options, state, reason,
       created_at IS NOT NULL AS created, invalidated_at IS NOT NULL AS invalidated,
       snapshot_rows, last_offset
  FROM shapesync.shapes WHERE table_name = 'ct'::regclass ORDER BY shape_id;

-- ALTER TABLE: the shapes become invalid, an 'S' row marks the point in the stream
SELECT last_value AS s0 FROM shapesync.change_seq \gset
ALTER TABLE ct ADD COLUMN extra text;
UPDATE ct SET n = 8 WHERE id = 1;           -- no shape left: nothing logged
SELECT * FROM pg_temp.log(:s0);
SELECT state, reason, count(*) FROM shapesync.shapes WHERE table_name = 'ct'::regclass
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT * FROM pg_temp.cache();
-- DDL that is not ALTER TABLE (CREATE INDEX) changes nothing
SELECT handle AS h4 FROM shapesync.get_or_create_shape('ct', 'owner = ''a''', NULL) \gset
CREATE INDEX ct_owner ON ct (owner);
SELECT last_value AS s0 FROM shapesync.change_seq \gset
UPDATE ct SET n = 9 WHERE id = 1;
SELECT * FROM pg_temp.log(:s0);

-- TRUNCATE: a 'T' row, the shapes become invalid
TRUNCATE ct;
INSERT INTO ct VALUES (1, 'a', 1);
SELECT * FROM pg_temp.log(:s0);
SELECT state, reason FROM shapesync.shapes WHERE handle = :'h4';

-- untrack and DROP TABLE log an 'S' row too
SELECT created FROM shapesync.get_or_create_shape('ct', NULL, NULL);
SELECT shapesync.untrack('ct');
SELECT shapesync.track('ct');
SELECT created FROM shapesync.get_or_create_shape('ct', NULL, NULL);
SELECT oid AS ct_oid FROM pg_class WHERE relname = 'ct' \gset
DROP TABLE ct;
SELECT seq - :s0 AS n, op, error FROM shapesync.changes WHERE seq > :s0 AND relid = :ct_oid ORDER BY seq;
SELECT state, reason, count(*) FROM shapesync.shapes WHERE table_name = :ct_oid::regclass
 GROUP BY 1, 2 ORDER BY 1, 2;
