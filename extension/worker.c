/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The doorbell (shared memory rung by committing writers) and the
 *	  background workers: one "shapesync launcher" and one "shapesync
 *	  ticker" per database named in shapesync.database.
 *
 * Shared state: an array of SHAPESYNC_MAX_DATABASES ticker slots, slot i
 * serving the i-th entry of shapesync.database.  Every field is a
 * pg_atomic_uint32 and no lock protects them; the rules are:
 *
 *	- pid: claimed by a ticker with compare-and-exchange 0 -> its pid
 *	  before it publishes anything else, and reset to 0 last on exit
 *	  (on_shmem_exit).  So at most one ticker owns a slot, and the launcher
 *	  starts no ticker for a slot whose pid is non-zero.
 *	- dboid, procno: written only by the slot's owner, after claiming pid
 *	  and before its first tick; cleared before pid on exit.  procno is
 *	  stored plus one (0 = unknown).
 *	- rung: incremented by any committing backend of that database that
 *	  wrote to the change log (the doorbell, XACT_EVENT_COMMIT), then the
 *	  owner's latch is set; the owner swaps it back to 0 before ticking, so
 *	  rings that arrive during a tick cause one more tick, and the count it
 *	  swapped out (commits covered by the tick) tells it whether it is under
 *	  load (coalescing).
 *
 * A reader may see a stale procno (the ticker just exited and its PGPROC
 * was reused): it then sets some other process's latch, a spurious wake-up
 * that latches tolerate.  A ring lost in the window before a ticker has
 * published its slot is covered by the ticker's first tick and its idle
 * timer.  Nothing here blocks a committing writer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/varlena.h"

#include "shapesync.h"

typedef struct ShapesyncTickerSlot
{
	pg_atomic_uint32 rung;		/* doorbell: commits since the last swap */
	pg_atomic_uint32 pid;		/* owning ticker's pid, 0 if none */
	pg_atomic_uint32 dboid;		/* database it serves, InvalidOid if none */
	pg_atomic_uint32 procno;	/* its pgprocno + 1, 0 if unknown */
} ShapesyncTickerSlot;

typedef struct ShapesyncShared
{
	ShapesyncTickerSlot slots[SHAPESYNC_MAX_DATABASES];
} ShapesyncShared;

static ShapesyncShared *shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* did the current transaction write to the change log? */
static bool wrote_changes = false;
static bool xact_callback_registered = false;

/* the launcher polls pg_database this often for listed databases */
#define LAUNCHER_POLL_MS 1000
/* a ticker re-checks for the extension this often while it is missing */
#define TICKER_NOT_INSTALLED_MS 2000

/* Size of the shared state. */
static Size
ShapesyncShmemSize(void)
{
	return MAXALIGN(sizeof(ShapesyncShared));
}

/* Request the shared state (shmem_request_hook). */
static void
shapesync_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(ShapesyncShmemSize());
}

/* Create or attach to the shared state (shmem_startup_hook). */
static void
shapesync_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("shapesync", ShapesyncShmemSize(), &found);
	if (!found)
	{
		for (int i = 0; i < SHAPESYNC_MAX_DATABASES; i++)
		{
			pg_atomic_init_u32(&shared->slots[i].rung, 0);
			pg_atomic_init_u32(&shared->slots[i].pid, 0);
			pg_atomic_init_u32(&shared->slots[i].dboid, InvalidOid);
			pg_atomic_init_u32(&shared->slots[i].procno, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the shared-memory hooks (called from _PG_init with the preload). */
void
ShapesyncShmemRequest(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = shapesync_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = shapesync_shmem_startup;
}

/* Split shapesync.database into a list of names (palloc'd). */
static List *
ShapesyncDatabaseList(void)
{
	List	   *names = NIL;
	char	   *raw = pstrdup(shapesync_database ? shapesync_database : "");

	if (!SplitGUCList(raw, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in parameter \"shapesync.database\"")));
	if (list_length(names) > SHAPESYNC_MAX_DATABASES)
		ereport(WARNING,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("shapesync.database lists %d databases, only the first %d are served",
						list_length(names), SHAPESYNC_MAX_DATABASES)));
	return names;
}

/* Is the library preloaded (shared memory, doorbell and tickers exist)? */
bool
ShapesyncPreloaded(void)
{
	return shared != NULL;
}

/* Is dbname among the databases shapesync.database gives a ticker? */
bool
ShapesyncDatabaseListed(const char *dbname)
{
	List	   *names = ShapesyncDatabaseList();
	ListCell   *lc;
	int			i = 0;

	foreach(lc, names)
	{
		if (i++ >= SHAPESYNC_MAX_DATABASES)
			break;
		if (strcmp((const char *) lfirst(lc), dbname) == 0)
			return true;
	}
	return false;
}

/* Register the launcher (called from _PG_init with the preload). */
void
ShapesyncRegisterWorkers(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "shapesync");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "shapesync_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "shapesync launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "shapesync launcher");
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

