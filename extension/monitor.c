/*-------------------------------------------------------------------------
 *
 * monitor.c
 *	  Health of sync, for a DBA in psql and for the sidecar:
 *	  shapesync.worker_pid() and shapesync.status(), and the monitoring
 *	  functions of sql/monitor.sql (docs/monitoring.md): sync_stats(),
 *	  sidecar_stats(), table_stats() and check().  Views sit on top of
 *	  them; they are SECURITY DEFINER, so a role needs only EXECUTE on
 *	  them (shapesync.grant_monitor()), not the registry tables.
 *
 * The monitoring functions read tables only, through one query each run
 * with SPI, and take what lives outside the tables (the ticker's shared
 * state, settings) from C as query parameters.  They hold no lock beyond
 * what their reads take, and never write.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "shapesync.h"

static void MaterializeQuery(FunctionCallInfo fcinfo, const char *sql,
							 int nargs, Oid *argtypes, Datum *args, const char *argnulls);

PG_FUNCTION_INFO_V1(shapesync_worker_pid);
PG_FUNCTION_INFO_V1(shapesync_status);
PG_FUNCTION_INFO_V1(shapesync_sync_stats);
PG_FUNCTION_INFO_V1(shapesync_sidecar_stats);
PG_FUNCTION_INFO_V1(shapesync_table_stats);
PG_FUNCTION_INFO_V1(shapesync_check);

#define STATUS_COLS 7

/* worker_pid(): pid of the ticker serving this database, NULL if none. */
Datum
shapesync_worker_pid(PG_FUNCTION_ARGS)
{
	int			pid = ShapesyncWorkerPid(MyDatabaseId);

	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(pid);
}

/* status(): one row describing the ticker, the ticks and the change log. */
Datum
shapesync_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[STATUS_COLS];
	bool		nulls[STATUS_COLS];
	int			pid;

	InitMaterializedSRF(fcinfo, 0);

	memset(nulls, false, sizeof(nulls));
	pid = ShapesyncWorkerPid(MyDatabaseId);
	if (pid != 0)
		values[0] = Int32GetDatum(pid);
	else
		nulls[0] = true;
	values[1] = CStringGetTextDatum(pid != 0 ? "worker" : "external");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT t.tick_id, t.tick_time, u.n,"
					"       (SELECT coalesce(pg_catalog.sum(CASE c.op WHEN 'B' THEN c.layout ELSE 1 END), 0)::pg_catalog.int8"
					"          FROM shapesync.changes c),"
					"       CASE WHEN u.n > 0 THEN pg_catalog.now() - t.tick_time END"
					"  FROM (SELECT tick_id, tick_time, max_seq FROM shapesync.ticks"
					"         ORDER BY tick_id DESC LIMIT 1) t,"
					"       LATERAL (SELECT GREATEST(0::pg_catalog.int8,"
					"                    CASE WHEN s.is_called THEN s.last_value"
					"                         ELSE s.last_value - 1 END - t.max_seq) AS n"
					"                  FROM shapesync.change_seq s) u",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shapesync tick state");

	if (SPI_processed == 1)
	{
		for (int i = 0; i < 5; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										  i + 1, &isnull);

			nulls[2 + i] = isnull;
			if (!isnull)
				values[2 + i] = SPI_datumTransfer(d,
												  TupleDescAttr(SPI_tuptable->tupdesc, i)->attbyval,
												  TupleDescAttr(SPI_tuptable->tupdesc, i)->attlen);
		}
	}
	else
	{
		for (int i = 2; i < STATUS_COLS; i++)
			nulls[i] = true;
	}
	SPI_finish();

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}

/*
 * Run a query and return its rows as the function's result set.  The
 * query's columns must have the types of the function's OUT parameters.
 */
