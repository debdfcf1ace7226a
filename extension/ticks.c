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
 * Run body(arg) in a transaction of its own, with SPI connected, when the
 * extension is installed in this database (*installed tells). Returns false
 * when it raised: the error is reported to the log and the transaction
 * rolled back; never throws.
 */
static bool
ShapesyncInTransaction(const char *activity, void (*body) (void *arg), void *arg, bool *installed)
{
	volatile bool found = false;
	volatile bool ok = true;
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());

		if (OidIsValid(get_extension_oid("shapesync", true)))
		{
			found = true;
			pgstat_report_activity(STATE_RUNNING, activity);
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
			body(arg);
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
		ok = false;
	}
	PG_END_TRY();

	MemoryContextSwitchTo(oldcxt);
	if (installed)
		*installed = found;
	return ok;
}

typedef struct TickArgs
{
	bool		force;
	int64		tick_id;
} TickArgs;

/* tick() through SPI; when it recorded a tick, queue its NOTIFY. */
static void
TickBody(void *arg)
{
	TickArgs   *a = (TickArgs *) arg;
	bool		isnull;
	Datum		d;

	if (SPI_execute(a->force ? "SELECT shapesync.tick(true)" : "SELECT shapesync.tick(false)", false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "shapesync.tick() returned no row");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		char		payload[32];

		a->tick_id = DatumGetInt64(d);
		snprintf(payload, sizeof(payload), INT64_FORMAT, a->tick_id);
		Async_Notify("shapesync", payload);
	}
}

/*
 * Run one tick transaction (force: even when tick(false) would see nothing
 * new — a ring is proof that a change committed); return the new tick id, 0 when nothing was new
 * or the extension is not installed (*installed tells which), -1 on error
 * (reported to the log, transaction rolled back).
 */
int64
ShapesyncRunTick(bool *installed, bool force)
{
	TickArgs	a = {force, 0};

	if (!ShapesyncInTransaction(force ? "SELECT shapesync.tick(true)" : "SELECT shapesync.tick(false)",
								TickBody, &a, installed))
		return -1;
	return a.tick_id;
}

static void
MaintenanceBody(void *arg)
{
	if (SPI_execute("SELECT * FROM shapesync.maintain()", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "shapesync.maintain() failed");
}

/*
 * Run shapesync.maintain() in a transaction of its own (retention: stale
 * consumers, rotation, old ticks); errors are logged, never fatal.
 */
void
ShapesyncRunMaintenance(void)
{
	(void) ShapesyncInTransaction("SELECT * FROM shapesync.maintain()", MaintenanceBody, NULL, NULL);
}
