/*-------------------------------------------------------------------------
 *
 * membership.c
 *	  Shape membership in the capture trigger: the per-backend shape cache
 *	  of each tracked table, and the classification of a changed row's OLD
 *	  and NEW images against every active shape of its table.
 *
 * Cache.  One entry per tracked table this backend wrote to, in a hash
 * table under CacheMemoryContext; each entry owns a memory context.  An
 * entry holds the table's active shapes grouped by template (the filter
 * with its constants lifted out as PARAM_EXTERN params): one compiled
 * ExprState per template, and per distinct set of constants a "filter"
 * carrying the constant values and the shapes (id, columns) that use it.
 * A template that is, or has as a top-level AND conjunct, "column =
 * constant" with a hashable, strict equality operator indexes its filters
 * by the hash of that constant: a row finds its candidates by hashing its
 * column value, so the cost does not grow with the number of shapes.  A
 * template without one that has "column < constant" (<=, >, >=; BETWEEN is
 * two of them) conjuncts on one column, with the btree opfamily's leakproof
 * comparison, keeps its filters in a range index: sorted by lower bound,
 * with a max-tree over the upper bounds, so a row finds its candidates in
 * O(log n + matches) comparisons.  Either index only narrows: PostgreSQL
 * evaluates the whole filter for every candidate.  The other filters of a
 * template are evaluated for every row.
 *
 * Invalidation.  Registry changes send a relcache invalidation of the
 * table; the relcache callback only marks the entry stale.  The next
 * trigger call refreshes it, reading the registry with the latest
 * snapshot (so a transaction whose snapshot is older than a registration
 * still sees the new shape once it processed the invalidation).  The
 * table's shapes_gen is bumped whenever shapes of the table stop being
 * active, and shapesync.shape_removals records which (for the last 64
 * generations, unless too many at once): the refresh takes those out of
 * the cache, then loads the shapes with a shape_id above the highest
 * loaded one:
 * registrations of a table are serialised by get_or_create_shape, so a
 * table's shape_ids become visible in increasing order.  Otherwise, and
 * after loading a registration of this backend's own open transaction
 * (it may still roll back), the entry is rebuilt from scratch.
 *
 * Errors.  Filters made only of leakproof functions, of the functions of
 * SafeFunction()'s whitelist, and of LIKE/ILIKE with a constant pattern
 * that PatternIsSafe() accepts (see SafeLike()) are evaluated directly.
 * The others are evaluated inside one internal subtransaction per row; a
 * filter that raises is reported as an 'X' change row and is then skipped
 * for as long as that X row is live in this transaction or committed (the
 * sidecar invalidates the shape); if the X row is rolled back, the filter
 * is evaluated again.  The writer's statement always goes on.
 *
 * The cache is backend-local: no locking.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "portability/instr_time.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_cache_stats);
PG_FUNCTION_INFO_V1(shapesync_membership_stats);

#define ARENA_BLOCK_SIZE (64 * 1024)

/* generations of shape removals kept in shapesync.shape_removals (see sql) */
#define SHAPESYNC_REMOVAL_GENS 64

/* further shapes of a filter (same template and constants, other columns/options) */
typedef struct ShapeRef
{
	int32		shape_id;
	Bitmapset  *cols;			/* NULL: all columns */
} ShapeRef;

/* a distinct set of constants of a template, and the shapes that use it */
typedef struct ShapeFilter
{
	struct ShapeFilter *next;	/* hash bucket chain, or scan list */
	uint32		hashval;		/* hash of the indexed constant */
	int32		shape_id;		/* first shape */
	Bitmapset  *cols;
	int32		nmore;
	int32		maxmore;
	ShapeRef   *more;
	TransactionId error_xid;	/* (sub)xact that logged this filter's X row */
	bool		disabled;		/* its X row committed: skip until rebuilt */
	bool		guarded;		/* evaluated under the guard (see MayRaiseWalker) */
	uint64		stamp;			/* row it was last visited for (range index) */
	ParamExternData params[FLEXIBLE_ARRAY_MEMBER];
} ShapeFilter;

/* a compiled template */
typedef struct ShapeTemplate
{
	struct ShapeTemplate *next;
	int32		template_id;
	ExprState  *state;
	bool		leakproof;
	Bitmapset  *attrs;			/* the columns the filter reads */
	uint64		same_stamp;		/* row for which same_row is known */
	bool		same_row;		/* none of attrs changed between OLD and NEW */
	int			nparams;
	Oid		   *ptypes;
	int32	   *ptypmods;
	FmgrInfo   *pinput;
	Oid		   *pioparams;
	int16	   *ptyplens;
	bool	   *ptypbyvals;
	ParamListInfo paramli;		/* fetches from the filter being evaluated */
	struct TableShapes *ts;		/* the cache it belongs to */
	ShapeFilter *cur;			/* the filter being evaluated */
	int			image;			/* the row image being evaluated: 0 OLD, 1 NEW */

	/*
	 * ILIKE rewritten as LIKE of lower() (see RewriteILikeMutator): the
	 * pattern constants are kept lowered, and lower(column) is computed
	 * once per row image as the params after the constants
	 */
	Oid		   *lower_colls;	/* [nparams]: collation to lower pattern param i with, or 0 */
	int			nrowexprs;
	List	   *rowexprs;		/* the lower(column) expressions */
	ExprState **rowstates;
	ParamExternData *rowvals;	/* [2 * nrowexprs]: OLD's, then NEW's */
	uint64	   *rowstamps;		/* [2 * nrowexprs]: row for which rowvals is known */

	/* hash index on the constant of an equality conjunct */
	int			key_param;		/* 1-based; 0 = no index */
	AttrNumber	key_attno;
	Oid			key_collid;
	FmgrInfo	key_row_hash;
	FmgrInfo	key_const_hash;
	ShapeFilter **buckets;
	uint32		nbuckets;
	uint32		nindexed;

	/*
	 * range index on the constants of "column < $n", "column >= $m", ...
	 * conjuncts (BETWEEN is two of them): the filters sorted by their lower
	 * bound, and a max-tree over their upper bounds
	 */
	AttrNumber	range_attno;	/* 0 = no range index */
	int			range_lo;		/* 1-based param of the lower bound; 0 = none */
	int			range_hi;		/* 1-based param of the upper bound; 0 = none */
	bool		lo_incl;		/* >= rather than > */
	bool		hi_incl;		/* <= rather than < */
	int16		range_typlen;
	Oid			range_collid;
	FmgrInfo	range_cmp;		/* the btree opfamily's comparison support function */
	ShapeFilter **ritems;
	int			nritems;
	int			maxritems;
	int			rsorted;		/* ritems[0 .. rsorted-1] are in order */
	bool		rdirty;			/* ritems/rmax must be rebuilt before use */
	int		   *rmax;			/* tree node -> index of the item with the highest upper bound */
	int			rleaves;

	/* guard-free evaluation of LIKE/ILIKE with a validated constant pattern */
	bool		cond_safe;		/* safe once like_params are valid patterns */
	Bitmapset  *like_params;	/* 1-based params used as LIKE patterns */
	Bitmapset  *like_attrs;		/* columns whose size must stay under unguarded_like_max_bytes */
	uint64		size_stamp;		/* row for which row_small is known */
	bool		row_small;

	ShapeFilter *scan;			/* filters evaluated for every row */
	ShapeFilter *scan_tail;
	int			nscan;
} ShapeTemplate;

/* a distinct column list, shared by the shapes that have it */
typedef struct ColumnSet
{
	Datum		names;			/* text[] as in the registry */
	Bitmapset  *attrs;
} ColumnSet;

/* the shape cache of one table */
typedef struct TableShapes
{
	Oid			relid;			/* hash key */
	bool		valid;			/* false: refresh before use */
	bool		built;
	bool		provisional;	/* loaded rows of this backend's open transaction */
	MemoryContext cxt;
	Oid			registry_relid;
	int64		gen;
	int32		layout;
	int32		max_shape_id;
	int			nwhole;
	int			nfiltered;
	int			ntemplates;
	int			nfilters;
	ShapeTemplate *templates;
	List	   *colsets;
	ExprContext *econtext;
	char	   *arena;
	Size		arena_left;
	int64		full_builds;
	int64		incremental_builds;
	int64		last_build_us;
	uint64		row_stamp;		/* rows classified (visit stamps) */
	int64		evaluations;	/* filter evaluations against a row image */
	int64		guard_subxacts; /* internal subtransactions begun by the guard */
} TableShapes;

/* one filter to evaluate under the guard */
typedef struct GuardItem
{
	ShapeTemplate *t;
	ShapeFilter *f;
	bool		old_in;
	bool		new_in;
	bool		same;			/* NEW reads the same values: new_in = old_in */
	char	   *error;
} GuardItem;

/* the row being classified */
typedef struct RowState
{
	TableShapes *ts;
	TupleTableSlot *oldslot;
	TupleTableSlot *newslot;
	bool		changed_known;
	Bitmapset  *changed;
	int			nops;
	int			maxops;
	int32	   *ops;
	int			nguard;
	int			maxguard;
	GuardItem  *guard;
} RowState;

static HTAB *shape_caches = NULL;
static bool callback_registered = false;

/* Mark the shape cache of relid (all caches for InvalidOid) stale. */
static void
ShapeCacheRelcacheCallback(Datum arg, Oid relid)
{
	if (shape_caches == NULL)
		return;
	if (OidIsValid(relid))
	{
		TableShapes *ts = hash_search(shape_caches, &relid, HASH_FIND, NULL);

		if (ts != NULL)
			ts->valid = false;
	}
	else
	{
		HASH_SEQ_STATUS status;
		TableShapes *ts;

		hash_seq_init(&status, shape_caches);
		while ((ts = hash_seq_search(&status)) != NULL)
			ts->valid = false;
	}
}

