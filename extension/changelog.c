/*-------------------------------------------------------------------------
 *
 * changelog.c
 *	  The write path: the capture triggers of tracked tables and the
 *	  insertion of shapesync.changes rows.
 *
 * shapesync.capture() is an AFTER ... FOR EACH ROW trigger; it classifies
 * the row against the table's shapes (membership.c) and logs one change
 * when someone needs it (a whole-table shape exists, or a filtered shape
 * sees the change): the table, the operation, the table's layout hash, the
 * old/new heap tuple images (composite datums, external TOAST flattened;
 * an UPDATE's old image holds only the columns it changed, see
 * ShapesyncDeltaHeader, unless shapesync.full_old_images is on), shape_ops, and the new row's version (its xmin as an xid8) when a
 * subtransaction wrote it (versions.c).  Changes go to the transaction's
 * buffer (txlog.c), which writes them as one record at pre-commit: the
 * writer's top-level xid8, a seq from shapesync.change_seq, and the change
 * itself or, for several, an op 'B' record packing them.
 * shapesync.capture_truncate() is the
 * AFTER TRUNCATE statement trigger: one 'T' row, and the table's shapes
 * become invalid.  'X' rows (a shape filter raised) are written by
 * membership.c, 'S' rows (DDL) by shapesync.log_schema_change().
 *
 * The row is inserted into the current one of the log's three rotating
 * tables (shapesync.changes_0..2, children of shapesync.changes; see
 * sql/retention.sql) with the heap AM, and its indexes are maintained
 * directly (no SPI, no executor).  The oids of the log relation
 * and of the sequence are cached per backend and forgotten on any
 * relcache invalidation of them (DROP EXTENSION, re-create).  A record is
 * written in the writer's (sub)transaction: it commits or aborts with the
 * changes it holds, and the buffer drops the changes of a subtransaction
 * rolled back before they were written.  Under a 0.1.0 schema (not yet
 * updated) every change is written at once as its own row, as before.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/xid8.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_capture);
PG_FUNCTION_INFO_V1(shapesync_capture_truncate);
PG_FUNCTION_INFO_V1(shapesync_log_schema_change);

#define Natts_changes 10
/* the 0.1.0 layout of shapesync.changes, without the version column */
#define Natts_changes_0_1 9

/*
 * per-backend cache of the log's oids: changes_relid is the current child
 * table (shapesync.changes_N, N from shapesync.log_state), looked up again
 * after any invalidation of log_state (a rotation sends one)
 */
static Oid	changes_relid = InvalidOid;
static Oid	change_seq_relid = InvalidOid;
static Oid	log_state_relid = InvalidOid;
static int	changes_natts = 0;	/* columns of the log: 9 under a 0.1.0 schema */
static bool log_reads_records = false;	/* its batch() reads op B records */
static bool cache_callback_registered = false;

/* the log's indexes and their IndexInfos, valid while changes_relid is */
static MemoryContext log_index_cxt = NULL;
static List *log_index_oids = NIL;
static IndexInfo **log_index_infos = NULL;
static bool log_indexes_valid = false;
static Oid	log_index_relid = InvalidOid;	/* the table they belong to */

static Oid	ShapesyncCurrentLogTable(Oid state_relid);

/* GUC shapesync.full_old_images: an UPDATE logs its whole old row */
bool		shapesync_full_old_images = false;

/* Forget the cached oids when one of the relations is invalidated. */
static void
ShapesyncRelcacheCallback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == changes_relid || relid == change_seq_relid ||
		relid == log_state_relid || list_member_oid(log_index_oids, relid))
	{
		changes_relid = InvalidOid;
		change_seq_relid = InvalidOid;
		log_state_relid = InvalidOid;
		/* freed lazily: an invalidation can arrive while they are in use */
		log_indexes_valid = false;
	}
}

/* Oid of the shapesync schema. */
Oid
ShapesyncSchemaOid(bool missing_ok)
{
	return get_namespace_oid(SHAPESYNC_SCHEMA, missing_ok);
}

/* Oid of relation shapesync.<relname>. */
Oid
ShapesyncRelationOid(const char *relname, bool missing_ok)
{
	Oid			nsp = ShapesyncSchemaOid(missing_ok);
	Oid			relid = InvalidOid;

	if (OidIsValid(nsp))
		relid = get_relname_relid(relname, nsp);
	if (!OidIsValid(relid) && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist", SHAPESYNC_SCHEMA, relname),
				 errhint("Is the extension shapesync installed?")));
	return relid;
}

