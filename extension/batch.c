/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The batch reader: shapesync.batch(tick_id), every change whose xid is
 *	  visible in the tick's snapshot and not in the previous tick's, one row
 *	  per change, decoded, in batch order.
 *
 * It returns exactly what the SQL formulation (shapesync.batch_sql(), kept
 * as the reference the regress test compares with) returns, in the same
 * order and with the same errors, without its costs: no plpgsql RETURN
 * QUERY materialisation, no window sort over the whole batch, no
 * change_entries() tuplestore per record, no per-image relation open,
 * privilege check and layout hash.
 *
 *	1. The horizon (shapesync.log_state) and the isolation level are checked
 *	   first (SS001 for a tick at or below the horizon).
 *	2. The two snapshots are looked up; a missing tick (or one without a
 *	   predecessor) has an empty batch.
 *	3. One statement reads the log records with xid in [xmin(prev),
 *	   xmax(cur)) through the xid indexes of the three log tables, filtered
 *	   by visibility in both snapshots, as the caller (SELECT on
 *	   shapesync.changes), with a snapshot of its own; the records are
 *	   copied into memory.
 *	4. In memory: the largest seq per xid, then every change of every
 *	   record (op 'B' records expanded in place), sorted by (largest seq of
 *	   its transaction, ord, seq): transactions in row-lock order, a
 *	   transaction's changes in the order it made them.
 *	5. Each change is decoded once (row_values_or_null()'s rules) and put
 *	   in the result.
 *	6. TRUNCATE is not MVCC-safe: a rotation that committed after step 3
 *	   started may have emptied a table before it was read.  Every rotation
 *	   moves the horizon in the same transaction, so a last statement
 *	   (a new snapshot: READ COMMITTED, which step 1 enforces) re-reads the
 *	   horizon and raises SS001 if it reached the tick.
 *
 * The statements are SPI plans prepared once per backend (SPI_keepplan):
 * the plan cache re-plans them after DDL on the tables they read.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/xid8.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_batch);
PG_FUNCTION_INFO_V1(shapesync_batches);
PG_FUNCTION_INFO_V1(shapesync_batches_packed);
PG_FUNCTION_INFO_V1(shapesync_text_array_send);

/* one log record of the batch, copied out of the scan */
typedef struct BatchRecord
{
	uint64		xid;
	int64		seq;
	int64		tx_max_seq;		/* largest seq of its xid in the batch */
	Oid			relid;
	char		op;
	int32		layout;
	bytea	   *new_row;		/* detoasted copies (MAXALIGNed), or NULL */
	bytea	   *old_row;
	struct varlena *shape_ops;
	struct varlena *error;
	uint64		version;		/* 0: NULL */
} BatchRecord;

/* one change, a sort item of the batch */
typedef struct BatchChange
{
	int64		tx_max_seq;
	int64		ord;
	int64		seq;
	uint64		xid;
	Oid			relid;
	char		op;
	int32		layout;
	bytea	   *new_img;		/* point into the record's copy, or NULL */
	bytea	   *old_img;
	struct varlena *shape_ops;
	struct varlena *error;
	uint64		version;		/* 0: NULL */
} BatchChange;

#define BATCH_COLS 10
#define BATCH_FETCH 1000

/* plans kept for the backend's life */
static SPIPlanPtr horizon_plan = NULL;
static SPIPlanPtr snaps_plan = NULL;
static SPIPlanPtr records_plan = NULL;

/* A plan of query (with nargs args of types argtypes), prepared once. */
static SPIPlanPtr
KeptPlan(SPIPlanPtr *slot, const char *query, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(query, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", query,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*slot = plan;
	}
	return *slot;
}