static void
MaterializeQuery(FunctionCallInfo fcinfo, const char *sql,
				 int nargs, Oid *argtypes, Datum *args, const char *argnulls)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	desc;
	TupleDesc	qdesc;
	Datum	   *values;
	bool	   *nulls;

	InitMaterializedSRF(fcinfo, 0);
	desc = rsinfo->setDesc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(sql, nargs, argtypes, args, argnulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not run a shapesync monitoring query");

	qdesc = SPI_tuptable->tupdesc;
	if (qdesc->natts != desc->natts)
		elog(ERROR, "shapesync monitoring query returns %d columns, expected %d",
			 qdesc->natts, desc->natts);
	for (int i = 0; i < desc->natts; i++)
		if (TupleDescAttr(qdesc, i)->atttypid != TupleDescAttr(desc, i)->atttypid)
			elog(ERROR, "shapesync monitoring query: column %d has type %u, expected %u",
				 i + 1, TupleDescAttr(qdesc, i)->atttypid, TupleDescAttr(desc, i)->atttypid);

	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		heap_deform_tuple(SPI_tuptable->vals[r], qdesc, values, nulls);
		/* copied into the tuplestore's own memory */
		tuplestore_putvalues(rsinfo->setResult, desc, values, nulls);
	}
	SPI_finish();
}

/* The sizes of the three change-log tables, summed. */
#define LOG_BYTES_SQL \
	"(SELECT pg_catalog.sum(pg_catalog.pg_total_relation_size(" \
	"    pg_catalog.format('shapesync.changes_%s', n)::pg_catalog.regclass))::pg_catalog.int8" \
	"   FROM pg_catalog.generate_series(0, 2) AS n)"

/* The time of the first tick after a consumer's position: its oldest unread change is that old. */
#define UNREAD_SINCE_SQL(pos) \
	"(SELECT n.tick_time FROM shapesync.ticks n WHERE n.tick_id > " pos \
	"  ORDER BY n.tick_id LIMIT 1)"

/*
 * sync_stats(): the ticker, tick and change rates over the last minute,
 * the size of the log and the lag of the slowest live consumer.
 */
Datum
shapesync_sync_stats(PG_FUNCTION_ARGS)
{
	Oid			types[3] = {BOOLOID, BOOLOID, INT4OID};
	Datum		args[3];

	args[0] = BoolGetDatum(ShapesyncPreloaded());
	args[1] = BoolGetDatum(ShapesyncWorkerPid(MyDatabaseId) != 0);
	args[2] = Int32GetDatum(shapesync_consumer_timeout_s);

	MaterializeQuery(fcinfo,
					 "WITH last AS (SELECT t.tick_id, t.tick_time, t.max_seq FROM shapesync.ticks t"
					 "               ORDER BY t.tick_id DESC LIMIT 1),"
					 "     win AS (SELECT shapesync.tick_at(pg_catalog.now() - interval '1 minute') AS first_id),"
					 "     base AS (SELECT b.tick_time, b.max_seq FROM shapesync.ticks b, win"
					 /* the last tick before the minute, or the oldest one */
					 "               WHERE b.tick_id <= greatest(coalesce(win.first_id, (SELECT last.tick_id + 1 FROM last)) - 1,"
					 "                                           (SELECT min(o.tick_id) FROM shapesync.ticks o))"
					 "               ORDER BY b.tick_id DESC LIMIT 1),"
					 "     cons AS (SELECT c.consumer_name, c.last_tick, " UNREAD_SINCE_SQL("c.last_tick") " AS unread_since"
					 "                FROM shapesync.consumers c"
					 "               WHERE c.last_seen > pg_catalog.now() - pg_catalog.make_interval(secs => $3)),"
					 "     slow AS (SELECT * FROM cons ORDER BY cons.unread_since NULLS LAST, cons.last_tick,"
					 "                     cons.consumer_name LIMIT 1)"
					 "SELECT $1, $2,"
					 "       coalesce((SELECT pg_catalog.count(*) FROM shapesync.ticks k, win"
					 "                  WHERE k.tick_id >= win.first_id), 0)::pg_catalog.float8 / 60,"
					 "       coalesce((SELECT (last.max_seq - base.max_seq)::pg_catalog.float8"
					 "                        / greatest(1, least(60, extract(epoch FROM pg_catalog.now() - base.tick_time)))::pg_catalog.float8"
					 "                   FROM last, base), 0)::pg_catalog.float8,"
					 "       " LOG_BYTES_SQL ","
					 "       (SELECT pg_catalog.count(*) FROM cons)::pg_catalog.int4,"
					 "       (SELECT greatest(interval '0', coalesce(pg_catalog.now() - slow.unread_since, interval '0'))"
					 "          FROM slow),"
					 "       (SELECT last.tick_id - slow.last_tick FROM last, slow),"
					 "       (SELECT slow.consumer_name FROM slow)",
					 3, types, args, NULL);
	return (Datum) 0;
}

