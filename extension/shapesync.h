/*-------------------------------------------------------------------------
 *
 * shapesync.h
 *	  Declarations shared by the files of the shapesync extension.
 *
 * Each .c file owns one concern: shapesync.c (module load, GUCs),
 * track.c (track/untrack), changelog.c (capture triggers, log writes),
 * decode.c (row image decoding), ticks.c (the ticker's transaction),
 * worker.c (doorbell shared state and the background worker), shapes.c
 * (filter parsing and validation, registry helpers used from C),
 * membership.c (per-backend shape caches, classification of changed rows),
 * txlog.c (one change-log record per transaction: buffer, subtransactions,
 * packed records), monitor.c (status reporting), versions.c (row versions), auth.c (row-level
 * security policies folded into effective shapes, column privileges,
 * policy/grant DDL).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHAPESYNC_H
#define SHAPESYNC_H

#include "access/htup.h"
#include "access/transam.h"
#include "access/tupdesc.h"
#include "fmgr.h"
#include "nodes/bitmapset.h"
#include "executor/tuptable.h"
#include "nodes/nodes.h"
#include "utils/array.h"
#include "utils/palloc.h"
#include "utils/relcache.h"

#define SHAPESYNC_SCHEMA "shapesync"

/* most databases the ticker can serve (entries of shapesync.database) */
#define SHAPESYNC_MAX_DATABASES 8

/* GUCs (shapesync.c) */
extern char *shapesync_database;
extern int	shapesync_tick_idle_ms;
extern int	shapesync_tick_min_interval_ms;
extern int	shapesync_tick_max_interval_ms;
extern int	shapesync_log_retention_s;
extern int	shapesync_consumer_timeout_s;
extern int	shapesync_maintenance_interval_s;
extern int	shapesync_filter_fold_timeout_ms;
extern int	shapesync_filter_max_constant_bytes;
extern int	shapesync_unguarded_like_max_bytes;
extern int	shapesync_mutation_retention_s;
extern int	shapesync_alert_tick_delay_ms;
extern int	shapesync_alert_lag_ms;
extern int	shapesync_alert_consumer_stale_s;
extern int	shapesync_alert_log_kb;
extern int	shapesync_alert_window_s;

/* row-level security applies to the caller on a shape's table */
#define ERRCODE_SHAPESYNC_ROW_SECURITY MAKE_SQLSTATE('S','S','0','0','2')
/* batch(): the change log no longer holds (all of) a tick's changes */
#define ERRCODE_SHAPESYNC_LOG_TRUNCATED MAKE_SQLSTATE('S','S','0','0','1')

/* issue 11 (docs/auth.md): a policy cannot become part of a shape (subquery, ...) */
#define ERRCODE_SHAPESYNC_POLICY_NOT_SUPPORTED MAKE_SQLSTATE('S','S','0','1','1')
/* the role asked for is not one the calling role may act as */
#define ERRCODE_SHAPESYNC_ROLE_NOT_PERMITTED MAKE_SQLSTATE('S','S','0','1','2')
/* a column (or the table) the role may not SELECT */
#define ERRCODE_SHAPESYNC_COLUMN_NOT_PERMITTED MAKE_SQLSTATE('S','S','0','1','3')

/* shape ops in shapesync.changes.shape_ops: shape_id * 4 + op */
#define SHAPESYNC_OP_INSERT 1
#define SHAPESYNC_OP_UPDATE 2
#define SHAPESYNC_OP_DELETE 3

/* changelog.c */
extern int32 ShapesyncLayoutHash(TupleDesc tupdesc);
extern Oid	ShapesyncSchemaOid(bool missing_ok);
extern Oid	ShapesyncRelationOid(const char *relname, bool missing_ok);
extern void ShapesyncLogRow(Oid relid, TupleDesc tupdesc, char op, int32 layout,
							HeapTuple newtup, HeapTuple oldtup, ArrayType *shape_ops,
							const char *error);
