-- track / untrack
CREATE TABLE items (id int PRIMARY KEY, name text);
SELECT shapesync.track('items');
-- idempotent
SELECT shapesync.track('items');
SELECT relid, tracked_at IS NOT NULL AS has_time FROM shapesync.tracked_tables;
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'items'::regclass ORDER BY tgname;

-- a dropped trigger is re-created by track()
DROP TRIGGER shapesync_truncate ON items;
SELECT shapesync.track('items');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'items'::regclass ORDER BY tgname;

-- untrack
SELECT shapesync.untrack('items');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass;
SELECT count(*) FROM shapesync.tracked_tables;
-- untrack of an untracked table
SELECT shapesync.untrack('items');

-- a table without a primary key
CREATE TABLE nopk (a int, b text);
\set VERBOSITY verbose
SELECT shapesync.track('nopk');
\set VERBOSITY default

-- a view
CREATE VIEW items_view AS SELECT * FROM items;
SELECT shapesync.track('items_view');

-- a partitioned table
CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
SELECT shapesync.track('parted');
-- its partitions can be tracked
SELECT shapesync.track('parted_1');
SELECT shapesync.untrack('parted_1');

-- system catalogs, temporary tables, the extension's own tables
SELECT shapesync.track('pg_class');
CREATE TEMP TABLE tmp_items (id int PRIMARY KEY);
SELECT shapesync.track('tmp_items');
SELECT shapesync.track('shapesync.ticks');
SELECT shapesync.track('shapesync.changes');
-- an index, a sequence
SELECT shapesync.track('items_pkey');
CREATE SEQUENCE some_seq;
SELECT shapesync.track('some_seq');
-- NULL
SELECT shapesync.track(NULL);

-- a non-owner cannot track
CREATE ROLE shapesync_nobody;
GRANT USAGE ON SCHEMA shapesync TO shapesync_nobody;
GRANT EXECUTE ON FUNCTION shapesync.track(regclass) TO shapesync_nobody;
SET ROLE shapesync_nobody;
SELECT shapesync.track('items');
RESET ROLE;
REVOKE ALL ON FUNCTION shapesync.track(regclass) FROM shapesync_nobody;
REVOKE ALL ON SCHEMA shapesync FROM shapesync_nobody;
DROP ROLE shapesync_nobody;

DROP VIEW items_view;
DROP TABLE items, nopk, parted, tmp_items;
DROP SEQUENCE some_seq;
