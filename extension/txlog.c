/*-------------------------------------------------------------------------
 *
 * txlog.c
 *	  One change-log record per transaction: the backend-local buffer of
 *	  the transaction's changes, its subtransaction bookkeeping, the
 *	  packed form of a multi-change record ('B') and its expansion
 *	  (shapesync.change_entries()).
 *
 * The capture trigger, the TRUNCATE trigger, the 'X' rows of membership.c
 * and the 'S' rows of DDL all go through ShapesyncLogRow() (changelog.c),
 * which appends an entry here instead of inserting a log row.  Each entry
 * carries its position in the transaction (ord, counted from 1) and the
 * nesting level of the (sub)transaction that made it:
 *
 *	- SUBXACT_EVENT_ABORT_SUB discards the entries of the aborting level and
 *	  deeper (always a suffix of the buffer: everything made since that
 *	  subtransaction started); SUBXACT_EVENT_COMMIT_SUB hands them to the
 *	  parent level.
 *	- XACT_EVENT_PRE_COMMIT and XACT_EVENT_PRE_PREPARE write what is left
 *	  as one record (one per TXLOG_RECORD_BYTES of changes, so that a record
 *	  fits in a heap page), taking one nextval(change_seq) per record then.  PostgreSQL fires
 *	  deferred AFTER triggers before these callbacks (CommitTransaction,
 *	  PrepareTransaction), so their changes are in the buffer; an entry
 *	  that still arrives after the flush (another extension's pre-commit
 *	  callback writing a tracked table) is written at once as its own
 *	  record.
 *	- When the buffer holds more than shapesync.tx_buffer_size bytes, the
 *	  entries of the current level are written at once as a record (the
 *	  "spill"); it is rolled back with that level if it aborts.  Entries of
 *	  outer levels stay buffered until the transaction is back at their
 *	  level (they cannot be written from inside a subtransaction, which
 *	  could roll them back).
 *
 * A transaction that wrote exactly one entry, in one record, keeps the
 * classic row layout (op I/U/D/T/X/S, ord 0).  Every other record is op
 * 'B': relid is its first entry's table, layout its number of entries,
 * new_row the packed entries, the other columns NULL.  Readers expand it
 * with shapesync.change_entries() and order a transaction's changes by
 * ord (then seq, for classic rows), which is the order they were made in,
 * whatever records they were written in.  Ordering between transactions
 * (row-lock order) uses each transaction's largest record seq; every
 * record of a transaction takes its seq after the changes it holds were
 * made, so a waiter's last record still follows the lock holder's commit.
 *
 * Packed entry (native byte order, MAXALIGNed, like the images it holds):
 * a TxlogPackedHeader, then the new image, the old image, the shape_ops
 * array and the error text, each a complete varlena, each MAXALIGNed.
 *
 * The buffer lives in a child of TopTransactionContext and is forgotten at
 * the end of the transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/xid8.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_change_entries);

int			shapesync_tx_buffer_size = 4 * 1024 * 1024;

/* the header of one packed entry */
typedef struct TxlogPackedHeader
{
	uint32		len;			/* of the whole entry, header included, MAXALIGNed */
	uint32		relid;
	uint64		ord;
	uint64		version;		/* 0: NULL */
	int32		layout;
	char		op;
	uint8		flags;			/* TXLOG_HAS_*: which varlenas follow */
	uint16		pad;
	uint32		pad2;
} TxlogPackedHeader;

/* packed bytes of a B record, so that the whole log row fits in a heap page */
#define TXLOG_RECORD_BYTES	8000

#define TXLOG_HAS_NEW	0x01
#define TXLOG_HAS_OLD	0x02
#define TXLOG_HAS_OPS	0x04
#define TXLOG_HAS_ERROR	0x08

/* the transaction's buffer */
static MemoryContext txlog_cxt = NULL;
static ShapesyncLogEntry **txlog_entries = NULL;
static int	txlog_n = 0;
static int	txlog_cap = 0;
static Size txlog_bytes = 0;
static uint64 txlog_next_ord = 1;
static int	txlog_records = 0;	/* records this transaction wrote */
static bool txlog_flushed = false;	/* past the pre-commit flush */
static bool txlog_callbacks_registered = false;

