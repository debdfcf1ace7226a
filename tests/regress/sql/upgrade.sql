-- The upgrade chain: CREATE EXTENSION shapesync VERSION '0.1.0' (the frozen
-- install script of the first release) followed by ALTER EXTENSION UPDATE
-- gives the same catalog as a fresh install of the current version, and a
-- database holding tracked tables, shapes and changes loses none of them.

-- Everything the extension puts in the catalog, as (object, definition) text.
CREATE FUNCTION public.shapesync_catalog() RETURNS TABLE (object text, definition text)
    LANGUAGE sql STABLE
AS $$
    WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'shapesync'),
    members AS (
        SELECT d.classid, d.objid FROM pg_depend d, ext
         WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
    rels AS (SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'shapesync'::regnamespace)
    SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0),
           CASE m.classid
             WHEN 'pg_proc'::regclass THEN
                 pg_get_functiondef(m.objid) || ' acl=' || coalesce((SELECT p.proacl::text FROM pg_proc p WHERE p.oid = m.objid), '')
             WHEN 'pg_class'::regclass THEN
                 (SELECT c.relkind::text || ' persistence=' || c.relpersistence::text || ' acl=' || coalesce(c.relacl::text, '')
                         || ' options=' || coalesce(c.reloptions::text, '')
                         || ' view=' || coalesce(pg_get_viewdef(c.oid), '')
                         || ' inherits=' || coalesce((SELECT string_agg(i.inhparent::regclass::text, ',') FROM pg_inherits i WHERE i.inhrelid = c.oid), '')
                         || ' columns=' || coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                                          || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                                                          || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
                                                          || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
                                                          || CASE WHEN a.attcompression <> '' THEN ' compression ' || a.attcompression::text ELSE '' END
                                                          || CASE WHEN a.attstorage <> t.typstorage THEN ' storage ' || a.attstorage::text ELSE '' END,
                                                          ', ' ORDER BY a.attnum)
                                                       FROM pg_attribute a
                                                       JOIN pg_type t ON t.oid = a.atttypid
                                                      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                                                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
                    FROM pg_class c WHERE c.oid = m.objid)
             WHEN 'pg_event_trigger'::regclass THEN
                 (SELECT e.evtevent || ' ' || e.evtfoid::regproc::text || ' ' || coalesce(e.evttags::text, '') || ' ' || e.evtenabled::text
                    FROM pg_event_trigger e WHERE e.oid = m.objid)
             ELSE ''
           END
      FROM members m
    UNION ALL
    SELECT 'constraint ' || con.conrelid::regclass || '.' || con.conname, pg_get_constraintdef(con.oid)
      FROM pg_constraint con WHERE con.conrelid IN (SELECT oid FROM rels)
    UNION ALL
    SELECT 'index ' || i.indexrelid::regclass, pg_get_indexdef(i.indexrelid)
      FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rels)
    UNION ALL
    SELECT 'trigger ' || t.tgname, pg_get_triggerdef(t.oid)
      FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rels) AND NOT t.tgisinternal
    UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass,
           format('%s start %s inc %s min %s max %s owned by %s', s.seqtypid::regtype, s.seqstart, s.seqincrement,
                  s.seqmin, s.seqmax,
                  (SELECT pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid AND d.deptype = 'a'))
      FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rels)
    UNION ALL
    SELECT 'comment ' || pg_describe_object(dc.classoid, dc.objoid, dc.objsubid), dc.description
      FROM pg_description dc
     WHERE (dc.classoid, dc.objoid) IN (SELECT classid, objid FROM members)
        OR (dc.classoid = 'pg_class'::regclass AND dc.objoid IN (SELECT oid FROM rels))
    UNION ALL
    SELECT 'extension config', coalesce((SELECT string_agg(x::regclass::text || ':' || coalesce(cond, ''), ', ' ORDER BY x::regclass::text)
                                           FROM unnest(e.extconfig, e.extcondition) AS u(x, cond)), '')
      FROM pg_extension e WHERE e.extname = 'shapesync'
    UNION ALL
    SELECT 'schema acl', coalesce(n.nspacl::text, '') FROM pg_namespace n WHERE n.nspname = 'shapesync';
$$;