extern void ShapesyncLogUpdate(Relation rel, int32 layout, HeapTuple newtup,
							   HeapTuple oldtup, TupleTableSlot *oldslot,
							   TupleTableSlot *newslot, const Bitmapset *changed,
							   ArrayType *shape_ops);

/*
 * The old image of an UPDATE, as the capture trigger writes it (changelog.c):
 * only the columns whose value differs from the new row's (the "changed
 * columns" of an update).  A bytea: this header, then changed[] (bit i set:
 * column i + 1 changed), then, MAXALIGNed, a composite datum of the table's
 * row type holding OLD's values of the changed columns and NULL elsewhere.
 * Where a full image (a composite datum) has datum_typeid, the table's row
 * type, this has InvalidOid (and the magic where a datum has datum_typmod,
 * which may hold anything: a datum version), so the two cannot be mistaken
 * for each other.  Readers get the
 * full old row back from ShapesyncExpandOldImage() (decode.c), which
 * shapesync.change_entries() calls: every column not changed is NEW's.
 * Images written before this format (full composite datums) pass through
 * unchanged.
 */
#define SHAPESYNC_DELTA_MAGIC 0x31445353	/* "SSD1" in a little-endian dump */

typedef struct ShapesyncDeltaHeader
{
	int32		vl_len_;		/* varlena header */
	uint32		magic;			/* SHAPESYNC_DELTA_MAGIC (a datum's typmod) */
	Oid			no_type;		/* InvalidOid (a datum's typeid) */
	uint16		natts;			/* of the table when written */
	uint16		flags;			/* 0 */
	bits8		changed[FLEXIBLE_ARRAY_MEMBER];
} ShapesyncDeltaHeader;

/* offset of the composite datum in a delta image of natts columns */
#define ShapesyncDeltaTupleOffset(natts) \
	MAXALIGN(offsetof(ShapesyncDeltaHeader, changed) + BITMAPLEN(natts))

extern bool shapesync_full_old_images;
extern bool ShapesyncIsDeltaImage(const struct varlena *img);
extern TupleDesc ShapesyncImageDesc(FmgrInfo *flinfo, Oid relid, int32 layout);
extern struct varlena *ShapesyncExpandOldImage(TupleDesc desc, struct varlena *new_img,
											   struct varlena *old_img);

/* one change (or, op 'B', a packed record of changes) for the change log */
typedef struct ShapesyncLogEntry
{
	char		op;
	Oid			relid;
	int32		layout;
	struct varlena *new_img;	/* composite datums, or NULL */
	struct varlena *old_img;
	struct varlena *shape_ops;	/* int4[], or NULL */
	struct varlena *error;		/* text, or NULL */
	uint64		version;		/* the new row's xid8 when not the top xid; 0: NULL */
	uint64		ord;			/* position in the transaction (txlog.c) */
	int			nest_level;		/* transaction nesting level that made it */
	Size		size;			/* bytes it holds in the buffer */
} ShapesyncLogEntry;

extern void ShapesyncWriteLogRecord(const ShapesyncLogEntry *e);
extern bool ShapesyncLogExists(void);

/* txlog.c: the per-transaction buffer of changes */
extern int	shapesync_tx_buffer_size;
extern MemoryContext ShapesyncTxlogContext(void);
extern void ShapesyncTxlogAppend(ShapesyncLogEntry *e);
extern void ShapesyncRegisterTxlogCallbacks(void);

/* reading an op 'B' record's packed changes (txlog.c) */
typedef struct ShapesyncRecordReader
{
	char	   *p;
	char	   *end;
} ShapesyncRecordReader;

typedef struct ShapesyncPackedChange
{
	uint64		ord;
	Oid			relid;
	char		op;
	int32		layout;
	struct varlena *new_img;	/* NULL when absent; point into the record */
	struct varlena *old_img;
	struct varlena *shape_ops;
	struct varlena *error;
	uint64		version;		/* 0: NULL */
} ShapesyncPackedChange;

