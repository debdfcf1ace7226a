-- Hostile input and least privilege (docs/security.md, "Database side")
CREATE TABLE sec_items (id int PRIMARY KEY, title text, owner text);
INSERT INTO sec_items VALUES (1, 'a', 'u1'), (2, 'b', 'u2');
SELECT shapesync.track('sec_items');

------------------------------------------------------------------------
-- check_shape(): a rejected filter comes back as data, not as an ERROR
------------------------------------------------------------------------
SELECT canonical_where, error_field, error_code, error_message, error_position
  FROM shapesync.check_shape('sec_items', 'title = ''a''');
SELECT canonical_where, error_field, error_code, error_message, error_detail, error_hint, error_position
  FROM shapesync.check_shape('sec_items', 'title = = 1');
SELECT error_field, error_code, error_message, error_position
  FROM shapesync.check_shape('sec_items', 'nope = 1');
SELECT error_field, error_code, error_message
  FROM shapesync.check_shape('sec_items', 'title = random()::text');
SELECT error_field, error_code, error_message
  FROM shapesync.check_shape('sec_items', 'id = $1', '{abc}');
-- no filter: nothing to check but row-level security
SELECT canonical_where, error_code FROM shapesync.check_shape('sec_items', NULL);
SELECT canonical_where, error_code FROM shapesync.check_shape('sec_items', '  ');
-- the transaction goes on after a rejected filter (the subtransaction is gone)
BEGIN;
SELECT error_code FROM shapesync.check_shape('sec_items', '1/0 = 1');
SELECT count(*) FROM sec_items;
COMMIT;

------------------------------------------------------------------------
-- Constant folding is bounded in time and in the size of what it leaves
------------------------------------------------------------------------
-- a constant over shapesync.filter_max_constant_bytes (1 MB)
SELECT error_code, error_message, error_detail
  FROM shapesync.check_shape('sec_items', 'repeat(''y'', 2000000) = title');
SELECT * FROM shapesync.parse_where('sec_items', 'title = repeat(''y'', 2000000)');
-- the size of the folded constant counts, not the text of the filter
SELECT error_code FROM shapesync.check_shape('sec_items', 'title = repeat(repeat(''y'', 1024), 2000)');
SELECT canonical_where FROM shapesync.check_shape('sec_items', 'title = repeat(''y'', 10)');
-- repeat('y', 1000000000) would take seconds and a gigabyte: cut by the timer
SET shapesync.filter_fold_timeout = '20ms';
SELECT error_code, error_message, error_detail
  FROM shapesync.check_shape('sec_items', 'repeat(''y'', 1000000000) = title');
SELECT error_message FROM shapesync.check_shape('sec_items', 'length(repeat(repeat(''y'', 1000), 1000000)) = id');
-- the shape registration raises it (no handle, no registry row)
SELECT * FROM shapesync.get_or_create_shape('sec_items', 'repeat(''y'', 1000000000) = title', NULL);
SELECT count(*) FROM shapesync.shapes WHERE where_clause LIKE '%yyyy%';
RESET shapesync.filter_fold_timeout;
-- the timer does not fire later in the session
SELECT pg_sleep(0.3);
SELECT 1 AS still_alive;

------------------------------------------------------------------------
-- Row-level security: a shape is refused when RLS applies to the caller
------------------------------------------------------------------------
CREATE TABLE sec_rls (id int PRIMARY KEY, owner text);
INSERT INTO sec_rls VALUES (1, 'u1'), (2, 'u2');
SELECT shapesync.track('sec_rls');
SELECT handle AS hr FROM shapesync.get_or_create_shape('sec_rls', 'id > 0', NULL) \gset
-- enabling RLS is an ALTER TABLE: it invalidates the table's shapes
ALTER TABLE sec_rls ENABLE ROW LEVEL SECURITY;
SELECT state, reason FROM shapesync.shapes WHERE handle = :'hr';
CREATE POLICY only_u1 ON sec_rls FOR SELECT USING (owner = 'u1');
CREATE ROLE shapesync_test_sidecar LOGIN;
SELECT shapesync.grant_sidecar('shapesync_test_sidecar');
SET ROLE shapesync_test_sidecar;
SELECT count(*) AS rows_seen FROM sec_rls;   -- the snapshot would be filtered
SELECT * FROM shapesync.get_or_create_shape('sec_rls', NULL, NULL);
SELECT * FROM shapesync.get_or_create_shape('sec_rls', 'id > 0', NULL);
SELECT error_field, error_code, error_message, error_detail, error_hint
  FROM shapesync.check_shape('sec_rls', 'id > 0');
-- tables without RLS are fine for the same role
SELECT created FROM shapesync.get_or_create_shape('sec_items', 'id > 0', NULL);
RESET ROLE;
-- the owner is not subject to the policy (unless FORCE): allowed
SELECT created FROM shapesync.get_or_create_shape('sec_rls', NULL, NULL);
-- FORCE ROW LEVEL SECURITY applies to a non-superuser owner too
CREATE ROLE shapesync_test_owner;
ALTER TABLE sec_rls OWNER TO shapesync_test_owner;
ALTER TABLE sec_rls FORCE ROW LEVEL SECURITY;
GRANT USAGE ON SCHEMA shapesync TO shapesync_test_owner;
GRANT EXECUTE ON FUNCTION shapesync.check_shape(regclass, text, text[]) TO shapesync_test_owner;
SET ROLE shapesync_test_owner;
SELECT error_code FROM shapesync.check_shape('sec_rls', NULL);
RESET ROLE;
-- a BYPASSRLS role is fine
ALTER ROLE shapesync_test_sidecar BYPASSRLS;
SET ROLE shapesync_test_sidecar;
SELECT error_code FROM shapesync.check_shape('sec_rls', NULL);
SELECT created FROM shapesync.get_or_create_shape('sec_rls', 'id > 1', NULL);
RESET ROLE;
ALTER ROLE shapesync_test_sidecar NOBYPASSRLS;