/* Allocate size bytes from the entry's arena (freed with its context). */
static void *
ArenaAlloc(TableShapes *ts, Size size)
{
	void	   *p;

	size = MAXALIGN(size);
	if (size > ARENA_BLOCK_SIZE / 4)
		return MemoryContextAllocZero(ts->cxt, size);
	if (size > ts->arena_left)
	{
		ts->arena = MemoryContextAllocZero(ts->cxt, ARENA_BLOCK_SIZE);
		ts->arena_left = ARENA_BLOCK_SIZE;
	}
	p = ts->arena;
	ts->arena += size;
	ts->arena_left -= size;
	return p;
}

/* Copy a datum into the arena. */
static Datum
ArenaDatumCopy(TableShapes *ts, Datum value, bool typbyval, int typlen)
{
	Size		size;
	void	   *p;

	if (typbyval)
		return value;
	size = datumGetSize(value, typbyval, typlen);
	p = ArenaAlloc(ts, size);
	memcpy(p, DatumGetPointer(value), size);
	return PointerGetDatum(p);
}

/* Drop everything the entry holds. */
static void
ResetTableShapes(TableShapes *ts)
{
	if (ts->cxt == NULL)
		ts->cxt = AllocSetContextCreate(CacheMemoryContext, "shapesync shape cache",
										ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(ts->cxt);
	ts->built = false;
	ts->provisional = false;
	ts->gen = -1;
	ts->max_shape_id = 0;
	ts->nwhole = 0;
	ts->nfiltered = 0;
	ts->ntemplates = 0;
	ts->nfilters = 0;
	ts->templates = NULL;
	ts->colsets = NIL;
	ts->arena = NULL;
	ts->arena_left = 0;
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(ts->cxt);

		ts->econtext = CreateStandaloneExprContext();
		MemoryContextSwitchTo(oldcxt);
	}
}

/*
 * paramFetch hook: the constants of the filter being evaluated, then the
 * per-row-image values (lower(column)), computed at their first use for the
 * row image being evaluated (its slot is the econtext's scan tuple).
 */
static ParamExternData *
FilterParamFetch(ParamListInfo params, int paramid, bool speculative, ParamExternData *workspace)
{
	ShapeTemplate *t = (ShapeTemplate *) params->paramFetchArg;
	int			j;

	if (paramid <= t->nparams)
		return &t->cur->params[paramid - 1];
	j = t->image * t->nrowexprs + (paramid - t->nparams - 1);
	if (t->rowstamps[j] != t->ts->row_stamp)
	{
		bool		isnull;

		t->rowvals[j].value = ExecEvalExpr(t->rowstates[paramid - t->nparams - 1],
										   t->ts->econtext, &isnull);
		t->rowvals[j].isnull = isnull;
		t->rowvals[j].pflags = PARAM_FLAG_CONST;
		t->rowvals[j].ptype = TEXTOID;
		t->rowstamps[j] = t->ts->row_stamp;
	}
	return &t->rowvals[j];
}

/*
 * Functions that are not marked leakproof but cannot raise an error that
 * depends on their input (see the file header): numeric comparison (it
 * compares digits, NaN and infinities, and allocates nothing) and
 * text(bpchar) (strips trailing blanks).  tests/regress/sql/shape_ranges.sql
 * checks that filters made of them run without a subtransaction.
 */
static bool
SafeFunction(Oid funcid)
{
	switch (funcid)
	{
		case F_NUMERIC_EQ:
		case F_NUMERIC_NE:
		case F_NUMERIC_LT:
		case F_NUMERIC_LE:
		case F_NUMERIC_GT:
		case F_NUMERIC_GE:
		case F_NUMERIC_CMP:
		case F_TEXT_BPCHAR:
			return true;
		default:
			return false;
	}
}

/*
 * LIKE and ILIKE (and NOT LIKE, NOT ILIKE) on text, bpchar, name and
 * bytea.  Their only errors (PostgreSQL 15, like.c and like_match.c):
 * a pattern that ends with an unpaired escape character (a property of the
 * pattern: PatternIsSafe() checks it for each shape's constant), a
 * nondeterministic or missing collation (a property of the template,
 * checked here), and, for ILIKE, the allocations of lower() on the
 * subject, which are bounded by unguarded_like_max_bytes per row.  *ci
 * is set for the case-insensitive ones.
 */
static bool
LikeFunction(Oid funcid, bool *ci, bool *bytea)
{
	*ci = false;
	*bytea = false;
	switch (funcid)
	{
		case F_TEXTICLIKE:
		case F_TEXTICNLIKE:
		case F_BPCHARICLIKE:
		case F_BPCHARICNLIKE:
		case F_NAMEICLIKE:
		case F_NAMEICNLIKE:
			*ci = true;
			return true;
		case F_BYTEALIKE:
		case F_BYTEANLIKE:
			*bytea = true;
			return true;
		case F_TEXTLIKE:
		case F_TEXTNLIKE:
		case F_BPCHARLIKE:
		case F_BPCHARNLIKE:
		case F_NAMELIKE:
		case F_NAMENLIKE:
			return true;
		default:
			return false;
	}
}

/* Can a LIKE pattern be matched without an error (no unpaired trailing escape)? */
static bool
PatternIsSafe(Datum pattern)
{
	text	   *t = DatumGetTextPP(pattern);
	const char *p = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);

	/*
	 * Server encodings are ASCII-safe: a backslash byte is always a
	 * backslash character, never part of a multibyte one.
	 */
	for (int i = 0; i < len; i++)
	{
		if (p[i] == '\\')
		{
			if (i + 1 >= len)
				return false;
			i++;
		}
	}
	return true;
}

static Node *StripRelabel(Node *node);

/* what MayRaiseWalker learns about a template */
typedef struct RaiseContext
{
	Bitmapset  *like_params;	/* params used as LIKE patterns */
	Bitmapset  *like_attrs;		/* columns that are ILIKE subjects */
	bool		const_bad;		/* a constant pattern that may raise */
} RaiseContext;

/* check_functions_in_node callback: true for a function that may raise. */
static bool
NotLeakproof(Oid funcid, void *context)
{
	return !get_func_leakproof(funcid) && !SafeFunction(funcid);
}

/*
 * Is node a LIKE/ILIKE whose errors depend only on its pattern constant
 * (see LikeFunction)?  Then note the pattern param and the subject column.
 */
static bool
SafeLike(Node *node, RaiseContext *cxt)
{
	OpExpr	   *op = (OpExpr *) node;
	Node	   *subject;
	Node	   *pattern;
	bool		ci;
	bool		bytea;

	if (!IsA(node, OpExpr) || list_length(op->args) != 2)
		return false;
	set_opfuncid(op);
	if (!LikeFunction(op->opfuncid, &ci, &bytea))
		return false;
	if (!bytea && (!OidIsValid(op->inputcollid) ||
				   !get_collation_isdeterministic(op->inputcollid)))
		return false;
	subject = StripRelabel(linitial(op->args));
	pattern = StripRelabel(lsecond(op->args));
	if (!IsA(subject, Var) || ((Var *) subject)->varattno <= 0)
		return false;
	if (IsA(pattern, Param) && ((Param *) pattern)->paramkind == PARAM_EXTERN)
		cxt->like_params = bms_add_member(cxt->like_params, ((Param *) pattern)->paramid);
	else if (IsA(pattern, Const))
	{
		if (!((Const *) pattern)->constisnull && !PatternIsSafe(((Const *) pattern)->constvalue))
			cxt->const_bad = true;
	}
	else
		return false;
	if (ci)
		cxt->like_attrs = bms_add_member(cxt->like_attrs, ((Var *) subject)->varattno);
	return true;
}

/*
 * Does the expression contain anything that could raise for some row,
 * besides the LIKE/ILIKE operators that SafeLike() accepts?
 */
static bool
MayRaiseWalker(Node *node, RaiseContext *cxt)
{
	if (node == NULL)
		return false;
	if (IsA(node, MinMaxExpr) || IsA(node, SubscriptingRef) || IsA(node, ArrayExpr) ||
		IsA(node, ArrayCoerceExpr) || IsA(node, CoerceViaIO) || IsA(node, RowExpr) ||
		IsA(node, RowCompareExpr))
		return true;
	if (SafeLike(node, cxt))
		return false;			/* its arguments are a column and a constant */
	if (check_functions_in_node(node, NotLeakproof, NULL))
		return true;
	return expression_tree_walker(node, MayRaiseWalker, (void *) cxt);
}

/* Remember the params' types (for the constants' input functions). */
static bool
CollectParamsWalker(Node *node, ShapeTemplate *t)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param))
	{
		Param	   *p = (Param *) node;

		if (p->paramkind != PARAM_EXTERN || p->paramid < 1 || p->paramid > t->nparams)
			elog(ERROR, "shapesync: unexpected param in a shape template");
		t->ptypes[p->paramid - 1] = p->paramtype;
		t->ptypmods[p->paramid - 1] = p->paramtypmod;
		return false;
	}
	return expression_tree_walker(node, CollectParamsWalker, (void *) t);
}

/* The columns of the table that the expression reads. */
static bool
AttrsWalker(Node *node, Bitmapset **attrs)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		if (((Var *) node)->varattno > 0)
			*attrs = bms_add_member(*attrs, ((Var *) node)->varattno);
		return false;
	}
	return expression_tree_walker(node, AttrsWalker, (void *) attrs);
}