extern void ShapesyncRecordBegin(ShapesyncRecordReader *r, bytea *rec);
extern bool ShapesyncRecordNext(ShapesyncRecordReader *r, ShapesyncPackedChange *c);

/* decode.c: decoding many images in one call (the batch reader) */
typedef struct ShapesyncDecoder ShapesyncDecoder;
extern ShapesyncDecoder *ShapesyncDecoderCreate(MemoryContext cxt);
extern char **ShapesyncDecodeTexts(ShapesyncDecoder *d, Oid relid, int32 layout, bytea *img,
								   int *n);
extern char **ShapesyncDecodeOldTexts(ShapesyncDecoder *d, Oid relid, int32 layout, bytea *old_img,
									  bytea *new_img, int *n);
extern Datum ShapesyncDecodeValuesOrNull(ShapesyncDecoder *d, Oid relid, int32 layout,
										 bytea *img, bool *isnull);
extern Datum ShapesyncDecodeOldValuesOrNull(ShapesyncDecoder *d, Oid relid, int32 layout,
											 bytea *old_img, bytea *new_img, bool *isnull);
extern void ShapesyncDecoderClose(ShapesyncDecoder *d);

/* membership.c: what the capture trigger must write for a changed row */
typedef struct ShapesyncRowResult
{
	bool		needed;			/* write a change row */
	ArrayType  *shape_ops;		/* NULL: no filtered shape sees the change */
	int32		layout;			/* the table's layout hash */
	bool		changed_known;	/* UPDATE: changed is set */
	Bitmapset  *changed;		/* UPDATE: attnums whose value differs */
} ShapesyncRowResult;

extern void ShapesyncClassifyRow(Relation rel, TupleTableSlot *oldslot,
								 TupleTableSlot *newslot, ShapesyncRowResult *res);
extern Bitmapset *ShapesyncChangedColumns(TupleTableSlot *oldslot, TupleTableSlot *newslot);

/* worker.c */
extern void ShapesyncShmemRequest(void);
extern void ShapesyncShmemStartup(void);
extern void ShapesyncRegisterWorkers(void);
extern void ShapesyncRegisterXactCallback(void);
extern void ShapesyncDoorbellArm(void);
extern int	ShapesyncWorkerPid(Oid dboid);
extern bool ShapesyncPreloaded(void);
extern bool ShapesyncDatabaseListed(const char *dbname);
extern PGDLLEXPORT void shapesync_worker_main(Datum main_arg);
extern PGDLLEXPORT void shapesync_launcher_main(Datum main_arg);

/* versions.c: row versions */
extern FullTransactionId ShapesyncWidenXid(TransactionId xid);

/* ticks.c */
extern int64 ShapesyncRunTick(bool *installed, bool force);
extern void ShapesyncRunMaintenance(void);

/* shapes.c */
typedef Node *(*ShapesyncFoldFunc) (Node *expr, void *arg);

extern const char *shapesync_error_field;
extern void ShapesyncInvalidateTableShapes(Oid relid, const char *reason);
extern Oid	ShapesyncCallerUserId(void);
extern void ShapesyncCheckRowSecurity(Oid relid, Oid userid);
extern Relation ShapesyncOpenShapeTable(Oid relid);
extern Node *ShapesyncAnalyseWhere(Relation rel, const char *where, ArrayType *params);
extern void ShapesyncValidateExpr(Node *expr);
extern Node *ShapesyncFoldBounded(Node *expr, ShapesyncFoldFunc fold, void *arg);
extern void ShapesyncFinishWhere(Relation rel, Node *expr, Datum *values);
extern bool ShapesyncRunChecked(void (*check) (void *arg), void *arg,
								Datum *err_values, bool *err_nulls);

#endif							/* SHAPESYNC_H */