/* Number of columns of relation relid (from pg_class). */
static int
ShapesyncRelationNatts(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	int			natts;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	natts = ((Form_pg_class) GETSTRUCT(tup))->relnatts;
	ReleaseSysCache(tup);
	return natts;
}

/*
 * Does the change log still exist?  (false once DROP EXTENSION shapesync
 * ran in this transaction: the changes it buffered have nowhere to go)
 */
bool
ShapesyncLogExists(void)
{
	return OidIsValid(ShapesyncRelationOid("change_seq", true)) &&
		OidIsValid(ShapesyncRelationOid("log_state", true));
}

/*
 * Whether the installed SQL reads op 'B' records: shapesync.change_entries()
 * exists.  A 0.1.0 schema does not, nor does a database created from a
 * development build of 0.2.0 before records existed (same version number,
 * so no upgrade script brings it); their batch() would skip packed changes,
 * so they get one row per change as before.
 */
static bool
ShapesyncSchemaReadsRecords(void)
{
	List	   *name = list_make2(makeString(SHAPESYNC_SCHEMA), makeString("change_entries"));

	return FuncnameGetCandidates(name, -1, NIL, false, false, false, true) != NULL;
}

/* Fill the per-backend oid cache. */
static void
ShapesyncLookupLog(void)
{
	if (OidIsValid(changes_relid) && OidIsValid(change_seq_relid))
		return;
	if (!cache_callback_registered)
	{
		CacheRegisterRelcacheCallback(ShapesyncRelcacheCallback, (Datum) 0);
		cache_callback_registered = true;
	}
	{
		/* assign at the end: the lookups may run the callback, which clears them */
		Oid			state = ShapesyncRelationOid("log_state", false);
		Oid			current = ShapesyncCurrentLogTable(state);
		Oid			seq = ShapesyncRelationOid("change_seq", false);
		int			natts = ShapesyncRelationNatts(current);
		bool		records = natts == Natts_changes && ShapesyncSchemaReadsRecords();

		changes_natts = natts;
		log_reads_records = records;
		log_state_relid = state;
		changes_relid = current;
		change_seq_relid = seq;
	}
}

/*
 * The change-log table writers insert into now: shapesync.changes_N for N =
 * log_state.current_table, read with the latest snapshot.  A writer that
 * cached an older one keeps using it until its next transaction; rotation
 * copes (it never truncates a table a writer holds a lock on).
 */
static Oid
ShapesyncCurrentLogTable(Oid state_relid)
{
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	Snapshot	snap;
	int32		current = -1;
	char		relname[NAMEDATALEN];

	rel = table_open(state_relid, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, 2, RelationGetDescr(rel), &isnull);

		if (!isnull)
			current = DatumGetInt32(d);
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);

	if (current < 0 || current > 2)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("shapesync.log_state names no current change-log table"),
				 errhint("Reinstall the extension: ALTER EXTENSION or DROP/CREATE EXTENSION shapesync.")));
	snprintf(relname, sizeof(relname), "changes_%d", current);
	return ShapesyncRelationOid(relname, false);
}

/* Hash of the physical tuple layout (natts; per attribute type, len, align, dropped). */
int32
ShapesyncLayoutHash(TupleDesc tupdesc)
{
	uint32		h = hash_bytes_uint32((uint32) tupdesc->natts);

	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		h = hash_combine(h, hash_bytes_uint32((uint32) att->atttypid));
		h = hash_combine(h, hash_bytes_uint32((uint32) (int32) att->attlen));
		h = hash_combine(h, hash_bytes_uint32((uint32) (unsigned char) att->attalign));
		h = hash_combine(h, hash_bytes_uint32(att->attisdropped ? 1 : 0));
	}
	return (int32) h;
}

/* Load the oids and IndexInfos of the log's indexes (cached per backend). */
static void
ShapesyncLoadLogIndexes(Relation logrel)
{
	MemoryContext oldcxt;
	ListCell   *lc;
	int			i = 0;

	if (log_indexes_valid && log_index_relid == RelationGetRelid(logrel))
		return;
	if (log_index_cxt == NULL)
		log_index_cxt = AllocSetContextCreate(CacheMemoryContext,
											  "shapesync log indexes",
											  ALLOCSET_SMALL_SIZES);
	MemoryContextReset(log_index_cxt);
	log_index_oids = NIL;
	log_index_infos = NULL;

	oldcxt = MemoryContextSwitchTo(log_index_cxt);
	log_index_oids = RelationGetIndexList(logrel);
	log_index_infos = palloc0(sizeof(IndexInfo *) * Max(list_length(log_index_oids), 1));
	foreach(lc, log_index_oids)
	{
		Relation	idx = index_open(lfirst_oid(lc), AccessShareLock);
		IndexInfo  *ii = BuildIndexInfo(idx);

		if (ii->ii_Expressions != NIL || ii->ii_Predicate != NIL)
			elog(ERROR, "shapesync.changes may only have plain indexes");
		log_index_infos[i++] = ii;
		index_close(idx, AccessShareLock);
	}
	MemoryContextSwitchTo(oldcxt);
	log_index_relid = RelationGetRelid(logrel);
	log_indexes_valid = true;
}

