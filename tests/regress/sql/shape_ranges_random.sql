-- range templates against brute force: ~100 random range shapes (mixed with
-- equality, LIKE and other conjuncts), a random workload of a few thousand
-- rows; every logged change must carry exactly the shape ops that the shapes'
-- WHERE clauses, evaluated by SELECT on its OLD and NEW images, give, and
-- replaying the ops must give each shape's SELECT over the final table.  Then
-- range shapes are added (one at a time: inserted into the sorted index; five
-- at a time: re-sorted) and removed between writes, and every change must
-- still carry the ops of exactly the shapes active when it was written.
\set SHOW_CONTEXT never
CREATE TABLE qt (id int PRIMARY KEY, a int, b int, p numeric, s text, ts timestamp);
SELECT shapesync.track('qt');
SELECT setseed(0.15);

-- from_seq/to_seq: the changes a shape sees (registered after from_seq, removed after to_seq)
CREATE TABLE qshapes (shape_id int PRIMARY KEY, w text NOT NULL, from_seq bigint NOT NULL DEFAULT 0,
                      to_seq bigint);
-- a whole-table shape, so that every change is logged (with the filtered shapes' ops)
SELECT created FROM shapesync.get_or_create_shape('qt', NULL, NULL);
DO $$
DECLARE
    w text;
    x int;
    y int;
BEGIN
    FOR k IN 1 .. 160 LOOP
        x := floor(random() * 1000)::int;
        y := x + floor(random() * 300)::int;
        w := CASE CASE WHEN k <= 30 THEN 4 ELSE floor(random() * 14)::int END
            -- ILIKE (rewritten as LIKE of lower() in a multibyte database), non-ASCII included
            WHEN 11 THEN format('s ILIKE %L', '%' || substr('aÉbßcÖdeΣf', 1 + x % 9, 1 + y % 2) || '%')
            WHEN 12 THEN format('s NOT ILIKE %L AND a < %s', substr('ÉÖΣabc', 1 + x % 6, 1) || '%', y)
            WHEN 13 THEN format('a BETWEEN %s AND %s AND s ILIKE %L AND s ILIKE %L', x, y,
                                '%' || chr(97 + x % 26) || '%', '%' || chr(65 + y % 26) || '_%')
            WHEN 0 THEN format('a < %s', x)
            WHEN 1 THEN format('a <= %s', x)
            WHEN 2 THEN format('a > %s', x)
            WHEN 3 THEN format('a >= %s', x)
            WHEN 4 THEN format('a BETWEEN %s AND %s', x, y)
            WHEN 5 THEN format('%s < a AND a <= %s', x, y)
            WHEN 6 THEN format('a BETWEEN %s AND %s AND b = %s', x, y, x % 7)
            WHEN 7 THEN format('a >= %s AND a < %s AND s LIKE %L', x, y, chr(97 + x % 5) || '%')
            WHEN 8 THEN format('p BETWEEN %s AND %s', x / 10.0, y / 10.0)
            WHEN 9 THEN format('ts > %L AND ts <= %L AND b > %s',
                               timestamp '2024-01-01' + x * interval '1 hour',
                               timestamp '2024-01-01' + y * interval '1 hour', x % 5)
            ELSE format('s >= %L AND s < %L', chr(97 + x % 26), chr(97 + y % 26) || 'm')
        END;
        INSERT INTO qshapes SELECT g.shape_id, w FROM shapesync.get_or_create_shape('qt', w, NULL) g
            ON CONFLICT DO NOTHING;
    END LOOP;
END
$$;
SELECT count(*) >= 100 AS enough_shapes, count(*) FILTER (WHERE w LIKE '%ILIKE%') >= 15 AS ilike_shapes
  FROM qshapes;

SELECT last_value AS s0 FROM shapesync.change_seq \gset
-- random rows (some NULLs), then updates that move them, then deletes
INSERT INTO qt
SELECT i,
       CASE WHEN random() < 0.05 THEN NULL ELSE floor(random() * 1400)::int - 100 END,
       floor(random() * 7)::int,
       CASE WHEN random() < 0.05 THEN NULL ELSE round((random() * 140 - 10)::numeric, 2) END,
       CASE WHEN random() < 0.05 THEN NULL
            ELSE chr(97 + floor(random() * 26)::int) || md5(i::text) ||
                 substr('éÉöÖσΣßxyz', 1 + floor(random() * 10)::int, 2) END,
       timestamp '2024-01-01' + floor(random() * 1400) * interval '1 hour'
  FROM generate_series(1, 2500) i;
SELECT range_templates >= 8 AS range_templates, range_filters >= 80 AS range_filters
  FROM shapesync.membership_stats() WHERE relid = 'qt'::regclass;
DO $$
BEGIN
    FOR k IN 1 .. 6 LOOP
        UPDATE qt SET a = CASE WHEN random() < 0.05 THEN NULL ELSE coalesce(a, 500) + floor(random() * 200)::int - 100 END
         WHERE id % 6 = k - 1 AND random() < 0.3;
        UPDATE qt SET p = coalesce(p, 50) + 3, ts = ts + interval '30 hours'
         WHERE id % 11 = k AND random() < 0.3;
        UPDATE qt SET s = chr(97 + floor(random() * 26)::int) || substr('xÉéΣσ', 1 + floor(random() * 5)::int, 1),
                      b = floor(random() * 7)::int
         WHERE id % 13 = k AND random() < 0.3;
        UPDATE qt SET a = a WHERE id % 17 = k;   -- no column changes: no update ops
    END LOOP;
    DELETE FROM qt WHERE random() < 0.05;
END
$$;

-- shapes added and removed between writes (each statement its own transaction)
CREATE FUNCTION pg_temp.addq(n int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    x int;
    w text;
BEGIN
    FOR i IN 1 .. n LOOP
        x := floor(random() * 1000)::int;
        w := format('a BETWEEN %s AND %s', x, x + floor(random() * 200)::int);
        INSERT INTO qshapes
        SELECT g.shape_id, w, (SELECT last_value FROM shapesync.change_seq)
          FROM shapesync.get_or_create_shape('qt', w, NULL) g
            ON CONFLICT DO NOTHING;
    END LOOP;
END
$$;
CREATE FUNCTION pg_temp.dropq() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    sid int;
BEGIN
    SELECT shape_id INTO sid FROM qshapes WHERE to_seq IS NULL AND w LIKE 'a BETWEEN%'
     ORDER BY random() LIMIT 1;
    PERFORM shapesync.invalidate_shape(s.handle, 'test') FROM shapesync.shapes s WHERE s.shape_id = sid;
    UPDATE qshapes SET to_seq = (SELECT last_value FROM shapesync.change_seq) WHERE shape_id = sid;
END
$$;
SELECT full_builds AS fb0 FROM shapesync.cache_stats() WHERE relid = 'qt'::regclass \gset
\set ECHO none
\o /dev/null
SELECT CASE WHEN k % 5 = 0 THEN 'SELECT pg_temp.addq(5)' ELSE 'SELECT pg_temp.addq(1)' END,
       format('UPDATE qt SET a = a + %s WHERE id %% 40 = %s', 7 - k % 13, k),
       CASE WHEN k % 3 = 0 THEN 'SELECT pg_temp.dropq()' ELSE 'SELECT 1' END,
       format('INSERT INTO qt SELECT 10000 + %s * 10 + i, i * 97 %% 1200, i %% 7, i, ''b'' || i, NULL
                 FROM generate_series(1, 10) i', k)
  FROM generate_series(1, 40) k \gexec
\o
\set ECHO all
SELECT count(*) FILTER (WHERE from_seq > 0) AS added, count(*) FILTER (WHERE to_seq IS NOT NULL) AS removed
  FROM qshapes;
-- all of that through incremental refreshes
SELECT full_builds - :fb0 AS more_full_builds FROM shapesync.cache_stats() WHERE relid = 'qt'::regclass;

-- the logged changes of the workload; k numbers them in log order (a
-- transaction's changes share its record's seq and are ordered by ord)
CREATE TEMP TABLE qlog AS
SELECT row_number() OVER (ORDER BY c.seq, c.ord) AS k, c.seq, c.op, c.old_row::jsonb AS old_row, c.new_row::jsonb AS new_row,
       coalesce(c.new_row, c.old_row)->>'id' AS id, c.shape_ops
  FROM shapesync.change_log c WHERE c.seq > :s0 AND c.table_name = 'qt'::regclass;
SELECT count(*) > 3000 AS many_changes, count(*) FILTER (WHERE op NOT IN ('insert', 'update', 'delete')) AS others
  FROM qlog;

-- expected ops per change and shape, from each shape's WHERE on the OLD/NEW images
CREATE TEMP TABLE expected (k bigint, shape_id int, op int);
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT shape_id, w, from_seq, to_seq FROM qshapes LOOP
        EXECUTE format($q$
            INSERT INTO expected
            SELECT l.k, %s,
                   CASE WHEN NOT o.inn AND n.inn THEN 1
                        WHEN o.inn AND n.inn AND l.old_row IS DISTINCT FROM l.new_row THEN 2
                        WHEN o.inn AND NOT n.inn THEN 3 END
              FROM qlog l,
                   LATERAL (SELECT count(*) > 0 AS inn FROM jsonb_populate_record(NULL::qt, l.old_row) q
                             WHERE l.old_row IS NOT NULL AND (%s)) o,
                   LATERAL (SELECT count(*) > 0 AS inn FROM jsonb_populate_record(NULL::qt, l.new_row) q
                             WHERE l.new_row IS NOT NULL AND (%s)) n
             WHERE l.seq > %s AND l.seq <= %s$q$, r.shape_id, r.w, r.w, r.from_seq,
                   coalesce(r.to_seq, 9223372036854775807));
    END LOOP;
END
$$;
DELETE FROM expected WHERE op IS NULL;
CREATE TEMP TABLE actual AS
SELECT l.k, x / 4 AS shape_id, x % 4 AS op FROM qlog l, unnest(l.shape_ops) x;
SELECT count(*) AS expected_ops FROM expected \gset
SELECT :expected_ops > 5000 AS many_ops;
-- differences either way: none
SELECT 'missing' AS what, e.* FROM expected e EXCEPT ALL SELECT 'missing', a.* FROM actual a
UNION ALL
SELECT 'unexpected', a.* FROM actual a EXCEPT ALL SELECT 'unexpected', e.* FROM expected e
ORDER BY 2, 3 LIMIT 10;

-- replaying the ops gives each shape's SELECT over the table
CREATE TEMP TABLE replayed AS
SELECT DISTINCT ON (a.shape_id, l.id) a.shape_id, l.id::int AS id, a.op
  FROM actual a JOIN qlog l USING (k) JOIN qshapes q USING (shape_id)
 WHERE q.from_seq = 0 AND q.to_seq IS NULL
 ORDER BY a.shape_id, l.id, l.k DESC;
CREATE TEMP TABLE brute (shape_id int, id int);
DO $$
DECLARE
    r record;
BEGIN
    -- the shapes that saw the whole workload
    FOR r IN SELECT shape_id, w FROM qshapes WHERE from_seq = 0 AND to_seq IS NULL LOOP
        EXECUTE format('INSERT INTO brute SELECT %s, id FROM qt WHERE %s', r.shape_id, r.w);
    END LOOP;
END
$$;
SELECT count(*) > 1000 AS nonempty FROM brute;
SELECT 'replayed only' AS what, shape_id, id FROM (
    SELECT shape_id, id FROM replayed WHERE op IN (1, 2) EXCEPT SELECT shape_id, id FROM brute) x
UNION ALL
SELECT 'selected only', shape_id, id FROM (
    SELECT shape_id, id FROM brute EXCEPT SELECT shape_id, id FROM replayed WHERE op IN (1, 2)) y
ORDER BY 2, 3 LIMIT 10;
-- the workload ran without a guard subtransaction (LIKE patterns are safe, numeric is whitelisted)
SELECT guard_subtransactions FROM shapesync.membership_stats() WHERE relid = 'qt'::regclass;

DROP TABLE qt, qshapes;