------------------------------------------------------------------------
-- Least privilege: everything shapesyncd does, as a grant_sidecar() role
------------------------------------------------------------------------
SET ROLE shapesync_test_sidecar;
SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user;
-- catalog look-up of a table
SELECT c.relname, EXISTS (SELECT 1 FROM shapesync.tracked t WHERE t.relid = c.oid) AS tracked
  FROM pg_class c WHERE c.oid = 'sec_items'::regclass;
-- registration, wait, snapshot claim, snapshot, chunks, report
SELECT handle AS h FROM shapesync.get_or_create_shape('sec_items', 'owner = ''u1''', '{id,title,owner}') \gset
SELECT shapesync.wait_for_writers('sec_items');
SELECT pg_try_advisory_lock(21320, 1) AS locked;
INSERT INTO shapesync.shape_snapshots (handle, snap, start_tick, chunk_count, row_count) VALUES (:'h', '1:1:', 0, NULL, NULL);
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT pg_current_snapshot() IS NOT NULL AS snap, coalesce((SELECT max(tick_id) FROM shapesync.ticks), 0) > 0 AS tick;
COPY (SELECT "id", "title", "owner" FROM ONLY "public"."sec_items" WHERE (owner = 'u1'::text)) TO STDOUT;
COMMIT;
INSERT INTO shapesync.shape_snapshot_chunks (handle, chunk_no, body) VALUES (:'h', 0, '[]');
UPDATE shapesync.shape_snapshots SET chunk_count = 1, row_count = 1, snap = '1:1:', start_tick = 1 WHERE handle = :'h';
SELECT chunk_count FROM shapesync.shape_snapshots WHERE handle = :'h';
SELECT body FROM shapesync.shape_snapshot_chunks WHERE handle = :'h' ORDER BY chunk_no;
SELECT shapesync.report_shape(:'h', 1, '0_inf');
SELECT shapesync.report_shapes(ARRAY[:'h'], ARRAY['1_0']);
SELECT pg_advisory_unlock(21320, 1) AS unlocked;
-- change log, ticks, consumers, retention, subsets, invalidation polling
LISTEN shapesync;
SET synchronous_commit = on;
SELECT t IS NULL OR t > 0 AS ticked FROM shapesync.tick(true) t;
SELECT count(*) >= 0 AS batch_ok FROM shapesync.batch((SELECT max(tick_id) FROM shapesync.ticks));
SELECT shapesync.consumer_report('test-sidecar', 1) >= 0 AS reported;
SELECT dropped_consumers >= 0 AS maintained FROM shapesync.maintain();
SELECT horizon_tick >= 0 AS horizon FROM shapesync.log_state;
SELECT canonical_where FROM shapesync.parse_where('sec_items', 'id = 1');
SELECT count(*) FROM shapesync.shapes WHERE handle = :'h';
SELECT shapesync.worker_pid() IS NULL OR true AS worker;
SELECT extversion FROM pg_extension WHERE extname = 'shapesync';
DELETE FROM shapesync.shape_snapshots WHERE handle = :'h' AND chunk_count IS NULL;
SELECT shapesync.invalidate_shape(:'h', 'test');
UNLISTEN shapesync;
-- and nothing more
SELECT * FROM shapesync.shape_registry LIMIT 0;
INSERT INTO shapesync.ticks (tick_id, snap, max_seq) VALUES (1000000, '1:1:', 0);
SELECT * FROM shapesync.sidecar_roles;
SELECT shapesync.grant_sidecar('shapesync_test_sidecar');
SELECT shapesync.track('sec_items');
SELECT shapesync.consumer_drop('test-sidecar');
CREATE TABLE sec_untracked_check (id int);
RESET ROLE;
SELECT shapesync.consumer_drop('test-sidecar');

-- a table tracked later is granted to the sidecar roles by track()
CREATE TABLE sec_later (id int PRIMARY KEY);
SET ROLE shapesync_test_sidecar;
SELECT count(*) FROM sec_later;
RESET ROLE;
SELECT shapesync.track('sec_later');
SET ROLE shapesync_test_sidecar;
SELECT count(*) FROM sec_later;
RESET ROLE;
-- unknown role
SELECT shapesync.grant_sidecar('no_such_role');

------------------------------------------------------------------------
-- Inheritance: a tracked parent serves its own rows only
------------------------------------------------------------------------
CREATE TABLE sec_parent (id int PRIMARY KEY, v text);
CREATE TABLE sec_child () INHERITS (sec_parent);
INSERT INTO sec_parent VALUES (1, 'parent');
INSERT INTO sec_child VALUES (2, 'child');
SELECT shapesync.track('sec_parent');
-- the shape queries read FROM ONLY the tracked table
SELECT count(*) AS all_rows, (SELECT count(*) FROM ONLY sec_parent) AS own_rows FROM sec_parent;

-- clean up
SELECT shapesync.revoke_sidecar('shapesync_test_sidecar');
SELECT count(*) FROM shapesync.sidecar_roles;
DROP TABLE sec_items, sec_rls, sec_later, sec_parent, sec_child;
REVOKE ALL ON SCHEMA shapesync FROM shapesync_test_sidecar, shapesync_test_owner;
REVOKE ALL ON SCHEMA public FROM shapesync_test_sidecar;
REVOKE ALL ON FUNCTION shapesync.check_shape(regclass, text, text[]) FROM shapesync_test_owner;
DROP ROLE shapesync_test_sidecar, shapesync_test_owner;