/* Ring the doorbell of this database's ticker; never blocks. */
static void
ShapesyncRing(void)
{
	if (shared == NULL)
		return;
	for (int i = 0; i < SHAPESYNC_MAX_DATABASES; i++)
	{
		ShapesyncTickerSlot *slot = &shared->slots[i];
		uint32		procno;

		if (pg_atomic_read_u32(&slot->dboid) != MyDatabaseId)
			continue;
		(void) pg_atomic_fetch_add_u32(&slot->rung, 1);	/* a full barrier */
		procno = pg_atomic_read_u32(&slot->procno);
		if (procno > 0 && procno <= ProcGlobal->allProcCount)
			SetLatch(&ProcGlobal->allProcs[procno - 1].procLatch);
	}
}

/* Transaction callback: ring after a commit that wrote changes. */
static void
shapesync_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wrote_changes)
			{
				wrote_changes = false;
				ShapesyncRing();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			wrote_changes = false;
			break;
		default:
			break;
	}
}

/* Register the commit callback once per process. */
void
ShapesyncRegisterXactCallback(void)
{
	if (xact_callback_registered)
		return;
	RegisterXactCallback(shapesync_xact_callback, NULL);
	xact_callback_registered = true;
}

/* Note that the current transaction wrote to the change log. */
void
ShapesyncDoorbellArm(void)
{
	wrote_changes = true;
}

/* Pid of the ticker serving database dboid, or 0. */
int
ShapesyncWorkerPid(Oid dboid)
{
	if (shared == NULL)
		return 0;
	for (int i = 0; i < SHAPESYNC_MAX_DATABASES; i++)
	{
		ShapesyncTickerSlot *slot = &shared->slots[i];
		uint32		pid;

		if (pg_atomic_read_u32(&slot->dboid) != dboid)
			continue;
		pid = pg_atomic_read_u32(&slot->pid);
		if (pid != 0)
			return (int) pid;
	}
	return 0;
}

