-- The old image of an UPDATE holds only the columns the update changed
-- (ShapesyncDeltaHeader); readers get the whole old row back from
-- change_entries().  Every update below runs twice, on two identical
-- tables: oi_part (partial old images, the default) and oi_full
-- (shapesync.full_old_images = on, the format written before partial images
-- existed).  What the change log decodes to must be the same for both.
CREATE TABLE oi_part (
    id    int,
    k2    text,
    a     int,
    b     text,
    n     int,
    big   text,
    pad   text DEFAULT repeat('p', 200),
    PRIMARY KEY (id, k2)
);
CREATE TABLE oi_full (LIKE oi_part INCLUDING ALL);
SELECT shapesync.track('oi_part'), shapesync.track('oi_full');
SELECT created FROM shapesync.get_or_create_shape('oi_part', NULL, NULL);
SELECT created FROM shapesync.get_or_create_shape('oi_full', NULL, NULL);
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset
SELECT shapesync.tick(true) AS t0 \gset

-- a value that is TOASTed out of line (and not compressible below 2 kB)
CREATE FUNCTION pg_temp.bigval(seed int) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT string_agg(md5((seed * 100000 + g)::text), '') FROM generate_series(1, 400) g $$;

CREATE PROCEDURE pg_temp.both(stmt text) LANGUAGE plpgsql AS $$
BEGIN
    SET shapesync.full_old_images = off;
    EXECUTE format(stmt, 'oi_part');
    COMMIT;
    SET shapesync.full_old_images = on;
    EXECUTE format(stmt, 'oi_full');
    COMMIT;
    RESET shapesync.full_old_images;
END $$;

CALL pg_temp.both($$INSERT INTO %I (id, k2, a, b, n, big) VALUES
    (1, 'x', 10, 'b1', NULL, NULL), (2, 'x', 20, NULL, 2, 'small'),
    (3, 'x', 30, 'b3', 3, pg_temp.bigval(3)), (4, 'x', 40, 'b4', 4, pg_temp.bigval(4))$$);
-- a non-key column (one change in the transaction: a classic record)
CALL pg_temp.both($$UPDATE %I SET a = a + 1 WHERE id = 1$$);
-- a key column, with another column
CALL pg_temp.both($$UPDATE %I SET k2 = 'y', b = 'b1y' WHERE id = 1$$);
-- NULL -> value, value -> NULL, and a NULL that stays NULL beside a change
CALL pg_temp.both($$UPDATE %I SET n = 1, b = NULL WHERE id = 1$$);
CALL pg_temp.both($$UPDATE %I SET b = 'b2' WHERE id = 2$$);
-- an unchanged TOASTed value beside a change; a changed TOASTed value
CALL pg_temp.both($$UPDATE %I SET a = -3 WHERE id = 3$$);
CALL pg_temp.both($$UPDATE %I SET big = pg_temp.bigval(33) WHERE id = 3$$);
-- a TOASTed value replaced by NULL, and NULL by a TOASTed value
CALL pg_temp.both($$UPDATE %I SET big = CASE id WHEN 4 THEN NULL ELSE pg_temp.bigval(1) END WHERE id IN (1, 4)$$);
-- nothing changes at all
CALL pg_temp.both($$UPDATE %I SET a = a WHERE id = 2$$);
-- many changes in one transaction (a packed B record), keys among them
CALL pg_temp.both($$UPDATE %I SET a = a * 2, k2 = CASE WHEN id = 2 THEN 'z' ELSE k2 END$$);
CALL pg_temp.both($$DELETE FROM %I WHERE id = 2$$);

SELECT shapesync.tick(true) AS t1 \gset

-- the changes of each table in order, as change_log decodes them (relation
-- name taken out so that the two tables compare)
CREATE TEMP VIEW oi_log AS
    SELECT c.table_name::text AS t,
           row_number() OVER (PARTITION BY c.table_name ORDER BY c.seq, c.ord) AS n,
           c.op, c.new_row::jsonb AS new_row, c.old_row::jsonb AS old_row
      FROM shapesync.change_log c
     WHERE c.seq > :s0 AND c.table_name::text IN ('oi_part', 'oi_full');