/*
 * sidecar_stats(): each consumer (sidecar) seen within
 * shapesync.consumer_timeout: its position in the change log and what it
 * last reported through consumer_report_stats().
 */
Datum
shapesync_sidecar_stats(PG_FUNCTION_ARGS)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];

	args[0] = Int32GetDatum(shapesync_consumer_timeout_s);

	MaterializeQuery(fcinfo,
					 "WITH last AS (SELECT max(t.tick_id) AS id FROM shapesync.ticks t),"
					 "     reg AS (SELECT c.consumer_name, c.last_tick, c.last_seen FROM shapesync.consumers c"
					 "              WHERE c.last_seen > pg_catalog.now() - pg_catalog.make_interval(secs => $1)),"
					 "     rep AS (SELECT r.* FROM shapesync.consumer_reports r"
					 "              WHERE r.reported_at > pg_catalog.now() - pg_catalog.make_interval(secs => $1))"
					 "SELECT coalesce(reg.consumer_name, rep.consumer_name), rep.address, rep.version,"
					 "       greatest(reg.last_seen, rep.reported_at), reg.last_tick,"
					 "       (SELECT last.id FROM last) - reg.last_tick,"
					 "       CASE WHEN reg.last_tick IS NOT NULL THEN"
					 "            greatest(interval '0', coalesce(pg_catalog.now() - " UNREAD_SINCE_SQL("reg.last_tick") ","
					 "                                          interval '0')) END,"
					 "       rep.live_clients, rep.live_clients_by_kind, rep.requests_per_second,"
					 "       rep.latency_p50, rep.latency_p99, rep.reported_at"
					 "  FROM reg FULL JOIN rep ON rep.consumer_name = reg.consumer_name"
					 " ORDER BY 1",
					 1, types, args, NULL);
	return (Datum) 0;
}

/*
 * table_stats(): tracked tables, their shapes, the changes captured per
 * second over the last minute and the live clients of their shapes.
 */
