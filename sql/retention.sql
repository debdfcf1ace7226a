------------------------------------------------------------------------
-- Retention: rotation of the change log, consumers, old ticks.
--
-- shapesync.maintain() runs every shapesync.maintenance_interval in the
-- ticker worker (or in the ticking sidecar when the worker is not
-- preloaded). It
--   1. drops consumers not seen for shapesync.consumer_timeout (and says so
--      in the server log);
--   2. when the current change-log table has been current for half of
--      shapesync.log_retention, TRUNCATEs the oldest table, if every
--      consumer has passed all of its rows and no writer holds it, and
--      makes it current: a change is kept between log_retention and 1.5x
--      that, longer while a consumer still needs it;
--   3. deletes the ticks before the horizon, which no complete batch
--      needs any more.
------------------------------------------------------------------------

CREATE FUNCTION shapesync.setting_interval(name text, fallback interval) RETURNS interval
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text := current_setting(name, true);
BEGIN
    IF v IS NULL OR v = '' THEN
        RETURN fallback;
    END IF;
    -- integer settings show with their unit ("6h", "30s", "1d", "500ms")
    RETURN regexp_replace(v, '^([0-9]+)(ms|s|min|h|d)$', '\1 \2')::interval;
END
$$;
COMMENT ON FUNCTION shapesync.setting_interval(text, interval) IS
    'A time setting (e.g. shapesync.log_retention) as an interval, or fallback when unset.';

CREATE VIEW shapesync.log_tables AS
    SELECT n AS table_no,
           format('shapesync.changes_%s', n)::pg_catalog.regclass AS table_name,
           n = s.current_table AS is_current,
           CASE WHEN n = s.current_table THEN s.switched_at END AS current_since,
           pg_catalog.pg_total_relation_size(format('shapesync.changes_%s', n)::pg_catalog.regclass) AS bytes
      FROM shapesync.log_state s, pg_catalog.generate_series(0, 2) AS n;
COMMENT ON VIEW shapesync.log_tables IS
    'The three change-log tables: which one writers insert into, and their size on disk.';

CREATE VIEW shapesync.consumer_status AS
    SELECT c.consumer_name, c.last_tick, t.tick_time AS last_tick_time,
           (SELECT max(x.tick_id) FROM shapesync.ticks x) - c.last_tick AS ticks_behind,
           c.registered_at, c.last_seen,
           now() - c.last_seen AS unseen_for,
           now() - c.last_seen > shapesync.setting_interval('shapesync.consumer_timeout', '1 hour') AS stale
      FROM shapesync.consumers c
      LEFT JOIN shapesync.ticks t ON t.tick_id = c.last_tick;
COMMENT ON VIEW shapesync.consumer_status IS
    'Readers of the change log (sidecars): how far each has read and when it was last seen.';

CREATE FUNCTION shapesync.consumer_report(consumer text, last_tick bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    horizon bigint;
BEGIN
    IF consumer = '' THEN
        RAISE EXCEPTION 'consumer name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- shares the lock maintain() takes: a rotation sees this report or the
    -- report sees the rotation's horizon
    SELECT s.horizon_tick INTO horizon FROM shapesync.log_state s FOR SHARE;
    INSERT INTO shapesync.consumers AS c (consumer_name, last_tick)
    VALUES (consumer, last_tick)
    ON CONFLICT (consumer_name) DO UPDATE
       SET last_tick = excluded.last_tick, last_seen = now();
    RETURN horizon;
END
$$;
COMMENT ON FUNCTION shapesync.consumer_report(text, bigint) IS
    'Register or refresh a consumer and the last tick it has consumed (it holds the change log from there on); returns the horizon: batches up to it are no longer complete. A consumer whose last tick is below the horizon has lost changes.';

CREATE FUNCTION shapesync.consumer_drop(consumer text) RETURNS boolean
    LANGUAGE sql VOLATILE STRICT PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM shapesync.consumers c WHERE c.consumer_name = consumer RETURNING 1)
    SELECT count(*) > 0 FROM d;
$$;
COMMENT ON FUNCTION shapesync.consumer_drop(text) IS
    'Forget a consumer (a sidecar that is gone for good): it stops holding the change log back.';

-- Are all rows of change-log table `tab` visible in snapshot `snap`?
CREATE FUNCTION shapesync.log_table_visible_in(tab pg_catalog.regclass, snap pg_catalog.pg_snapshot) RETURNS boolean
    LANGUAGE plpgsql STABLE PARALLEL UNSAFE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r boolean;
BEGIN
    EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %s c WHERE c.xid >= pg_snapshot_xmin($1) '
                   'AND NOT pg_visible_in_snapshot(c.xid, $1))', tab)
       INTO r USING snap;
    RETURN r;
END
$$;

CREATE FUNCTION shapesync.maintain(retention interval DEFAULT NULL, consumer_timeout interval DEFAULT NULL,
                                   OUT dropped_consumers int, OUT rotated boolean,
                                   OUT truncated_table pg_catalog.regclass, OUT horizon_tick bigint,
                                   OUT deleted_ticks bigint, OUT waiting_for text)
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st        shapesync.log_state;
    nxt       int;
    nxt_rel   regclass;
    safe_tick bigint;
    safe_snap pg_snapshot;
    lo        bigint;
    hi        bigint;
    mid       bigint;
    msnap     pg_snapshot;
    gone      record;