/* The horizon tick (shapesync.log_state) in a new snapshot; false when it has no row. */
static bool
ReadHorizon(int64 *horizon)
{
	SPIPlanPtr	plan = KeptPlan(&horizon_plan,
								"SELECT s.horizon_tick FROM shapesync.log_state s", 0, NULL);
	bool		isnull;
	Datum		d;

	if (SPI_execute_plan(plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading shapesync.log_state failed");
	if (SPI_processed == 0)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return false;
	*horizon = DatumGetInt64(d);
	return true;
}

/* Copy varlena column col of tup (detoasted) into CurrentMemoryContext, NULL for NULL. */
static struct varlena *
CopyColumn(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (isnull)
		return NULL;
	return pg_detoast_datum_copy((struct varlena *) DatumGetPointer(d));
}

/* Order of records by xid. */
static int
RecordXidCmp(const void *a, const void *b)
{
	const BatchRecord *ra = *(BatchRecord *const *) a;
	const BatchRecord *rb = *(BatchRecord *const *) b;

	if (ra->xid != rb->xid)
		return ra->xid < rb->xid ? -1 : 1;
	return 0;
}

/* Order of records by their transaction's largest seq, then their own seq. */
static int
RecordBatchCmp(const void *a, const void *b)
{
	const BatchRecord *ra = *(BatchRecord *const *) a;
	const BatchRecord *rb = *(BatchRecord *const *) b;

	if (ra->tx_max_seq != rb->tx_max_seq)
		return ra->tx_max_seq < rb->tx_max_seq ? -1 : 1;
	if (ra->seq != rb->seq)
		return ra->seq < rb->seq ? -1 : 1;
	return 0;
}

/* Batch order: transactions by largest seq, then ord, then seq. */
static int
ChangeCmp(const void *a, const void *b)
{
	const BatchChange *ca = (const BatchChange *) a;
	const BatchChange *cb = (const BatchChange *) b;

	if (ca->tx_max_seq != cb->tx_max_seq)
		return ca->tx_max_seq < cb->tx_max_seq ? -1 : 1;
	if (ca->ord != cb->ord)
		return ca->ord < cb->ord ? -1 : 1;
	if (ca->seq != cb->seq)
		return ca->seq < cb->seq ? -1 : 1;
	if (ca->xid != cb->xid)
		return ca->xid < cb->xid ? -1 : 1;
	return 0;
}

/* Raise SS001 for tick_id; detail says why. */
static void
LogTruncatedError(int64 tick_id, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_SHAPESYNC_LOG_TRUNCATED),
			 errmsg("the change log no longer holds tick " INT64_FORMAT, tick_id),
			 errdetail("%s", detail),
			 errhint("Re-sync the shapes that need older changes (shapesync.log_retention keeps them longer).")));
}

/*
 * Read the records of the batch of tick_id (steps 2 and 3) into
 * cxt; returns how many, *records_out, or -1 when the tick or the one
 * before it does not exist.  SPI is connected.
 */
