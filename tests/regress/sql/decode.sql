-- row image decoding: argument checks and privileges
CREATE TABLE dec (id int PRIMARY KEY, secret text);
SELECT shapesync.track('dec');
-- a whole-table shape: the trigger logs every change of the table
SELECT created FROM shapesync.get_or_create_shape('dec', NULL, NULL);
INSERT INTO dec VALUES (1, 'hidden');
SELECT max(seq) AS s FROM shapesync.changes \gset

-- STRICT
SELECT shapesync.row_values(NULL, 0, '\x00');
-- wrong layout
\set VERBOSITY terse
SELECT shapesync.row_values(relid, layout + 1, new_row) FROM shapesync.changes WHERE seq = :s;
\set VERBOSITY default
-- an image of another table
CREATE TABLE dec2 (id int PRIMARY KEY, other text);
SELECT shapesync.row_values('dec2'::regclass, layout, new_row) FROM shapesync.changes WHERE seq = :s;
-- garbage
SELECT shapesync.row_values(relid, layout, '\x0102') FROM shapesync.changes WHERE seq = :s;
SELECT shapesync.row_values(relid, layout, substr(new_row, 1, 20)) FROM shapesync.changes WHERE seq = :s;
SELECT shapesync.row_values(relid, layout, substr(new_row, 1, length(new_row) - 1))
  FROM shapesync.changes WHERE seq = :s;
-- the whole image decodes
SELECT shapesync.row_values(relid, layout, new_row) FROM shapesync.changes WHERE seq = :s;
-- not a table
SELECT shapesync.row_values('pg_class_oid_index'::regclass, 0, '\x00');
-- no such relation
SELECT shapesync.row_values(1, 0, '\x00');  -- OID 1 is never a relation
SELECT shapesync.row_values_or_null(1, 0, '\x00') IS NULL AS is_null;

-- the decoding functions and the log are not public
CREATE ROLE shapesync_reader;
SET ROLE shapesync_reader;
SELECT count(*) FROM shapesync.changes;
SELECT shapesync.row_values('dec'::regclass, 0, '\x00');
SELECT shapesync.batch(1);
SELECT shapesync.tick();
-- monitoring is public
SELECT ticker_mode IN ('worker', 'external') AS ok FROM shapesync.sync_status;
SELECT count(*) FROM shapesync.tracked_tables WHERE relid = 'dec'::regclass;
RESET ROLE;
-- a reader allowed to decode still needs SELECT on the table
GRANT SELECT ON shapesync.changes TO shapesync_reader;
GRANT EXECUTE ON FUNCTION shapesync.row_values(oid, int4, bytea) TO shapesync_reader;
SET ROLE shapesync_reader;
SELECT shapesync.row_values(relid, layout, new_row) FROM shapesync.changes WHERE seq = :s;
RESET ROLE;
GRANT SELECT ON dec TO shapesync_reader;
SET ROLE shapesync_reader;
SELECT shapesync.row_values(relid, layout, new_row) FROM shapesync.changes WHERE seq = :s;
RESET ROLE;
REVOKE ALL ON shapesync.changes FROM shapesync_reader;
REVOKE ALL ON FUNCTION shapesync.row_values(oid, int4, bytea) FROM shapesync_reader;
DROP TABLE dec, dec2;
DROP ROLE shapesync_reader;