/* Insert one tuple into the log and its indexes, without the executor. */
static void
ShapesyncLogInsert(Relation logrel, HeapTuple tup)
{
	ListCell   *lc;
	TupleTableSlot *slot = NULL;
	int			i = 0;

	simple_heap_insert(logrel, tup);

	ShapesyncLoadLogIndexes(logrel);
	foreach(lc, log_index_oids)
	{
		Relation	idx = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *ii = log_index_infos[i++];
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		if (slot == NULL)
		{
			slot = MakeSingleTupleTableSlot(RelationGetDescr(logrel), &TTSOpsHeapTuple);
			ExecStoreHeapTuple(tup, slot, false);
		}
		FormIndexDatum(ii, slot, NULL, values, isnull);
		index_insert(idx, values, isnull, &tup->t_self, logrel,
					 idx->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 false, ii);
		index_close(idx, NoLock);
	}
	if (slot != NULL)
		ExecDropSingleTupleTableSlot(slot);
}

/*
 * Insert one change-log record (a classic change row, or an op 'B' record
 * of packed changes) in the current (sub)transaction, with the next seq.
 */
void
ShapesyncWriteLogRecord(const ShapesyncLogEntry *e)
{
	Relation	logrel;
	Datum		values[Natts_changes];
	bool		nulls[Natts_changes];
	HeapTuple	logtup;
	Oid			logrelid;
	Oid			seqrelid;

	ShapesyncLookupLog();
	/*
	 * Work on copies: opening the sequence or the table processes pending
	 * invalidations, and the relcache callback may clear the cache meanwhile.
	 */
	logrelid = changes_relid;
	seqrelid = change_seq_relid;

	memset(nulls, false, sizeof(nulls));
	values[0] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	values[1] = Int64GetDatum(nextval_internal(seqrelid, false));
	values[2] = ObjectIdGetDatum(e->relid);
	values[3] = CharGetDatum(e->op);
	values[4] = Int32GetDatum(e->layout);
	nulls[5] = e->new_img == NULL;
	values[5] = PointerGetDatum(e->new_img);
	nulls[6] = e->old_img == NULL;
	values[6] = PointerGetDatum(e->old_img);
	nulls[7] = e->shape_ops == NULL;
	values[7] = PointerGetDatum(e->shape_ops);
	nulls[8] = e->error == NULL;
	values[8] = PointerGetDatum(e->error);
	nulls[9] = e->version == 0;
	values[9] = FullTransactionIdGetDatum(FullTransactionIdFromU64(e->version));

	logrel = table_open(logrelid, RowExclusiveLock);
	/* a 0.1.0 schema not yet updated (ALTER EXTENSION shapesync UPDATE) has no version */
	if (RelationGetDescr(logrel)->natts != Natts_changes &&
		RelationGetDescr(logrel)->natts != Natts_changes_0_1)
		elog(ERROR, "%s has an unexpected layout", RelationGetRelationName(logrel));
	logtup = heap_form_tuple(RelationGetDescr(logrel), values, nulls);
	ShapesyncLogInsert(logrel, logtup);
	heap_freetuple(logtup);
	table_close(logrel, NoLock);

	ShapesyncDoorbellArm();
}

/*
 * The old image of an UPDATE that logs only the changed columns (see
 * ShapesyncDeltaHeader): OLD's values of the attnums in changed (external
 * TOAST values fetched: an image holds no TOAST pointers), NULL elsewhere.
 * Allocated in the current memory context.
 */