-- a fresh install of the current version (earlier tests changed grants)
DROP EXTENSION shapesync CASCADE;
CREATE EXTENSION shapesync;
SELECT extversion FROM pg_extension WHERE extname = 'shapesync';
CREATE TEMP TABLE fresh AS SELECT * FROM public.shapesync_catalog();
SELECT count(*) > 100 AS many_objects FROM fresh;

-- the first release, holding data
DROP EXTENSION shapesync CASCADE;
CREATE EXTENSION shapesync VERSION '0.1.0';
SELECT extversion FROM pg_extension WHERE extname = 'shapesync';
CREATE TABLE up_items (id int PRIMARY KEY, owner text, title text);
INSERT INTO up_items VALUES (1, 'u1', 'before');
SELECT shapesync.track('up_items');
SELECT handle AS h_all FROM shapesync.get_or_create_shape('up_items', NULL, NULL) \gset
SELECT handle AS h_u1 FROM shapesync.get_or_create_shape('up_items', 'owner = ''u1''', '{id,owner,title}') \gset
INSERT INTO shapesync.shape_snapshots (handle, snap, start_tick, chunk_count, row_count)
VALUES (:'h_u1', pg_current_snapshot(), 1, 1, 1);
INSERT INTO shapesync.shape_snapshot_chunks VALUES (:'h_u1', 0, '[{"key":"1"}]');
INSERT INTO up_items VALUES (2, 'u1', 'in the log');
SELECT shapesync.tick(true) IS NOT NULL AS ticked;
SELECT shapesync.consumer_report('up-sidecar', 1);
CREATE TEMP TABLE before_shapes AS SELECT handle, shape_id, where_clause, state FROM shapesync.shapes;
CREATE TEMP TABLE before_log AS SELECT xid, seq, table_name, op, new_row::text FROM shapesync.change_log;
CREATE TEMP TABLE before_ticks AS SELECT tick_id, snap::text FROM shapesync.ticks;

-- the upgrade
ALTER EXTENSION shapesync UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'shapesync';
CREATE TEMP TABLE upgraded AS SELECT * FROM public.shapesync_catalog();

-- same catalog, both ways
SELECT * FROM fresh EXCEPT SELECT * FROM upgraded ORDER BY 1;
SELECT * FROM upgraded EXCEPT SELECT * FROM fresh ORDER BY 1;

-- nothing lost
SELECT (SELECT count(*) FROM before_shapes) AS shapes,
       (SELECT count(*) FROM (SELECT handle, shape_id, where_clause, state FROM shapesync.shapes
                              EXCEPT SELECT * FROM before_shapes) x) AS shapes_changed,
       (SELECT count(*) FROM before_log) AS log_rows,
       (SELECT count(*) FROM (SELECT xid, seq, table_name, op, new_row::text FROM shapesync.change_log
                              EXCEPT SELECT * FROM before_log) x) AS log_changed,
       (SELECT count(*) FROM (SELECT * FROM before_ticks EXCEPT SELECT tick_id, snap::text FROM shapesync.ticks) x) AS ticks_lost;
SELECT row_count, chunk_count FROM shapesync.shape_snapshots WHERE handle = :'h_u1';
SELECT consumer_name, last_tick FROM shapesync.consumers;
SELECT relid FROM shapesync.tracked_tables;

-- and it keeps working: the same definitions find the same shapes, capture goes on
SELECT handle = :'h_u1' AS same_handle, created FROM shapesync.get_or_create_shape('up_items', 'owner = ''u1''', '{id,owner,title}');
SELECT handle = :'h_all' AS same_handle, created FROM shapesync.get_or_create_shape('up_items', NULL, NULL);
INSERT INTO up_items VALUES (3, 'u1', 'after');
SELECT op, new_row ->> 'title' AS title FROM shapesync.change_log WHERE table_name = 'up_items'::regclass ORDER BY seq;
SELECT canonical_where, error_code FROM shapesync.check_shape('up_items', 'owner = ''u2''');

-- an explicit chain to the current version is a no-op now
ALTER EXTENSION shapesync UPDATE;

DROP TABLE up_items;
DROP FUNCTION public.shapesync_catalog();
SELECT shapesync.consumer_drop('up-sidecar');
