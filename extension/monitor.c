/*-------------------------------------------------------------------------
 *
 * monitor.c
 *	  Health of sync, for a DBA in psql and for the sidecar:
 *	  shapesync.worker_pid() and shapesync.status() (the view
 *	  shapesync.sync_status is over the latter).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_worker_pid);
PG_FUNCTION_INFO_V1(shapesync_status);

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
					"       (SELECT pg_catalog.count(*) FROM shapesync.changes),"
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
