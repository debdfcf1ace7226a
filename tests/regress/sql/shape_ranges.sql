-- range templates: "column < c", "<=", ">", ">=", BETWEEN find their shapes
-- through a sorted index on the constants; LIKE/ILIKE with a safe constant
-- pattern runs without the guard subtransaction
\set SHOW_CONTEXT never
CREATE TABLE rt (id int PRIMARY KEY, n int, n8 bigint, price numeric, title text,
                 at timestamp, atz timestamptz, v varchar(20), born date);
SELECT shapesync.track('rt');

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
CREATE FUNCTION pg_temp.log(after bigint)
RETURNS TABLE (n bigint, op text, id text, ops text) LANGUAGE sql AS $$
    SELECT row_number() OVER (ORDER BY c.seq, c.ord), c.op, coalesce(c.new_row, c.old_row)->>'id', pg_temp.ops(c.shape_ops)
      FROM shapesync.change_log c WHERE c.seq > after AND c.table_name = 'rt'::regclass ORDER BY c.seq, c.ord
$$;
-- counters of this backend's cache of rt since the last call
CREATE TEMP TABLE last_stats AS SELECT 0::bigint AS rows, 0::bigint AS evals, 0::bigint AS subx;
CREATE FUNCTION pg_temp.stats_delta() RETURNS TABLE (rows bigint, evals bigint, subx bigint)
LANGUAGE sql AS $$
    WITH s AS (SELECT rows_classified, filter_evaluations, guard_subtransactions
                 FROM shapesync.membership_stats() WHERE relid = 'rt'::regclass),
    d AS (SELECT s.rows_classified - l.rows AS rows, s.filter_evaluations - l.evals AS evals,
                 s.guard_subtransactions - l.subx AS subx FROM s, last_stats l),
    u AS (UPDATE last_stats SET rows = s.rows_classified, evals = s.filter_evaluations,
                                subx = s.guard_subtransactions FROM s RETURNING 1)
    SELECT d.* FROM d, (SELECT count(*) FROM u) x
$$;

-- every operator form, both ways round, with the boundary equal to the constant
SELECT pg_temp.shape(l, 'rt', w) FROM (VALUES
    ('lt10', 'n < 10'),
    ('le10', 'n <= 10'),
    ('gt10', 'n > 10'),
    ('ge10', 'n >= 10'),
    ('c_gt', '10 > n'),
    ('c_ge', '10 >= n'),
    ('c_lt', '10 < n'),
    ('btw', 'n BETWEEN 5 AND 15'),
    ('open', 'n > 5 AND n < 15'),
    ('btw_eq', 'n BETWEEN 5 AND 15 AND title = ''x'''),
    ('btw_like', 'n BETWEEN 5 AND 15 AND title LIKE ''a%''')) s(l, w);
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO rt (id, n, title) VALUES (1, 4, 'x');
INSERT INTO rt (id, n, title) VALUES (2, 5, 'abc');
INSERT INTO rt (id, n, title) VALUES (3, 10, 'x');
INSERT INTO rt (id, n, title) VALUES (4, 15, 'a');
INSERT INTO rt (id, n, title) VALUES (5, 16, 'x');
INSERT INTO rt (id, n, title) VALUES (6, NULL, 'x');      -- NULL never matches
SELECT * FROM pg_temp.log(:s0);
-- every template has a range index (btw_eq finds its shapes through the equality on title)
SELECT range_templates, range_filters, scan_filters, guarded_filters
  FROM shapesync.membership_stats() WHERE relid = 'rt'::regclass;

-- UPDATE moving a row into, within and out of ranges
SELECT last_value AS s0 FROM shapesync.change_seq \gset
UPDATE rt SET n = 9 WHERE id = 1;          -- 4 -> 9: into btw, open
UPDATE rt SET n = 12 WHERE id = 1;         -- 9 -> 12: within btw/open, out of lt10/le10, into gt10/ge10
UPDATE rt SET title = 'x2' WHERE id = 1;   -- same n: updates only
UPDATE rt SET n = 15, title = 'x' WHERE id = 1;  -- boundary: out of open, into btw_eq
UPDATE rt SET n = NULL WHERE id = 1;       -- out of everything
UPDATE rt SET n = 10 WHERE id = 6;         -- NULL -> 10: in
DELETE FROM rt WHERE id = 3;
SELECT * FROM pg_temp.log(:s0);

-- the index, not a scan: a row is compared with the candidates only
TRUNCATE rt;    -- also invalidates the table's shapes
SELECT pg_temp.shape('p' || k, 'rt', format('n BETWEEN %s AND %s', k * 100, k * 100 + 99))
  FROM generate_series(0, 99) k;