/* Forget the buffer (its memory goes with the transaction's). */
static void
TxlogReset(void)
{
	txlog_cxt = NULL;
	txlog_entries = NULL;
	txlog_n = 0;
	txlog_cap = 0;
	txlog_bytes = 0;
	txlog_next_ord = 1;
	txlog_records = 0;
	txlog_flushed = false;
}

/* Bytes of varlena v, 0 for NULL, MAXALIGNed. */
static Size
PackedLen(const void *v)
{
	return v == NULL ? 0 : MAXALIGN(VARSIZE(v));
}

/* Size of entry e packed. */
static Size
PackedEntrySize(const ShapesyncLogEntry *e)
{
	return MAXALIGN(sizeof(TxlogPackedHeader)) + PackedLen(e->new_img) +
		PackedLen(e->old_img) + PackedLen(e->shape_ops) + PackedLen(e->error);
}

/* Copy varlena v (if any) to *p and advance it. */
static void
PackVarlena(char **p, const void *v, uint8 bit, uint8 *flags)
{
	if (v == NULL)
		return;
	memcpy(*p, v, VARSIZE(v));
	*p += MAXALIGN(VARSIZE(v));
	*flags |= bit;
}

/* Pack entries[0..n) into one bytea. */
static bytea *
PackEntries(ShapesyncLogEntry **entries, int n)
{
	Size		total = VARHDRSZ;
	bytea	   *out;
	char	   *p;

	/* the payload starts MAXALIGNed inside the palloc'd chunk */
	total = MAXALIGN(VARHDRSZ);
	for (int i = 0; i < n; i++)
		total += PackedEntrySize(entries[i]);
	if (!AllocSizeIsValid(total))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("change-log record of %zu bytes is too large", total),
				 errhint("Lower shapesync.tx_buffer_size so that big transactions are written in parts.")));
	out = palloc0(total);
	SET_VARSIZE(out, total);
	p = (char *) out + MAXALIGN(VARHDRSZ);
	for (int i = 0; i < n; i++)
	{
		ShapesyncLogEntry *e = entries[i];
		TxlogPackedHeader *h = (TxlogPackedHeader *) p;

		h->len = (uint32) PackedEntrySize(e);
		h->relid = e->relid;
		h->ord = e->ord;
		h->version = e->version;
		h->layout = e->layout;
		h->op = e->op;
		h->flags = 0;
		p += MAXALIGN(sizeof(TxlogPackedHeader));
		PackVarlena(&p, e->new_img, TXLOG_HAS_NEW, &h->flags);
		PackVarlena(&p, e->old_img, TXLOG_HAS_OLD, &h->flags);
		PackVarlena(&p, e->shape_ops, TXLOG_HAS_OPS, &h->flags);
		PackVarlena(&p, e->error, TXLOG_HAS_ERROR, &h->flags);
	}
	Assert(p == (char *) out + total);
	return out;
}

/*
 * Write entries[0..n) as records: the classic layout when it is the
 * transaction's only change (single), else op 'B' records of at most
 * TXLOG_RECORD_BYTES of packed changes each (one bigger change makes a
 * record of its own).  A record that small stays in the heap page (the log
 * tables' toast_tuple_target is 8160): a TOASTed one costs a heap and an
 * index insert per 2 kB chunk, a page-sized one a heap and an index insert
 * per 8 kB.
 */
static void
TxlogWrite(ShapesyncLogEntry **entries, int n, bool single)
{
	int			first = 0;

	if (n == 0)
		return;
	if (single && n == 1)
	{
		ShapesyncWriteLogRecord(entries[0]);
		txlog_records++;
		return;
	}
	while (first < n)
	{
		ShapesyncLogEntry rec;
		Size		bytes = MAXALIGN(VARHDRSZ) + PackedEntrySize(entries[first]);
		int			end = first + 1;

		while (end < n && bytes + PackedEntrySize(entries[end]) <= TXLOG_RECORD_BYTES)
			bytes += PackedEntrySize(entries[end++]);
		memset(&rec, 0, sizeof(rec));
		rec.op = 'B';
		rec.relid = entries[first]->relid;
		rec.layout = end - first;
		rec.new_img = PackEntries(entries + first, end - first);
		ShapesyncWriteLogRecord(&rec);
		pfree(rec.new_img);
		txlog_records++;
		first = end;
	}
}