static int
ReadRecords(int64 tick_id, MemoryContext cxt, BatchRecord ***records_out,
			bool *time_isnull, int64 *time_us)
{
	Oid			snap_types[1] = {INT8OID};
	Oid			rec_types[2] = {PG_SNAPSHOTOID, PG_SNAPSHOTOID};
	SPIPlanPtr	plan;
	Datum		args[2];
	bool		isnull_prev;
	bool		isnull_cur;
	Datum		prev_snap;
	Datum		cur_snap;
	Portal		portal;
	BatchRecord **records = NULL;
	int			n = 0;
	int			cap = 0;

	plan = KeptPlan(&snaps_plan,
					"SELECT (SELECT t.snap FROM shapesync.ticks t WHERE t.tick_id = $1), "
					"(SELECT t.snap FROM shapesync.ticks t WHERE t.tick_id < $1 "
					"ORDER BY t.tick_id DESC LIMIT 1), "
					"(SELECT (extract(epoch FROM t.tick_time) * 1000000)::bigint "
					"FROM shapesync.ticks t WHERE t.tick_id = $1)", 1, snap_types);
	args[0] = Int64GetDatum(tick_id);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "reading shapesync.ticks failed");
	cur_snap = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull_cur);
	prev_snap = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull_prev);
	*time_us = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, time_isnull));
	*records_out = NULL;
	if (isnull_cur || isnull_prev)
		return -1;
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

		args[0] = PointerGetDatum(PG_DETOAST_DATUM_COPY(prev_snap));
		args[1] = PointerGetDatum(PG_DETOAST_DATUM_COPY(cur_snap));
		MemoryContextSwitchTo(oldcxt);
	}

	plan = KeptPlan(&records_plan,
					"SELECT c.xid, c.seq, c.relid, c.op, c.layout, c.new_row, c.old_row, "
					"c.shape_ops, c.error, c.version "
					"FROM shapesync.changes c "
					"WHERE c.xid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmin($1) "
					"AND c.xid OPERATOR(pg_catalog.<) pg_catalog.pg_snapshot_xmax($2) "
					"AND pg_catalog.pg_visible_in_snapshot(c.xid, $2) "
					"AND NOT pg_catalog.pg_visible_in_snapshot(c.xid, $1)",
					2, rec_types);
	portal = SPI_cursor_open(NULL, plan, args, NULL, false);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, BATCH_FETCH);
		if (SPI_processed == 0)
			break;
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
			TupleDesc	desc = SPI_tuptable->tupdesc;

			for (uint64 i = 0; i < SPI_processed; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				BatchRecord *r = palloc(sizeof(BatchRecord));
				bool		isnull;
				Datum		d;

				r->xid = U64FromFullTransactionId(DatumGetFullTransactionId(SPI_getbinval(tup, desc, 1, &isnull)));
				r->seq = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
				r->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
				r->op = DatumGetChar(SPI_getbinval(tup, desc, 4, &isnull));
				r->layout = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
				r->new_row = CopyColumn(tup, desc, 6);
				r->old_row = CopyColumn(tup, desc, 7);
				r->shape_ops = CopyColumn(tup, desc, 8);
				r->error = CopyColumn(tup, desc, 9);
				d = SPI_getbinval(tup, desc, 10, &isnull);
				r->version = isnull ? 0 : U64FromFullTransactionId(DatumGetFullTransactionId(d));
				r->tx_max_seq = r->seq;
				if (n == cap)
				{
					cap = cap == 0 ? 256 : cap * 2;
					records = records == NULL ? palloc(sizeof(BatchRecord *) * cap) :
						repalloc_huge(records, sizeof(BatchRecord *) * cap);
				}
				records[n++] = r;
			}
			MemoryContextSwitchTo(oldcxt);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	*records_out = records;
	return n;
}

/* Append the changes of record r to *changes (growing it in CurrentMemoryContext). */
static void
ExpandRecord(BatchRecord *r, BatchChange **changes, int64 *n, int64 *cap)
{
	ShapesyncRecordReader reader;
	ShapesyncPackedChange pc;
	BatchChange *c;

	if (r->op != 'B')
	{
		if (*n == *cap)
		{
			*cap *= 2;
			*changes = repalloc_huge(*changes, sizeof(BatchChange) * *cap);
		}
		c = &(*changes)[(*n)++];
		c->tx_max_seq = r->tx_max_seq;
		c->ord = 0;
		c->seq = r->seq;
		c->xid = r->xid;
		c->relid = r->relid;
		c->op = r->op;
		c->layout = r->layout;
		c->new_img = r->new_row;
		c->old_img = r->old_row;
		c->shape_ops = r->shape_ops;
		c->error = r->error;
		c->version = r->version;
		return;
	}

	if (r->new_row == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid change-log record"),
				 errdetail("A record of op B has no packed changes.")));
	ShapesyncRecordBegin(&reader, r->new_row);
	while (ShapesyncRecordNext(&reader, &pc))
	{
		if (*n == *cap)
		{
			*cap *= 2;
			*changes = repalloc_huge(*changes, sizeof(BatchChange) * *cap);
		}
		c = &(*changes)[(*n)++];
		c->tx_max_seq = r->tx_max_seq;
		c->ord = (int64) pc.ord;
		c->seq = r->seq;
		c->xid = r->xid;
		c->relid = pc.relid;
		c->op = pc.op;
		c->layout = pc.layout;
		c->new_img = (bytea *) pc.new_img;
		c->old_img = (bytea *) pc.old_img;
		c->shape_ops = pc.shape_ops;
		c->error = pc.error;
		c->version = pc.version;
	}
}

/*
 * The wire form of a text[] of texts[0..n) (NULL entries as NULLs, lower
 * bound 1): exactly what text_array_send() gives for the array that
 * CStringsToTextArray() builds of them, preceded by its length (int4).
 */