-- the old rows as the partial images give them back (the big values by md5)
SELECT n, op, old_row - 'big' - 'pad' AS old_row, md5(old_row->>'big') AS old_big_md5,
       length(old_row->>'pad') AS old_pad
  FROM oi_log WHERE t = 'oi_part' AND op IN ('update', 'delete') ORDER BY n;
-- ... and they are exactly those of the whole images, new rows as well
SELECT count(*) AS changes,
       count(*) FILTER (WHERE p.op = f.op AND p.new_row IS NOT DISTINCT FROM f.new_row
                          AND p.old_row IS NOT DISTINCT FROM f.old_row) AS same
  FROM oi_log p JOIN oi_log f ON f.t = 'oi_full' AND f.n = p.n
 WHERE p.t = 'oi_part';
-- each old row is the row as the previous change of that key left it
SELECT count(*) AS updates,
       count(*) FILTER (WHERE u.old_row = (SELECT q.new_row FROM oi_log q
                                            WHERE q.t = u.t AND q.n < u.n
                                              AND q.new_row->>'id' = u.old_row->>'id'
                                              AND q.new_row->>'k2' = u.old_row->>'k2'
                                            ORDER BY q.n DESC LIMIT 1)) AS follow_on
  FROM oi_log u WHERE u.op = 'update';
-- batch() (what the sidecar reads) gives the same old and new values for both
CREATE TEMP TABLE oi_batch AS
    SELECT b.relid::regclass::text AS t, row_number() OVER (PARTITION BY b.relid ORDER BY g, b.seq) AS n, b.*
      FROM generate_series(:t0 + 1, :t1) g, LATERAL shapesync.batch(g) b
     WHERE b.relid IN ('oi_part'::regclass, 'oi_full'::regclass);
SELECT count(*) AS updates,
       count(*) FILTER (WHERE p.old_values IS NOT DISTINCT FROM f.old_values
                          AND p.new_values IS NOT DISTINCT FROM f.new_values) AS same
  FROM oi_batch p JOIN oi_batch f ON f.t = 'oi_full' AND f.n = p.n
 WHERE p.t = 'oi_part' AND p.op = 'U';

-- what is stored: a classic U record of oi_part holds a partial image
-- (magic "SSD1", no type), oi_full's a composite datum (its row type), and the
-- partial ones are much smaller
SELECT c.relid::regclass, substr(c.old_row, 1, 8) = '\x5353443100000000'::bytea AS partial, octet_length(c.old_row) < 100 AS small
  FROM shapesync.changes c WHERE c.seq > :s0 AND c.op = 'U' ORDER BY c.seq LIMIT 2;
SELECT sum(octet_length(c.old_row)) FILTER (WHERE c.relid = 'oi_part'::regclass) AS part_bytes,
       sum(octet_length(c.old_row)) FILTER (WHERE c.relid = 'oi_full'::regclass) AS full_bytes
  FROM shapesync.changes c WHERE c.seq > :s0 AND c.op = 'U';

-- a partial image given straight to the decoding functions: a clear error
SELECT shapesync.row_json(c.relid, c.layout, c.old_row)
  FROM shapesync.changes c WHERE c.seq > :s0 AND c.op = 'U' AND c.relid = 'oi_part'::regclass LIMIT 1;
SELECT shapesync.row_values_or_null(c.relid, c.layout, c.old_row)
  FROM shapesync.changes c WHERE c.seq > :s0 AND c.op = 'U' AND c.relid = 'oi_part'::regclass LIMIT 1;
-- damaged partial images
SELECT c.relid AS rid, c.layout AS lay, c.new_row AS nr, c.old_row AS orow
  FROM shapesync.changes c WHERE c.seq > :s0 AND c.op = 'U' AND c.relid = 'oi_part'::regclass
 ORDER BY c.seq LIMIT 1 \gset