Datum
shapesync_table_stats(PG_FUNCTION_ARGS)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1];

	args[0] = Int32GetDatum(shapesync_consumer_timeout_s);

	MaterializeQuery(fcinfo,
					 "WITH win AS (SELECT shapesync.tick_at(pg_catalog.now() - interval '1 minute') AS first_id),"
					 "     base AS (SELECT b.snap,"
					 "                     greatest(1, least(60, extract(epoch FROM pg_catalog.now() - b.tick_time)))::pg_catalog.float8 AS secs"
					 "                FROM shapesync.ticks b, win"
					 "               WHERE b.tick_id <= greatest(coalesce(win.first_id, (SELECT max(t.tick_id) + 1 FROM shapesync.ticks t)) - 1,"
					 "                                           (SELECT min(o.tick_id) FROM shapesync.ticks o))"
					 "               ORDER BY b.tick_id DESC LIMIT 1),"
					 "     chg AS (SELECT e.relid, pg_catalog.count(*) AS n FROM shapesync.changes c, base,"
					 "                    LATERAL shapesync.change_entries(c.op, c.relid, c.layout, c.new_row, c.old_row,"
					 "                                                     c.shape_ops, c.error, c.version) e"
					 "              WHERE c.xid >= pg_catalog.pg_snapshot_xmin(base.snap)"
					 "                AND NOT pg_catalog.pg_visible_in_snapshot(c.xid, base.snap)"
					 "                AND c.op IN ('I', 'U', 'D', 'B') AND e.op IN ('I', 'U', 'D')"
					 "              GROUP BY e.relid),"
					 "     shp AS (SELECT s.relid, pg_catalog.count(*) FILTER (WHERE s.state = 'active') AS active,"
					 "                    pg_catalog.count(*) FILTER (WHERE s.state <> 'active') AS invalid"
					 "               FROM shapesync.shape_registry s GROUP BY s.relid),"
					 "     live AS (SELECT s.relid, pg_catalog.sum(r.live_clients) AS clients,"
					 "                     pg_catalog.sum(r.requests_per_second) AS rps"
					 "                FROM shapesync.shape_reports r"
					 "                JOIN shapesync.consumer_reports cr ON cr.consumer_name = r.consumer_name"
					 "                JOIN shapesync.shape_registry s ON s.handle = r.handle"
					 "               WHERE cr.reported_at > pg_catalog.now() - pg_catalog.make_interval(secs => $1)"
					 "               GROUP BY s.relid)"
					 "SELECT t.relid::pg_catalog.regclass, t.tracked_at,"
					 "       coalesce(shp.active, 0)::pg_catalog.int4, coalesce(shp.invalid, 0)::pg_catalog.int4,"
					 "       coalesce((SELECT chg.n FROM chg WHERE chg.relid = t.relid), 0)::pg_catalog.float8"
					 "         / coalesce((SELECT base.secs FROM base), 60),"
					 "       coalesce(live.clients, 0)::pg_catalog.int8, coalesce(live.rps, 0)::pg_catalog.float8"
					 "  FROM shapesync.tracked t"
					 "  LEFT JOIN shp ON shp.relid = t.relid"
					 "  LEFT JOIN live ON live.relid = t.relid"
					 " ORDER BY t.relid::pg_catalog.regclass::pg_catalog.text",
					 1, types, args, NULL);
	return (Datum) 0;
}

/*
 * check(): one row per problem worth an alert, critical ones first;
 * none when all is well.  Thresholds are the shapesync.alert_* settings.
 */
