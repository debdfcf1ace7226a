/*-------------------------------------------------------------------------
 *
 * ticks.c
 *	  The ticker's transaction: call shapesync.tick(false) through SPI and,
 *	  when it recorded a tick, queue NOTIFY shapesync '<tick id>' in the
 *	  same transaction, so the notification goes out only after the tick's
 *	  durable commit (the worker forces synchronous_commit = on).
 *
 * The tick itself (snapshot, high-water mark, "can anything be new")
 * is SQL: shapesync.tick() in sql/shapesync.sql, shared with the sidecar
 * when no worker runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "shapesync.h"

/*
 * Run one tick transaction (force: even when tick(false) would see nothing
 * new — a ring is proof that a change committed); return the new tick id, 0 when nothing was new
 * or the extension is not installed (*installed tells which), -1 on error
 * (reported to the log, transaction rolled back).
 */
int64
ShapesyncRunTick(bool *installed, bool force)
{
	volatile int64 tick_id = 0;
	volatile bool found = false;
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());

		if (OidIsValid(get_extension_oid("shapesync", true)))
		{
			bool		isnull;
			Datum		d;
			const char *sql = force ? "SELECT shapesync.tick(true)" : "SELECT shapesync.tick(false)";

			found = true;

			pgstat_report_activity(STATE_RUNNING, sql);
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			if (SPI_execute(sql, false, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "shapesync.tick() returned no row");
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (!isnull)
			{
				char		payload[32];

				tick_id = DatumGetInt64(d);
				snprintf(payload, sizeof(payload), INT64_FORMAT, (int64) tick_id);
				Async_Notify("shapesync", payload);
			}
			SPI_finish();
		}

		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(oldcxt);
		pgstat_report_activity(STATE_IDLE, NULL);
		tick_id = -1;
	}
	PG_END_TRY();

	MemoryContextSwitchTo(oldcxt);
	*installed = found;
	return tick_id;
}

/*
 * Run shapesync.maintain() in a transaction of its own (retention: stale
 * consumers, rotation, old ticks); errors are logged, never fatal.
 */
void
ShapesyncRunMaintenance(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());

		if (OidIsValid(get_extension_oid("shapesync", true)))
		{
			const char *sql = "SELECT * FROM shapesync.maintain()";

			pgstat_report_activity(STATE_RUNNING, sql);
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			if (SPI_execute(sql, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "shapesync.maintain() failed");
			SPI_finish();
		}

		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_END_TRY();

	MemoryContextSwitchTo(oldcxt);
}