BEGIN
    retention := coalesce(retention, shapesync.setting_interval('shapesync.log_retention', '1 day'));
    consumer_timeout := coalesce(consumer_timeout, shapesync.setting_interval('shapesync.consumer_timeout', '1 hour'));
    dropped_consumers := 0;
    rotated := false;
    deleted_ticks := 0;

    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'shapesync.maintain() must run at isolation level READ COMMITTED'
            USING ERRCODE = 'active_sql_transaction';
    END IF;

    -- one maintainer at a time; consumer_report() waits for a rotation
    SELECT * INTO st FROM shapesync.log_state FOR UPDATE;

    -- 1. stale consumers
    FOR gone IN
        DELETE FROM shapesync.consumers c
         WHERE c.last_seen < now() - consumer_timeout
        RETURNING c.consumer_name, c.last_tick, c.last_seen
    LOOP
        dropped_consumers := dropped_consumers + 1;
        RAISE LOG 'shapesync: dropped consumer "%": last seen % (more than shapesync.consumer_timeout = % ago) at tick %; it no longer holds the change log back',
            gone.consumer_name, gone.last_seen, consumer_timeout, gone.last_tick;
    END LOOP;

    -- 2. rotation
    horizon_tick := st.horizon_tick;
    IF now() - st.switched_at >= retention / 2 THEN
        nxt := (st.current_table + 1) % 3;
        nxt_rel := format('shapesync.changes_%s', nxt)::regclass;

        -- the oldest tick any consumer still needs; without consumers, the last tick
        SELECT min(c.last_tick) INTO safe_tick FROM shapesync.consumers c;
        IF safe_tick IS NULL THEN
            SELECT max(t.tick_id) INTO safe_tick FROM shapesync.ticks t;
        END IF;
        SELECT t.snap INTO safe_snap FROM shapesync.ticks t WHERE t.tick_id = safe_tick;

        BEGIN
            -- a writer that still inserts into it (it read the current table
            -- before the last switch) holds a lock until it commits, and so
            -- does a reader: never wait (writers would queue behind us), try
            -- again next time
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE NOWAIT', nxt_rel);
        EXCEPTION WHEN lock_not_available THEN
            waiting_for := format('a writer or reader holds %s', nxt_rel);
            RETURN;
        END;

        IF safe_snap IS NULL OR NOT shapesync.log_table_visible_in(nxt_rel, safe_snap) THEN
            SELECT string_agg(format('"%s" (tick %s)', c.consumer_name, c.last_tick), ', ' ORDER BY c.last_tick)
              INTO waiting_for FROM shapesync.consumers c
             WHERE NOT shapesync.log_table_visible_in(nxt_rel,
                       (SELECT t.snap FROM shapesync.ticks t WHERE t.tick_id = c.last_tick));
            waiting_for := coalesce('consumers ' || waiting_for, 'a tick that covers ' || nxt_rel::text);
        ELSE
            -- the new horizon: the first tick whose snapshot sees every row of
            -- the table (snapshots only grow, so search)
            lo := st.horizon_tick;
            hi := safe_tick;
            WHILE lo < hi LOOP
                mid := lo + (hi - lo) / 2;
                SELECT t.snap INTO msnap FROM shapesync.ticks t
                 WHERE t.tick_id >= mid ORDER BY t.tick_id LIMIT 1;
                IF shapesync.log_table_visible_in(nxt_rel, msnap) THEN
                    hi := mid;
                ELSE
                    lo := mid + 1;
                END IF;
            END LOOP;
            horizon_tick := greatest(st.horizon_tick, hi);

            EXECUTE format('TRUNCATE %s', nxt_rel);
            UPDATE shapesync.log_state s
               SET current_table = nxt, switched_at = now(), horizon_tick = maintain.horizon_tick,
                   truncated_at = now();
            -- writers look the current table up again before their next write
            PERFORM shapesync.invalidate_table_cache('shapesync.log_state'::regclass);
            rotated := true;
            truncated_table := nxt_rel;
            RAISE LOG 'shapesync: change log rotated: % truncated and current, horizon tick %', nxt_rel, horizon_tick;
        END IF;
    END IF;

    -- 3. ticks before the horizon serve no batch
    WITH d AS (DELETE FROM shapesync.ticks t WHERE t.tick_id < maintain.horizon_tick RETURNING 1)
    SELECT count(*) INTO deleted_ticks FROM d;
END
$$;
COMMENT ON FUNCTION shapesync.maintain(interval, interval) IS
    'Change-log retention (run by the ticker every shapesync.maintenance_interval): drop stale consumers, rotate and TRUNCATE the oldest log table once every consumer has passed it, delete ticks before the horizon. Arguments override shapesync.log_retention and shapesync.consumer_timeout.';

REVOKE ALL ON shapesync.log_state, shapesync.consumers, shapesync.changes_0,
              shapesync.changes_1, shapesync.changes_2 FROM PUBLIC;
REVOKE ALL ON FUNCTION shapesync.consumer_report(text, bigint), shapesync.consumer_drop(text),
                       shapesync.maintain(interval, interval),
                       shapesync.log_table_visible_in(pg_catalog.regclass, pg_catalog.pg_snapshot) FROM PUBLIC;
GRANT SELECT ON shapesync.log_tables, shapesync.consumer_status TO PUBLIC;