static struct varlena *
BuildDeltaImage(TupleDesc tupdesc, TupleTableSlot *oldslot, const Bitmapset *changed)
{
	int			natts = tupdesc->natts;
	Datum	   *values = palloc(sizeof(Datum) * Max(natts, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(natts, 1));
	Size		off = ShapesyncDeltaTupleOffset(natts);
	HeapTuple	tup;
	ShapesyncDeltaHeader *d;

	slot_getallattrs(oldslot);
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		nulls[i] = true;
		values[i] = (Datum) 0;
		if (!bms_is_member(i + 1, changed) || oldslot->tts_isnull[i])
			continue;
		nulls[i] = false;
		values[i] = oldslot->tts_values[i];
		if (att->attlen == -1 && VARATT_IS_EXTERNAL(DatumGetPointer(values[i])))
			values[i] = PointerGetDatum(detoast_external_attr((struct varlena *) DatumGetPointer(values[i])));
	}
	tup = heap_form_tuple(tupdesc, values, nulls);

	d = palloc0(off + tup->t_len);
	SET_VARSIZE(d, off + tup->t_len);
	d->magic = SHAPESYNC_DELTA_MAGIC;
	d->no_type = InvalidOid;
	d->natts = (uint16) natts;
	d->flags = 0;
	for (int i = 0; i < natts; i++)
		if (bms_is_member(i + 1, changed))
			d->changed[i / 8] |= (bits8) (1 << (i % 8));
	memcpy((char *) d + off, tup->t_data, tup->t_len);
	heap_freetuple(tup);
	pfree(values);
	pfree(nulls);
	return (struct varlena *) d;
}

/*
 * Log one change in the current (sub)transaction (see ShapesyncLogRow);
 * old_img, when given, is the old image already built in the buffer's
 * memory context (the changed columns of an UPDATE).
 */
static void
LogChange(Oid relid, TupleDesc tupdesc, char op, int32 layout, HeapTuple newtup,
		  HeapTuple oldtup, TupleTableSlot *oldslot, const Bitmapset *changed,
		  ArrayType *shape_ops, const char *error)
{
	bool		buffered;
	MemoryContext oldcxt;
	ShapesyncLogEntry *e;

	ShapesyncLookupLog();
	buffered = log_reads_records;
	oldcxt = MemoryContextSwitchTo(buffered ? ShapesyncTxlogContext() : CurrentMemoryContext);

	e = palloc0(sizeof(ShapesyncLogEntry));
	e->op = op;
	e->relid = relid;
	e->layout = layout;
	/*
	 * The new row's version, when it differs from the top-level xid: the
	 * tuple was written inside a subtransaction (savepoint, plpgsql
	 * exception block, shapesync.apply_mutations()), so its xmin is the
	 * subtransaction's xid.
	 */
	if (newtup != NULL && newtup->t_data != NULL)
	{
		TransactionId xmin = HeapTupleHeaderGetRawXmin(newtup->t_data);

		if (TransactionIdIsNormal(xmin) &&
			xmin != XidFromFullTransactionId(GetTopFullTransactionId()))
			e->version = U64FromFullTransactionId(ShapesyncWidenXid(xmin));
	}
	if (newtup != NULL)
		e->new_img = (struct varlena *) DatumGetPointer(heap_copy_tuple_as_datum(newtup, tupdesc));
	/*
	 * An UPDATE's old image holds only the changed columns, unless asked
	 * for in full, or the log is read by a 0.1.0 batch(), which decodes
	 * old_row directly rather than through change_entries(), or the whole
	 * image is as small.
	 */
	if (oldslot != NULL && buffered && !shapesync_full_old_images)
	{
		e->old_img = BuildDeltaImage(tupdesc, oldslot, changed);
		/* a narrow row: its whole image is no bigger than the partial one */
		if (oldtup != NULL && !HeapTupleHasExternal(oldtup) &&
			oldtup->t_len <= VARSIZE(e->old_img))
		{
			pfree(e->old_img);
			e->old_img = NULL;
		}
	}
	if (e->old_img == NULL && oldtup != NULL)
		e->old_img = (struct varlena *) DatumGetPointer(heap_copy_tuple_as_datum(oldtup, tupdesc));
	if (shape_ops != NULL)
	{
		e->shape_ops = palloc(VARSIZE(shape_ops));
		memcpy(e->shape_ops, shape_ops, VARSIZE(shape_ops));
	}
	if (error != NULL)
		e->error = (struct varlena *) cstring_to_text(error);
	MemoryContextSwitchTo(oldcxt);

	if (buffered)
		ShapesyncTxlogAppend(e);
	else
	{
		ShapesyncWriteLogRecord(e);
		pfree(e);
	}
}

/*
 * Log one change of table relid in the current (sub)transaction: into the
 * transaction's buffer (txlog.c), written at pre-commit; straight into the
 * log under a 0.1.0 schema (its batch() cannot read packed records).
 * tupdesc describes the images (NULL when there are none); images are full.
 */