static void
PackTexts(StringInfo buf, char **texts, int n)
{
	bool		hasnull = false;
	Size		total = n > 0 ? 20 : 12;
	int		   *lens = (int *) palloc(sizeof(int) * Max(n, 1));

	/* the texts in the client's encoding (textsend's conversion; none when they match), and the size */
	for (int i = 0; i < n; i++)
	{
		lens[i] = -1;
		if (texts[i] == NULL)
			hasnull = true;
		else
		{
			int			len = strlen(texts[i]);
			char	   *out = pg_server_to_client(texts[i], len);

			if (out != texts[i])
			{
				texts[i] = out;
				len = strlen(out);
			}
			lens[i] = len;
			total += len;
		}
		total += 4;
	}
	enlargeStringInfo(buf, 4 + total);
	pq_writeint32(buf, (uint32) total);
	pq_writeint32(buf, n > 0 ? 1 : 0);
	pq_writeint32(buf, hasnull ? 1 : 0);
	pq_writeint32(buf, TEXTOID);
	if (n > 0)
	{
		pq_writeint32(buf, n);
		pq_writeint32(buf, 1);
	}
	for (int i = 0; i < n; i++)
	{
		pq_writeint32(buf, (uint32) lens[i]);
		if (lens[i] > 0)
		{
			memcpy(buf->data + buf->len, texts[i], lens[i]);
			buf->len += lens[i];
		}
	}
	buf->data[buf->len] = '\0';
	pfree(lens);
}

/* Flags of a packed change: which optional fields follow. */
#define PACK_TIME		0x01
#define PACK_NEW		0x02
#define PACK_OLD		0x04
#define PACK_OPS		0x08
#define PACK_ERROR		0x10
#define PACK_VERSION	0x20

/*
 * One change of batches() as one bytea, every integer in network order:
 *
 *	int2 flags (PACK_*), int8 tick_id, [int8 tick_time_us], int8 xid,
 *	int4 relid, int1 op, [int8 version],
 *	[int4 length + new_values as text_array_send() gives them],
 *	[int4 length + old_values, the same],
 *	[int4 length + shape_ops as array_send() gives them],
 *	[int4 length + error, in the client's encoding]
 *
 * The bracketed fields are there when batches() has them non-NULL.  The
 * regress test batch_reader builds the same bytes from batches() in SQL.
 */
static bytea *
PackChange(ShapesyncDecoder *decoder, BatchChange *c, int64 tick_id, int64 time_us, bool time_isnull)
{
	StringInfoData buf;
	char	  **texts = NULL;
	int			n = 0;
	uint16		flags = 0;
	int			flags_at;
	uint64		version = 0;

	pq_begintypsend(&buf);
	flags_at = buf.len;
	pq_sendint16(&buf, 0);		/* set below */
	pq_sendint64(&buf, tick_id);
	if (!time_isnull)
	{
		flags |= PACK_TIME;
		pq_sendint64(&buf, time_us);
	}
	pq_sendint64(&buf, c->xid);
	pq_sendint32(&buf, c->relid);
	pq_sendbyte(&buf, (uint8) c->op);
	if (c->op == 'I' || c->op == 'U')
	{
		flags |= PACK_VERSION;
		version = c->version != 0 ? c->version : c->xid;
		pq_sendint64(&buf, version);
	}
	if (c->new_img != NULL &&
		(texts = ShapesyncDecodeTexts(decoder, c->relid, c->layout, c->new_img, &n)) != NULL)
	{
		flags |= PACK_NEW;
		PackTexts(&buf, texts, n);
	}
	if (c->old_img != NULL &&
		(texts = ShapesyncDecodeOldTexts(decoder, c->relid, c->layout, c->old_img, c->new_img, &n)) != NULL)
	{
		flags |= PACK_OLD;
		PackTexts(&buf, texts, n);
	}
	if (c->shape_ops != NULL)
	{
		ArrayType  *a = DatumGetArrayTypeP(PointerGetDatum(c->shape_ops));
		int			ndim = ARR_NDIM(a);
		int			nops = ndim == 0 ? 0 : ARR_DIMS(a)[0];
		int32	   *ops = (int32 *) ((char *) a + ARR_OVERHEAD_NONULLS(ndim));

		if (ARR_ELEMTYPE(a) != INT4OID || ndim > 1 || ARR_HASNULL(a))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("invalid change-log record"),
					 errdetail("Its shape_ops is not a one-dimensional int4[] without NULLs.")));
		flags |= PACK_OPS;
		pq_sendint32(&buf, ndim == 0 ? 12 : 20 + 8 * nops);
		pq_sendint32(&buf, ndim);
		pq_sendint32(&buf, 0);
		pq_sendint32(&buf, INT4OID);
		if (ndim == 1)
		{
			pq_sendint32(&buf, nops);
			pq_sendint32(&buf, ARR_LBOUND(a)[0]);
		}
		for (int i = 0; i < nops; i++)
		{
			pq_sendint32(&buf, 4);
			pq_sendint32(&buf, ops[i]);
		}
	}
	if (c->error != NULL)
	{
		char	   *data = VARDATA_ANY(c->error);
		int			len = VARSIZE_ANY_EXHDR(c->error);
		char	   *out = pg_server_to_client(data, len);

		if (out != data)
			len = strlen(out);
		flags |= PACK_ERROR;
		pq_sendint32(&buf, len);
		pq_sendbytes(&buf, out, len);
	}
	flags = pg_hton16(flags);
	memcpy(buf.data + flags_at, &flags, 2);
	return pq_endtypsend(&buf);
}