/* Highest PARAM_EXTERN id in the expression. */
static bool
MaxParamWalker(Node *node, int *maxid)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param))
	{
		*maxid = Max(*maxid, ((Param *) node)->paramid);
		return false;
	}
	return expression_tree_walker(node, MaxParamWalker, (void *) maxid);
}

/* Strip binary-compatible relabelings. */
static Node *
StripRelabel(Node *node)
{
	while (node && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	return node;
}

/*
 * Whether node is "column op $n" or "$n op column" (relabelings stripped):
 * a binary OpExpr between a column of the table and a lifted constant; sets
 * *var, *param and *var_left (the column is the left operand).
 */
static bool
MatchColumnParam(Node *node, Var **var, Param **param, bool *var_left)
{
	OpExpr	   *op = (OpExpr *) node;
	Node	   *l;
	Node	   *r;

	if (!IsA(node, OpExpr) || list_length(op->args) != 2)
		return false;
	l = StripRelabel(linitial(op->args));
	r = StripRelabel(lsecond(op->args));
	if (IsA(l, Var) && IsA(r, Param))
		*var_left = true;
	else if (IsA(r, Var) && IsA(l, Param))
		*var_left = false;
	else
		return false;
	*var = (Var *) (*var_left ? l : r);
	*param = (Param *) (*var_left ? r : l);
	return (*var)->varno == 1 && (*var)->varattno > 0 && (*param)->paramkind == PARAM_EXTERN;
}

/* Find a "column = $n" conjunct with a hashable strict operator and set up the index. */
static void
SetupKeyIndex(ShapeTemplate *t, Node *expr)
{
	List	   *conjuncts;
	ListCell   *lc;

	if (is_andclause(expr))
		conjuncts = ((BoolExpr *) expr)->args;
	else
		conjuncts = list_make1(expr);

	foreach(lc, conjuncts)
	{
		OpExpr	   *op = (OpExpr *) lfirst(lc);
		Var		   *var;
		Param	   *param;
		bool		var_left;
		RegProcedure lhs_hash;
		RegProcedure rhs_hash;

		if (!MatchColumnParam((Node *) op, &var, &param, &var_left))
			continue;
		if (!op_hashjoinable(op->opno, exprType(linitial(op->args))) ||
			!func_strict(op->opfuncid))
			continue;
		if (!get_op_hash_functions(op->opno, &lhs_hash, &rhs_hash))
			continue;

		t->key_param = param->paramid;
		t->key_attno = var->varattno;
		t->key_collid = op->inputcollid;
		fmgr_info(var_left ? lhs_hash : rhs_hash, &t->key_row_hash);
		fmgr_info(var_left ? rhs_hash : lhs_hash, &t->key_const_hash);
		t->nbuckets = 64;
		t->buckets = palloc0(sizeof(ShapeFilter *) * t->nbuckets);
		return;
	}
}

/* Append the top-level AND conjuncts of expr (nested ANDs flattened) to list. */
static List *
Conjuncts(Node *expr, List *list)
{
	ListCell   *lc;

	if (!is_andclause(expr))
		return lappend(list, expr);
	foreach(lc, ((BoolExpr *) expr)->args)
		list = Conjuncts(lfirst(lc), list);
	return list;
}

/*
 * Find "column op $n" conjuncts where op is <, <=, > or >= of the default
 * btree opfamily of the column's type (both operands of that type), strict,
 * and the opfamily's comparison support function cannot raise; index the
 * template's filters on the first such column (one lower, one upper bound).
 */
static void
SetupRangeIndex(ShapeTemplate *t, Node *expr)
{
	List	   *conjuncts = Conjuncts(expr, NIL);
	ListCell   *lc;

	foreach(lc, conjuncts)
	{
		OpExpr	   *op = (OpExpr *) lfirst(lc);
		Var		   *var;
		Param	   *param;
		bool		var_left;
		Oid			type;
		Oid			opclass;
		Oid			opfamily;
		Oid			cmpproc;
		int			strategy;
		bool		lower;
		bool		incl;

		if (!MatchColumnParam((Node *) op, &var, &param, &var_left))
			continue;
		if (t->range_attno != 0 && var->varattno != t->range_attno)
			continue;
		type = exprType(linitial(op->args));
		if (exprType(lsecond(op->args)) != type)
			continue;
		opclass = GetDefaultOpClass(type, BTREE_AM_OID);
		if (!OidIsValid(opclass))
			continue;
		opfamily = get_opclass_family(opclass);
		strategy = get_op_opfamily_strategy(op->opno, opfamily);
		if (strategy == 0 || strategy == BTEqualStrategyNumber)
			continue;
		set_opfuncid(op);
		if (!func_strict(op->opfuncid))
			continue;
		cmpproc = get_opfamily_proc(opfamily, type, type, BTORDER_PROC);
		if (!OidIsValid(cmpproc) || (!get_func_leakproof(cmpproc) && !SafeFunction(cmpproc)))
			continue;

		/* "$n < column" is "column > $n" */
		if (!var_left)
			strategy = BTCommuteStrategyNumber(strategy);
		lower = (strategy == BTGreaterStrategyNumber || strategy == BTGreaterEqualStrategyNumber);
		incl = (strategy == BTGreaterEqualStrategyNumber || strategy == BTLessEqualStrategyNumber);
		if (lower ? t->range_lo != 0 : t->range_hi != 0)
			continue;
		if (t->range_attno == 0)
		{
			t->range_attno = var->varattno;
			t->range_collid = op->inputcollid;
			t->range_typlen = get_typlen(type);
			fmgr_info(cmpproc, &t->range_cmp);
		}
		else if (op->inputcollid != t->range_collid)
			continue;
		if (lower)
		{
			t->range_lo = param->paramid;
			t->lo_incl = incl;
		}
		else
		{
			t->range_hi = param->paramid;
			t->hi_incl = incl;
		}
	}
	list_free(conjuncts);
}

/*
 * In a multibyte database, "column ILIKE $n" with a deterministic
 * collation becomes "$r LIKE $n" where $n holds lower(pattern) and $r is
 * lower(column), computed once per row image for all the template's
 * filters.  This is what PostgreSQL 15 runs for ILIKE there
 * (Generic_Text_IC_like() in like.c lowers both sides with the collation and
 * calls the same UTF8_MatchText/MB_MatchText as LIKE's GenericMatchText()),
 * so the result is the same; lower() of the column is no longer repeated
 * for every ILIKE shape.
 */
static Node *
RewriteILikeMutator(Node *node, ShapeTemplate *t)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, OpExpr) && list_length(((OpExpr *) node)->args) == 2)
	{
		OpExpr	   *op = (OpExpr *) node;
		Node	   *subject = linitial(op->args);
		Node	   *pattern = StripRelabel(lsecond(op->args));

		set_opfuncid(op);
		if ((op->opfuncid == F_TEXTICLIKE || op->opfuncid == F_TEXTICNLIKE) &&
			IsA(StripRelabel(subject), Var) && ((Var *) StripRelabel(subject))->varattno > 0 &&
			IsA(pattern, Param) && ((Param *) pattern)->paramkind == PARAM_EXTERN &&
			OidIsValid(op->inputcollid) && get_collation_isdeterministic(op->inputcollid))
		{
			FuncExpr   *lw = makeFuncExpr(F_LOWER_TEXT, TEXTOID, list_make1(copyObject(subject)),
										  op->inputcollid, op->inputcollid, COERCE_EXPLICIT_CALL);
			Param	   *rp = makeNode(Param);
			OpExpr	   *like = (OpExpr *) copyObject(op);
			ListCell   *lc;
			int			j = 0;

			foreach(lc, t->rowexprs)
			{
				if (equal(lfirst(lc), lw))
					break;
				j++;
			}
			if (lc == NULL)
				t->rowexprs = lappend(t->rowexprs, lw);
			rp->paramkind = PARAM_EXTERN;
			rp->paramid = t->nparams + 1 + j;
			rp->paramtype = TEXTOID;
			rp->paramtypmod = -1;
			rp->paramcollid = op->inputcollid;
			rp->location = -1;
			t->lower_colls[((Param *) pattern)->paramid - 1] = op->inputcollid;
			if (op->opfuncid == F_TEXTICLIKE)
			{
				like->opno = OID_TEXT_LIKE_OP;
				like->opfuncid = F_TEXTLIKE;
			}
			else
			{
				like->opno = get_negator(OID_TEXT_LIKE_OP);
				like->opfuncid = F_TEXTNLIKE;
			}
			like->args = list_make2(rp, copyObject(lsecond(op->args)));
			return (Node *) like;
		}
	}
	return expression_tree_mutator(node, RewriteILikeMutator, (void *) t);
}