INSERT INTO rt (id, n) VALUES (0, 0);
SELECT * FROM pg_temp.stats_delta() \gset
INSERT INTO rt (id, n) SELECT i, i * 37 % 10000 FROM generate_series(1, 200) i;
UPDATE rt SET n = n + 150 WHERE id <= 100;
-- 200 inserts and 101 updates: an insert evaluates its one candidate, an update
-- its one or two candidates on OLD and NEW: at most 200 + 101 * 4 evaluations,
-- not 100 per row image (30 100)
SELECT rows, evals, subx FROM pg_temp.stats_delta();
SELECT count(*) AS rows_in_log, sum(cardinality(shape_ops)) AS shape_ops
  FROM shapesync.change_log WHERE table_name = 'rt'::regclass AND seq > :s0;

-- shapes added and removed while the cache is compiled: no full rebuild
SELECT full_builds AS fb0 FROM shapesync.cache_stats() WHERE relid = 'rt'::regclass \gset
SELECT last_value AS s0 FROM shapesync.change_seq \gset
SELECT pg_temp.shape('late', 'rt', 'n >= 1000 AND n < 1050');
UPDATE rt SET n = 1010 WHERE id = 0;
SELECT shapesync.invalidate_shape(s.handle, 'test') FROM shapesync.shapes s JOIN labels l USING (shape_id)
 WHERE l.label IN ('p10', 'late');
UPDATE rt SET n = 1020 WHERE id = 0;
SELECT * FROM pg_temp.log(:s0);
SELECT full_builds - :fb0 AS more_full_builds, incremental_builds > 0 AS incremental
  FROM shapesync.cache_stats() WHERE relid = 'rt'::regclass;

-- shapes that differ only in their columns share one filter of the range index
SELECT pg_temp.shape('p20_a', 'rt', 'n BETWEEN 2000 AND 2099', '{id,n}');
SELECT pg_temp.shape('p20_b', 'rt', 'n BETWEEN 2000 AND 2099', '{id}');
SELECT last_value AS s0 FROM shapesync.change_seq \gset
UPDATE rt SET n = 2050 WHERE id = 0;
SELECT range_filters FROM shapesync.membership_stats() WHERE relid = 'rt'::regclass;
UPDATE rt SET n = 2051 WHERE id = 0;
SELECT shapesync.invalidate_shape(s.handle, 'test') FROM shapesync.shapes s JOIN labels l USING (shape_id)
 WHERE l.label IN ('p20', 'p20_a');
UPDATE rt SET n = 2150 WHERE id = 0;
SELECT range_filters FROM shapesync.membership_stats() WHERE relid = 'rt'::regclass;
SELECT * FROM pg_temp.log(:s0);

-- other types: numeric, timestamps, text with collations, varchar
TRUNCATE rt;    -- also invalidates the table's shapes
SELECT pg_temp.shape(l, 'rt', w) FROM (VALUES
    ('num', 'price BETWEEN 1.5 AND 2.50'),
    ('num_gt', 'price > 2.5'),
    ('ts', 'at >= ''2024-01-01'' AND at < ''2024-02-01'''),
    ('tstz', 'atz > ''2024-01-01 00:00:00+00'''),
    ('big', 'n8 > 5000000000'),
    ('txt_c', 'title < ''b'' COLLATE "C"'),
    ('txt_icu', 'title < ''b'' COLLATE "und-x-icu"'),
    ('txt_rng', 'title >= ''apple'' AND title <= ''banana'''),
    ('vc', 'v > ''m''')) s(l, w);
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO rt (id, price) VALUES (1, 1.5), (2, 2.5), (3, 2.500001), (4, 'NaN');
INSERT INTO rt (id, at, atz) VALUES (5, '2024-01-01', '2024-01-01 00:00:00+00'),
                                    (6, '2024-01-31 23:59:59.999999', '2024-01-01 00:00:00.000001+00'),
                                    (7, '2024-02-01', 'infinity');
INSERT INTO rt (id, n8) VALUES (8, 5000000000), (9, 5000000001);
INSERT INTO rt (id, title) VALUES (10, 'B'), (11, 'a'), (12, 'apple'), (13, 'banana'), (14, 'bananas');
INSERT INTO rt (id, v) VALUES (15, 'm'), (16, 'mm');
SELECT * FROM pg_temp.log(:s0);
SELECT range_templates, range_filters, scan_filters, guarded_filters
  FROM shapesync.membership_stats() WHERE relid = 'rt'::regclass;
