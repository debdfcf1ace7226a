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

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "shapesync.h"

PG_MODULE_MAGIC;

char	   *shapesync_database = NULL;
int			shapesync_tick_idle_ms = 1000;
int			shapesync_tick_min_interval_ms = 2;

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
							"Under a steady write load every commit rings the doorbell; ticks "
							"closer together than this are coalesced into one. 0 ticks on every ring.",
							&shapesync_tick_min_interval_ms,
							2,
							0, 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("shapesync");

	/* every backend rings the doorbell after committing log writes */
	ShapesyncRegisterXactCallback();

	if (!process_shared_preload_libraries_in_progress)
		return;

	ShapesyncShmemRequest();
	ShapesyncRegisterWorkers();
}
