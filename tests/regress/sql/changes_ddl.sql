-- dropped and added columns: images written before a layout change are
-- refused by row_values/row_json and show as NULL in change_log and batch()
CREATE TABLE evolving (id int PRIMARY KEY, a int, b text, c int);
SELECT shapesync.track('evolving');
-- a whole-table shape: the trigger logs every change of the table
SELECT created FROM shapesync.get_or_create_shape('evolving', NULL, NULL);
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset
SELECT coalesce(max(tick_id), 0) AS t0 FROM shapesync.ticks \gset
INSERT INTO evolving VALUES (1, 10, 'one', 100);
-- DDL invalidates the table's shapes (and logs an S row): register again
ALTER TABLE evolving DROP COLUMN b;
SELECT created FROM shapesync.get_or_create_shape('evolving', NULL, NULL);
INSERT INTO evolving VALUES (2, 20, 200);
ALTER TABLE evolving ADD COLUMN d text DEFAULT 'dflt';
SELECT created FROM shapesync.get_or_create_shape('evolving', NULL, NULL);
INSERT INTO evolving VALUES (3, 30, 300, 'three');
UPDATE evolving SET a = 11 WHERE id = 1;

SELECT seq - :s0 AS n, op, new_row, old_row, error
  FROM shapesync.change_log WHERE seq > :s0 ORDER BY seq;

-- dropped columns are NULL in row_values, absent from row_json
SELECT shapesync.row_values(relid, layout, new_row) AS vals,
       shapesync.row_json(relid, layout, new_row) AS js
  FROM shapesync.changes WHERE seq = :s0 + 5;

-- an image written before the change is refused
\set VERBOSITY terse
SELECT shapesync.row_values(relid, layout, new_row) FROM shapesync.changes WHERE seq = :s0 + 1;
SELECT shapesync.row_json(relid, layout, new_row) FROM shapesync.changes WHERE seq = :s0 + 3;
\set VERBOSITY default
SELECT shapesync.row_values_or_null(relid, layout, new_row) IS NULL AS is_null
  FROM shapesync.changes WHERE seq = :s0 + 1;

-- batch(): undecodable images come back NULL, op unchanged
SELECT shapesync.tick(true) AS t1 \gset
SELECT b.op, b.new_values, b.old_values, b.error
  FROM shapesync.ticks t CROSS JOIN LATERAL shapesync.batch(t.tick_id) WITH ORDINALITY b
 WHERE t.tick_id > :t0 AND t.tick_id <= :t1 AND b.relid = 'evolving'::regclass
 ORDER BY t.tick_id, b.ordinality;

-- a dropped table: change_log shows NULL images
DROP TABLE evolving;
SET my.s0 = :s0;
SELECT count(*) AS changes, count(new_row) AS decoded
  FROM shapesync.change_log WHERE seq > :s0;
DO $$
BEGIN
    PERFORM shapesync.row_values(relid, layout, new_row) FROM shapesync.changes
     WHERE seq = current_setting('my.s0')::bigint + 5;
EXCEPTION WHEN undefined_table THEN
    RAISE NOTICE 'row_values of a dropped table: undefined_table';
END
$$;
RESET my.s0;

-- DDL on a tracked table invalidates its shapes; DROP TABLE unregisters it
CREATE TABLE ddl_t (id int PRIMARY KEY, a int);
SELECT shapesync.track('ddl_t');
SELECT handle AS h FROM shapesync.get_or_create_shape('ddl_t', NULL, NULL) \gset
CREATE INDEX ddl_t_a ON ddl_t (a);
SELECT state FROM shapesync.shapes WHERE handle = :'h';
ALTER TABLE ddl_t ADD COLUMN b text;
SELECT state, reason FROM shapesync.shapes WHERE handle = :'h';
SELECT handle AS h2 FROM shapesync.get_or_create_shape('ddl_t', NULL, NULL) \gset
SELECT oid AS ddl_oid FROM pg_class WHERE relname = 'ddl_t' \gset
DROP TABLE ddl_t;
SELECT state, reason FROM shapesync.shapes WHERE handle = :'h2';
SELECT count(*) FROM shapesync.tracked WHERE relid = :ddl_oid;
-- DDL on untracked tables is not affected
CREATE TABLE ddl_u (id int);
ALTER TABLE ddl_u ADD COLUMN b int;
DROP TABLE ddl_u;