-- none of these needed a subtransaction (numeric comparison is on the whitelist)
SELECT subx FROM pg_temp.stats_delta();

-- the whitelist: LIKE/ILIKE with a safe constant pattern needs no subtransaction
TRUNCATE rt;    -- also invalidates the table's shapes
SELECT pg_temp.shape(l, 'rt', w) FROM (VALUES
    ('ilike_ab', 'title ILIKE ''%ab%'''),
    ('ilike_cd', 'title ILIKE ''%cd%'''),
    ('like_esc', 'title LIKE ''50\%%'''),
    ('notlike', 'v NOT LIKE ''z%''')) s(l, w);
SELECT * FROM pg_temp.stats_delta() \gset
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO rt (id, title, v) VALUES (1, 'xABy', 'a'), (2, 'cd', 'zz'), (3, '50% off', NULL);
UPDATE rt SET title = 'abcd' WHERE id = 1;
UPDATE rt SET v = 'b' WHERE id = 1;        -- title unchanged: its filters are evaluated on OLD only
SELECT * FROM pg_temp.log(:s0);
-- 3 inserts x 4 filters; then 3 title filters on OLD and NEW + notlike on OLD only;
-- then the title filters on OLD only + notlike on both: 12 + 7 + 5
SELECT rows, evals, subx FROM pg_temp.stats_delta();
SELECT guarded_filters FROM shapesync.membership_stats() WHERE relid = 'rt'::regclass;
-- the other whitelisted forms: LIKE on char(n), name and bytea, ILIKE on name, text(bpchar)
CREATE TABLE wt (id int PRIMARY KEY, c char(5), nm name, b bytea);
SELECT shapesync.track('wt');
SELECT pg_temp.shape(l, 'wt', w) FROM (VALUES
    ('c_like', 'c LIKE ''ab%'''),
    ('nm_like', 'nm LIKE ''x_'''),
    ('nm_ilike', 'nm ILIKE ''%Q%'''),
    ('b_like', 'b LIKE ''AB%''::bytea'),
    ('c_text', 'c::text < ''b''')) s(l, w);
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO wt VALUES (1, 'abc', 'xy', '\x414243'), (2, 'zz', 'aqa', '\x4241');
UPDATE wt SET c = 'ab', nm = 'xyz' WHERE id = 1;
SELECT c.seq - :s0 AS n, c.op, pg_temp.ops(c.shape_ops) AS ops
  FROM shapesync.change_log c WHERE c.seq > :s0 AND c.table_name = 'wt'::regclass ORDER BY c.seq;
SELECT guarded_filters, guard_subtransactions FROM shapesync.membership_stats() WHERE relid = 'wt'::regclass;
DROP TABLE wt;
-- a value larger than shapesync.unguarded_like_max_bytes goes through the guard
SET shapesync.unguarded_like_max_bytes = 8;
INSERT INTO rt (id, title) VALUES (4, 'short'), (5, 'a longer title with ab');
UPDATE rt SET title = 'tiny' WHERE id = 5;      -- OLD is long: guarded
UPDATE rt SET title = 'tinier' WHERE id = 5;    -- both short
SELECT rows, evals, subx FROM pg_temp.stats_delta();
RESET shapesync.unguarded_like_max_bytes;
-- a pattern ending with an escape character may raise: that shape runs under the
-- guard, and its error becomes an 'X' row while the write goes through
SELECT pg_temp.shape('bad_pat', 'rt', 'title LIKE ''ab\''');
SELECT pg_temp.shape('cast', 'rt', 'born::timestamp < ''2000-01-01''');
SELECT last_value AS s0 FROM shapesync.change_seq \gset
INSERT INTO rt (id, title, born) VALUES (6, 'abc', '1999-01-01');  -- bad_pat raises
INSERT INTO rt (id, title, born) VALUES (7, 'zz', '5874897-01-01'); -- cast raises
SELECT id, title FROM rt WHERE id IN (6, 7) ORDER BY id;
SELECT c.seq - :s0 AS n, c.op, pg_temp.ops(c.shape_ops) AS ops, c.error
  FROM shapesync.change_log c WHERE c.seq > :s0 AND c.table_name = 'rt'::regclass ORDER BY c.seq;
SELECT guarded_filters FROM shapesync.membership_stats() WHERE relid = 'rt'::regclass;
SELECT subx > 0 AS guarded FROM pg_temp.stats_delta();

DROP TABLE rt, labels;