Datum
shapesync_check(PG_FUNCTION_ARGS)
{
	Oid			types[9] = {BOOLOID, BOOLOID, BOOLOID, INT4OID, INT4OID, INT4OID,
	INT8OID, INT4OID, INT4OID};
	Datum		args[9];
	bool		preloaded = ShapesyncPreloaded();

	args[0] = BoolGetDatum(preloaded);
	args[1] = BoolGetDatum(preloaded && ShapesyncDatabaseListed(get_database_name(MyDatabaseId)));
	args[2] = BoolGetDatum(ShapesyncWorkerPid(MyDatabaseId) != 0);
	args[3] = Int32GetDatum(shapesync_alert_tick_delay_ms);
	args[4] = Int32GetDatum(shapesync_alert_consumer_stale_s);
	args[5] = Int32GetDatum(shapesync_alert_lag_ms);
	args[6] = Int64GetDatum((int64) shapesync_alert_log_kb * 1024);
	args[7] = Int32GetDatum(shapesync_alert_window_s);
	args[8] = Int32GetDatum(shapesync_consumer_timeout_s);

	MaterializeQuery(fcinfo,
					 "WITH last AS (SELECT t.tick_id, t.tick_time, t.max_seq FROM shapesync.ticks t"
					 "               ORDER BY t.tick_id DESC LIMIT 1),"
					 "     seq AS (SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END AS v"
					 "               FROM shapesync.change_seq s),"
					 "     cons AS (SELECT c.consumer_name, c.last_tick, greatest(c.last_seen, r.reported_at) AS seen,"
					 "                     " UNREAD_SINCE_SQL("c.last_tick") " AS unread_since"
					 "                FROM shapesync.consumers c"
					 "                LEFT JOIN shapesync.consumer_reports r ON r.consumer_name = c.consumer_name"
					 "               WHERE c.last_seen > pg_catalog.now() - pg_catalog.make_interval(secs => $9)),"
					 "     failed AS (SELECT s.relid, s.handle, s.reason,"
					 "                       CASE WHEN s.reason LIKE 'snapshot failed:%' OR s.reason LIKE '%abandoned%'"
					 "                            THEN 'shape_build_failed'"
					 "                            WHEN shapesync.shape_filter_error(s.handle) IS NOT NULL"
					 "                            THEN 'filter_error' END AS problem"
					 "                  FROM shapesync.shape_registry s"
					 "                 WHERE s.state = 'invalid'"
					 "                   AND s.invalidated_at > pg_catalog.now() - pg_catalog.make_interval(secs => $8)"
					 /* reasons that are no failure: spare them the log look-up */
					 "                   AND s.reason NOT LIKE 'ddl: %' AND s.reason NOT LIKE 'change log retention: %'"
					 "                   AND s.reason NOT IN ('drop', 'truncate', 'schema changed', 'deleted',"
					 "                                        'deleted through DELETE /v1/shape')),"
					 "     fails AS (SELECT f.relid, f.problem, pg_catalog.count(*) AS n,"
					 "                      (pg_catalog.array_agg(f.handle ORDER BY f.handle))[1] AS handle,"
					 "                      (pg_catalog.array_agg(f.reason ORDER BY f.handle))[1] AS reason"
					 "                 FROM failed f WHERE f.problem IS NOT NULL GROUP BY f.relid, f.problem)"
					 "SELECT p.severity, p.problem, p.subject, p.message, p.hint FROM ("
					 "  SELECT 'critical' AS severity, 'ticker_not_running' AS problem,"
					 "         pg_catalog.current_database()::text AS subject,"
					 "         pg_catalog.format('the ticker background worker of database \"%s\" is not running',"
					 "                           pg_catalog.current_database()) AS message,"
					 "         'The launcher restarts it within seconds; if it stays down, look for shapesync errors"
					 " in the server log and check max_worker_processes.' AS hint"
					 "   WHERE $1 AND $2 AND NOT $3"
					 "  UNION ALL"
					 "  SELECT 'critical', 'ticks_stalled', pg_catalog.current_database()::text,"
					 "         pg_catalog.format('%s changes wait for a tick; the last tick was %s ago',"
					 "                           seq.v - last.max_seq,"
					 "                           pg_catalog.date_trunc('second', pg_catalog.clock_timestamp() - last.tick_time)),"
					 "         CASE WHEN $3 THEN 'The ticker worker runs but does not tick: look for shapesync errors"
					 " in the server log.'"
					 "              ELSE 'No background worker ticks this database, so a sidecar must: is one running"
					 " and connected? Or list the database in shapesync.database, with shapesync in"
					 " shared_preload_libraries.' END"
					 "    FROM last, seq"
					 "   WHERE seq.v > last.max_seq"
					 "     AND pg_catalog.clock_timestamp() - last.tick_time > pg_catalog.make_interval(secs => $4 / 1000.0)"
					 "  UNION ALL"
					 "  SELECT 'critical', 'consumer_lost_changes', cons.consumer_name,"
					 "         pg_catalog.format('consumer \"%s\" is at tick %s, but the change log starts after tick %s',"
					 "                           cons.consumer_name, cons.last_tick, ls.horizon_tick),"
					 "         'Changes it had not read were truncated: it re-syncs its shapes when it next reports"
					 " (shapesync.consumer_report() returns the horizon). Raise shapesync.consumer_timeout if sidecars"
					 " are often away that long.'"
					 "    FROM cons, shapesync.log_state ls WHERE cons.last_tick < ls.horizon_tick"
					 "  UNION ALL"
					 "  SELECT 'warning', 'consumer_stale', cons.consumer_name,"
					 "         pg_catalog.format('consumer \"%s\" was last seen %s ago', cons.consumer_name,"
					 "                           pg_catalog.date_trunc('second', pg_catalog.now() - cons.seen)),"
					 "         pg_catalog.format('Is the sidecar running and connected? It holds the change log back"
					 " until shapesync.consumer_timeout (%s) drops it; shapesync.consumer_drop(%L) forgets it now.',"
					 "                           pg_catalog.make_interval(secs => $9), cons.consumer_name)"
					 "    FROM cons WHERE cons.seen < pg_catalog.now() - pg_catalog.make_interval(secs => $5)"
					 "  UNION ALL"
					 "  SELECT 'warning', 'consumer_lagging', cons.consumer_name,"
					 "         pg_catalog.format('consumer \"%s\" is %s ticks behind; the oldest change it has not read"
					 " is %s old', cons.consumer_name, last.tick_id - cons.last_tick,"
					 "                           pg_catalog.date_trunc('second', pg_catalog.now() - cons.unread_since)),"
					 "         'Is the sidecar overloaded or slow to reach the database? Compare its position in"
					 " shapesync.sidecars with the last tick, and look at its /metrics.'"
					 "    FROM cons, last"
					 "   WHERE pg_catalog.now() - cons.unread_since > pg_catalog.make_interval(secs => $6 / 1000.0)"
					 "  UNION ALL"
					 "  SELECT 'warning', 'change_log_large', 'shapesync.changes',"
					 "         pg_catalog.format('the change log takes %s, more than shapesync.alert_log_bytes (%s)',"
					 "                           pg_catalog.pg_size_pretty(x.b), pg_catalog.pg_size_pretty($7)),"
					 "         'A consumer may hold it back (the slowest one is in shapesync.sync_status; shapesync.maintain()"
					 " says what it waits for), or shapesync.log_retention keeps much: the oldest of the three log"
					 " tables is truncated once every consumer has passed it.'"
					 "    FROM (SELECT " LOG_BYTES_SQL " AS b) x WHERE x.b > $7"
					 "  UNION ALL"
					 "  SELECT 'warning', f.problem, f.relid::pg_catalog.regclass::text,"
					 "         CASE f.problem"
					 "           WHEN 'shape_build_failed' THEN"
					 "             pg_catalog.format('%s shape%s of table %s failed to build in the last %s, e.g. %s: %s',"
					 "                               f.n, CASE WHEN f.n = 1 THEN '' ELSE 's' END, f.relid::pg_catalog.regclass,"
					 "                               pg_catalog.make_interval(secs => $8), f.handle, f.reason)"
					 "           ELSE"
					 "             pg_catalog.format('%s shape%s of table %s %s retired in the last %s after a filter"
					 " error on a row, e.g. %s: %s',"
					 "                               f.n, CASE WHEN f.n = 1 THEN '' ELSE 's' END, f.relid::pg_catalog.regclass,"
					 "                               CASE WHEN f.n = 1 THEN 'was' ELSE 'were' END,"
					 "                               pg_catalog.make_interval(secs => $8), f.handle, f.reason)"
					 "         END,"
					 "         CASE f.problem"
					 "           WHEN 'shape_build_failed' THEN 'Their clients got an error. See reason in shapesync.shapes"
					 " and the sidecar''s log; a filter that raises on existing rows fails its snapshot.'"
					 "           ELSE 'Their clients got a 400 naming the error. Fix the filter in the application"
					 " (e.g. guard a division or a cast), or the data it chokes on; writes were not affected.'"
					 "         END"
					 "    FROM fails f"
					 ") p"
					 " ORDER BY p.severity = 'warning', p.problem, p.subject",
					 9, types, args, NULL);
	return (Datum) 0;
}