/* Free entry e and the copies it holds. */
static void
TxlogFreeEntry(ShapesyncLogEntry *e)
{
	if (e->new_img)
		pfree(e->new_img);
	if (e->old_img)
		pfree(e->old_img);
	if (e->shape_ops)
		pfree(e->shape_ops);
	if (e->error)
		pfree(e->error);
	pfree(e);
}

/* Write and drop the entries made at the current nesting level (the spill). */
static void
TxlogSpill(void)
{
	int			level = GetCurrentTransactionNestLevel();
	int			first = txlog_n;

	while (first > 0 && txlog_entries[first - 1]->nest_level >= level)
		first--;
	if (first == txlog_n)
		return;
	TxlogWrite(txlog_entries + first, txlog_n - first, false);
	for (int i = first; i < txlog_n; i++)
	{
		txlog_bytes -= txlog_entries[i]->size;
		TxlogFreeEntry(txlog_entries[i]);
	}
	txlog_n = first;
}

/* Memory for a new entry and its copies: the transaction's buffer context. */
MemoryContext
ShapesyncTxlogContext(void)
{
	if (txlog_cxt == NULL)
		txlog_cxt = AllocSetContextCreate(TopTransactionContext,
										  "shapesync transaction log",
										  ALLOCSET_DEFAULT_SIZES);
	return txlog_cxt;
}

/*
 * Append e (allocated in ShapesyncTxlogContext(), with its images) to the
 * transaction's buffer; spill when the buffer is over its size.
 */
void
ShapesyncTxlogAppend(ShapesyncLogEntry *e)
{
	e->ord = txlog_next_ord++;
	e->nest_level = GetCurrentTransactionNestLevel();
	e->size = sizeof(ShapesyncLogEntry) + PackedEntrySize(e);

	if (txlog_flushed)
	{
		/* after the pre-commit flush: this change is a record of its own */
		TxlogWrite(&e, 1, false);
		return;
	}

	if (txlog_n == txlog_cap)
	{
		MemoryContext cxt = ShapesyncTxlogContext();
		int			cap = txlog_cap == 0 ? 64 : txlog_cap * 2;

		if (txlog_entries == NULL)
			txlog_entries = MemoryContextAlloc(cxt, sizeof(ShapesyncLogEntry *) * cap);
		else
			txlog_entries = repalloc(txlog_entries, sizeof(ShapesyncLogEntry *) * cap);
		txlog_cap = cap;
	}
	txlog_entries[txlog_n++] = e;
	txlog_bytes += e->size;

	if (txlog_bytes > (Size) shapesync_tx_buffer_size)
		TxlogSpill();
}

/* Write everything buffered: the transaction is about to commit or prepare. */
static void
TxlogFlush(void)
{
	int			n = txlog_n;

	/* DROP EXTENSION shapesync in this transaction took the log with it */
	if (n > 0 && !ShapesyncLogExists())
		n = 0;
	if (n > 0)
	{
		for (int i = 0; i < n; i++)
			Assert(txlog_entries[i]->nest_level == 1);
		TxlogWrite(txlog_entries, n, txlog_records == 0);
		txlog_n = 0;
		txlog_bytes = 0;
	}
	txlog_flushed = true;
}

/* Transaction callback: flush at pre-commit / pre-prepare, forget at the end. */
static void
TxlogXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			TxlogFlush();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			TxlogReset();
			break;
		default:
			break;
	}
}

/* Subtransaction callback: drop an aborted level's entries, hand a committed one's up. */
static void
TxlogSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	int			level;

	if (txlog_n == 0)
		return;
	level = GetCurrentTransactionNestLevel();
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		while (txlog_n > 0 && txlog_entries[txlog_n - 1]->nest_level >= level)
		{
			ShapesyncLogEntry *e = txlog_entries[--txlog_n];

			txlog_bytes -= e->size;
			TxlogFreeEntry(e);
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (int i = txlog_n - 1; i >= 0 && txlog_entries[i]->nest_level >= level; i--)
			txlog_entries[i]->nest_level = level - 1;
	}
}