/* Does a database of that name exist?  (heap scan: no database selected) */
static bool
DatabaseExists(const char *dbname)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (strcmp(NameStr(db->datname), dbname) == 0 && db->datallowconn &&
			db->datconnlimit != DATCONNLIMIT_INVALID_DB)
		{
			found = true;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/* Launcher: keep one ticker running per listed database that exists. */
void
shapesync_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle *handles[SHAPESYNC_MAX_DATABASES] = {0};
	List	   *names;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* no database: only shared catalogs (pg_database) are read */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	MemoryContextSwitchTo(TopMemoryContext);
	names = ShapesyncDatabaseList();

	for (;;)
	{
		bool		exists[SHAPESYNC_MAX_DATABASES] = {0};
		int			i;
		ListCell   *lc;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		i = 0;
		foreach(lc, names)
		{
			if (i >= SHAPESYNC_MAX_DATABASES)
				break;
			exists[i] = DatabaseExists((char *) lfirst(lc));
			i++;
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(TopMemoryContext);

		i = 0;
		foreach(lc, names)
		{
			const char *dbname = (const char *) lfirst(lc);

			if (i >= SHAPESYNC_MAX_DATABASES)
				break;

			if (handles[i] != NULL)
			{
				pid_t		pid;

				if (GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
				{
					pfree(handles[i]);
					handles[i] = NULL;
				}
				else if (!exists[i])
					TerminateBackgroundWorker(handles[i]);
			}

			if (exists[i] && handles[i] == NULL &&
				pg_atomic_read_u32(&shared->slots[i].pid) == 0)
			{
				BackgroundWorker worker;

				memset(&worker, 0, sizeof(worker));
				worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
				worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
				/* the launcher restarts it */
				worker.bgw_restart_time = BGW_NEVER_RESTART;
				snprintf(worker.bgw_library_name, BGW_MAXLEN, "shapesync");
				snprintf(worker.bgw_function_name, BGW_MAXLEN, "shapesync_worker_main");
				snprintf(worker.bgw_name, BGW_MAXLEN, "shapesync ticker for %s", dbname);
				snprintf(worker.bgw_type, BGW_MAXLEN, "shapesync ticker");
				strlcpy(worker.bgw_extra, dbname, BGW_EXTRALEN);
				worker.bgw_main_arg = Int32GetDatum(i);
				worker.bgw_notify_pid = MyProcPid;
				if (!RegisterDynamicBackgroundWorker(&worker, &handles[i]))
				{
					ereport(LOG,
							(errmsg("shapesync launcher could not start a ticker for database \"%s\"", dbname),
							 errhint("Increase max_worker_processes.")));
					handles[i] = NULL;
				}
			}
			i++;
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* Give the ticker slot back (on_shmem_exit). */
static void
ShapesyncTickerRelease(int code, Datum arg)
{
	ShapesyncTickerSlot *slot = &shared->slots[DatumGetInt32(arg)];

	pg_atomic_write_u32(&slot->dboid, InvalidOid);
	pg_atomic_write_u32(&slot->procno, 0);
	pg_memory_barrier();
	pg_atomic_write_u32(&slot->pid, 0);
}

/*
 * The wait after a tick: none after an unloaded one; after a loaded one,
 * tick_min_interval_ms, doubled for every further loaded tick in a row, up
 * to tick_max_interval_ms (never below the minimum).
 */
static int
NextTickInterval(int previous_ms, bool loaded)
{
	int			lo = shapesync_tick_min_interval_ms;
	int			hi = Max(lo, shapesync_tick_max_interval_ms);

	if (!loaded)
		return 0;
	if (previous_ms < lo)
		return lo;
	return Min(hi, previous_ms * 2);
}

/*
 * Ticker: wait for the doorbell or the idle timer, then tick and notify.
 *
 * When the ticker is idle, a ring is answered at once: a lone commit is
 * ticked (and its listeners woken) as soon as it is visible.  Under load it
 * coalesces: when the previous tick covered more than one commit, or more
 * than one rang while it ran, the next tick waits until
 * tick_min_interval_ms after the previous one, so a steady write load costs
 * at most about one tick per interval, however many commits ring.  While
 * the load lasts the interval doubles with every loaded tick, up to
 * tick_max_interval_ms: every tick costs the ticker and each consumer a
 * fixed amount of CPU (a transaction, a NOTIFY, a batch read), which a
 * saturated machine takes from the writers; the first unloaded tick brings
 * the interval back to tick_min_interval_ms.  (Whether
 * a ring arrived during the tick alone is no sign of load: on a saturated
 * machine the writers often do not run while the ticker does.)
 */
void
shapesync_worker_main(Datum main_arg)
{
	int			slotno = DatumGetInt32(main_arg);
	ShapesyncTickerSlot *slot;
	uint32		expected = 0;
	int			sleep_ms = 0;
	TimestampTz last_tick = 0;
	TimestampTz last_maintenance = 0;
	uint32		rings;
	bool		loaded = false; /* the last tick saw more than one commit */
	int			interval_ms = 0;	/* the wait after a loaded tick */

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (shared == NULL || slotno < 0 || slotno >= SHAPESYNC_MAX_DATABASES)
		elog(ERROR, "shapesync ticker started without its shared state");
	slot = &shared->slots[slotno];

	/* exactly one ticker per slot */
	if (!pg_atomic_compare_exchange_u32(&slot->pid, &expected, (uint32) MyProcPid))
		proc_exit(0);
	on_shmem_exit(ShapesyncTickerRelease, Int32GetDatum(slotno));

	BackgroundWorkerInitializeConnection(MyBgworkerEntry->bgw_extra, NULL, 0);

	/* a tick must be durable before anyone builds on it */
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
	/* database-level defaults must not make tick() fail */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", "shapesync ticker", PGC_USERSET, PGC_S_SESSION);
	pgstat_report_appname("shapesync ticker");

	pg_atomic_write_u32(&slot->procno, (uint32) MyProc->pgprocno + 1);
	pg_atomic_write_u32(&slot->dboid, MyDatabaseId);
	pg_memory_barrier();

	ereport(LOG,
			(errmsg("shapesync ticker started for database \"%s\"",
					MyBgworkerEntry->bgw_extra)));

	for (;;)
	{
		bool		installed;

		if (sleep_ms > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/*
		 * Coalesce under load only: after a tick that covered more than one
		 * commit, the next tick waits for the rest of tick_min_interval_ms.
		 * A lone ring is ticked at once.
		 */
		if (loaded && interval_ms > 0 && last_tick != 0)
		{
			long		since_ms = (long) ((GetCurrentTimestamp() - last_tick) / 1000);

			if (since_ms >= 0 && since_ms < interval_ms)
				(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 interval_ms - since_ms, PG_WAIT_EXTENSION);
		}

		/*
		 * Clear before ticking: a ring during the tick means tick again. A ring
		 * forces the tick (a committed change is proof enough); on the idle
		 * timer tick(false) decides whether anything can be new.
		 */
		rings = pg_atomic_exchange_u32(&slot->rung, 0);
		(void) ShapesyncRunTick(&installed, rings != 0);
		last_tick = GetCurrentTimestamp();
		loaded = rings > 1 || pg_atomic_read_u32(&slot->rung) > 1;
		interval_ms = NextTickInterval(interval_ms, loaded);

		/* retention, between ticks (its TRUNCATE never holds up a tick) */
		if (installed &&
			TimestampDifferenceExceeds(last_maintenance, last_tick,
									   shapesync_maintenance_interval_s * 1000))
		{
			ShapesyncRunMaintenance();
			last_maintenance = GetCurrentTimestamp();
		}

		sleep_ms = installed ? shapesync_tick_idle_ms : TICKER_NOT_INSTALLED_MS;
	}
}
