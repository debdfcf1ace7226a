-- One change-log record per transaction (issue 15): a transaction's changes
-- are buffered in the backend and written as one record at pre-commit
-- (op B packs several), savepoint rollbacks discard their part, and big
-- transactions are written in parts (shapesync.tx_buffer_size).  batch()
-- and the change_log view still show one row per change, in the order the
-- changes were made.

-- batch rows of the ticks after..upto: transaction number, op, values, and
-- whether the version is a subtransaction's xid
CREATE FUNCTION pg_temp.batches(after bigint, upto bigint)
RETURNS TABLE (tx bigint, tbl regclass, op "char", new_values text[], old_values text[], sub_version boolean)
LANGUAGE sql AS $$
    SELECT dense_rank() OVER (ORDER BY t.tick_id, b.tx_max_seq), b.relid::regclass, b.op,
           b.new_values, b.old_values, b.version <> b.xid
      FROM shapesync.ticks t CROSS JOIN LATERAL shapesync.batch(t.tick_id) WITH ORDINALITY b
     WHERE t.tick_id > after AND t.tick_id <= upto
     ORDER BY t.tick_id, b.ordinality
$$;
-- the records of the log written after seq s0: op, and for B the number of changes
CREATE FUNCTION pg_temp.records(s0 bigint)
RETURNS TABLE (op "char", changes int)
LANGUAGE sql AS $$
    SELECT c.op, CASE WHEN c.op = 'B' THEN c.layout END
      FROM shapesync.changes c WHERE c.seq > s0 ORDER BY c.seq
$$;

CREATE TABLE txl (id int PRIMARY KEY, v text);
CREATE TABLE txl2 (id int PRIMARY KEY, v text);
SELECT shapesync.track('txl'), shapesync.track('txl2');
SELECT created FROM shapesync.get_or_create_shape('txl', NULL, NULL);
SELECT created FROM shapesync.get_or_create_shape('txl2', NULL, NULL);

-- a single change keeps the classic row; several become one B record
SELECT last_value AS s0 FROM shapesync.change_seq \gset
SELECT shapesync.tick(true) AS m0 \gset
INSERT INTO txl VALUES (1, 'one');
INSERT INTO txl VALUES (2, 'two'), (3, 'three'), (4, 'four');
BEGIN;
UPDATE txl SET v = 'ONE' WHERE id = 1;
INSERT INTO txl2 VALUES (1, 'other table');
DELETE FROM txl WHERE id = 2;
UPDATE txl SET v = 'one again' WHERE id = 1;
COMMIT;
SELECT shapesync.tick(true) AS m1 \gset
SELECT * FROM pg_temp.records(:s0);
SELECT * FROM pg_temp.batches(:m0, :m1);
-- the view shows one line per change, in order
SELECT table_name, op, new_row, old_row FROM shapesync.change_log WHERE seq > :s0 ORDER BY seq, ord;

-- savepoints: a rolled-back part vanishes, the rest stays in order
SELECT last_value AS s0 FROM shapesync.change_seq \gset
SELECT shapesync.tick(true) AS m0 \gset
BEGIN;
INSERT INTO txl VALUES (10, 'a');
SAVEPOINT s1;
INSERT INTO txl VALUES (11, 'b (rolled back)');
UPDATE txl SET v = 'a (rolled back)' WHERE id = 10;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO txl VALUES (12, 'c');
COMMIT;
-- nested savepoints with a partial rollback and a RELEASE
BEGIN;
INSERT INTO txl VALUES (20, 'top');
SAVEPOINT s1;
INSERT INTO txl VALUES (21, 'in s1');
SAVEPOINT s2;
INSERT INTO txl VALUES (22, 'in s2 (rolled back)');
SAVEPOINT s3;
UPDATE txl SET v = 'in s3 (rolled back)' WHERE id = 21;
ROLLBACK TO SAVEPOINT s2;
UPDATE txl SET v = 'in s2 again' WHERE id = 21;
RELEASE SAVEPOINT s1;
DELETE FROM txl WHERE id = 20;
COMMIT;
-- a transaction whose every change is rolled back writes nothing
BEGIN;
SAVEPOINT s1;
INSERT INTO txl VALUES (30, 'gone');
ROLLBACK TO SAVEPOINT s1;
COMMIT;
BEGIN;
INSERT INTO txl VALUES (31, 'gone');
ROLLBACK;
SELECT shapesync.tick(true) AS m1 \gset
SELECT * FROM pg_temp.records(:s0);
SELECT * FROM pg_temp.batches(:m0, :m1);