/* Register the callbacks once per process. */
void
ShapesyncRegisterTxlogCallbacks(void)
{
	if (txlog_callbacks_registered)
		return;
	RegisterXactCallback(TxlogXactCallback, NULL);
	RegisterSubXactCallback(TxlogSubXactCallback, NULL);
	txlog_callbacks_registered = true;
}

/* Raise the error of a malformed 'B' record. */
static void
BadRecord(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("invalid change-log record"),
			 errdetail("%s", detail)));
}

/*
 * The varlena at *p if flags has bit (checked against end), else NULL;
 * advances *p past it.  Points into the record: no copy.
 */
static struct varlena *
UnpackVarlena(char **p, char *end, uint8 flags, uint8 bit)
{
	uint32		len;
	struct varlena *v;

	if ((flags & bit) == 0)
		return NULL;
	if (end - *p < VARHDRSZ || VARATT_IS_1B(*p))
		BadRecord("A packed value is truncated.");
	len = VARSIZE(*p);
	if (len < VARHDRSZ || len > (uint32) (end - *p))
		BadRecord("A packed value runs past the record.");
	v = (struct varlena *) *p;
	*p += Min((Size) MAXALIGN(len), (Size) (end - *p));
	return v;
}

/*
 * Start reading the changes of op 'B' record rec (detoasted; its values are
 * MAXALIGNed as far as rec is).
 */
void
ShapesyncRecordBegin(ShapesyncRecordReader *r, bytea *rec)
{
	/*
	 * A detoasted copy is MAXALIGNed; an in-place short value is not, and is
	 * never a valid record anyway (it would be under 127 bytes).
	 */
	if (VARSIZE(rec) < MAXALIGN(VARHDRSZ))
		BadRecord("The record is too short.");
	r->p = (char *) rec + MAXALIGN(VARHDRSZ);
	r->end = (char *) rec + VARSIZE(rec);
}

/*
 * The record's next change into *c (its varlenas point into the record),
 * false after the last; raises on a malformed record.
 */
bool
ShapesyncRecordNext(ShapesyncRecordReader *r, ShapesyncPackedChange *c)
{
	TxlogPackedHeader h;
	char	   *p = r->p;
	char	   *entry_end;

	if (p >= r->end)
		return false;
	if ((Size) (r->end - p) < MAXALIGN(sizeof(TxlogPackedHeader)))
		BadRecord("An entry header is truncated.");
	memcpy(&h, p, sizeof(h));
	if (h.len < MAXALIGN(sizeof(TxlogPackedHeader)) || h.len > (uint32) (r->end - p))
		BadRecord("An entry's length runs past the record.");
	entry_end = p + h.len;
	p += MAXALIGN(sizeof(TxlogPackedHeader));

	c->ord = h.ord;
	c->relid = (Oid) h.relid;
	c->op = h.op;
	c->layout = h.layout;
	c->version = h.version;
	c->new_img = UnpackVarlena(&p, entry_end, h.flags, TXLOG_HAS_NEW);
	c->old_img = UnpackVarlena(&p, entry_end, h.flags, TXLOG_HAS_OLD);
	c->shape_ops = UnpackVarlena(&p, entry_end, h.flags, TXLOG_HAS_OPS);
	c->error = UnpackVarlena(&p, entry_end, h.flags, TXLOG_HAS_ERROR);
	if (c->shape_ops != NULL)
	{
		ArrayType	a;

		/* the header only: the record may be unaligned (change_entries()) */
		if (VARSIZE(c->shape_ops) < sizeof(ArrayType))
			BadRecord("An entry's shape_ops is not an int4[].");
		memcpy(&a, c->shape_ops, sizeof(ArrayType));
		if (a.elemtype != INT4OID || a.ndim > 1)
			BadRecord("An entry's shape_ops is not an int4[].");
	}
	if (p != entry_end)
		BadRecord("An entry's length does not match its values.");
	r->p = entry_end;
	return true;
}

/* A palloc'd copy of varlena v as a Datum; *isnull when v is NULL. */
static Datum
CopyVarlena(const struct varlena *v, bool *isnull)
{
	void	   *copy;

	*isnull = (v == NULL);
	if (v == NULL)
		return (Datum) 0;
	copy = palloc(VARSIZE(v));
	memcpy(copy, v, VARSIZE(v));
	return PointerGetDatum(copy);
}

