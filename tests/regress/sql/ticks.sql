-- ticks and batches.  The ticker worker may tick at any time, so every
-- check reads the batches of all ticks after a marker tick.
CREATE FUNCTION pg_temp.batches(after bigint, upto bigint)
RETURNS TABLE (op "char", tbl regclass, new_values text[], old_values text[])
LANGUAGE sql AS $$
    SELECT b.op, b.relid::regclass, b.new_values, b.old_values
      FROM shapesync.ticks t CROSS JOIN LATERAL shapesync.batch(t.tick_id) WITH ORDINALITY b
     WHERE t.tick_id > after AND t.tick_id <= upto
     ORDER BY t.tick_id, b.ordinality
$$;

CREATE TABLE acct (id int PRIMARY KEY, balance int);
SELECT shapesync.track('acct');
-- a whole-table shape: the trigger logs every change of the table
SELECT created FROM shapesync.get_or_create_shape('acct', NULL, NULL);

-- tick 1 is recorded at install time; its batch is empty
SELECT tick_id, max_seq FROM shapesync.ticks WHERE tick_id = 1;
SELECT count(*) FROM shapesync.batch(1);
-- a tick that does not exist has an empty batch
SELECT count(*) FROM shapesync.batch(-1);

SELECT shapesync.tick(true) AS m0 \gset
INSERT INTO acct VALUES (1, 100), (2, 200);
BEGIN;
UPDATE acct SET balance = balance - 10 WHERE id = 1;
UPDATE acct SET balance = balance + 10 WHERE id = 2;
COMMIT;
DELETE FROM acct WHERE id = 2;
SELECT shapesync.tick(true) AS m1 \gset
SELECT * FROM pg_temp.batches(:m0, :m1);

-- ticks are ordered and record the seq high-water mark
SELECT count(*) = 0 AS monotonic FROM shapesync.ticks a JOIN shapesync.ticks b
    ON b.tick_id = a.tick_id + 1 WHERE b.max_seq < a.max_seq;
SELECT max_seq = (SELECT max(seq) FROM shapesync.changes) AS high_water
  FROM shapesync.ticks WHERE tick_id = :m1;

-- order within a batch: transactions by their largest seq, then seq
SELECT shapesync.tick(true) AS m2 \gset
BEGIN;
INSERT INTO acct VALUES (10, 0);
INSERT INTO acct VALUES (11, 0);
COMMIT;
SELECT shapesync.tick(true) AS m3 \gset
SELECT bool_and(tx_max_seq >= seq) AS tx_max_ok,
       count(DISTINCT xid) AS transactions
  FROM shapesync.ticks t CROSS JOIN LATERAL shapesync.batch(t.tick_id) b
 WHERE t.tick_id > :m2 AND t.tick_id <= :m3;

-- savepoint rollback discards the rolled-back part's changes
BEGIN;
INSERT INTO acct VALUES (20, 1);
SAVEPOINT sp;
INSERT INTO acct VALUES (21, 2);
UPDATE acct SET balance = 99 WHERE id = 20;
ROLLBACK TO SAVEPOINT sp;
INSERT INTO acct VALUES (22, 3);
SAVEPOINT sp2;
UPDATE acct SET balance = 33 WHERE id = 22;
RELEASE SAVEPOINT sp2;
COMMIT;
-- an aborted transaction leaves nothing
BEGIN;
INSERT INTO acct VALUES (23, 4);
ROLLBACK;
-- an error inside a plpgsql exception block rolls back its changes too
DO $$
BEGIN
    BEGIN
        INSERT INTO acct VALUES (24, 5);
        PERFORM 1 / 0;
    EXCEPTION WHEN division_by_zero THEN
        NULL;
    END;
    INSERT INTO acct VALUES (25, 6);
END
$$;
SELECT shapesync.tick(true) AS m4 \gset
SELECT * FROM pg_temp.batches(:m3, :m4);

-- two-phase commit: the change appears in the tick after COMMIT PREPARED
BEGIN;
INSERT INTO acct VALUES (30, 30);
PREPARE TRANSACTION 'shapesync_2pc';
SELECT shapesync.tick(true) AS m5 \gset
SELECT * FROM pg_temp.batches(:m4, :m5);
COMMIT PREPARED 'shapesync_2pc';
SELECT shapesync.tick(true) AS m6 \gset
SELECT * FROM pg_temp.batches(:m5, :m6);

-- TRUNCATE is one 'T' change
TRUNCATE acct;
SELECT shapesync.tick(true) AS m7 \gset
SELECT * FROM pg_temp.batches(:m6, :m7);
-- TRUNCATE invalidated the shape: register it again
SELECT created FROM shapesync.get_or_create_shape('acct', NULL, NULL);

-- tick(false) returns NULL when nothing can be new (retried: an unrelated
-- transaction running at the forced tick makes the next one tick once more)
DO $$
DECLARE
    ok boolean := false;
BEGIN
    FOR i IN 1..20 LOOP
        PERFORM shapesync.tick(true);
        IF shapesync.tick(false) IS NULL THEN
            ok := true;
            EXIT;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RAISE NOTICE 'tick(false) with nothing new returns NULL: %', ok;
END
$$;
-- and a tick when a change was written since (a change written at once,
-- as a transaction bigger than shapesync.tx_buffer_size does)
DO $$
DECLARE
    before bigint := (SELECT max(tick_id) FROM shapesync.ticks);
    t bigint;
BEGIN
    PERFORM set_config('shapesync.tx_buffer_size', '0', true);
    INSERT INTO acct VALUES (40, 40);
    t := shapesync.tick(false);
    RAISE NOTICE 'tick(false) after a write ticks: %', t > before;
END
$$;

-- a tick needs READ COMMITTED
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT shapesync.tick(true);
ROLLBACK;

DROP TABLE acct;