SELECT old_row IS NULL FROM shapesync.change_entries('U', :rid, :lay, :'nr', substr(:'orow'::bytea, 1, 13), NULL, NULL, NULL);
SELECT old_row IS NULL FROM shapesync.change_entries('U', :rid, :lay, :'nr', substr(:'orow'::bytea, 1, 28), NULL, NULL, NULL);
SELECT old_row IS NULL FROM shapesync.change_entries('U', :rid, :lay, :'nr',
       overlay(:'orow'::bytea PLACING '\x0100'::bytea FROM 9), NULL, NULL, NULL);
SELECT old_row IS NULL FROM shapesync.change_entries('U', :rid, :lay, '\x00'::bytea, :'orow', NULL, NULL, NULL);
-- a table gone: the partial image passes through (and decodes to NULL, as any image would)
SELECT old_row = :'orow'::bytea AS untouched
  FROM shapesync.change_entries('U', 0, :lay, :'nr', :'orow', NULL, NULL, NULL);

-- narrow rows keep the whole image: it is no bigger
CREATE TABLE oi_narrow (id int PRIMARY KEY, v text);
SELECT shapesync.track('oi_narrow');
SELECT created FROM shapesync.get_or_create_shape('oi_narrow', NULL, NULL);
INSERT INTO oi_narrow VALUES (1, 'one');
UPDATE oi_narrow SET v = 'uno';
SELECT substr(c.old_row, 1, 8) = '\x5353443100000000'::bytea AS partial FROM shapesync.changes c
 WHERE c.seq > :s0 AND c.op = 'U' AND c.relid = 'oi_narrow'::regclass;
SELECT old_row FROM shapesync.change_log WHERE seq > :s0 AND table_name = 'oi_narrow'::regclass AND op = 'update';

-- layout changes: a column added with a default (rows not rewritten), a
-- column dropped; then updates of rows written before
SELECT coalesce(max(seq), 0) AS s1 FROM shapesync.changes \gset
ALTER TABLE oi_part ADD COLUMN added int DEFAULT 7;
ALTER TABLE oi_full ADD COLUMN added int DEFAULT 7;
-- (DDL invalidates the tables' shapes: new ones log the changes after it)
SELECT created FROM shapesync.get_or_create_shape('oi_part', NULL, NULL);
SELECT created FROM shapesync.get_or_create_shape('oi_full', NULL, NULL);
CALL pg_temp.both($$UPDATE %I SET a = 1000 WHERE id = 3$$);
ALTER TABLE oi_part DROP COLUMN n;
ALTER TABLE oi_full DROP COLUMN n;
SELECT created FROM shapesync.get_or_create_shape('oi_part', NULL, NULL);
SELECT created FROM shapesync.get_or_create_shape('oi_full', NULL, NULL);
CALL pg_temp.both($$UPDATE %I SET b = 'after drop', added = 8 WHERE id = 4$$);
CALL pg_temp.both($$UPDATE %I SET b = 'k', k2 = 'w' WHERE id = 3$$);
SELECT c.table_name::text AS t, c.op, c.old_row::jsonb - 'big' - 'pad' AS old_row,
       md5(c.old_row->>'big') AS old_big_md5
  FROM shapesync.change_log c
 WHERE c.seq > :s1 AND c.table_name::text IN ('oi_part', 'oi_full') AND c.op = 'update'
 ORDER BY c.seq;
-- records written before the layout changes: NULL images, as always, no error
SELECT count(*) AS updates_before, count(old_row) AS decodable
  FROM shapesync.change_log WHERE seq > :s0 AND seq <= :s1 AND table_name::text = 'oi_part' AND op = 'update';

-- a savepoint rolled back drops its partial images with its changes
SELECT coalesce(max(seq), 0) AS s2 FROM shapesync.changes \gset
BEGIN;
UPDATE oi_part SET a = 1 WHERE id = 3;
SAVEPOINT sp;
UPDATE oi_part SET a = 2 WHERE id = 3;
ROLLBACK TO sp;
UPDATE oi_part SET b = 'after rollback' WHERE id = 3;
COMMIT;
SELECT op, old_row->>'a' AS old_a, new_row->>'a' AS new_a, old_row->>'b' AS old_b, new_row->>'b' AS new_b
  FROM shapesync.change_log WHERE seq > :s2 ORDER BY seq, ord;

DROP TABLE oi_part, oi_full, oi_narrow;