#define CHANGE_ENTRIES_COLS 9

/*
 * values[5] (old_row) of a change to output: for an UPDATE whose old image
 * holds only the changed columns, the whole old row (decode.c), unless the
 * table is gone or has another layout now (then no reader can decode it
 * anyway: the image is left as it is).
 */
static void
ExpandOldRow(FunctionCallInfo fcinfo, Datum *values, bool *nulls)
{
	struct varlena *old_img;
	struct varlena *new_img;
	TupleDesc	desc;

	if (DatumGetChar(values[2]) != 'U' || nulls[4] || nulls[5])
		return;
	old_img = (struct varlena *) DatumGetPointer(values[5]);
	if (!VARATT_IS_EXTENDED(old_img) && !ShapesyncIsDeltaImage(old_img))
		return;
	old_img = PG_DETOAST_DATUM_COPY(values[5]);
	if (!ShapesyncIsDeltaImage(old_img))
		return;
	desc = ShapesyncImageDesc(fcinfo->flinfo, DatumGetObjectId(values[1]),
							  DatumGetInt32(values[3]));
	if (desc == NULL)
		return;
	new_img = PG_DETOAST_DATUM_COPY(values[4]);
	values[5] = PointerGetDatum(ShapesyncExpandOldImage(desc, new_img, old_img));
}

/*
 * change_entries(op, relid, layout, new_row, old_row, shape_ops, error,
 * version): the changes a change-log record holds, as (ord, relid, op,
 * layout, new_row, old_row, shape_ops, error, version); a classic record
 * is one change with ord 0.  The old_row of an UPDATE is the whole old row
 * (ExpandOldRow), whatever form the record stores it in.
 */
Datum
shapesync_change_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[CHANGE_ENTRIES_COLS];
	bool		nulls[CHANGE_ENTRIES_COLS];
	char		op;

	/*
	 * Called once per log record in batch(): take the result row type the
	 * executor already has rather than building it from pg_proc per call
	 * (that was 14% of a batch read's CPU).
	 */
	InitMaterializedSRF(fcinfo, (rsinfo != NULL && IsA(rsinfo, ReturnSetInfo) &&
								 rsinfo->expectedDesc != NULL) ? MAT_SRF_USE_EXPECTED_DESC : 0);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	op = PG_GETARG_CHAR(0);

	if (op != 'B')
	{
		values[0] = Int64GetDatum(0);
		nulls[0] = false;
		for (int i = 1; i < CHANGE_ENTRIES_COLS; i++)
		{
			int			arg = (i == 1) ? 1 : (i == 2) ? 0 : i - 1;

			nulls[i] = PG_ARGISNULL(arg);
			values[i] = nulls[i] ? (Datum) 0 : PG_GETARG_DATUM(arg);
		}
		ExpandOldRow(fcinfo, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		return (Datum) 0;
	}

	if (PG_ARGISNULL(3))
		BadRecord("A record of op B has no packed changes.");
	{
		ShapesyncRecordReader reader;
		ShapesyncPackedChange c;

		ShapesyncRecordBegin(&reader, PG_GETARG_BYTEA_P(3));
		while (ShapesyncRecordNext(&reader, &c))
		{
			memset(nulls, false, sizeof(nulls));
			values[0] = Int64GetDatum((int64) c.ord);
			values[1] = ObjectIdGetDatum(c.relid);
			values[2] = CharGetDatum(c.op);
			values[3] = Int32GetDatum(c.layout);
			values[4] = CopyVarlena(c.new_img, &nulls[4]);
			values[5] = CopyVarlena(c.old_img, &nulls[5]);
			values[6] = CopyVarlena(c.shape_ops, &nulls[6]);
			values[7] = CopyVarlena(c.error, &nulls[7]);
			nulls[8] = (c.version == 0);
			values[8] = nulls[8] ? (Datum) 0 :
				FullTransactionIdGetDatum(FullTransactionIdFromU64(c.version));
			ExpandOldRow(fcinfo, values, nulls);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	return (Datum) 0;
}