-- an EXCEPTION block that traps an error after writing rows
CREATE FUNCTION pg_temp.trap() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO txl VALUES (40, 'before');
    BEGIN
        INSERT INTO txl VALUES (41, 'trapped');
        UPDATE txl SET v = 'trapped' WHERE id = 40;
        PERFORM 1 / 0;
    EXCEPTION WHEN division_by_zero THEN
        INSERT INTO txl VALUES (42, 'handler');
    END;
    BEGIN
        UPDATE txl SET v = 'kept' WHERE id = 40;
    EXCEPTION WHEN division_by_zero THEN
        NULL;
    END;
END
$$;
SELECT last_value AS s0 FROM shapesync.change_seq \gset
SELECT shapesync.tick(true) AS m0 \gset
SELECT pg_temp.trap();
SELECT shapesync.tick(true) AS m1 \gset
SELECT * FROM pg_temp.records(:s0);
SELECT * FROM pg_temp.batches(:m0, :m1);

-- TRUNCATE keeps its place among the transaction's changes (it invalidates
-- the table's shapes: txl2's next insert is not logged, txl's is)
SELECT last_value AS s0 FROM shapesync.change_seq \gset
SELECT shapesync.tick(true) AS m0 \gset
BEGIN;
INSERT INTO txl2 VALUES (2, 'before truncate');
TRUNCATE txl2;
INSERT INTO txl2 VALUES (3, 'after truncate');
INSERT INTO txl VALUES (70, 'after truncate');
COMMIT;
SELECT shapesync.tick(true) AS m1 \gset
SELECT * FROM pg_temp.records(:s0);
SELECT tx, tbl, op, new_values FROM pg_temp.batches(:m0, :m1);
SELECT created FROM shapesync.get_or_create_shape('txl2', NULL, NULL);

-- a deferred constraint trigger writes at commit, before the record is written
CREATE TABLE txl_src (id int);
CREATE FUNCTION pg_temp.copy_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO txl VALUES (NEW.id, 'from a deferred trigger');
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER txl_src_copy AFTER INSERT ON txl_src
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.copy_row();
SELECT last_value AS s0 FROM shapesync.change_seq \gset
SELECT shapesync.tick(true) AS m0 \gset
BEGIN;
INSERT INTO txl VALUES (50, 'direct');
INSERT INTO txl_src VALUES (51);
COMMIT;
SELECT shapesync.tick(true) AS m1 \gset
SELECT * FROM pg_temp.records(:s0);
SELECT tx, op, new_values FROM pg_temp.batches(:m0, :m1);
DROP TABLE txl_src;

-- two-phase commit: the record is written at PREPARE and appears with COMMIT PREPARED
SELECT last_value AS s0 FROM shapesync.change_seq \gset
SELECT shapesync.tick(true) AS m0 \gset
BEGIN;
INSERT INTO txl VALUES (60, 'prepared');
SAVEPOINT s1;
INSERT INTO txl VALUES (61, 'rolled back');
ROLLBACK TO SAVEPOINT s1;
UPDATE txl SET v = 'prepared, updated' WHERE id = 60;
PREPARE TRANSACTION 'txlog_p1';
BEGIN;
INSERT INTO txl VALUES (62, 'prepared, then rolled back');
INSERT INTO txl VALUES (63, 'prepared, then rolled back');
PREPARE TRANSACTION 'txlog_p2';
SELECT count(*) AS visible_before_commit FROM shapesync.changes WHERE seq > :s0;
COMMIT PREPARED 'txlog_p1';
ROLLBACK PREPARED 'txlog_p2';
SELECT shapesync.tick(true) AS m1 \gset
SELECT * FROM pg_temp.records(:s0);
SELECT * FROM pg_temp.batches(:m0, :m1);

-- malformed records are an error, not a crash
SELECT * FROM shapesync.change_entries('B', 0, 1, NULL, NULL, NULL, NULL, NULL);
SELECT * FROM shapesync.change_entries('B', 0, 1, '\x0102', NULL, NULL, NULL, NULL);
SELECT * FROM shapesync.change_entries('B', 0, 1, ('\x' || repeat('ff', 100))::bytea, NULL, NULL, NULL, NULL);
-- a classic record is one change with ord 0
SELECT ord, relid, op, layout, new_row, version FROM shapesync.change_entries('I', 42, 7, '\x00', NULL, NULL, NULL, '5');

-- the setting
SET shapesync.tx_buffer_size = -1;
SET shapesync.tx_buffer_size = '1kB';
SHOW shapesync.tx_buffer_size;
RESET shapesync.tx_buffer_size;

