\set SHOW_CONTEXT never
-- one connection registering many shapes: the lookup of a definition is
-- planned for its key each time, so it probes the definition index once the
-- registry has grown; a plan cached while the registry was small scanned
-- every active shape of the table for every registration (a burst of 3 000
-- on one connection read 4.5 million index entries; now ~100 000 in all,
-- while the registry is small enough for a scan to look as cheap)
CREATE TABLE reg_plan (id int PRIMARY KEY, owner_id int NOT NULL);
SELECT shapesync.track('reg_plan') IS NOT NULL AS tracked;
SELECT pg_stat_force_next_flush();
SELECT coalesce(sum(idx_tup_read), 0) AS before FROM pg_stat_user_indexes
 WHERE indexrelname = 'shape_registry_active_relid' \gset
SET plan_cache_mode = force_generic_plan;
DO $$
BEGIN
    FOR g IN 1..3000 LOOP
        PERFORM shapesync.get_or_create_shape('reg_plan', 'owner_id = ' || g, NULL);
    END LOOP;
END
$$;
RESET plan_cache_mode;
SELECT pg_stat_force_next_flush();
SELECT count(*) AS registered FROM shapesync.shapes WHERE table_name = 'reg_plan'::regclass;
SELECT coalesce(sum(idx_tup_read), 0) - :before < 3000 * 100 AS at_most_100_per_registration FROM pg_stat_user_indexes
 WHERE indexrelname = 'shape_registry_active_relid';
SELECT shapesync.untrack('reg_plan') IS NOT NULL AS untracked;
DROP TABLE reg_plan;