/* Compile template text (nodeToString of the lifted filter) in the entry's context. */
static ShapeTemplate *
BuildTemplate(TableShapes *ts, int32 template_id, const char *text)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(ts->cxt);
	ShapeTemplate *t = palloc0(sizeof(ShapeTemplate));
	Node	   *expr = stringToNode(text);
	int			maxid = 0;

	t->template_id = template_id;
	(void) MaxParamWalker(expr, &maxid);
	t->nparams = maxid;
	t->ptypes = palloc0(sizeof(Oid) * Max(maxid, 1));
	t->ptypmods = palloc0(sizeof(int32) * Max(maxid, 1));
	t->pinput = palloc0(sizeof(FmgrInfo) * Max(maxid, 1));
	t->pioparams = palloc0(sizeof(Oid) * Max(maxid, 1));
	t->ptyplens = palloc0(sizeof(int16) * Max(maxid, 1));
	t->ptypbyvals = palloc0(sizeof(bool) * Max(maxid, 1));
	(void) CollectParamsWalker(expr, t);
	for (int i = 0; i < maxid; i++)
	{
		Oid			typinput;

		if (!OidIsValid(t->ptypes[i]))
			elog(ERROR, "shapesync: shape template lacks param $%d", i + 1);
		getTypeInputInfo(t->ptypes[i], &typinput, &t->pioparams[i]);
		fmgr_info(typinput, &t->pinput[i]);
		get_typlenbyval(t->ptypes[i], &t->ptyplens[i], &t->ptypbyvals[i]);
	}

	t->paramli = makeParamList(0);
	t->paramli->numParams = maxid;
	t->paramli->paramFetch = FilterParamFetch;
	t->paramli->paramFetchArg = t;
	t->ts = ts;
	t->lower_colls = palloc0(sizeof(Oid) * Max(maxid, 1));

	{
		RaiseContext rcxt;

		memset(&rcxt, 0, sizeof(rcxt));
		t->cond_safe = !MayRaiseWalker(expr, &rcxt) && !rcxt.const_bad;
		t->leakproof = t->cond_safe && rcxt.like_params == NULL && rcxt.like_attrs == NULL;
		t->like_params = rcxt.like_params;
		t->like_attrs = rcxt.like_attrs;
	}
	(void) AttrsWalker(expr, &t->attrs);
	SetupKeyIndex(t, expr);
	if (t->key_param == 0)
		SetupRangeIndex(t, expr);
	if (pg_database_encoding_max_length() > 1)
	{
		expr = RewriteILikeMutator(expr, t);
		t->nrowexprs = list_length(t->rowexprs);
		if (t->nrowexprs > 0)
		{
			ListCell   *lc;
			int			j = 0;

			t->rowstates = palloc(sizeof(ExprState *) * t->nrowexprs);
			foreach(lc, t->rowexprs)
				t->rowstates[j++] = ExecInitExpr((Expr *) lfirst(lc), NULL);
			t->rowvals = palloc0(sizeof(ParamExternData) * 2 * t->nrowexprs);
			t->rowstamps = palloc0(sizeof(uint64) * 2 * t->nrowexprs);
			t->paramli->numParams = maxid + t->nrowexprs;
		}
	}
	t->state = ExecInitExpr((Expr *) expr, NULL);

	t->next = ts->templates;
	ts->templates = t;
	ts->ntemplates++;
	MemoryContextSwitchTo(oldcxt);
	return t;
}

/* The column set for a registry columns value (NULL datum: all columns). */
static Bitmapset *
InternColumns(TableShapes *ts, Relation rel, Datum names)
{
	ListCell   *lc;
	ColumnSet  *cs;
	MemoryContext oldcxt;
	Datum	   *elems;
	bool	   *elnulls;
	int			nelems;
	Bitmapset  *attrs = NULL;

	foreach(lc, ts->colsets)
	{
		cs = (ColumnSet *) lfirst(lc);
		if (datumIsEqual(cs->names, names, false, -1))
			return cs->attrs;
	}

	oldcxt = MemoryContextSwitchTo(ts->cxt);
	deconstruct_array(DatumGetArrayTypeP(names), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &elnulls, &nelems);
	for (int i = 0; i < nelems; i++)
	{
		AttrNumber	attno;

		if (elnulls[i])
			continue;
		attno = get_attnum(RelationGetRelid(rel), TextDatumGetCString(elems[i]));
		if (attno > 0)
			attrs = bms_add_member(attrs, attno);
	}
	if (attrs == NULL)
		attrs = bms_make_singleton(0);	/* no known column: never "changed" */
	if (list_length(ts->colsets) < 256)
	{
		cs = palloc(sizeof(ColumnSet));
		cs->names = datumCopy(names, false, -1);
		cs->attrs = attrs;
		ts->colsets = lappend(ts->colsets, cs);
	}
	MemoryContextSwitchTo(oldcxt);
	return attrs;
}

/* Double the buckets of a template's index. */
static void
GrowBuckets(TableShapes *ts, ShapeTemplate *t)
{
	uint32		nb = t->nbuckets * 2;
	ShapeFilter **nbk = MemoryContextAllocZero(ts->cxt, sizeof(ShapeFilter *) * nb);

	for (uint32 i = 0; i < t->nbuckets; i++)
	{
		ShapeFilter *f = t->buckets[i];

		while (f != NULL)
		{
			ShapeFilter *next = f->next;
			uint32		b = f->hashval & (nb - 1);

			f->next = nbk[b];
			nbk[b] = f;
			f = next;
		}
	}
	pfree(t->buckets);
	t->buckets = nbk;
	t->nbuckets = nb;
}

/* Are the constants of filter f equal to values/nulls? */
static bool
SameConstants(ShapeTemplate *t, ShapeFilter *f, Datum *values, bool *nulls)
{
	for (int i = 0; i < t->nparams; i++)
	{
		if (f->params[i].isnull != nulls[i])
			return false;
		if (!nulls[i] && !datumIsEqual(f->params[i].value, values[i],
									   t->ptypbyvals[i], t->ptyplens[i]))
			return false;
	}
	return true;
}

/* Add a shape to a filter that already has one. */
static void
AddShapeToFilter(TableShapes *ts, ShapeFilter *f, int32 shape_id, Bitmapset *cols)
{
	if (f->nmore == f->maxmore)
	{
		int32		n = Max(4, f->maxmore * 2);
		ShapeRef   *more = MemoryContextAlloc(ts->cxt, sizeof(ShapeRef) * n);

		if (f->nmore > 0)
		{
			memcpy(more, f->more, sizeof(ShapeRef) * f->nmore);
			pfree(f->more);
		}
		f->more = more;
		f->maxmore = n;
	}
	f->more[f->nmore].shape_id = shape_id;
	f->more[f->nmore].cols = cols;
	f->nmore++;
}

/*
 * The constants of a shape (text[] datum from the registry) as values of
 * template t's param types, in tmpcxt; the hash of the indexed one.
 * Returns whether the shape goes into t's hash index.
 */
static bool
ParseConstants(ShapeTemplate *t, int32 shape_id, Datum consts, bool consts_null,
			   MemoryContext tmpcxt, Datum **values_p, bool **nulls_p, uint32 *hashval)
{
	Datum	   *cvals = NULL;
	bool	   *cnulls = NULL;
	int			nconsts = 0;
	Datum	   *values;
	bool	   *nulls;
	bool		indexed = false;
	MemoryContext oldcxt = MemoryContextSwitchTo(tmpcxt);

	if (!consts_null)
		deconstruct_array(DatumGetArrayTypeP(consts), TEXTOID, -1, false, TYPALIGN_INT,
						  &cvals, &cnulls, &nconsts);
	if (nconsts != t->nparams)
		elog(ERROR, "shapesync: shape %d has %d constants, its template %d params",
			 shape_id, nconsts, t->nparams);
	values = palloc(sizeof(Datum) * Max(t->nparams, 1));
	nulls = palloc(sizeof(bool) * Max(t->nparams, 1));
	for (int i = 0; i < t->nparams; i++)
	{
		nulls[i] = cnulls[i];
		values[i] = nulls[i] ? (Datum) 0 :
			InputFunctionCall(&t->pinput[i], TextDatumGetCString(cvals[i]),
							  t->pioparams[i], t->ptypmods[i]);
		/* an ILIKE pattern of a rewritten template (RewriteILikeMutator) */
		if (!nulls[i] && OidIsValid(t->lower_colls[i]))
			values[i] = DirectFunctionCall1Coll(lower, t->lower_colls[i], values[i]);
	}
	*hashval = 0;
	if (t->key_param > 0 && !nulls[t->key_param - 1])
	{
		*hashval = DatumGetUInt32(FunctionCall1Coll(&t->key_const_hash, t->key_collid,
													values[t->key_param - 1]));
		indexed = true;
	}
	MemoryContextSwitchTo(oldcxt);
	*values_p = values;
	*nulls_p = nulls;
	return indexed;
}

/* Does filter f go into t's range index (it has one and f's bounds are not NULL)? */
static bool
InRangeIndex(ShapeTemplate *t, ShapeFilter *f)
{
	if (t->range_attno == 0)
		return false;
	if (t->range_lo > 0 && f->params[t->range_lo - 1].isnull)
		return false;
	if (t->range_hi > 0 && f->params[t->range_hi - 1].isnull)
		return false;
	return true;
}

