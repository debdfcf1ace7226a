-- The batch reader in C (shapesync.batch, extension/batch.c) against the SQL
-- formulation it replaced (shapesync.batch_sql, the reference): the same
-- rows in the same order, and the same errors, over random transactions
-- (multi-record ones, savepoints rolled back and released, spilled buffers
-- at tiny shapesync.tx_buffer_size, deletes, several tables), undecodable
-- images (layout changed, table dropped), forged records, a role without
-- SELECT on a table, the wrong isolation level and rotations.

SET client_min_messages = warning;

-- what a reader returns for tick t: the row count, or the error in full
CREATE FUNCTION pg_temp.outcome(reader text, t bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    EXECUTE format('SELECT count(*) FROM shapesync.%I($1)', reader) INTO n USING t;
    RETURN n || ' rows';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || ' | ' || det || ' | ' || hnt;
END
$$;

-- ticks after..upto compared: rows of the ticks the readers read, rows
-- that differ (ordinality included), ticks whose outcome (count or error)
-- differs, ticks both refused
CREATE FUNCTION pg_temp.compare(after bigint, upto bigint,
                                OUT rows bigint, OUT differing_rows bigint,
                                OUT differing_outcomes bigint, OUT failed_ticks bigint)
LANGUAGE plpgsql AS $$
DECLARE
    o text;
    r text;
BEGIN
    rows := 0; differing_rows := 0; differing_outcomes := 0; failed_ticks := 0;
    FOR t IN after + 1 .. upto LOOP
        o := pg_temp.outcome('batch', t);
        r := pg_temp.outcome('batch_sql', t);
        IF o IS DISTINCT FROM r THEN
            differing_outcomes := differing_outcomes + 1;
        END IF;
        IF o ~ ' rows$' THEN
            rows := rows + split_part(o, ' ', 1)::bigint;
            differing_rows := differing_rows +
                (SELECT count(*) FROM shapesync.batch(t) WITH ORDINALITY x
                   FULL JOIN shapesync.batch_sql(t) WITH ORDINALITY y USING (ordinality)
                  WHERE x IS DISTINCT FROM y);
        ELSE
            failed_ticks := failed_ticks + 1;
        END IF;
    END LOOP;
END
$$;

-- batches(after, upto) against what the sidecar read before it: batch_sql()
-- of every tick id in the range, with the tick's time, sorted; or, packed,
-- batches_packed(after, upto) against batches(after, upto) packed in SQL
-- (the layout of PackChange in extension/batch.c). The count of rows and of
-- rows that differ (position included), or the error
CREATE FUNCTION pg_temp.compare_range(after bigint, upto bigint, packed boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    d bigint;
    st text;
    msg text;
BEGIN
    IF NOT packed THEN
        SELECT count(*), count(*) FILTER (WHERE x IS DISTINCT FROM y) INTO n, d
          FROM shapesync.batches(after, upto) WITH ORDINALITY x
          FULL JOIN (SELECT t.tick_id, k.tick_time_us, r.xid, r.seq, r.tx_max_seq, r.relid, r.op, r.new_values,
                            r.old_values, r.shape_ops, r.error, r.version,
                            row_number() OVER (ORDER BY t.tick_id, r.ordinality) AS ordinality
                       FROM generate_series(after + 1, upto) AS t(tick_id)
                       LEFT JOIN LATERAL (SELECT (extract(epoch FROM k.tick_time) * 1000000)::bigint AS tick_time_us
                                            FROM shapesync.ticks k WHERE k.tick_id = t.tick_id) k ON true
                      CROSS JOIN LATERAL shapesync.batch_sql(t.tick_id) WITH ORDINALITY AS r) y USING (ordinality);
    ELSE
        SELECT count(*), count(*) FILTER (WHERE x.p IS DISTINCT FROM y.p) INTO n, d
          FROM shapesync.batches_packed(after, upto) WITH ORDINALITY x(p, ordinality)
          FULL JOIN (SELECT b.ordinality,
                            int2send(((CASE WHEN b.tick_time_us IS NULL THEN 0 ELSE 1 END)
                                      | (CASE WHEN b.new_values IS NULL THEN 0 ELSE 2 END)
                                      | (CASE WHEN b.old_values IS NULL THEN 0 ELSE 4 END)
                                      | (CASE WHEN b.shape_ops IS NULL THEN 0 ELSE 8 END)
                                      | (CASE WHEN b.error IS NULL THEN 0 ELSE 16 END)
                                      | (CASE WHEN b.version IS NULL THEN 0 ELSE 32 END))::int2)
                            || int8send(b.tick_id) || coalesce(int8send(b.tick_time_us), '') || xid8send(b.xid)
                            || oidsend(b.relid) || charsend(b.op) || coalesce(xid8send(b.version), '')
                            || coalesce(int4send(length(shapesync.text_array_send(b.new_values)))
                                        || shapesync.text_array_send(b.new_values), '')
                            || coalesce(int4send(length(shapesync.text_array_send(b.old_values)))
                                        || shapesync.text_array_send(b.old_values), '')
                            || coalesce(int4send(length(array_send(b.shape_ops))) || array_send(b.shape_ops), '')
                            || coalesce(int4send(length(textsend(b.error))) || textsend(b.error), '') AS p
                       FROM shapesync.batches(after, upto) WITH ORDINALITY b) y USING (ordinality);
    END IF;
    RETURN n || ' rows, ' || d || ' differ';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN st || ': ' || regexp_replace(msg, '[0-9]+', 'N');
END
$$;

CREATE TABLE br1 (id int PRIMARY KEY, owner int, v text, n numeric, d date);
CREATE TABLE br2 (k text PRIMARY KEY, payload jsonb, flag boolean);
SELECT shapesync.track('br1'), shapesync.track('br2');
SELECT count(*) FROM generate_series(1, 5) k, shapesync.get_or_create_shape('br1', 'owner = ' || k, NULL);
SELECT created FROM shapesync.get_or_create_shape('br2', NULL, NULL);
-- a filter that raises for some rows: X changes
SELECT created FROM shapesync.get_or_create_shape('br1', '100 / (n - 7) > 0', NULL);

-- random transactions: each of several statements, some inside a
-- subtransaction that is rolled back or released, some transactions with a
-- tiny buffer (spills, several records, records above 8000 bytes)
CREATE PROCEDURE pg_temp.random_work(ntx int, seed float8)
LANGUAGE plpgsql AS $$
DECLARE
    nst int;
    pick int;
BEGIN
    PERFORM setseed(seed);
    FOR tx IN 1 .. ntx LOOP
        PERFORM set_config('shapesync.tx_buffer_size',
                           (ARRAY['0', '300', '2000', '4MB'])[1 + floor(random() * 4)::int], false);
        nst := 1 + floor(random() * 6)::int;
        FOR s IN 1 .. nst LOOP
            pick := 1 + floor(random() * 300)::int;
            BEGIN
                CASE floor(random() * 7)::int
                WHEN 0 THEN
                    INSERT INTO br1 SELECT g, g % 6, repeat('x', (random() * 50)::int), g % 9, date '2026-01-01' + g
                      FROM generate_series(pick, pick + floor(random() * 20)::int) g
                    ON CONFLICT (id) DO UPDATE SET v = excluded.v || '!', n = br1.n + 1;
                WHEN 1 THEN
                    UPDATE br1 SET owner = (owner + 1) % 6, v = NULL WHERE br1.id BETWEEN pick AND pick + 10;
                WHEN 2 THEN
                    DELETE FROM br1 WHERE br1.id BETWEEN pick AND pick + 3;
                WHEN 3 THEN
                    INSERT INTO br2 VALUES ('k' || pick, jsonb_build_object('id', pick, 'big', repeat('y', (random() * 3000)::int)), random() < 0.5)
                    ON CONFLICT ON CONSTRAINT br2_pkey DO UPDATE SET flag = NOT br2.flag, payload = br2.payload || '{"u": 1}';
                WHEN 4 THEN
                    DELETE FROM br2 WHERE br2.k = 'k' || pick;
                WHEN 5 THEN
                    -- rolled back: its changes (and its spilled records) vanish
                    UPDATE br1 SET n = n + 100 WHERE br1.id BETWEEN pick AND pick + 30;
                    RAISE EXCEPTION 'roll back' USING ERRCODE = 'P0001';
                ELSE
                    -- division by zero in the shape filter for n = 7
                    UPDATE br1 SET n = 7 WHERE br1.id = pick;
                END CASE;
            EXCEPTION WHEN raise_exception THEN
                NULL;
            END;
        END LOOP;
        IF random() < 0.1 THEN
            ROLLBACK;
        ELSE
            COMMIT;
        END IF;
    END LOOP;
    PERFORM set_config('shapesync.tx_buffer_size', '4MB', false);
END
$$;

SELECT shapesync.tick(true) AS m0 \gset
CALL pg_temp.random_work(60, 0.25);
SELECT shapesync.tick(true) AS m1 \gset
CALL pg_temp.random_work(60, 0.5);
SELECT shapesync.tick(true) AS m2 \gset
SELECT * FROM pg_temp.compare(:m0, :m2);
SELECT pg_temp.compare_range(:m0, :m2);
SELECT pg_temp.compare_range(:m0, :m2, true) AS packed;
-- an empty range, NULL
SELECT count(*) FROM shapesync.batches(:m2, :m2);
SELECT count(*) FROM shapesync.batches(NULL, :m2);
-- the log has classic rows, B records and more than one record per transaction
SELECT count(*) FILTER (WHERE op <> 'B') > 0 AS classic, count(*) FILTER (WHERE op = 'B') > 0 AS packed,
       count(DISTINCT xid) < count(*) AS multi_record
  FROM shapesync.changes;

-- one big transaction over tiny buffers: many records, one transaction
SELECT shapesync.tick(true) AS m3 \gset
BEGIN;
SET LOCAL shapesync.tx_buffer_size = 500;
UPDATE br1 SET v = coalesce(v, '') || 'z';
SAVEPOINT a;
UPDATE br2 SET flag = NOT flag;
RELEASE SAVEPOINT a;
SAVEPOINT b;
DELETE FROM br1 WHERE id % 3 = 0;
ROLLBACK TO SAVEPOINT b;
INSERT INTO br1 VALUES (10000, 1, 'last', 1, NULL);
COMMIT;
SELECT shapesync.tick(true) AS m4 \gset
SELECT * FROM pg_temp.compare(:m3, :m4);
SELECT pg_temp.compare_range(:m3, :m4);
SELECT pg_temp.compare_range(:m3, :m4, true) AS packed;

-- undecodable images: a changed layout and a dropped table come back NULL
CREATE TABLE br3 (id int PRIMARY KEY, v text);
SELECT shapesync.track('br3');
SELECT created FROM shapesync.get_or_create_shape('br3', NULL, NULL);
SELECT shapesync.tick(true) AS m5 \gset
INSERT INTO br3 SELECT g, 'v' || g FROM generate_series(1, 5) g;
BEGIN;
UPDATE br3 SET v = 'w' WHERE id < 3;
INSERT INTO br1 VALUES (10001, 2, 'with br3', 2, NULL);
COMMIT;
UPDATE br1 SET v = 'before alter' WHERE id = 10001;
SELECT shapesync.tick(true) AS m6 \gset
ALTER TABLE br1 ADD COLUMN extra int;
SELECT shapesync.untrack('br3');
DROP TABLE br3;
SELECT count(*) FROM shapesync.get_or_create_shape('br1', NULL, NULL);
SELECT * FROM pg_temp.compare(:m5, :m6);
SELECT count(*) FILTER (WHERE new_values IS NULL AND op IN ('I', 'U')) AS undecodable
  FROM generate_series(:m5 + 1, :m6) t, shapesync.batch(t);
SELECT pg_temp.compare_range(:m5, :m6, true) AS packed;

-- forged records: the same error from both readers
SELECT shapesync.tick(true) AS m7 \gset
INSERT INTO shapesync.changes_0 (xid, seq, relid, op, layout, new_row)
VALUES (pg_current_xact_id(), nextval('shapesync.change_seq'), 0, 'B', 1, '\x0102'::bytea);
SELECT shapesync.tick(true) AS m8 \gset
INSERT INTO shapesync.changes_0 (xid, seq, relid, op, layout, new_row)
VALUES (pg_current_xact_id(), nextval('shapesync.change_seq'), 0, 'B', 1,
        decode(repeat('00', 4) || 'ffff0000' || repeat('00', 60), 'hex'));
SELECT shapesync.tick(true) AS m9 \gset
INSERT INTO shapesync.changes_0 (xid, seq, relid, op, layout, new_row)
VALUES (pg_current_xact_id(), nextval('shapesync.change_seq'), 0, 'B', 1, NULL);
SELECT shapesync.tick(true) AS m10 \gset
-- (the extension's worker may tick between a forged record and the next
-- explicit tick: such ticks are empty for both readers and left out)
SELECT row_number() OVER (ORDER BY t) AS forged, outcome, outcome = pg_temp.outcome('batch_sql', t) AS same
  FROM (SELECT t, pg_temp.outcome('batch', t) AS outcome FROM generate_series(:m7 + 1, :m10) t) s
 WHERE outcome <> '0 rows' OR outcome IS DISTINCT FROM pg_temp.outcome('batch_sql', t)
 ORDER BY t;
-- the same errors from batches_packed()
SELECT pg_temp.compare_range(:m7, :m10, true) AS packed, pg_temp.compare_range(:m7, :m10) AS batches;
DELETE FROM shapesync.changes_0 WHERE relid = 0;

-- a reader without SELECT on a table whose changes are in the batch
CREATE ROLE br_reader;
SELECT shapesync.grant_sidecar('br_reader');
GRANT EXECUTE ON FUNCTION shapesync.batch_sql(bigint) TO br_reader;
REVOKE SELECT ON br2 FROM br_reader;
SELECT shapesync.tick(true) AS m11 \gset
UPDATE br2 SET flag = NOT flag WHERE k = (SELECT min(k) FROM br2);
UPDATE br1 SET v = 'readable' WHERE id = 10000;
SELECT shapesync.tick(true) AS m12 \gset
SET ROLE br_reader;
SELECT bool_and(pg_temp.outcome('batch', t) = pg_temp.outcome('batch_sql', t)) AS same,
       min(pg_temp.outcome('batch', t)) FILTER (WHERE pg_temp.outcome('batch', t) !~ ' rows$') AS error
  FROM generate_series(:m11 + 1, :m12) t;
SELECT pg_temp.compare_range(:m11, :m12, true) AS packed;
RESET ROLE;
-- without EXECUTE, neither runs
REVOKE EXECUTE ON FUNCTION shapesync.batch_sql(bigint) FROM br_reader;
SELECT shapesync.revoke_sidecar('br_reader');
SET ROLE br_reader;
SELECT pg_temp.outcome('batch', :m12);
RESET ROLE;

-- the wrong isolation level, no such tick, NULL
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.outcome('batch', :m12), pg_temp.outcome('batch', :m12) = pg_temp.outcome('batch_sql', :m12) AS same;
COMMIT;
SELECT pg_temp.outcome('batch', -1), pg_temp.outcome('batch', 0), pg_temp.outcome('batch', NULL),
       pg_temp.outcome('batch', :m12 + 1000),
       pg_temp.outcome('batch', -1) = pg_temp.outcome('batch_sql', -1) AND
       pg_temp.outcome('batch', NULL) = pg_temp.outcome('batch_sql', NULL) AND
       pg_temp.outcome('batch', :m12 + 1000) = pg_temp.outcome('batch_sql', :m12 + 1000) AS same;

-- rotations: more random work across three rotations (the third
-- truncates the table that was current before them); ticks at or below the
-- horizon raise SS001 from both, the others agree row by row
DELETE FROM shapesync.consumers;
SELECT shapesync.tick(true) AS m13 \gset
CALL pg_temp.random_work(20, 0.75);
SELECT rotated FROM shapesync.maintain(retention => '0', consumer_timeout => '1 hour');
CALL pg_temp.random_work(20, 0.8);
SELECT shapesync.tick(true) AS m14 \gset
SELECT rotated FROM shapesync.maintain(retention => '0', consumer_timeout => '1 hour');
CALL pg_temp.random_work(20, 0.85);
SELECT rotated FROM shapesync.maintain(retention => '0', consumer_timeout => '1 hour');
CALL pg_temp.random_work(20, 0.9);
SELECT shapesync.tick(true) AS m15 \gset
SELECT horizon_tick > :m13 AND horizon_tick <= :m14 AS horizon_moved FROM shapesync.log_state;
SELECT rows > 0 AS rows, differing_rows, differing_outcomes, failed_ticks > 0 AS refused
  FROM pg_temp.compare(:m13, :m15);
SELECT pg_temp.compare_range(:m13, :m15);
SELECT pg_temp.compare_range(:m13, :m15, true) AS packed;
SELECT pg_temp.compare_range((SELECT horizon_tick FROM shapesync.log_state), :m15) ~ '^[0-9]+ rows, 0 differ$' AS after_horizon;
SELECT pg_temp.outcome('batch', :m13 + 1) ~ '^SS001: the change log no longer holds tick [0-9]+ [|] Changes visible in tick [0-9]+ were truncated' AS first_tick_truncated;

-- text_array_send(a), what the sidecar reads new_values and old_values
-- through, is array_send(a) byte for byte: for every array the reader just
-- returned, and for random ones (NULLs, multibyte text, short and long
-- values, empty arrays, another lower bound); a 2-D or non-text array is
-- refused with a clear error
SELECT count(*) > 0 AS arrays,
       count(*) FILTER (WHERE shapesync.text_array_send(a) IS DISTINCT FROM array_send(a)) AS differing
  FROM (SELECT new_values AS a FROM shapesync.batches(:m14, :m15)
        UNION ALL SELECT old_values FROM shapesync.batches(:m14, :m15)) s WHERE a IS NOT NULL;
SELECT setseed(0.5);
SELECT count(*) AS arrays,
       count(*) FILTER (WHERE shapesync.text_array_send(a) IS DISTINCT FROM array_send(a)) AS differing
  FROM (SELECT CASE WHEN g % 11 = 0 THEN '{}'::text[]
                    ELSE (SELECT array_agg(CASE WHEN random() < 0.2 THEN NULL
                                                ELSE repeat(chr(48 + (random() * 70)::int + 0 * e), (random() * (1 + g % 300))::int)
                                                     || CASE WHEN random() < 0.5 THEN 'é€' ELSE '' END END)
                            FROM generate_series(1, 1 + g % 13) e) END AS a
          FROM generate_series(1, 600) gs(g)) s;
SELECT shapesync.text_array_send(a) = array_send(a) AS same
  FROM (VALUES ('[3:5]={x,NULL,"y z"}'::text[]), ('{NULL,NULL}'::text[]), (ARRAY[repeat('w', 5000)])) v(a);
SELECT shapesync.text_array_send(NULL) IS NULL AS strict;
SELECT shapesync.text_array_send('{{a,b},{c,d}}'::text[]);
SELECT shapesync.text_array_send(ARRAY[1,2]::int[]::text[]) = array_send(ARRAY['1','2']) AS cast_ok;

DROP TABLE br1, br2;
DROP OWNED BY br_reader;
DROP ROLE br_reader;