-- Spill: the same 1000-row workloads with the default buffer and with a
-- buffer of 300 bytes (written in many parts) give the same batch.
CREATE TABLE txa (id int PRIMARY KEY, v text);
CREATE TABLE txb (id int PRIMARY KEY, v text);
CREATE TABLE txc (id int PRIMARY KEY, v text);
CREATE TABLE txd (id int PRIMARY KEY, v text);
CREATE TABLE txe (id int PRIMARY KEY, v text);
CREATE TABLE txf (id int PRIMARY KEY, v text);
SELECT shapesync.track('txa'), shapesync.track('txb'), shapesync.track('txc'), shapesync.track('txd'),
       shapesync.track('txe'), shapesync.track('txf');
SELECT count(*) FROM (SELECT shapesync.get_or_create_shape(t, NULL, NULL)
                        FROM unnest(ARRAY['txa', 'txb', 'txc', 'txd', 'txe', 'txf']::regclass[]) t) s;
-- subtransactions from plpgsql blocks, committed and rolled back, nested
CREATE FUNCTION pg_temp.workload(t regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO %s SELECT g, repeat(''x'', g %% 37) FROM generate_series(1, 1000) g', t);
    BEGIN
        EXECUTE format('UPDATE %s SET v = v || ''u'' WHERE id %% 7 = 0', t);
        BEGIN
            EXECUTE format('DELETE FROM %s WHERE id %% 3 = 0', t);
            RAISE EXCEPTION 'roll back';
        EXCEPTION WHEN raise_exception THEN
            NULL;
        END;
        EXECUTE format('DELETE FROM %s WHERE id %% 5 = 0', t);
    EXCEPTION WHEN division_by_zero THEN
        NULL;
    END;
    BEGIN
        EXECUTE format('UPDATE %s SET v = ''gone''', t);
        RAISE EXCEPTION 'roll back';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    EXECUTE format('UPDATE %s SET v = ''last'' WHERE id > 990', t);
END
$$;
CREATE TEMP TABLE runs (name text, n bigint, tx bigint, op "char", new_values text[], old_values text[], sub_version boolean);
CREATE FUNCTION pg_temp.keep(name text, tbl regclass, after bigint, upto bigint) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO runs
    SELECT name, row_number() OVER (), b.tx, b.op, b.new_values, b.old_values, b.sub_version
      FROM pg_temp.batches(after, upto) b WHERE b.tbl = keep.tbl;
    SELECT count(*) FROM runs r WHERE r.name = keep.name;
$$;
-- the memory the buffer holds, in kB (0: none)
CREATE FUNCTION pg_temp.buffer_kb() RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(sum(total_bytes), 0) / 1024 FROM pg_backend_memory_contexts
     WHERE name = 'shapesync transaction log'
$$;

SELECT shapesync.tick(true) AS m0 \gset
BEGIN;
SELECT pg_current_xact_id() AS xa \gset
SELECT pg_temp.workload('txa');
SELECT pg_temp.buffer_kb() > 100 AS buffered_unspilled;
COMMIT;
SET shapesync.tx_buffer_size = 300;
BEGIN;
SELECT pg_current_xact_id() AS xb \gset
SELECT pg_temp.workload('txb');
SELECT pg_temp.buffer_kb() < 64 AS bounded_spilled;
COMMIT;
RESET shapesync.tx_buffer_size;
-- SQL savepoints around big statements
BEGIN;
SELECT pg_current_xact_id() AS xc \gset
INSERT INTO txc SELECT g, 'v' || g FROM generate_series(1, 1000) g;
SAVEPOINT a;
UPDATE txc SET v = 'rolled back' WHERE id <= 400;
ROLLBACK TO SAVEPOINT a;
UPDATE txc SET v = 'kept' WHERE id <= 100;
SAVEPOINT b;
DELETE FROM txc WHERE id > 950;
SAVEPOINT c;
INSERT INTO txc SELECT g, 'rolled back' FROM generate_series(2001, 2300) g;
ROLLBACK TO SAVEPOINT c;
RELEASE SAVEPOINT b;
INSERT INTO txc VALUES (3000, 'last');
COMMIT;
SET shapesync.tx_buffer_size = 300;
BEGIN;
SELECT pg_current_xact_id() AS xd \gset
INSERT INTO txd SELECT g, 'v' || g FROM generate_series(1, 1000) g;
SAVEPOINT a;
UPDATE txd SET v = 'rolled back' WHERE id <= 400;
ROLLBACK TO SAVEPOINT a;
UPDATE txd SET v = 'kept' WHERE id <= 100;
SAVEPOINT b;
DELETE FROM txd WHERE id > 950;
SAVEPOINT c;
INSERT INTO txd SELECT g, 'rolled back' FROM generate_series(2001, 2300) g;
ROLLBACK TO SAVEPOINT c;
RELEASE SAVEPOINT b;
INSERT INTO txd VALUES (3000, 'last');
COMMIT;
RESET shapesync.tx_buffer_size;
-- a buffer that holds the first changes while a savepoint's spill: they are
-- written after later changes, and still come first
CREATE FUNCTION pg_temp.mixed(t regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO %s VALUES (1, ''first''), (2, ''second''), (3, ''third'')', t);
    BEGIN
        EXECUTE format('INSERT INTO %s SELECT g, ''in the block'' FROM generate_series(10, 109) g', t);
        EXECUTE format('UPDATE %s SET v = ''updated in the block'' WHERE id <= 3', t);
    EXCEPTION WHEN division_by_zero THEN
        NULL;
    END;
    EXECUTE format('DELETE FROM %s WHERE id BETWEEN 10 AND 19', t);
END
$$;
BEGIN;
SELECT pg_current_xact_id() AS xe \gset
SELECT pg_temp.mixed('txe');
COMMIT;
SET shapesync.tx_buffer_size = 2000;
BEGIN;
SELECT pg_current_xact_id() AS xf \gset
SELECT pg_temp.mixed('txf');
COMMIT;
RESET shapesync.tx_buffer_size;
SELECT shapesync.tick(true) AS m1 \gset
-- the first changes (ord 1..3) are in a record written after records of later ones
SELECT (SELECT count(*) FROM shapesync.changes WHERE xid = :'xf') > 5 AS many_records_f,
       (SELECT e.ord FROM shapesync.changes c,
               LATERAL shapesync.change_entries(c.op, c.relid, c.layout, c.new_row, c.old_row,
                                                c.shape_ops, c.error, c.version) e
         WHERE c.xid = :'xf' ORDER BY c.seq, e.ord LIMIT 1) > 3 AS first_record_holds_later_changes;

-- records per transaction: written at commit in records of at most 8000
-- bytes of changes (one per heap page) without spilling, many more with
SELECT (SELECT count(*) FROM shapesync.changes WHERE xid = :'xa') AS records_a,
       (SELECT count(*) FROM shapesync.changes WHERE xid = :'xb') > 100 AS many_records_b,
       (SELECT count(*) FROM shapesync.changes WHERE xid = :'xc') AS records_c,
       (SELECT count(*) FROM shapesync.changes WHERE xid = :'xd') > 100 AS many_records_d,
       (SELECT max(pg_column_size(new_row)) FROM shapesync.changes
         WHERE xid IN (:'xa', :'xb', :'xc', :'xd')) <= 8000 AS records_fit_a_page;
SELECT pg_temp.keep('a', 'txa', :m0, :m1) AS changes_a, pg_temp.keep('b', 'txb', :m0, :m1) AS changes_b,
       pg_temp.keep('c', 'txc', :m0, :m1) AS changes_c, pg_temp.keep('d', 'txd', :m0, :m1) AS changes_d,
       pg_temp.keep('e', 'txe', :m0, :m1) AS changes_e, pg_temp.keep('f', 'txf', :m0, :m1) AS changes_f;
-- identical sequences of changes (rows that differ: none)
SELECT x.name, count(*) AS differing FROM (
    (SELECT 'a-b' AS name, n, op, new_values, old_values, sub_version FROM runs WHERE name = 'a'
     EXCEPT ALL SELECT 'a-b', n, op, new_values, old_values, sub_version FROM runs WHERE name = 'b')
    UNION ALL
    (SELECT 'c-d', n, op, new_values, old_values, sub_version FROM runs WHERE name = 'c'
     EXCEPT ALL SELECT 'c-d', n, op, new_values, old_values, sub_version FROM runs WHERE name = 'd')
    UNION ALL
    (SELECT 'e-f', n, op, new_values, old_values, sub_version FROM runs WHERE name = 'e'
     EXCEPT ALL SELECT 'e-f', n, op, new_values, old_values, sub_version FROM runs WHERE name = 'f')) x
 GROUP BY x.name;
-- what the workloads leave, per op (the rolled-back parts are absent)
SELECT name, op, count(*), count(*) FILTER (WHERE sub_version) AS by_subtransactions
  FROM runs GROUP BY name, op ORDER BY name, op;
-- the order of the mixed workload
SELECT n, op, new_values, old_values FROM runs WHERE name = 'f' AND (n <= 5 OR n >= 103) ORDER BY n;
-- each transaction is one transaction of the batch
SELECT name, count(DISTINCT tx) AS transactions FROM runs GROUP BY name ORDER BY name;
-- the batch equals the table: replaying the changes gives its rows
SELECT r.name, count(*) AS live_rows FROM (
    SELECT DISTINCT ON (name, coalesce(new_values[1], old_values[1])) name, op
      FROM runs ORDER BY name, coalesce(new_values[1], old_values[1]), n DESC) r
 WHERE r.op <> 'D' GROUP BY r.name ORDER BY r.name;
SELECT (SELECT count(*) FROM txa) AS a, (SELECT count(*) FROM txb) AS b,
       (SELECT count(*) FROM txc) AS c, (SELECT count(*) FROM txd) AS d,
       (SELECT count(*) FROM txe) AS e, (SELECT count(*) FROM txf) AS f;

-- a change bigger than a record's 8000 bytes is a record of its own (TOASTed)
CREATE TABLE txg (id int PRIMARY KEY, payload text);
SELECT shapesync.track('txg');
SELECT created FROM shapesync.get_or_create_shape('txg', NULL, NULL);
SELECT shapesync.tick(true) AS m0 \gset
BEGIN;
SELECT pg_current_xact_id() AS xg \gset
INSERT INTO txg VALUES (1, 'small');
INSERT INTO txg SELECT 2, string_agg(md5(i::text), '') FROM generate_series(1, 1000) i;
INSERT INTO txg VALUES (3, 'small');
COMMIT;
SELECT shapesync.tick(true) AS m1 \gset
SELECT op, layout, pg_column_size(new_row) > 8000 AS big FROM shapesync.changes WHERE xid = :'xg' ORDER BY seq;
SELECT b.op, b.new_values[1] AS id, length(b.new_values[2]) AS len, md5(b.new_values[2]) = md5(t.payload) AS same
  FROM shapesync.ticks k CROSS JOIN LATERAL shapesync.batch(k.tick_id) WITH ORDINALITY b
  JOIN txg t ON t.id = b.new_values[1]::int
 WHERE k.tick_id > :m0 AND k.tick_id <= :m1 AND b.relid = 'txg'::regclass
 ORDER BY k.tick_id, b.ordinality;

-- monitoring counts changes, not records
SELECT change_log_rows = (SELECT count(*) FROM shapesync.change_log) AS counts_changes FROM shapesync.status();

DROP TABLE txl, txl2, txa, txb, txc, txd, txe, txf, txg;

-- DROP EXTENSION in a transaction that buffered changes: the commit goes
-- through (the changes have no log to go to any more)
SELECT current_database() AS regress_db \gset
CREATE DATABASE shapesync_txlog;
\c shapesync_txlog
SET client_min_messages = warning;
CREATE EXTENSION shapesync;
CREATE TABLE gone (id int PRIMARY KEY);
SELECT shapesync.track('gone');
SELECT created FROM shapesync.get_or_create_shape('gone', NULL, NULL);
BEGIN;
INSERT INTO gone VALUES (1), (2);
DROP EXTENSION shapesync CASCADE;
COMMIT;
SELECT count(*) AS committed_rows FROM gone;
\c :regress_db
DROP DATABASE shapesync_txlog;

-- A schema whose batch() cannot read records (a database created from a
-- development build of 0.2.0 before change_entries() existed; same version,
-- so no upgrade script fixes it): changes are written one row each, which
-- its batch() reads, instead of B records it would skip.
CREATE DATABASE shapesync_txlog_old;
\c shapesync_txlog_old
SET client_min_messages = warning;
CREATE EXTENSION shapesync;
CREATE TABLE oldschema (id int PRIMARY KEY);
SELECT shapesync.track('oldschema');
SELECT created FROM shapesync.get_or_create_shape('oldschema', NULL, NULL);
ALTER FUNCTION shapesync.change_entries("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8)
    RENAME TO change_entries_hidden;
\c shapesync_txlog_old
INSERT INTO oldschema VALUES (1), (2), (3);
SELECT op, count(*) FROM shapesync.changes GROUP BY op ORDER BY op;
-- with it back, the next session writes one B record
ALTER FUNCTION shapesync.change_entries_hidden("char", oid, int4, bytea, bytea, int4[], text, pg_catalog.xid8)
    RENAME TO change_entries;
\c shapesync_txlog_old
INSERT INTO oldschema VALUES (4), (5), (6);
SELECT op, count(*) FROM shapesync.changes GROUP BY op ORDER BY op;
\c :regress_db
DROP DATABASE shapesync_txlog_old;