/*
 * Put the changes of tick tick_id (none when no_tick) into the result, in
 * batch order (steps 1 to 6 of the head of this file), each row's values
 * from column first_col on; the columns before it are tick_id and the
 * tick's time in microseconds since the Unix epoch (batches()).  SPI is
 * connected.
 */
static void
ReadTick(ReturnSetInfo *rsinfo, bool no_tick, int64 tick_id, int first_col, bool packed)
{
	MemoryContext cxt;
	MemoryContext row_cxt;
	MemoryContext oldcxt;
	ShapesyncDecoder *decoder;
	BatchRecord **records = NULL;
	BatchChange *changes;
	int			nrecords;
	int64		nchanges = 0;
	int64		cap;
	int64		horizon;
	bool		have_horizon;
	bool		time_isnull = true;
	int64		time_us = 0;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "shapesync batch",
								ALLOCSET_DEFAULT_SIZES);
	row_cxt = AllocSetContextCreate(cxt, "shapesync batch row", ALLOCSET_DEFAULT_SIZES);

	/* 1. */
	have_horizon = ReadHorizon(&horizon);
	if (XactIsoLevel != XACT_READ_COMMITTED)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("shapesync.batch() must run at isolation level READ COMMITTED"),
				 errdetail("It checks after reading that no rotation truncated what it read, which needs a new snapshot per statement.")));
	if (tick_id > 0 && have_horizon && tick_id <= horizon)
	{
		char		detail[128];

		snprintf(detail, sizeof(detail),
				 "Changes visible in tick " INT64_FORMAT " were truncated; batches are complete only after it.",
				 horizon);
		LogTruncatedError(tick_id, detail);
	}

	/* 2., 3. (batch(NULL): no such tick, as the SQL formulation) */
	nrecords = no_tick ? -1 : ReadRecords(tick_id, cxt, &records, &time_isnull, &time_us);
	if (nrecords < 0)
	{
		/* no such tick, or no tick before it: empty, as the SQL formulation */
		MemoryContextDelete(cxt);
		return;
	}

	/* 4. */
	oldcxt = MemoryContextSwitchTo(cxt);
	if (nrecords > 0)
	{
		qsort(records, nrecords, sizeof(BatchRecord *), RecordXidCmp);
		for (int i = 0; i < nrecords;)
		{
			int			j = i;
			int64		max_seq = records[i]->seq;

			for (; j < nrecords && records[j]->xid == records[i]->xid; j++)
				max_seq = Max(max_seq, records[j]->seq);
			for (; i < j; i++)
				records[i]->tx_max_seq = max_seq;
		}
	}
	/*
	 * Records in batch order, then their changes in that order: a record's
	 * packed changes come in ord order, so the changes are usually sorted
	 * already and one pass shows it (sorting millions of changes was a tenth
	 * of a large read).  Anything else (a transaction's records whose ords
	 * interleave) is sorted as before.
	 */
	if (nrecords > 1)
		qsort(records, nrecords, sizeof(BatchRecord *), RecordBatchCmp);
	cap = Max(nrecords, 16);
	changes = palloc_extended(sizeof(BatchChange) * cap, MCXT_ALLOC_HUGE);
	for (int i = 0; i < nrecords; i++)
		ExpandRecord(records[i], &changes, &nchanges, &cap);
	for (int64 i = 1; i < nchanges; i++)
	{
		if (ChangeCmp(&changes[i - 1], &changes[i]) > 0)
		{
			qsort(changes, nchanges, sizeof(BatchChange), ChangeCmp);
			break;
		}
	}

	/* 5. */
	decoder = ShapesyncDecoderCreate(cxt);
	for (int64 i = 0; i < nchanges; i++)
	{
		BatchChange *c = &changes[i];
		Datum		all_values[BATCH_COLS + 2];
		bool		all_nulls[BATCH_COLS + 2];
		Datum	   *values = all_values + first_col;
		bool	   *nulls = all_nulls + first_col;

		MemoryContextSwitchTo(row_cxt);
		if (packed)
		{
			all_values[0] = PointerGetDatum(PackChange(decoder, c, tick_id, time_us, time_isnull));
			all_nulls[0] = false;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, all_values, all_nulls);
			MemoryContextReset(row_cxt);
			continue;
		}
		if (first_col == 2)
		{
			all_values[0] = Int64GetDatum(tick_id);
			all_nulls[0] = false;
			all_values[1] = Int64GetDatum(time_us);
			all_nulls[1] = time_isnull;
		}
		values[0] = FullTransactionIdGetDatum(FullTransactionIdFromU64(c->xid));
		values[1] = Int64GetDatum(c->seq);
		values[2] = Int64GetDatum(c->tx_max_seq);
		values[3] = ObjectIdGetDatum(c->relid);
		values[4] = CharGetDatum(c->op);
		nulls[0] = nulls[1] = nulls[2] = nulls[3] = nulls[4] = false;
		nulls[5] = nulls[6] = true;
		values[5] = values[6] = (Datum) 0;
		if (c->new_img != NULL)
			values[5] = ShapesyncDecodeValuesOrNull(decoder, c->relid, c->layout, c->new_img, &nulls[5]);
		if (c->old_img != NULL)
			values[6] = ShapesyncDecodeOldValuesOrNull(decoder, c->relid, c->layout, c->old_img,
													   c->new_img, &nulls[6]);
		nulls[7] = (c->shape_ops == NULL);
		values[7] = PointerGetDatum(c->shape_ops);
		nulls[8] = (c->error == NULL);
		values[8] = PointerGetDatum(c->error);
		/* the new row's version for I/U: its own, else the transaction's */
		nulls[9] = !(c->op == 'I' || c->op == 'U');
		values[9] = nulls[9] ? (Datum) 0 :
			FullTransactionIdGetDatum(FullTransactionIdFromU64(c->version != 0 ? c->version : c->xid));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, all_values, all_nulls);
		MemoryContextReset(row_cxt);
	}
	MemoryContextSwitchTo(oldcxt);
	ShapesyncDecoderClose(decoder);

	/* 6. */
	if (tick_id > 0 && ReadHorizon(&horizon) && horizon >= tick_id)
		LogTruncatedError(tick_id, "It was truncated while being read.");

	MemoryContextDelete(cxt);
}