void
ShapesyncLogRow(Oid relid, TupleDesc tupdesc, char op, int32 layout, HeapTuple newtup,
				HeapTuple oldtup, ArrayType *shape_ops, const char *error)
{
	LogChange(relid, tupdesc, op, layout, newtup, oldtup, NULL, NULL, shape_ops, error);
}

/*
 * Log an UPDATE of rel: the new image in full, the old one as the columns
 * of oldslot that differ from newslot (changed, when the classification
 * computed it already, else computed here).
 */
void
ShapesyncLogUpdate(Relation rel, int32 layout, HeapTuple newtup, HeapTuple oldtup,
				   TupleTableSlot *oldslot, TupleTableSlot *newslot,
				   const Bitmapset *changed, ArrayType *shape_ops)
{
	if (changed == NULL)
		changed = ShapesyncChangedColumns(oldslot, newslot);
	LogChange(RelationGetRelid(rel), RelationGetDescr(rel), 'U', layout, newtup, oldtup,
			  oldslot, changed, shape_ops, NULL);
}

/* Row trigger of tracked tables: log the change if a shape needs it. */
Datum
shapesync_capture(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;
	Relation	rel;
	ShapesyncRowResult res;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("shapesync.capture() was not called by the trigger manager")));
	event = trigdata->tg_event;
	if (!TRIGGER_FIRED_AFTER(event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("shapesync.capture() must be fired AFTER")));
	if (!TRIGGER_FIRED_FOR_ROW(event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("shapesync.capture() must be fired FOR EACH ROW")));

	rel = trigdata->tg_relation;
	if (TRIGGER_FIRED_BY_INSERT(event))
	{
		ShapesyncClassifyRow(rel, NULL, trigdata->tg_trigslot, &res);
		if (res.needed)
			ShapesyncLogRow(RelationGetRelid(rel), RelationGetDescr(rel), 'I', res.layout,
							trigdata->tg_trigtuple, NULL, res.shape_ops, NULL);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(event))
	{
		ShapesyncClassifyRow(rel, trigdata->tg_trigslot, trigdata->tg_newslot, &res);
		if (res.needed)
			ShapesyncLogUpdate(rel, res.layout, trigdata->tg_newtuple, trigdata->tg_trigtuple,
							   trigdata->tg_trigslot, trigdata->tg_newslot,
							   res.changed_known ? res.changed : NULL, res.shape_ops);
	}
	else if (TRIGGER_FIRED_BY_DELETE(event))
	{
		ShapesyncClassifyRow(rel, trigdata->tg_trigslot, NULL, &res);
		if (res.needed)
			ShapesyncLogRow(RelationGetRelid(rel), RelationGetDescr(rel), 'D', res.layout,
							NULL, trigdata->tg_trigtuple, res.shape_ops, NULL);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("shapesync.capture() must be fired for INSERT, UPDATE or DELETE")));

	return PointerGetDatum(NULL);
}

/* Statement trigger for TRUNCATE: log a 'T' row and invalidate the table's shapes. */
Datum
shapesync_capture_truncate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("shapesync.capture_truncate() was not called by the trigger manager")));
	event = trigdata->tg_event;
	if (!TRIGGER_FIRED_AFTER(event) || !TRIGGER_FIRED_FOR_STATEMENT(event) ||
		!TRIGGER_FIRED_BY_TRUNCATE(event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("shapesync.capture_truncate() must be fired AFTER TRUNCATE FOR EACH STATEMENT")));

	ShapesyncLogRow(RelationGetRelid(trigdata->tg_relation), NULL, 'T',
					ShapesyncLayoutHash(RelationGetDescr(trigdata->tg_relation)),
					NULL, NULL, NULL, NULL);
	ShapesyncInvalidateTableShapes(RelationGetRelid(trigdata->tg_relation), "truncate");

	return PointerGetDatum(NULL);
}

/* log_schema_change(relid, reason): an S row for the table (DDL, drop, untrack). */
Datum
shapesync_log_schema_change(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *reason = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Relation	rel = try_relation_open(relid, AccessShareLock);
	int32		layout = 0;

	if (rel != NULL)
	{
		layout = ShapesyncLayoutHash(RelationGetDescr(rel));
		relation_close(rel, AccessShareLock);
	}
	ShapesyncLogRow(relid, NULL, 'S', layout, NULL, NULL, NULL, reason);
	PG_RETURN_VOID();
}
