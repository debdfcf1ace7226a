/*-------------------------------------------------------------------------
 *
 * shapesync.c
 *	  Module load: the GUCs, and, when loaded through
 *	  shared_preload_libraries, the shared-memory doorbell and the ticker
 *	  background workers.
 *
 * Without the preload the extension still captures and decodes changes;
 * the sidecar then ticks by itself (shapesync.worker_pid() is NULL).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "shapesync.h"

PG_MODULE_MAGIC;

char	   *shapesync_database = NULL;
int			shapesync_tick_idle_ms = 1000;
int			shapesync_tick_min_interval_ms = 2;
int			shapesync_tick_max_interval_ms = 10;
int			shapesync_log_retention_s = 86400;
int			shapesync_consumer_timeout_s = 3600;
int			shapesync_maintenance_interval_s = 10;
int			shapesync_filter_fold_timeout_ms = 100;
int			shapesync_filter_max_constant_bytes = 1048576;
int			shapesync_unguarded_like_max_bytes = 64 * 1024 * 1024;
int			shapesync_mutation_retention_s = 7 * 86400;
int			shapesync_alert_tick_delay_ms = 10000;
int			shapesync_alert_lag_ms = 30000;
int			shapesync_alert_consumer_stale_s = 60;
int			shapesync_alert_log_kb = 1024 * 1024;
int			shapesync_alert_window_s = 3600;

void		_PG_init(void);

/* Define the GUCs; with the preload, set up shared memory and workers. */
void
_PG_init(void)
{
	DefineCustomStringVariable("shapesync.database",
							   "Databases served by the shapesync ticker (comma-separated list).",
							   "One ticker background worker runs per listed database "
							   "that exists; it ticks once the extension is installed there.",
							   &shapesync_database,
							   "postgres",
	/* PGC_POSTMASTER variables can only be defined while preloading */
							   process_shared_preload_libraries_in_progress ?
							   PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.tick_idle_ms",
							"Longest wait of the ticker between two checks for new changes.",
							"A commit that wrote to the change log wakes the ticker at once; "
							"this timer covers two-phase commits and lost wake-ups.",
							&shapesync_tick_idle_ms,
							1000,
							10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.tick_min_interval_ms",
							"Shortest time between two ticks of the ticker.",
							"A lone commit is ticked at once. Under load (the last tick covered more "
							"than one commit) ticks closer together than this are coalesced into "
							"one. 0 ticks on every ring.",
							&shapesync_tick_min_interval_ms,
							2,
							0, 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.tick_max_interval_ms",
							"Longest time between two ticks of the ticker under sustained load.",
							"While every tick covers more than one commit, the wait between ticks "
							"doubles from shapesync.tick_min_interval_ms up to this, so a saturated "
							"machine spends less on ticks and batch reads; the first tick that "
							"covers one commit resets it. Values below the minimum mean the minimum.",
							&shapesync_tick_max_interval_ms,
							10,
							0, 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.log_retention",
							"How long the change log keeps a change at least.",
							"The log is split over three tables; one is TRUNCATEd and reused every "
							"half of this, once every consumer has passed its rows, so a change is "
							"kept between this and 1.5 times this. A sidecar rebuilds a shape from "
							"the log after a restart only if the shape is younger than this.",
							&shapesync_log_retention_s,
							86400,
							0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.consumer_timeout",
							"How long a consumer (sidecar) that stopped reporting still holds the change log back.",
							"After this, shapesync.maintain() drops it and logs so; when it comes "
							"back it re-syncs what it can no longer catch up on.",
							&shapesync_consumer_timeout_s,
							3600,
							1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.maintenance_interval",
							"Time between two runs of shapesync.maintain() by the ticker.",
							NULL,
							&shapesync_maintenance_interval_s,
							10,
							1, 86400,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.filter_fold_timeout",
							"Time a shape filter's constant expressions may take to evaluate at registration.",
							"A filter whose constants take longer (e.g. repeat('y', 1000000000)) is refused.",
							&shapesync_filter_fold_timeout_ms,
							100,
							1, 600000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.filter_max_constant_bytes",
							"Largest constant a shape filter may hold after constant folding.",
							NULL,
							&shapesync_filter_max_constant_bytes,
							1048576,
							1024, 256 * 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.unguarded_like_max_bytes",
							"Largest column value that a shape's ILIKE filter reads without a subtransaction.",
							"ILIKE lowercases the value, which allocates a few times its size; "
							"a row with a larger value is classified under the guard "
							"(one internal subtransaction), so that an allocation error "
							"cannot fail the write.",
							&shapesync_unguarded_like_max_bytes,
							64 * 1024 * 1024,
							0, 128 * 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.mutation_retention",
							"How long the outcome of an applied mutation id is kept for replays.",
							"shapesync.apply_mutations() returns the stored outcome when a mutation "
							"id or idempotency key comes again within this time; older ids are "
							"deleted (shapesync.purge_mutations()) and would be applied again.",
							&shapesync_mutation_retention_s,
							7 * 86400,
							60, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/* thresholds of shapesync.check() (sql/monitor.sql, docs/monitoring.md) */
	DefineCustomIntVariable("shapesync.alert_tick_delay",
							"Age of an unticked change past which shapesync.check() reports that ticks stalled.",
							NULL,
							&shapesync_alert_tick_delay_ms,
							10000,
							1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.alert_lag",
							"Lag of a consumer past which shapesync.check() reports it.",
							"The lag is the age of the oldest ticked change the consumer has not read.",
							&shapesync_alert_lag_ms,
							30000,
							1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.alert_consumer_stale",
							"Time without news from a consumer after which shapesync.check() reports it.",
							"Shorter than shapesync.consumer_timeout, after which it is dropped.",
							&shapesync_alert_consumer_stale_s,
							60,
							1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.alert_log_bytes",
							"Size of the change log past which shapesync.check() reports it.",
							NULL,
							&shapesync_alert_log_kb,
							1024 * 1024,
							1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.alert_window",
							"How far back shapesync.check() looks for shapes that failed.",
							"Shapes that failed to build or whose filter raised are reported for this long.",
							&shapesync_alert_window_s,
							3600,
							1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("shapesync.tx_buffer_size",
							"Changes a transaction buffers in memory before writing them to the change log.",
							"A transaction's changes become one change-log record at commit; past this size, "
							"the changes of the current (sub)transaction are written at once.",
							&shapesync_tx_buffer_size,
							4 * 1024 * 1024,
							0, MaxAllocSize / 4,
							PGC_USERSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("shapesync.full_old_images",
							 "Log the whole old row of an UPDATE, not only the columns it changed.",
							 "Readers see the same old row either way (the unchanged columns are "
							 "the new row's); the whole row makes the change log bigger. "
							 "For comparison and diagnosis.",
							 &shapesync_full_old_images,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("shapesync");

	/* every backend buffers its changes and writes them at pre-commit */
	ShapesyncRegisterTxlogCallbacks();
	/* every backend rings the doorbell after committing log writes */
	ShapesyncRegisterXactCallback();

	if (!process_shared_preload_libraries_in_progress)
		return;

	ShapesyncShmemRequest();
	ShapesyncRegisterWorkers();
}