/* Set up the materialized result of a batch function. */
static ReturnSetInfo *
BatchResult(FunctionCallInfo fcinfo)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, (rsinfo != NULL && IsA(rsinfo, ReturnSetInfo) &&
								 rsinfo->expectedDesc != NULL) ? MAT_SRF_USE_EXPECTED_DESC : 0);
	return rsinfo;
}

/*
 * batch(tick_id): the changes of a tick, decoded, in batch order; see the
 * head of this file.
 */
Datum
shapesync_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = BatchResult(fcinfo);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ReadTick(rsinfo, PG_ARGISNULL(0), PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0), 0, false);
	SPI_finish();
	return (Datum) 0;
}

/*
 * batches(after, upto): batch(t) for every tick id t in (after, upto], in
 * that order, each row with t and the tick's time: what the sidecar read
 * with generate_series, LATERAL batch() and a sort of the whole result,
 * without the sort.  Every tick id is read, not just the ticks that exist:
 * one at or below the horizon raises SS001 as batch() does.
 */
static Datum
ReadTicks(FunctionCallInfo fcinfo, bool packed)
{
	ReturnSetInfo *rsinfo = BatchResult(fcinfo);
	int64		after;
	int64		upto;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		return (Datum) 0;
	after = PG_GETARG_INT64(0);
	upto = PG_GETARG_INT64(1);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (int64 t = after + 1; t <= upto && t > after; t++)
	{
		CHECK_FOR_INTERRUPTS();
		ReadTick(rsinfo, false, t, 2, packed);
	}
	SPI_finish();
	return (Datum) 0;
}