/* Add a filtered shape with constants consts (text[] datum) to template t. */
static void
AddShape(TableShapes *ts, ShapeTemplate *t, int32 shape_id, Bitmapset *cols,
		 Datum consts, bool consts_null, MemoryContext tmpcxt)
{
	Datum	   *values;
	bool	   *nulls;
	uint32		hashval;
	bool		indexed;
	ShapeFilter *f;

	indexed = ParseConstants(t, shape_id, consts, consts_null, tmpcxt, &values, &nulls, &hashval);

	/* same template and constants as a known filter: share its evaluation */
	if (indexed)
	{
		for (f = t->buckets[hashval & (t->nbuckets - 1)]; f != NULL; f = f->next)
		{
			if (f->hashval == hashval && SameConstants(t, f, values, nulls))
			{
				AddShapeToFilter(ts, f, shape_id, cols);
				return;
			}
		}
	}

	f = ArenaAlloc(ts, offsetof(ShapeFilter, params) + sizeof(ParamExternData) * t->nparams);
	f->hashval = hashval;
	f->shape_id = shape_id;
	f->cols = cols;
	for (int i = 0; i < t->nparams; i++)
	{
		f->params[i].isnull = nulls[i];
		f->params[i].pflags = PARAM_FLAG_CONST;
		f->params[i].ptype = t->ptypes[i];
		f->params[i].value = nulls[i] ? (Datum) 0 :
			ArenaDatumCopy(ts, values[i], t->ptypbyvals[i], t->ptyplens[i]);
	}

	/* guard-free when the template is, or its LIKE patterns are safe */
	f->guarded = !t->leakproof;
	if (f->guarded && t->cond_safe)
	{
		int			p = -1;

		f->guarded = false;
		while ((p = bms_next_member(t->like_params, p)) >= 0)
			if (!nulls[p - 1] && !PatternIsSafe(values[p - 1]))
				f->guarded = true;
	}

	if (!indexed && InRangeIndex(t, f))
	{
		if (t->nritems == t->maxritems)
		{
			t->maxritems = Max(16, t->maxritems * 2);
			t->ritems = t->ritems ?
				repalloc(t->ritems, sizeof(ShapeFilter *) * t->maxritems) :
				MemoryContextAlloc(ts->cxt, sizeof(ShapeFilter *) * t->maxritems);
		}
		t->ritems[t->nritems++] = f;
		t->rdirty = true;
		ts->nfilters++;
		return;
	}
	if (indexed)
	{
		uint32		b;

		if (t->nindexed >= t->nbuckets)
			GrowBuckets(ts, t);
		b = hashval & (t->nbuckets - 1);
		f->next = t->buckets[b];
		t->buckets[b] = f;
		t->nindexed++;
	}
	else
	{
		f->next = NULL;
		if (t->scan_tail)
			t->scan_tail->next = f;
		else
			t->scan = f;
		t->scan_tail = f;
		t->nscan++;
	}
	ts->nfilters++;
}

static Oid ShapesyncIndexOid(const char *name);
static AttrNumber ColumnOf(Relation rel, const char *name);

/* Take shape_id out of filter f; true if f has no shape left. */
static bool
RemoveShapeFromFilter(ShapeFilter *f, int32 shape_id, bool *found)
{
	if (f->shape_id == shape_id)
	{
		*found = true;
		if (f->nmore == 0)
			return true;
		f->shape_id = f->more[f->nmore - 1].shape_id;
		f->cols = f->more[f->nmore - 1].cols;
		f->nmore--;
		return false;
	}
	for (int i = 0; i < f->nmore; i++)
	{
		if (f->more[i].shape_id == shape_id)
		{
			*found = true;
			f->more[i] = f->more[f->nmore - 1];
			f->nmore--;
			return false;
		}
	}
	return false;
}

/* Remove a filtered shape (template t, constants consts) from the cache; false if absent. */
static bool
RemoveShape(TableShapes *ts, ShapeTemplate *t, int32 shape_id, Datum consts, bool consts_null,
			MemoryContext tmpcxt)
{
	Datum	   *values;
	bool	   *nulls;
	uint32		hashval;
	bool		found = false;
	ShapeFilter **link;
	ShapeFilter *prev = NULL;

	if (ParseConstants(t, shape_id, consts, consts_null, tmpcxt, &values, &nulls, &hashval))
	{
		for (link = &t->buckets[hashval & (t->nbuckets - 1)]; *link != NULL; link = &(*link)->next)
		{
			ShapeFilter *f = *link;

			if (f->hashval == hashval && RemoveShapeFromFilter(f, shape_id, &found))
			{
				*link = f->next;
				t->nindexed--;
				ts->nfilters--;
			}
			if (found)
				return true;
		}
		return false;
	}
	for (int i = 0; i < t->nritems; i++)
	{
		ShapeFilter *f = t->ritems[i];

		if (RemoveShapeFromFilter(f, shape_id, &found))
		{
			/* keeps the order by lower bound; the max-tree is rebuilt */
			memmove(&t->ritems[i], &t->ritems[i + 1], sizeof(ShapeFilter *) * (t->nritems - i - 1));
			t->nritems--;
			if (i < t->rsorted)
				t->rsorted--;
			t->rdirty = true;
			ts->nfilters--;
		}
		if (found)
			return true;
	}
	for (link = &t->scan; *link != NULL; prev = *link, link = &(*link)->next)
	{
		ShapeFilter *f = *link;

		if (RemoveShapeFromFilter(f, shape_id, &found))
		{
			*link = f->next;
			if (t->scan_tail == f)
				t->scan_tail = prev;
			t->nscan--;
			ts->nfilters--;
		}
		if (found)
			return true;
	}
	return false;
}

/*
 * Apply the removals recorded for the table after generation ts->gen up to
 * gen.  False when they are incomplete (trimmed, or recorded as "rebuild"):
 * the caller then rebuilds in full.
 */
