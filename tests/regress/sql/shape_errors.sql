-- a shape filter that raises never fails the write: an 'X' row reports it
\set SHOW_CONTEXT never
CREATE TABLE et (id int PRIMARY KEY, x int, payload text);
SELECT shapesync.track('et');
CREATE TABLE labels (label text PRIMARY KEY, shape_id int UNIQUE);
INSERT INTO labels SELECT 'div', shape_id FROM shapesync.get_or_create_shape('et', '10 / x > 1', NULL);
INSERT INTO labels SELECT 'cast', shape_id FROM shapesync.get_or_create_shape('et', 'payload::int > 0', NULL);
INSERT INTO labels SELECT 'plain', shape_id FROM shapesync.get_or_create_shape('et', 'x >= 0', NULL);
INSERT INTO labels SELECT 'guarded_ok', shape_id FROM shapesync.get_or_create_shape('et', 'payload LIKE ''a%''', NULL);
CREATE FUNCTION pg_temp.ops(a int4[]) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(coalesce(l.label, '?') || ':' ||
                      CASE x % 4 WHEN 1 THEN 'insert' WHEN 2 THEN 'update'
                                 WHEN 3 THEN 'delete' ELSE 'error' END, ' ' ORDER BY l.label)
      FROM unnest(a) x LEFT JOIN labels l ON l.shape_id = x / 4
$$;
CREATE FUNCTION pg_temp.log(after bigint)
RETURNS TABLE (n bigint, op text, id text, ops text, error text) LANGUAGE sql AS $$
    -- n: the change's position among all changes logged after seq `after`
    SELECT c.n, c.op, coalesce(c.new_row, c.old_row)->>'id', pg_temp.ops(c.shape_ops), c.error
      FROM (SELECT row_number() OVER (ORDER BY l.seq, l.ord) AS n, l.*
              FROM shapesync.change_log l WHERE l.seq > after) c
     WHERE c.table_name = 'et'::regclass ORDER BY c.n
$$;

-- which filters run under the guard (not leakproof) is decided per template
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO et VALUES (1, 2, '5');       -- fine for everyone
INSERT INTO et VALUES (2, 0, 'abc');     -- 10/0 and 'abc'::int raise; the insert commits
SELECT * FROM et ORDER BY id;
SELECT * FROM pg_temp.log(:s0);

-- once its X row committed, the backend skips the failing shape
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO et VALUES (3, 0, 'xyz');
UPDATE et SET x = 5 WHERE id = 1;
SELECT * FROM pg_temp.log(:s0);

-- the sidecar invalidates the shapes named by X rows: they are gone from the cache
SELECT shapesync.invalidate_shape(s.handle, 'filter error')
  FROM shapesync.shapes s JOIN labels l USING (shape_id) WHERE l.label IN ('div', 'cast');
SELECT valid, filtered_shapes FROM shapesync.cache_stats() WHERE relid = 'et'::regclass;
UPDATE et SET payload = 'z' WHERE id = 3;
SELECT valid, filtered_shapes FROM shapesync.cache_stats() WHERE relid = 'et'::regclass;

-- a new failing shape: its X row in a transaction that rolls back is forgotten,
-- so the next transaction reports the error again
INSERT INTO labels SELECT 'div2', shape_id FROM shapesync.get_or_create_shape('et', '100 / x > 1', NULL);
SELECT last_value AS s0 FROM shapesync.change_seq \gset
BEGIN;
UPDATE et SET payload = 'a1' WHERE id = 2;    -- x = 0: div2 raises, X row
UPDATE et SET payload = 'a2' WHERE id = 2;    -- X row live in this transaction: skipped
ROLLBACK;
BEGIN;
UPDATE et SET payload = 'a3' WHERE id = 2;
SAVEPOINT s;
UPDATE et SET payload = 'a4' WHERE id = 3;    -- skipped: the X row of this transaction is live
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT * FROM pg_temp.log(:s0);

-- an X row rolled back to a savepoint is reported again in the same transaction
SELECT shapesync.invalidate_shape(s.handle, 'filter error')
  FROM shapesync.shapes s JOIN labels l USING (shape_id) WHERE l.label = 'div2';
INSERT INTO labels SELECT 'div3', shape_id FROM shapesync.get_or_create_shape('et', '1000 / x > 1', NULL);
SELECT last_value AS s0 FROM shapesync.change_seq \gset
BEGIN;
SAVEPOINT s;
UPDATE et SET payload = 'b1' WHERE id = 2;
ROLLBACK TO SAVEPOINT s;
UPDATE et SET payload = 'b2' WHERE id = 3;
COMMIT;
SELECT * FROM pg_temp.log(:s0);

-- errors inside plpgsql exception blocks and the writer's own errors are unaffected
DO $$
BEGIN
    BEGIN
        UPDATE et SET payload = 'c1' WHERE id = 1;
        PERFORM 1 / 0;
    EXCEPTION WHEN division_by_zero THEN
        RAISE NOTICE 'writer''s own error caught';
    END;
END
$$;
INSERT INTO et VALUES (1, 1, 'dup');

DROP TABLE et, labels;

-- a registry the writer's backend cannot load (a constant that does not read
-- back) does not fail the write either: an 'S' row makes the sidecar
-- invalidate the table's shapes
CREATE TABLE lt (id int PRIMARY KEY, n int);
SELECT shapesync.track('lt');
SELECT created FROM shapesync.get_or_create_shape('lt', 'n = 1', NULL);
INSERT INTO lt VALUES (1, 1);
UPDATE shapesync.shape_registry SET consts = '{not-a-number}' WHERE relid = 'lt'::regclass;
\c
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO lt VALUES (2, 1);
UPDATE lt SET n = 2 WHERE id = 1;
SELECT seq - :s0 AS n, op, error FROM shapesync.changes WHERE seq > :s0 ORDER BY seq;
SELECT count(*) AS rows FROM lt;
DROP TABLE lt;
