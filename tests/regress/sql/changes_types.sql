-- what the change log records, for many types; decoding happens in the
-- reader's session, so the writer's TimeZone/DateStyle do not matter
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
    id    int PRIMARY KEY,
    i2    int2,
    i4    int4,
    i8    int8,
    n     numeric,
    f8    float8,
    b     bool,
    t     text,
    vc    varchar(10),
    bp    char(5),
    ia    int[],
    ta    text[],
    ia2   int[][],
    jb    jsonb,
    js    json,
    by    bytea,
    u     uuid,
    d     date,
    ts    timestamp,
    tstz  timestamptz,
    iv    interval,
    e     mood
);
SELECT shapesync.track('typed');
-- a whole-table shape: the trigger logs every change of the table
SELECT created FROM shapesync.get_or_create_shape('typed', NULL, NULL);
SELECT coalesce(max(seq), 0) AS s0 FROM shapesync.changes \gset

-- the writer uses unusual display settings
SET TimeZone = 'America/New_York';
SET DateStyle = 'SQL, DMY';
SET IntervalStyle = 'postgres_verbose';
SET extra_float_digits = 0;
INSERT INTO typed VALUES (
    1, -32768, 2147483647, -9223372036854775808, 12345.678900, 1.5, true,
    E'it''s a "quote" \\ back\\slash, ünïcødé ✓ 😀', 'varchar', 'ab',
    '{1,2,3}', '{"a",NULL,"c d","e\"f"}', '{{1,2},{3,4}}',
    '{"b": [1, 2, {"c": null}], "a": "x"}', '{"b":1,   "a":2}', '\x00ff10',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-01-02 03:04:05.123456',
    '2024-01-02 03:04:05+00', '1 year 2 mons 3 days 04:05:06.5', 'happy');
INSERT INTO typed (id) VALUES (2);
INSERT INTO typed (id, f8) VALUES (3, 'Infinity'), (4, '-Infinity'), (5, 'NaN');
UPDATE typed SET t = 'changed', bp = 'xyz' WHERE id = 1;
DELETE FROM typed WHERE id = 2;

-- the reader decodes with its own settings
RESET TimeZone;
RESET DateStyle;
RESET IntervalStyle;
RESET extra_float_digits;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, DMY';

-- the changes since s0 numbered in order (a transaction's changes may share
-- one record: op B), and the same with the raw columns of each change
CREATE TEMP VIEW lg AS
    SELECT row_number() OVER (ORDER BY c.seq, c.ord) AS n, c.* FROM shapesync.change_log c WHERE c.seq > :s0;
CREATE TEMP VIEW ent AS
    SELECT row_number() OVER (ORDER BY c.seq, e.ord) AS n, c.xid, e.*
      FROM shapesync.changes c,
           LATERAL shapesync.change_entries(c.op, c.relid, c.layout, c.new_row, c.old_row,
                                            c.shape_ops, c.error, c.version) e
     WHERE c.seq > :s0;

SELECT n, table_name, op FROM lg ORDER BY n;

-- every column of the first insert, as output text
SELECT k.key, quote_nullable(k.value) AS value
  FROM lg c, json_each_text(c.new_row) WITH ORDINALITY k
 WHERE c.n = 1 ORDER BY k.ordinality;

-- row_values: by attnum, SQL NULL for NULL
SELECT shapesync.row_values(relid, layout, new_row)
  FROM ent WHERE n = 2;
SELECT array_length(shapesync.row_values(relid, layout, new_row), 1) AS natts,
       array_lower(shapesync.row_values(relid, layout, new_row), 1) AS lower_bound
  FROM ent WHERE n = 1;

-- floats
SELECT (shapesync.row_values(relid, layout, new_row))[6] AS f8
  FROM ent WHERE n BETWEEN 3 AND 5 ORDER BY n;

-- the reader's TimeZone decides how timestamptz is shown
SET TimeZone = 'Asia/Tokyo';
SELECT new_row->>'tstz' AS tstz_tokyo FROM lg WHERE n = 1;
SET TimeZone = 'UTC';

-- update: old and new images; delete: old image only
SELECT op, new_row->>'t' AS new_t, new_row->>'bp' AS new_bp, old_row->>'t' AS old_t,
       old_row->>'bp' AS old_bp
  FROM lg WHERE n = 6;
SELECT op, new_row, old_row FROM lg WHERE n = 7;

-- raw columns of the log: the third statement's three rows are one B record
SELECT op, relid = 'typed'::regclass AS relid_ok, new_row IS NULL AS no_new, old_row IS NULL AS no_old,
       CASE WHEN op = 'B' THEN layout END AS changes
  FROM shapesync.changes WHERE seq > :s0 ORDER BY seq;
-- and its changes
SELECT n, op, relid = 'typed'::regclass AS relid_ok, new_row IS NULL AS no_new, old_row IS NULL AS no_old
  FROM ent ORDER BY n;
-- one xid per transaction (five statements, the third inserts three rows)
SELECT count(DISTINCT xid) AS transactions FROM shapesync.changes WHERE seq > :s0;
SELECT count(*) AS rows_of_third FROM ent
 WHERE xid = (SELECT xid FROM ent WHERE n = 3);

-- a large toasted value, decoded after the source row changed and was vacuumed
CREATE TABLE big (id int PRIMARY KEY, payload text);
ALTER TABLE big ALTER COLUMN payload SET STORAGE EXTERNAL;
SELECT shapesync.track('big');
-- a whole-table shape: the trigger logs every change of the table
SELECT created FROM shapesync.get_or_create_shape('big', NULL, NULL);
SELECT coalesce(max(seq), 0) AS s1 FROM shapesync.changes \gset
INSERT INTO big SELECT 1, string_agg(md5(i::text), '') FROM generate_series(1, 1000) i;
SELECT length(payload) AS len, md5(payload) AS expected_md5 FROM big;
UPDATE big SET payload = 'small';
VACUUM big;
SELECT op, length(new_row->>'payload') AS len, md5(new_row->>'payload') AS md5
  FROM shapesync.change_log WHERE seq > :s1 ORDER BY seq;
SELECT length(old_row->>'payload') AS old_len, md5(old_row->>'payload') AS old_md5
  FROM shapesync.change_log WHERE seq = :s1 + 2;

DROP TABLE typed, big;
DROP TYPE mood;