static bool
ApplyRemovals(TableShapes *ts, int64 gen, Snapshot snap)
{
	Oid			removals_relid = ShapesyncRelationOid("shape_removals", true);
	Relation	rel;
	TupleDesc	desc;
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;
	AttrNumber	a_gen;
	AttrNumber	a_shape_id;
	AttrNumber	a_template;
	AttrNumber	a_consts;
	Bitmapset  *gens = NULL;
	bool		complete = true;
	MemoryContext tmpcxt;

	if (!OidIsValid(removals_relid) || gen <= ts->gen || gen - ts->gen > SHAPESYNC_REMOVAL_GENS)
		return false;
	rel = table_open(removals_relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	a_gen = ColumnOf(rel, "gen");
	a_shape_id = ColumnOf(rel, "shape_id");
	a_template = ColumnOf(rel, "template_id");
	a_consts = ColumnOf(rel, "consts");
	tmpcxt = AllocSetContextCreate(CurrentMemoryContext, "shapesync shape removal",
								   ALLOCSET_DEFAULT_SIZES);

	ScanKeyInit(&keys[0], ColumnOf(rel, "relid"), BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ts->relid));
	ScanKeyInit(&keys[1], a_gen, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(ts->gen));
	scan = systable_beginscan(rel, ShapesyncIndexOid("shape_removals_relid_gen"), true, snap, 2, keys);
	while (complete && (tup = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		int64		g = DatumGetInt64(heap_getattr(tup, a_gen, desc, &isnull));
		Datum		sid = heap_getattr(tup, a_shape_id, desc, &isnull);
		Datum		tid;
		Datum		consts;
		bool		consts_null;
		ShapeTemplate *t;

		if (g > gen)
			continue;
		gens = bms_add_member(gens, (int) (g - ts->gen));
		if (isnull)
		{
			complete = false;	/* too many removals at once: rebuild */
			break;
		}
		if (DatumGetInt32(sid) > ts->max_shape_id)
			continue;			/* never loaded */
		tid = heap_getattr(tup, a_template, desc, &isnull);
		if (isnull)
		{
			ts->nwhole = Max(ts->nwhole - 1, 0);
			continue;
		}
		for (t = ts->templates; t != NULL; t = t->next)
			if (t->template_id == DatumGetInt32(tid))
				break;
		if (t == NULL)
			continue;
		consts = heap_getattr(tup, a_consts, desc, &consts_null);
		if (RemoveShape(ts, t, DatumGetInt32(sid), consts, consts_null, tmpcxt))
			ts->nfiltered--;
		MemoryContextReset(tmpcxt);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	MemoryContextDelete(tmpcxt);

	/* every generation in between must have left its removals */
	if (complete && bms_num_members(gens) != gen - ts->gen)
		complete = false;
	return complete;
}

/* Oid of index shapesync.<name>. */
static Oid
ShapesyncIndexOid(const char *name)
{
	Oid			oid = get_relname_relid(name, ShapesyncSchemaOid(false));

	if (!OidIsValid(oid))
		elog(ERROR, "shapesync: index %s.%s is missing", SHAPESYNC_SCHEMA, name);
	return oid;
}

/* Attribute number of column name of relation rel, or error. */
static AttrNumber
ColumnOf(Relation rel, const char *name)
{
	AttrNumber	attno = get_attnum(RelationGetRelid(rel), name);

	if (attno <= 0)
		elog(ERROR, "shapesync: column %s of %s is missing", name, RelationGetRelationName(rel));
	return attno;
}

/* shapes_gen of a tracked table, -1 when it is not tracked. */
static int64
ReadTrackedGen(Oid relid, Snapshot snap)
{
	Relation	tracked = table_open(ShapesyncRelationOid("tracked", false), AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int64		gen = -1;

	ScanKeyInit(&key, ColumnOf(tracked, "relid"), BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(tracked, ShapesyncIndexOid("tracked_pkey"), true, snap, 1, &key);
	if ((tup = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, ColumnOf(tracked, "shapes_gen"),
									 RelationGetDescr(tracked), &isnull);

		gen = isnull ? 0 : DatumGetInt64(d);
	}
	systable_endscan(scan);
	table_close(tracked, AccessShareLock);
	return gen;
}

/* Read and compile template template_id. */
static ShapeTemplate *
LoadTemplate(TableShapes *ts, int32 template_id, Snapshot snap)
{
	Relation	trel = table_open(ShapesyncRelationOid("shape_templates", false), AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	ShapeTemplate *t = NULL;

	ScanKeyInit(&key, ColumnOf(trel, "template_id"), BTEqualStrategyNumber, F_INT4EQ,
				Int32GetDatum(template_id));
	scan = systable_beginscan(trel, ShapesyncIndexOid("shape_templates_pkey"), true, snap, 1, &key);
	if ((tup = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, ColumnOf(trel, "template"), RelationGetDescr(trel), &isnull);

		if (!isnull)
			t = BuildTemplate(ts, template_id, TextDatumGetCString(d));
	}
	systable_endscan(scan);
	table_close(trel, AccessShareLock);
	if (t == NULL)
		elog(ERROR, "shapesync: shape template %d is missing", template_id);
	return t;
}

/* Load the active shapes of the table with shape_id > ts->max_shape_id. */
static void
LoadShapes(TableShapes *ts, Relation rel, Snapshot snap)
{
	Relation	reg = table_open(ts->registry_relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(reg);
	AttrNumber	a_relid = ColumnOf(reg, "relid");
	AttrNumber	a_shape_id = ColumnOf(reg, "shape_id");
	AttrNumber	a_template = ColumnOf(reg, "template_id");
	AttrNumber	a_consts = ColumnOf(reg, "consts");
	AttrNumber	a_columns = ColumnOf(reg, "columns");
	AttrNumber	a_state = ColumnOf(reg, "state");
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;
	ShapeTemplate *last = NULL;
	MemoryContext tmpcxt = AllocSetContextCreate(CurrentMemoryContext, "shapesync shape load",
												 ALLOCSET_DEFAULT_SIZES);
	int			n = 0;

	ScanKeyInit(&keys[0], a_relid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(ts->relid));
	ScanKeyInit(&keys[1], a_shape_id, BTGreaterStrategyNumber, F_INT4GT,
				Int32GetDatum(ts->max_shape_id));
	scan = systable_beginscan(reg, ShapesyncIndexOid("shape_registry_active_relid"), true, snap,
							  2, keys);
	while ((tup = systable_getnext(scan)) != NULL)
	{
		bool		isnull;
		int32		shape_id;
		Datum		d;
		Bitmapset  *cols = NULL;
		Datum		consts;
		bool		consts_null;

		d = heap_getattr(tup, a_state, desc, &isnull);
		if (isnull || strcmp(TextDatumGetCString(d), "active") != 0)
			continue;
		/* our own uncommitted registration: rebuild in full next time (it may roll back) */
		if (TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetRawXmin(tup->t_data)))
			ts->provisional = true;
		shape_id = DatumGetInt32(heap_getattr(tup, a_shape_id, desc, &isnull));
		ts->max_shape_id = Max(ts->max_shape_id, shape_id);

		d = heap_getattr(tup, a_template, desc, &isnull);
		if (isnull)
		{
			ts->nwhole++;
			continue;
		}
		if (last == NULL || last->template_id != DatumGetInt32(d))
		{
			ShapeTemplate *t;

			for (t = ts->templates; t != NULL; t = t->next)
				if (t->template_id == DatumGetInt32(d))
					break;
			last = t ? t : LoadTemplate(ts, DatumGetInt32(d), snap);
		}

		d = heap_getattr(tup, a_columns, desc, &isnull);
		if (!isnull)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(tmpcxt);

			d = PointerGetDatum(PG_DETOAST_DATUM(d));
			MemoryContextSwitchTo(oldcxt);
			cols = InternColumns(ts, rel, d);
		}
		consts = heap_getattr(tup, a_consts, desc, &consts_null);
		AddShape(ts, last, shape_id, cols, consts, consts_null, tmpcxt);
		ts->nfiltered++;
		if (++n % 1024 == 0)
			MemoryContextReset(tmpcxt);
	}
	systable_endscan(scan);
	table_close(reg, AccessShareLock);
	MemoryContextDelete(tmpcxt);
}

/* Bring the entry up to date with the registry (see the file header). */
static void
RefreshTableShapes(TableShapes *ts, Relation rel)
{
	Oid			registry = ShapesyncRelationOid("shape_registry", true);
	Snapshot	snap;
	instr_time	start;
	instr_time	duration;

	INSTR_TIME_SET_CURRENT(start);
	ts->valid = true;			/* an invalidation during the refresh clears it again */
	if (!OidIsValid(registry))
	{
		ResetTableShapes(ts);
		ts->layout = ShapesyncLayoutHash(RelationGetDescr(rel));
		return;
	}

	snap = RegisterSnapshot(GetLatestSnapshot());
	PG_TRY();
	{
		int64		gen = ReadTrackedGen(ts->relid, snap);
		int32		layout = ShapesyncLayoutHash(RelationGetDescr(rel));

		if (!ts->built || ts->provisional || layout != ts->layout ||
			registry != ts->registry_relid ||
			(gen != ts->gen && !ApplyRemovals(ts, gen, snap)))
		{
			ResetTableShapes(ts);
			ts->gen = gen;
			ts->layout = layout;
			ts->registry_relid = registry;
			ts->full_builds++;
		}
		else
		{
			ts->gen = gen;
			ts->incremental_builds++;
		}
		if (gen >= 0)
			LoadShapes(ts, rel, snap);
		ts->built = true;
	}
	PG_CATCH();
	{
		ts->valid = false;
		ts->built = false;
		PG_RE_THROW();
	}
	PG_END_TRY();
	UnregisterSnapshot(snap);

	INSTR_TIME_SET_CURRENT(duration);
	INSTR_TIME_SUBTRACT(duration, start);
	ts->last_build_us = INSTR_TIME_GET_MICROSEC(duration);
}

/*
 * Refresh the entry inside an internal subtransaction: a registry that
 * cannot be loaded (say, a constant that no longer reads back) must not
 * fail the write.  The cache is then left empty until the next
 * invalidation and an 'S' row tells the sidecar to invalidate the table's
 * shapes, as after DDL.
 */
static void
RefreshGuarded(TableShapes *ts, Relation rel)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		RefreshTableShapes(ts, rel);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		ResetTableShapes(ts);	/* empty, rebuilt in full after the next invalidation */
		ts->layout = ShapesyncLayoutHash(RelationGetDescr(rel));
		ts->valid = true;
		ShapesyncLogRow(RelationGetRelid(rel), NULL, 'S', ts->layout, NULL, NULL, NULL,
						psprintf("shape cache could not be loaded: %s",
								 edata->message ? edata->message : "error"));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/* The up-to-date shape cache of rel. */
static TableShapes *
GetTableShapes(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	TableShapes *ts;
	bool		found;

	if (shape_caches == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(TableShapes);
		ctl.hcxt = CacheMemoryContext;
		shape_caches = hash_create("shapesync shape caches", 16, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(ShapeCacheRelcacheCallback, (Datum) 0);
		callback_registered = true;
	}
	ts = hash_search(shape_caches, &relid, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) ts) + sizeof(Oid), 0, sizeof(TableShapes) - sizeof(Oid));
		ts->valid = false;
	}
	if (!ts->valid)
		RefreshGuarded(ts, rel);
	return ts;
}

/* Is the filter suspended because its X row is live or committed? */
static bool
FilterSuspended(ShapeFilter *f)
{
	if (f->disabled)
		return true;
	if (!TransactionIdIsValid(f->error_xid))
		return false;
	if (TransactionIdIsCurrentTransactionId(f->error_xid))
		return true;
	if (TransactionIdDidCommit(f->error_xid))
	{
		f->disabled = true;
		return true;
	}
	if (!TransactionIdIsInProgress(f->error_xid))
		f->error_xid = InvalidTransactionId;	/* its X row was rolled back */
	return false;
}

/* Evaluate filter f of template t against slot. */
static inline bool
EvalFilter(TableShapes *ts, ShapeTemplate *t, ShapeFilter *f, TupleTableSlot *slot, int image)
{
	ExprContext *econtext = ts->econtext;
	Datum		d;
	bool		isnull;

	if (slot == NULL)
		return false;
	ts->evaluations++;
	econtext->ecxt_scantuple = slot;
	t->cur = f;
	t->image = image;
	econtext->ecxt_param_list_info = t->paramli;
	d = ExecEvalExprSwitchContext(t->state, econtext, &isnull);
	return !isnull && DatumGetBool(d);
}

/* Attnums whose value differs (binary, or in nullness) between OLD and NEW. */
Bitmapset *
ShapesyncChangedColumns(TupleTableSlot *oldslot, TupleTableSlot *newslot)
{
	TupleDesc	desc = oldslot->tts_tupleDescriptor;
	Bitmapset  *changed = NULL;

	slot_getallattrs(oldslot);
	slot_getallattrs(newslot);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		on = oldslot->tts_isnull[i];
		bool		nn = newslot->tts_isnull[i];

		if (att->attisdropped)
			continue;
		if (on != nn ||
			(!on && !datumIsEqual(oldslot->tts_values[i], newslot->tts_values[i],
								  att->attbyval, att->attlen)))
			changed = bms_add_member(changed, i + 1);
	}
	return changed;
}

/* Columns whose value differs between OLD and NEW (computed once per row). */
static Bitmapset *
ChangedColumns(RowState *rs)
{
	if (!rs->changed_known)
	{
		rs->changed = ShapesyncChangedColumns(rs->oldslot, rs->newslot);
		rs->changed_known = true;
	}
	return rs->changed;
}

/* Append shape_id * 4 + op. */
static void
PushOp(RowState *rs, int32 shape_id, int op)
{
	if (rs->nops == rs->maxops)
	{
		rs->maxops = Max(16, rs->maxops * 2);
		rs->ops = rs->ops ? repalloc(rs->ops, sizeof(int32) * rs->maxops) :
			palloc(sizeof(int32) * rs->maxops);
	}
	rs->ops[rs->nops++] = shape_id * 4 + op;
}

/* Does a change of the columns in changed concern a shape with columns cols? */
static inline bool
ColumnsChanged(RowState *rs, Bitmapset *cols)
{
	Bitmapset  *changed = ChangedColumns(rs);

	return cols == NULL ? !bms_is_empty(changed) : bms_overlap(changed, cols);
}

/* Record the ops of filter f's shapes given its OLD/NEW membership. */
static void
EmitOps(RowState *rs, ShapeFilter *f, bool old_in, bool new_in)
{
	int			op;

	if (!old_in && !new_in)
		return;
	if (!old_in)
		op = SHAPESYNC_OP_INSERT;
	else if (!new_in)
		op = SHAPESYNC_OP_DELETE;
	else
		op = SHAPESYNC_OP_UPDATE;

	if (op != SHAPESYNC_OP_UPDATE || ColumnsChanged(rs, f->cols))
		PushOp(rs, f->shape_id, op);
	for (int i = 0; i < f->nmore; i++)
		if (op != SHAPESYNC_OP_UPDATE || ColumnsChanged(rs, f->more[i].cols))
			PushOp(rs, f->more[i].shape_id, op);
}

/* Are the ILIKE subjects of template t within unguarded_like_max_bytes in OLD and NEW? */
static bool
RowIsSmall(RowState *rs, ShapeTemplate *t)
{
	if (t->size_stamp != rs->ts->row_stamp)
	{
		TupleTableSlot *slots[2] = {rs->oldslot, rs->newslot};

		t->row_small = true;
		for (int s = 0; s < 2 && t->row_small; s++)
		{
			int			a = -1;

			if (slots[s] == NULL)
				continue;
			while ((a = bms_next_member(t->like_attrs, a)) >= 0)
			{
				bool		isnull;
				Datum		d = slot_getattr(slots[s], a, &isnull);

				if (!isnull &&
					TupleDescAttr(slots[s]->tts_tupleDescriptor, a - 1)->attlen == -1 &&
					toast_raw_datum_size(d) > (Size) shapesync_unguarded_like_max_bytes + VARHDRSZ)
				{
					t->row_small = false;
					break;
				}
			}
		}
		t->size_stamp = rs->ts->row_stamp;
	}
	return t->row_small;
}

/*
 * Does template t read the same values in OLD and NEW (an UPDATE that
 * changed none of its columns)?  Its filters are immutable functions of
 * those values, so NEW's result is OLD's.
 */
static bool
TemplateUnchanged(RowState *rs, ShapeTemplate *t)
{
	if (rs->oldslot == NULL || rs->newslot == NULL)
		return false;
	if (t->same_stamp != rs->ts->row_stamp)
	{
		t->same_row = !bms_overlap(ChangedColumns(rs), t->attrs);
		t->same_stamp = rs->ts->row_stamp;
	}
	return t->same_row;
}

/* Classify filter f now (safe to run unguarded) or queue it for the guard. */
static void
VisitFilter(RowState *rs, ShapeTemplate *t, ShapeFilter *f)
{
	bool		same;

	if (FilterSuspended(f))
		return;
	same = TemplateUnchanged(rs, t);
	if (!f->guarded && (t->like_attrs == NULL || RowIsSmall(rs, t)))
	{
		bool		old_in = EvalFilter(rs->ts, t, f, rs->oldslot, 0);
		bool		new_in = same ? old_in : EvalFilter(rs->ts, t, f, rs->newslot, 1);

		EmitOps(rs, f, old_in, new_in);
		return;
	}
	if (rs->nguard == rs->maxguard)
	{
		rs->maxguard = Max(8, rs->maxguard * 2);
		rs->guard = rs->guard ? repalloc(rs->guard, sizeof(GuardItem) * rs->maxguard) :
			palloc(sizeof(GuardItem) * rs->maxguard);
	}
	rs->guard[rs->nguard].t = t;
	rs->guard[rs->nguard].f = f;
	rs->guard[rs->nguard].old_in = false;
	rs->guard[rs->nguard].new_in = false;
	rs->guard[rs->nguard].same = same;
	rs->guard[rs->nguard].error = NULL;
	rs->nguard++;
}

/* Hash of slot's key column for template t; false if NULL. */
static inline bool
RowKeyHash(ShapeTemplate *t, TupleTableSlot *slot, uint32 *hashval)
{
	bool		isnull;
	Datum		value;

	if (slot == NULL)
		return false;
	value = slot_getattr(slot, t->key_attno, &isnull);
	if (isnull)
		return false;
	*hashval = DatumGetUInt32(FunctionCall1Coll(&t->key_row_hash, t->key_collid, value));
	return true;
}

/*
 * qsort_arg comparator: filters by their lower bound (by their upper bound
 * when the template has none: only to find equal filters, see
 * RebuildRangeIndex).
 */
static int
CompareLowerBounds(const void *a, const void *b, void *arg)
{
	ShapeTemplate *t = (ShapeTemplate *) arg;
	ShapeFilter *fa = *(ShapeFilter *const *) a;
	ShapeFilter *fb = *(ShapeFilter *const *) b;
	int			p = (t->range_lo > 0 ? t->range_lo : t->range_hi) - 1;

	return DatumGetInt32(FunctionCall2Coll(&t->range_cmp, t->range_collid,
										   fa->params[p].value, fb->params[p].value));
}

/* Do filters a and b of template t have the same constants? */
static bool
SameFilterConstants(ShapeTemplate *t, ShapeFilter *a, ShapeFilter *b)
{
	for (int i = 0; i < t->nparams; i++)
	{
		if (a->params[i].isnull != b->params[i].isnull)
			return false;
		if (!a->params[i].isnull &&
			!datumIsEqual(a->params[i].value, b->params[i].value, t->ptypbyvals[i], t->ptyplens[i]))
			return false;
	}
	return true;
}

/*
 * Merge the filters of the sorted range index that have the same constants
 * (shapes that differ only in their columns): one evaluation serves them
 * all, as in the hash index.  Filters that logged an X row stay apart.
 */
static void
MergeEqualRangeFilters(TableShapes *ts, ShapeTemplate *t)
{
	int			n = 0;

	for (int i = 0; i < t->nritems; i++)
	{
		ShapeFilter *f = t->ritems[i];
		bool		merged = false;

		if (!TransactionIdIsValid(f->error_xid) && !f->disabled)
		{
			for (int j = n - 1; j >= 0 && CompareLowerBounds(&t->ritems[j], &f, t) == 0; j--)
			{
				ShapeFilter *g = t->ritems[j];

				if (TransactionIdIsValid(g->error_xid) || g->disabled ||
					g->guarded != f->guarded || !SameFilterConstants(t, g, f))
					continue;
				AddShapeToFilter(ts, g, f->shape_id, f->cols);
				for (int k = 0; k < f->nmore; k++)
					AddShapeToFilter(ts, g, f->more[k].shape_id, f->more[k].cols);
				ts->nfilters--;
				merged = true;
				break;
			}
		}
		if (!merged)
			t->ritems[n++] = f;
	}
	t->nritems = n;
}

/* Index of the filter with the higher upper bound (-1: none). */
static int
HigherUpper(ShapeTemplate *t, int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return DatumGetInt32(FunctionCall2Coll(&t->range_cmp, t->range_collid,
										   t->ritems[a]->params[t->range_hi - 1].value,
										   t->ritems[b]->params[t->range_hi - 1].value)) >= 0 ? a : b;
}

/* Sort the range index by lower bound and rebuild its max-tree of upper bounds. */
static void
RebuildRangeIndex(TableShapes *ts, ShapeTemplate *t)
{
	/*
	 * A few shapes added to a sorted index (registrations while the cache
	 * is in use) are inserted in place: O(log n) comparisons each; many are
	 * sorted with the rest.
	 */
	if (t->nritems - t->rsorted > 0 && (t->nritems - t->rsorted) * 16 <= t->nritems)
	{
		for (int i = t->rsorted; i < t->nritems; i++)
		{
			ShapeFilter *f = t->ritems[i];
			int			lo = 0;
			int			hi = i;

			while (lo < hi)
			{
				int			mid = lo + (hi - lo) / 2;

				if (CompareLowerBounds(&t->ritems[mid], &f, t) <= 0)
					lo = mid + 1;
				else
					hi = mid;
			}
			memmove(&t->ritems[lo + 1], &t->ritems[lo], sizeof(ShapeFilter *) * (i - lo));
			t->ritems[lo] = f;
		}
	}
	else if (t->nritems > 1)
		qsort_arg(t->ritems, t->nritems, sizeof(ShapeFilter *), CompareLowerBounds, t);
	MergeEqualRangeFilters(ts, t);
	t->rsorted = t->nritems;
	if (t->rmax)
		pfree(t->rmax);
	t->rmax = NULL;
	t->rleaves = 0;
	if (t->range_hi > 0 && t->nritems > 0)
	{
		int			leaves = 1;

		while (leaves < t->nritems)
			leaves *= 2;
		t->rmax = MemoryContextAlloc(ts->cxt, sizeof(int) * 2 * leaves);
		for (int i = 0; i < leaves; i++)
			t->rmax[leaves + i] = i < t->nritems ? i : -1;
		for (int n = leaves - 1; n >= 1; n--)
			t->rmax[n] = HigherUpper(t, t->rmax[2 * n], t->rmax[2 * n + 1]);
		t->rmax[0] = -1;
		t->rleaves = leaves;
	}
	t->rdirty = false;
}

/* Is value (of the indexed column) within filter f's upper bound? */
static inline bool
BelowUpper(ShapeTemplate *t, ShapeFilter *f, Datum value)
{
	int			c = DatumGetInt32(FunctionCall2Coll(&t->range_cmp, t->range_collid, value,
													f->params[t->range_hi - 1].value));

	return t->hi_incl ? c <= 0 : c < 0;
}

/* Visit a range-indexed filter once per row. */
static inline void
VisitRangeFilter(RowState *rs, ShapeTemplate *t, ShapeFilter *f)
{
	if (f->stamp == rs->ts->row_stamp)
		return;
	f->stamp = rs->ts->row_stamp;
	VisitFilter(rs, t, f);
}

/* Visit the filters under tree node among the first k whose upper bound admits value. */
static void
StabTree(RowState *rs, ShapeTemplate *t, int node, int first, int width, int k, Datum value)
{
	int			best;

	if (first >= k)
		return;
	best = t->rmax[node];
	if (best < 0 || !BelowUpper(t, t->ritems[best], value))
		return;
	if (width == 1)
	{
		VisitRangeFilter(rs, t, t->ritems[best]);
		return;
	}
	StabTree(rs, t, 2 * node, first, width / 2, k, value);
	StabTree(rs, t, 2 * node + 1, first + width / 2, width / 2, k, value);
}

/* Visit the range-indexed filters of t whose bounds admit slot's column value. */
static void
StabRangeIndex(RowState *rs, ShapeTemplate *t, TupleTableSlot *slot)
{
	bool		isnull;
	Datum		value;
	int			k = t->nritems;

	if (slot == NULL)
		return;
	value = slot_getattr(slot, t->range_attno, &isnull);
	if (isnull)
		return;					/* the comparison operators are strict */
	if (t->range_typlen == -1)
		value = PointerGetDatum(PG_DETOAST_DATUM_PACKED(value));

	/* the filters are sorted by lower bound: those that admit value are a prefix */
	if (t->range_lo > 0)
	{
		int			lo = 0;
		int			hi = t->nritems;

		while (lo < hi)
		{
			int			mid = lo + (hi - lo) / 2;
			int			c = DatumGetInt32(FunctionCall2Coll(&t->range_cmp, t->range_collid,
															t->ritems[mid]->params[t->range_lo - 1].value,
															value));

			if (t->lo_incl ? c <= 0 : c < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		k = lo;
	}
	if (t->range_hi == 0)
	{
		for (int i = 0; i < k; i++)
			VisitRangeFilter(rs, t, t->ritems[i]);
		return;
	}
	StabTree(rs, t, 1, 0, t->rleaves, k, value);
}

/* Visit the filters of template t that OLD or NEW can be in. */
static void
VisitTemplate(RowState *rs, ShapeTemplate *t)
{
	ShapeFilter *f;

	if (t->nritems > 0)
	{
		if (t->rdirty)
			RebuildRangeIndex(rs->ts, t);
		StabRangeIndex(rs, t, rs->oldslot);
		StabRangeIndex(rs, t, rs->newslot);
	}

	if (t->key_param > 0 && t->nindexed > 0)
	{
		uint32		oldhash = 0;
		uint32		newhash = 0;
		bool		has_old = RowKeyHash(t, rs->oldslot, &oldhash);
		bool		has_new = RowKeyHash(t, rs->newslot, &newhash);

		if (has_old)
			for (f = t->buckets[oldhash & (t->nbuckets - 1)]; f != NULL; f = f->next)
				if (f->hashval == oldhash)
					VisitFilter(rs, t, f);
		if (has_new && !(has_old && newhash == oldhash))
			for (f = t->buckets[newhash & (t->nbuckets - 1)]; f != NULL; f = f->next)
				if (f->hashval == newhash)
					VisitFilter(rs, t, f);
	}
	for (f = t->scan; f != NULL; f = f->next)
		VisitFilter(rs, t, f);
}

/*
 * Evaluate the queued filters inside internal subtransactions: one for all
 * of them, a new one after each filter that raised.
 */
static void
RunGuarded(RowState *rs)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile int i = 0;

	while (i < rs->nguard)
	{
		rs->ts->guard_subxacts++;
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		PG_TRY();
		{
			for (; i < rs->nguard; i++)
			{
				GuardItem  *g = &rs->guard[i];

				g->old_in = EvalFilter(rs->ts, g->t, g->f, rs->oldslot, 0);
				g->new_in = g->same ? g->old_in : EvalFilter(rs->ts, g->t, g->f, rs->newslot, 1);
			}
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(oldcxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			rs->guard[i].error = pstrdup(edata->message ? edata->message : "error");
			FreeErrorData(edata);
			i++;
		}
		PG_END_TRY();
	}
}

/* int4[] of ops, or NULL when empty. */
static ArrayType *
OpsArray(int32 *ops, int nops)
{
	Datum	   *elems;

	if (nops == 0)
		return NULL;
	elems = palloc(sizeof(Datum) * nops);
	for (int i = 0; i < nops; i++)
		elems[i] = Int32GetDatum(ops[i]);
	return construct_array(elems, nops, INT4OID, sizeof(int32), true, TYPALIGN_INT);
}

/*
 * Classify a changed row of rel against its shapes: fill res (whether a
 * change row is needed, shape_ops, the table's layout hash).  Filters
 * that raise are logged as X rows here.
 */
void
ShapesyncClassifyRow(Relation rel, TupleTableSlot *oldslot, TupleTableSlot *newslot,
					 ShapesyncRowResult *res)
{
	TableShapes *ts = GetTableShapes(rel);
	RowState	rs;
	ShapeTemplate *t;

	res->needed = false;
	res->shape_ops = NULL;
	res->layout = ts->layout;
	res->changed_known = false;
	res->changed = NULL;
	if (ts->nwhole == 0 && ts->nfiltered == 0)
		return;

	memset(&rs, 0, sizeof(rs));
	rs.ts = ts;
	rs.oldslot = oldslot;
	rs.newslot = newslot;
	ts->row_stamp++;
	ResetExprContext(ts->econtext);

	for (t = ts->templates; t != NULL; t = t->next)
		VisitTemplate(&rs, t);

	if (rs.nguard > 0)
	{
		RunGuarded(&rs);
		for (int i = 0; i < rs.nguard; i++)
		{
			GuardItem  *g = &rs.guard[i];

			if (g->error == NULL)
				EmitOps(&rs, g->f, g->old_in, g->new_in);
			else
			{
				int32	   *eops = palloc(sizeof(int32) * (g->f->nmore + 1));

				eops[0] = g->f->shape_id * 4;
				for (int j = 0; j < g->f->nmore; j++)
					eops[j + 1] = g->f->more[j].shape_id * 4;
				ShapesyncLogRow(RelationGetRelid(rel), NULL, 'X', ts->layout, NULL, NULL,
								OpsArray(eops, g->f->nmore + 1), g->error);
				g->f->error_xid = GetCurrentTransactionId();
			}
		}
	}

	res->shape_ops = OpsArray(rs.ops, rs.nops);
	res->needed = ts->nwhole > 0 || rs.nops > 0;
	/* the capture trigger's old image of an UPDATE needs them too */
	res->changed_known = rs.changed_known;
	res->changed = rs.changed;
}

#define CACHE_STATS_COLS 10

/* cache_stats(): the shape caches of this backend. */
Datum
shapesync_cache_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	TableShapes *ts;

	InitMaterializedSRF(fcinfo, 0);
	if (shape_caches == NULL)
		return (Datum) 0;
	hash_seq_init(&status, shape_caches);
	while ((ts = hash_seq_search(&status)) != NULL)
	{
		Datum		values[CACHE_STATS_COLS];
		bool		nulls[CACHE_STATS_COLS];

		memset(nulls, false, sizeof(nulls));
		values[0] = ObjectIdGetDatum(ts->relid);
		values[1] = BoolGetDatum(ts->valid);
		values[2] = Int32GetDatum(ts->nwhole);
		values[3] = Int32GetDatum(ts->nfiltered);
		values[4] = Int32GetDatum(ts->ntemplates);
		values[5] = Int32GetDatum(ts->nfilters);
		values[6] = Int64GetDatum(ts->cxt ? (int64) MemoryContextMemAllocated(ts->cxt, true) : 0);
		values[7] = Int64GetDatum(ts->full_builds);
		values[8] = Int64GetDatum(ts->incremental_builds);
		values[9] = Int64GetDatum(ts->last_build_us);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

#define MEMBERSHIP_STATS_COLS 8

/* membership_stats(): how this backend's shape caches classify rows. */
Datum
shapesync_membership_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	TableShapes *ts;

	InitMaterializedSRF(fcinfo, 0);
	if (shape_caches == NULL)
		return (Datum) 0;
	hash_seq_init(&status, shape_caches);
	while ((ts = hash_seq_search(&status)) != NULL)
	{
		Datum		values[MEMBERSHIP_STATS_COLS];
		bool		nulls[MEMBERSHIP_STATS_COLS];
		int32		range_templates = 0;
		int32		range_filters = 0;
		int32		scan_filters = 0;
		int32		guarded_filters = 0;

		for (ShapeTemplate *t = ts->templates; t != NULL; t = t->next)
		{
			ShapeFilter *f;

			if (t->nritems > 0)
				range_templates++;
			range_filters += t->nritems;
			scan_filters += t->nscan;
			for (int i = 0; i < t->nritems; i++)
				guarded_filters += t->ritems[i]->guarded;
			for (f = t->scan; f != NULL; f = f->next)
				guarded_filters += f->guarded;
			for (uint32 b = 0; b < t->nbuckets; b++)
				for (f = t->buckets[b]; f != NULL; f = f->next)
					guarded_filters += f->guarded;
		}
		memset(nulls, false, sizeof(nulls));
		values[0] = ObjectIdGetDatum(ts->relid);
		values[1] = Int32GetDatum(range_templates);
		values[2] = Int32GetDatum(range_filters);
		values[3] = Int32GetDatum(scan_filters);
		values[4] = Int32GetDatum(guarded_filters);
		values[5] = Int64GetDatum((int64) ts->row_stamp);
		values[6] = Int64GetDatum(ts->evaluations);
		values[7] = Int64GetDatum(ts->guard_subxacts);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