Datum
shapesync_batches(PG_FUNCTION_ARGS)
{
	return ReadTicks(fcinfo, false);
}

/*
 * batches_packed(after, upto): the rows of batches(after, upto), each as
 * one bytea (PackChange()): what the sidecar reads.  One value per change
 * instead of twelve sent one by one (each binary send of an integer takes a
 * buffer of its own), and the row images written once, in their wire form,
 * instead of built as text[] and then serialised again.
 */
Datum
shapesync_batches_packed(PG_FUNCTION_ARGS)
{
	return ReadTicks(fcinfo, true);
}

/*
 * text_array_send(a text[]): the bytes array_send(a) gives (the binary
 * wire format of a text[]), built in one buffer.  array_send calls textsend
 * through the function manager for every element, and each call allocates
 * a buffer of its own (1 KiB) to copy the element into before it is copied
 * again: a sixth of the sidecar's batch reads under sustained writes.  The
 * sidecar selects new_values and old_values through this (as bytea) and
 * parses them exactly as before.  One-dimensional (or empty) arrays only.
 */
Datum
shapesync_text_array_send(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	int			ndim = ARR_NDIM(a);
	int			n = ndim == 0 ? 0 : ARR_DIMS(a)[0];
	bits8	   *bitmap = ARR_NULLBITMAP(a);
	char	   *p = (char *) a + (ARR_HASNULL(a) ? (Size) a->dataoffset : ARR_OVERHEAD_NONULLS(ndim));
	StringInfoData buf;

	if (ARR_ELEMTYPE(a) != TEXTOID || ndim > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("shapesync.text_array_send() takes a one-dimensional text[]"),
				 errdetail("It was given a %d-dimensional array of type %s.", ndim,
						   format_type_be(ARR_ELEMTYPE(a))),
				 errhint("Use array_send() for other arrays.")));
	pq_begintypsend(&buf);
	enlargeStringInfo(&buf, ARR_SIZE(a) + 20 + 4 * n);
	pq_sendint32(&buf, ndim);
	pq_sendint32(&buf, bitmap ? 1 : 0);
	pq_sendint32(&buf, TEXTOID);
	if (ndim == 1)
	{
		pq_sendint32(&buf, n);
		pq_sendint32(&buf, ARR_LBOUND(a)[0]);
	}
	for (int i = 0; i < n; i++)
	{
		char	   *data;
		int			len;
		char	   *out;

		if (bitmap && (bitmap[i / 8] & (1 << (i % 8))) == 0)
		{
			pq_sendint32(&buf, -1);
			continue;
		}
		data = VARDATA_ANY(p);
		len = VARSIZE_ANY_EXHDR(p);
		/* textsend's conversion to the client's encoding (none when they match) */
		out = pg_server_to_client(data, len);
		if (out != data)
			len = strlen(out);
		pq_sendint32(&buf, len);
		pq_sendbytes(&buf, out, len);
		if (out != data)
			pfree(out);
		p = att_addlength_pointer(p, -1, p);
		p = (char *) att_align_nominal(p, TYPALIGN_INT);
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}
