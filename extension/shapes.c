/*-------------------------------------------------------------------------
 *
 * shapes.c
 *	  The shape registry's C side: parsing, analysing and validating a
 *	  shape's WHERE clause (shapesync.parse_where, called by
 *	  get_or_create_shape), its canonical form and template,
 *	  wait_for_writers(), relcache invalidation of a table's shape caches,
 *	  and invalidating a table's shapes from C (TRUNCATE, untrack).
 *
 * A filter is parsed by PostgreSQL's own parser as the WHERE clause of
 * "SELECT FROM <table> WHERE <filter>"; anything but one plain SELECT with
 * only that WHERE is refused.  It is analysed against the table alone ($n
 * typed from context, then bound from params[] through the type's input
 * function — never spliced), coerced to boolean, and validated: built-in,
 * immutable functions, operators and casts only, no subquery, no other
 * relation, no system column, no set-returning function, no user-defined
 * type or collation.  Errors carry the position inside the filter
 * (internalerrposition + internalerrquery).
 *
 * The canonical form is the deparsed expression after constant folding;
 * the template is the same expression with every constant replaced by a
 * PARAM_EXTERN parameter (nodeToString() text, locations stripped), so
 * shapes that differ only in constants share a template.
 *
 * Constant folding runs under a time limit (shapesync.filter_fold_timeout)
 * and every constant it leaves must be smaller than
 * shapesync.filter_max_constant_bytes: a filter such as
 * repeat('y', 1000000000) = title cannot hold a backend for seconds and
 * gigabytes.  check_shape() is parse_where() with the row-level security
 * check in front, run in a subtransaction: a rejected filter comes back as
 * data, so validation failures write nothing to the server log.
 *
 * The registry writes themselves are SQL (sql/shapesync.sql).  Writers
 * (the TRUNCATE trigger, untrack) may not have privileges on the registry:
 * the update runs as the owner of the registry, in a security-restricted
 * operation, as referential-integrity triggers do.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/transam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_param.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/rls.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_parse_where);
PG_FUNCTION_INFO_V1(shapesync_check_shape);
PG_FUNCTION_INFO_V1(shapesync_check_row_security);
PG_FUNCTION_INFO_V1(shapesync_wait_for_writers);
PG_FUNCTION_INFO_V1(shapesync_invalidate_table_cache);

/* what the validation walker needs to report a position */
typedef struct ValidateContext
{
	const char *query;			/* the whole parsed query */
	const char *where;			/* the client's filter */
	int			prefix_chars;	/* characters of query before the filter */
	Node	   *current;		/* node whose functions are being checked */
	Oid			bad_func;
	int			bad_reason;		/* 1 user-defined, 2 volatile, 3 stable */
} ValidateContext;

/* state of the constant-lifting mutator */
typedef struct LiftContext
{
	int			nparams;
	List	   *consts;
} LiftContext;

/* state of the param-binding mutator */
typedef struct BindContext
{
	Oid		   *param_types;
	int			num_params;
	ArrayType  *params;
	Datum	   *param_values;
	bool	   *param_nulls;
	int			nvalues;
	ValidateContext *vcxt;
} BindContext;

/* error_field that check_shape() reports for the error being raised, if set */
const char *shapesync_error_field = NULL;

/* set by the folding timer; the timeout it belongs to, once registered */
static volatile sig_atomic_t fold_timed_out = false;
static bool fold_timeout_registered = false;
static TimeoutId fold_timeout_id;

/* Position of byte offset location of query inside the filter, 1-based, or 0. */
static int
FilterPosition(ValidateContext *cxt, int location)
{
	int			pos;

	if (location < 0 || cxt->query == NULL)
		return 0;
	pos = pg_mbstrlen_with_len(cxt->query, location) + 1 - cxt->prefix_chars;
	return pos > 0 ? pos : 0;
}

/* Report position location (byte offset in query) inside the filter. */
static int
filter_errposition(ValidateContext *cxt, int location)
{
	int			pos = FilterPosition(cxt, location);

	if (pos > 0)
	{
		internalerrposition(pos);
		internalerrquery(cxt->where);
	}
	return 0;
}

/* check_functions_in_node callback: remember the first function not allowed. */
static bool
CheckFunctionAllowed(Oid funcid, void *context)
{
	ValidateContext *cxt = (ValidateContext *) context;
	char		vol;

	if (funcid >= FirstNormalObjectId)
	{
		cxt->bad_func = funcid;
		cxt->bad_reason = 1;
		return true;
	}
	vol = func_volatile(funcid);
	if (vol != PROVOLATILE_IMMUTABLE)
	{
		cxt->bad_func = funcid;
		cxt->bad_reason = (vol == PROVOLATILE_VOLATILE) ? 2 : 3;
		return true;
	}
	return false;
}

/* Raise the error for a function or operator that is not allowed. */
static void
ReportBadFunction(ValidateContext *cxt, Node *node)
{
	const char *what;
	const char *why;

	if (IsA(node, OpExpr) || IsA(node, DistinctExpr) || IsA(node, NullIfExpr))
		what = psprintf("operator %s", format_operator(((OpExpr *) node)->opno));
	else if (IsA(node, ScalarArrayOpExpr))
		what = psprintf("operator %s", format_operator(((ScalarArrayOpExpr *) node)->opno));
	else if (IsA(node, CoerceViaIO) || IsA(node, ArrayCoerceExpr))
		what = psprintf("cast using function %s", format_procedure(cxt->bad_func));
	else
		what = psprintf("function %s", format_procedure(cxt->bad_func));

	if (cxt->bad_reason == 1)
		why = "user-defined";
	else if (cxt->bad_reason == 2)
		why = "volatile";
	else
		why = "not immutable";

	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s is not allowed in a shape's WHERE clause", what),
			 errdetail("The %s is %s; a shape filter may only use built-in immutable functions, operators and casts.",
					   what, why),
			 errhint("Filter on the columns with built-in operators, or compute the value in a column."),
			 filter_errposition(cxt, exprLocation(node))));
}

/* Refuse a node of a kind that a shape filter may not contain. */
static void
ReportNotAllowed(ValidateContext *cxt, Node *node, const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s are not allowed in a shape's WHERE clause", what),
			 errdetail("%s", detail),
			 filter_errposition(cxt, exprLocation(node))));
}

/* Validation walker: see the file header for the rules. */
static bool
ValidateWalker(Node *node, ValidateContext *cxt)
{
	Oid			typid = InvalidOid;
	Oid			collid = InvalidOid;
	Oid			inputcollid = InvalidOid;

	if (node == NULL)
		return false;

	switch (nodeTag(node))
	{
		case T_Var:
			{
				Var		   *var = (Var *) node;

				if (var->varlevelsup != 0 || var->varno != 1)
					ReportNotAllowed(cxt, node, "references to other relations",
									 "A shape filter may only reference the columns of its table.");
				if (var->varattno < 0)
					ReportNotAllowed(cxt, node, "system columns",
									 "A shape filter may only reference the user columns of its table.");
				if (var->varattno == 0)
					ReportNotAllowed(cxt, node, "whole-row references",
									 "Reference the columns by name.");
				break;
			}
		case T_SubLink:
			ReportNotAllowed(cxt, node, "subqueries",
							 "A shape filter is evaluated against one row of its table at a time.");
			break;
		case T_Aggref:
		case T_GroupingFunc:
			ReportNotAllowed(cxt, node, "aggregate functions",
							 "A shape filter is evaluated against one row of its table at a time.");
			break;
		case T_WindowFunc:
			ReportNotAllowed(cxt, node, "window functions",
							 "A shape filter is evaluated against one row of its table at a time.");
			break;
		case T_SQLValueFunction:
		case T_NextValueExpr:
			ReportNotAllowed(cxt, node, "functions that are not immutable",
							 "A shape filter must give the same result for a row at any time.");
			break;
		case T_FuncExpr:
			if (((FuncExpr *) node)->funcretset)
				ReportNotAllowed(cxt, node, "set-returning functions",
								 "A shape filter must return one boolean per row.");
			break;
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			if (((OpExpr *) node)->opretset)
				ReportNotAllowed(cxt, node, "set-returning functions",
								 "A shape filter must return one boolean per row.");
			break;
		case T_Const:
		case T_Param:
		case T_ScalarArrayOpExpr:
		case T_BoolExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_CollateExpr:
		case T_CaseExpr:
		case T_CaseWhen:
		case T_CaseTestExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_ArrayExpr:
		case T_RowExpr:
		case T_RowCompareExpr:
		case T_SubscriptingRef:
		case T_List:
			break;
		default:
			ReportNotAllowed(cxt, node, "expressions of this kind",
							 "A shape filter may use column references, constants, operators, "
							 "function calls, casts, CASE, COALESCE, NULLIF, GREATEST, LEAST, "
							 "ARRAY[], ROW() and IS [NOT] NULL/TRUE/FALSE.");
	}

	cxt->current = node;
	if (check_functions_in_node(node, CheckFunctionAllowed, cxt))
		ReportBadFunction(cxt, node);

	if (!IsA(node, List) && !IsA(node, CaseWhen))
	{
		typid = exprType(node);
		collid = exprCollation(node);
		inputcollid = exprInputCollation(node);
	}
	if (IsA(node, CollateExpr))
		collid = ((CollateExpr *) node)->collOid;
	if (typid >= FirstNormalObjectId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("type %s is not allowed in a shape's WHERE clause", format_type_be(typid)),
				 errdetail("A shape filter may only use built-in types."),
				 filter_errposition(cxt, exprLocation(node))));
	if (collid >= FirstNormalObjectId || inputcollid >= FirstNormalObjectId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("collation %s is not allowed in a shape's WHERE clause",
						generate_collation_name(collid >= FirstNormalObjectId ? collid : inputcollid)),
				 errdetail("A shape filter may only use built-in collations."),
				 filter_errposition(cxt, exprLocation(node))));

	return expression_tree_walker(node, ValidateWalker, (void *) cxt);
}

/* Replace each $n by a Const made from params[n] with the inferred type's input function. */
static Node *
BindParamsMutator(Node *node, BindContext *cxt)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Param) && ((Param *) node)->paramkind == PARAM_EXTERN)
	{
		Param	   *p = (Param *) node;
		Oid			typid = p->paramtype;
		int32		typmod = p->paramtypmod;
		Oid			typinput;
		Oid			typioparam;
		int16		typlen;
		bool		typbyval;
		Datum		value = (Datum) 0;
		bool		isnull;
		Const	   *c;

		if (p->paramid < 1 || p->paramid > cxt->nvalues)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_PARAMETER),
					 errmsg("there is no parameter $%d", p->paramid),
					 errdetail("The filter uses $%d but %d parameter value%s given.", p->paramid,
							   cxt->nvalues, cxt->nvalues == 1 ? " was" : "s were"),
					 errhint("Pass a value for every $n in params."),
					 filter_errposition(cxt->vcxt, p->location)));
		if (typid == UNKNOWNOID || !OidIsValid(typid))
		{
			typid = TEXTOID;
			typmod = -1;
		}
		if (typid >= FirstNormalObjectId)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("type %s is not allowed in a shape's WHERE clause", format_type_be(typid)),
					 errdetail("Parameter $%d would be of a type that is not built-in.", p->paramid),
					 filter_errposition(cxt->vcxt, p->location)));

		isnull = cxt->param_nulls[p->paramid - 1];
		getTypeInputInfo(typid, &typinput, &typioparam);
		get_typlenbyval(typid, &typlen, &typbyval);
		if (!isnull)
			value = OidInputFunctionCall(typinput,
										 TextDatumGetCString(cxt->param_values[p->paramid - 1]),
										 typioparam, typmod);
		c = makeConst(typid, typmod, p->paramcollid, typlen, value, isnull, typbyval);
		if (p->paramtype == UNKNOWNOID)
			c->constcollid = DEFAULT_COLLATION_OID;
		c->location = p->location;
		return (Node *) c;
	}
	return expression_tree_mutator(node, BindParamsMutator, (void *) cxt);
}

/* Set the location fields of an expression node to -1 (templates must not depend on spacing). */
static void
StripLocation(Node *node)
{
	switch (nodeTag(node))
	{
		case T_Var:
			((Var *) node)->location = -1;
			break;
		case T_Const:
			((Const *) node)->location = -1;
			break;
		case T_Param:
			((Param *) node)->location = -1;
			break;
		case T_FuncExpr:
			((FuncExpr *) node)->location = -1;
			break;
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			((OpExpr *) node)->location = -1;
			break;
		case T_ScalarArrayOpExpr:
			((ScalarArrayOpExpr *) node)->location = -1;
			break;
		case T_BoolExpr:
			((BoolExpr *) node)->location = -1;
			break;
		case T_NullTest:
			((NullTest *) node)->location = -1;
			break;
		case T_BooleanTest:
			((BooleanTest *) node)->location = -1;
			break;
		case T_RelabelType:
			((RelabelType *) node)->location = -1;
			break;
		case T_CoerceViaIO:
			((CoerceViaIO *) node)->location = -1;
			break;
		case T_ArrayCoerceExpr:
			((ArrayCoerceExpr *) node)->location = -1;
			break;
		case T_CollateExpr:
			((CollateExpr *) node)->location = -1;
			break;
		case T_CaseExpr:
			((CaseExpr *) node)->location = -1;
			break;
		case T_CaseWhen:
			((CaseWhen *) node)->location = -1;
			break;
		case T_CoalesceExpr:
			((CoalesceExpr *) node)->location = -1;
			break;
		case T_MinMaxExpr:
			((MinMaxExpr *) node)->location = -1;
			break;
		case T_ArrayExpr:
			((ArrayExpr *) node)->location = -1;
			break;
		case T_RowExpr:
			((RowExpr *) node)->location = -1;
			break;
		default:
			break;
	}
}

/* Replace every Const by the next PARAM_EXTERN param; strip locations. */
static Node *
LiftMutator(Node *node, LiftContext *cxt)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Const))
	{
		Const	   *c = (Const *) node;
		Param	   *p = makeNode(Param);

		p->paramkind = PARAM_EXTERN;
		p->paramid = ++cxt->nparams;
		p->paramtype = c->consttype;
		p->paramtypmod = c->consttypmod;
		p->paramcollid = c->constcollid;
		p->location = -1;
		cxt->consts = lappend(cxt->consts, c);
		return (Node *) p;
	}
	node = expression_tree_mutator(node, LiftMutator, (void *) cxt);
	StripLocation(node);
	return node;
}

/* Raw parse tree walker: find the first subquery. */
static bool
FindRawSubLink(Node *node, Node **found)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink))
	{
		*found = node;
		return true;
	}
	return raw_expression_tree_walker(node, FindRawSubLink, (void *) found);
}

/* Is the SelectStmt anything but "SELECT FROM <rel> WHERE <expr>"? */
static bool
HasTrailingClauses(SelectStmt *sel)
{
	return sel->op != SETOP_NONE || sel->larg != NULL || sel->rarg != NULL ||
		sel->distinctClause != NIL || sel->intoClause != NULL ||
		sel->targetList != NIL || list_length(sel->fromClause) != 1 ||
		sel->groupClause != NIL || sel->groupDistinct || sel->havingClause != NULL ||
		sel->windowClause != NIL || sel->valuesLists != NIL ||
		sel->sortClause != NIL || sel->limitOffset != NULL || sel->limitCount != NULL ||
		sel->lockingClause != NIL || sel->withClause != NULL;
}

/*
 * Parse and analyse filter where against rel; params bound as constants.
 * Errors of the parser and of parse analysis are re-raised with their
 * position inside the filter.
 */
static Node *
AnalyseFilter(Relation rel, const char *where, ArrayType *params, ValidateContext *vcxt)
{
	StringInfoData query;
	MemoryContext oldcxt = CurrentMemoryContext;
	ErrorContextCallback *save_context = error_context_stack;
	Node	   *expr = NULL;
	Oid		   *param_types = NULL;
	int			num_params = 0;
	BindContext bcxt;

	initStringInfo(&query);
	appendStringInfo(&query, "SELECT FROM %s WHERE ",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	vcxt->prefix_chars = pg_mbstrlen_with_len(query.data, query.len);
	appendStringInfoString(&query, where);
	vcxt->query = query.data;
	vcxt->where = where;

	/*
	 * Outer error context callbacks (SPI's, when called from PL/pgSQL) would
	 * turn the position into one inside the caller's query: keep them out
	 * while parsing; the error is re-raised with the position in the filter.
	 */
	error_context_stack = NULL;
	PG_TRY();
	{
		List	   *stmts = raw_parser(query.data, RAW_PARSE_DEFAULT);
		RawStmt    *raw;
		SelectStmt *sel;
		ParseState *pstate;
		ParseNamespaceItem *nsitem;
		Oid			exprtype;

		if (list_length(stmts) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_SYNTAX_ERROR),
					 errmsg("invalid shape WHERE clause: unescaped \";\" causing statement split"),
					 errdetail("A shape filter is one SQL expression."),
					 errhint("Quote semicolons that belong to a string literal.")));
		raw = linitial_node(RawStmt, stmts);
		if (!IsA(raw->stmt, SelectStmt))
			elog(ERROR, "shape filter did not parse as a SELECT");
		sel = (SelectStmt *) raw->stmt;
		if (HasTrailingClauses(sel) || sel->whereClause == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_SYNTAX_ERROR),
					 errmsg("invalid shape WHERE clause: malformed query ending with SQL clauses"),
					 errdetail("A shape filter is one SQL expression; ORDER BY, GROUP BY, LIMIT, UNION and other clauses are not allowed."),
					 errhint("Pass only the condition of the WHERE clause.")));

		/* refuse subqueries before analysis looks up what they reference */
		{
			Node	   *sublink = NULL;

			if (FindRawSubLink(sel->whereClause, &sublink))
				ReportNotAllowed(vcxt, sublink, "subqueries",
								 "A shape filter is evaluated against one row of its table at a time.");
		}

		pstate = make_parsestate(NULL);
		pstate->p_sourcetext = query.data;
		setup_parse_variable_parameters(pstate, &param_types, &num_params);
		nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock, NULL, false, true);
		addNSItemToQuery(pstate, nsitem, true, true, true);

		expr = transformExpr(pstate, sel->whereClause, EXPR_KIND_WHERE);
		exprtype = exprType(expr);
		if (exprtype != BOOLOID && exprtype != UNKNOWNOID &&
			getBaseType(exprtype) != BOOLOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("WHERE clause must return a boolean"),
					 errdetail("The expression is of type %s.", format_type_be(exprtype)),
					 errhint("Compare the value with something, e.g. \"col = value\"."),
					 parser_errposition(pstate, exprLocation(expr))));
		expr = coerce_to_boolean(pstate, expr, "WHERE");
		assign_expr_collations(pstate, expr);
		free_parsestate(pstate);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		error_context_stack = save_context;
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_UNDEFINED_TABLE)
		{
			/* "missing FROM-clause entry for table": another relation */
			FlushErrorState();
			edata->detail = edata->message;
			edata->message = pstrdup("references to other relations are not allowed in a shape's WHERE clause");
			edata->hint = pstrdup("A shape filter may only reference the columns of its table.");
			edata->sqlerrcode = ERRCODE_FEATURE_NOT_SUPPORTED;
		}
		if (edata->cursorpos > 0)
		{
			FlushErrorState();
			edata->internalpos = Max(edata->cursorpos - vcxt->prefix_chars, 1);
			edata->internalpos = Min(edata->internalpos, pg_mbstrlen(where) + 1);
			edata->internalquery = pstrdup(where);
			edata->cursorpos = 0;
			ReThrowError(edata);
		}
		if (edata->sqlerrcode == ERRCODE_FEATURE_NOT_SUPPORTED &&
			edata->message != NULL && strstr(edata->message, "other relations") != NULL)
			ReThrowError(edata);
		FreeErrorData(edata);
		PG_RE_THROW();
	}
	PG_END_TRY();
	error_context_stack = save_context;

	/* bind $n: params[n] through the input function of $n's type */
	memset(&bcxt, 0, sizeof(bcxt));
	bcxt.param_types = param_types;
	bcxt.num_params = num_params;
	bcxt.vcxt = vcxt;
	if (params != NULL)
	{
		if (ARR_NDIM(params) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("params must be a one-dimensional array")));
		deconstruct_array(params, TEXTOID, -1, false, TYPALIGN_INT,
						  &bcxt.param_values, &bcxt.param_nulls, &bcxt.nvalues);
	}
	return BindParamsMutator(expr, &bcxt);
}

/* Timer callback: cancel the constant folding that is running. */
static void
FoldTimeoutHandler(void)
{
	fold_timed_out = true;
	InterruptPending = true;
	QueryCancelPending = true;
	SetLatch(MyLatch);
}

/* Walker: refuse a constant larger than shapesync.filter_max_constant_bytes. */
static bool
CheckConstantSize(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Const))
	{
		Const	   *c = (Const *) node;
		Size		bytes = 0;

		if (!c->constisnull && c->constlen == -1)
			bytes = VARSIZE_ANY(DatumGetPointer(c->constvalue));
		else if (!c->constisnull && c->constlen == -2)
			bytes = strlen(DatumGetCString(c->constvalue)) + 1;
		if (bytes > (Size) shapesync_filter_max_constant_bytes)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("a constant of the shape's WHERE clause is too large"),
					 errdetail("After constant folding a %s value takes %zu bytes; the limit is %d bytes (shapesync.filter_max_constant_bytes).",
							   format_type_be(c->consttype), bytes, shapesync_filter_max_constant_bytes),
					 errhint("Use smaller constants in shape filters.")));
		return false;
	}
	return expression_tree_walker(node, CheckConstantSize, context);
}

/* Fold function of FoldConstants(): PostgreSQL's own constant folding. */
static Node *
EvalConstExpressions(Node *expr, void *arg)
{
	return eval_const_expressions(NULL, expr);
}

/*
 * Fold the constant sub-expressions of a validated filter, bounded in time
 * (shapesync.filter_fold_timeout) and in the size of what it leaves.  The
 * intermediate values live in a context of their own, freed on return.
 */
static Node *
FoldConstants(Node *expr)
{
	return ShapesyncFoldBounded(expr, EvalConstExpressions, NULL);
}

/*
 * Run fold(expr, arg) under the folding time limit and check the size of
 * the constants it leaves; the result is copied out of the context the
 * folding ran in.
 */
Node *
ShapesyncFoldBounded(Node *expr, ShapesyncFoldFunc fold, void *arg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	MemoryContext foldcxt;
	Node	   *folded = NULL;

	if (!fold_timeout_registered)
	{
		fold_timeout_id = RegisterTimeout(USER_TIMEOUT, FoldTimeoutHandler);
		fold_timeout_registered = true;
	}
	foldcxt = AllocSetContextCreate(oldcxt, "shapesync filter folding", ALLOCSET_DEFAULT_SIZES);
	fold_timed_out = false;
	enable_timeout_after(fold_timeout_id, shapesync_filter_fold_timeout_ms);
	PG_TRY();
	{
		MemoryContextSwitchTo(foldcxt);
		folded = fold(expr, arg);
		disable_timeout(fold_timeout_id, false);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		disable_timeout(fold_timeout_id, false);
		MemoryContextSwitchTo(oldcxt);
		if (!fold_timed_out)
			PG_RE_THROW();
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_QUERY_CANCELED)
		{
			FreeErrorData(edata);
			PG_RE_THROW();
		}
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the shape's WHERE clause takes too long to evaluate"),
				 errdetail("Evaluating its constant expressions took more than %d ms (shapesync.filter_fold_timeout).",
						   shapesync_filter_fold_timeout_ms),
				 errhint("Use plain constants in shape filters.")));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	if (fold_timed_out)
	{
		/* the timer fired after folding ended: that cancel is ours, drop it */
		QueryCancelPending = false;
		fold_timed_out = false;
	}
	(void) CheckConstantSize(folded, NULL);
	folded = copyObject(folded);
	MemoryContextDelete(foldcxt);
	return folded;
}

/*
 * The current user as the caller of a SECURITY DEFINER function saw it: the
 * role of SET ROLE, else the session user.
 */
Oid
ShapesyncCallerUserId(void)
{
	const char *role = GetConfigOption("role", false, false);

	if (role != NULL && strcmp(role, "none") != 0)
		return get_role_oid(role, false);
	return GetSessionUserId();
}

/* Raise SS002 when row-level security applies to role userid on relid. */
void
ShapesyncCheckRowSecurity(Oid relid, Oid userid)
{
	if (check_enable_rls(relid, userid, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_SHAPESYNC_ROW_SECURITY),
				 errmsg("row-level security applies to role \"%s\" on table \"%s\"",
						GetUserNameFromId(userid, false), get_rel_name(relid)),
				 errdetail("A shape's live changes are not filtered by row-level security policies yet, so its snapshot and its changes would disagree."),
				 errhint("Serve this table through a role that row-level security does not apply to (the table owner or a BYPASSRLS role), or disable row-level security on it.")));
}

/*
 * Parse, validate and fold filter where of table relid; fill values[0..3]
 * with (canonical_where, template, template_sql, consts).
 */
static void
ParseWhere(Oid relid, const char *where, ArrayType *params, Datum *values)
{
	Relation	rel;

	rel = ShapesyncOpenShapeTable(relid);
	ShapesyncFinishWhere(rel, ShapesyncAnalyseWhere(rel, where, params), values);
	relation_close(rel, NoLock);
}

/* Open the table of a shape (AccessShareLock); refuse anything but a table. */
Relation
ShapesyncOpenShapeTable(Oid relid)
{
	Relation	rel = relation_open(relid, AccessShareLock);

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	return rel;
}

/* Parse, analyse and validate filter where of rel; $n bound from params. */
Node *
ShapesyncAnalyseWhere(Relation rel, const char *where, ArrayType *params)
{
	ValidateContext vcxt;
	Node	   *expr;

	memset(&vcxt, 0, sizeof(vcxt));
	expr = AnalyseFilter(rel, where, params, &vcxt);
	(void) ValidateWalker(expr, &vcxt);
	return expr;
}

/* Walker: strip the location of every node (they point into another text). */
static bool
StripLocationsWalker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	StripLocation(node);
	return expression_tree_walker(node, StripLocationsWalker, context);
}

/*
 * Validate an expression that does not come from the client's filter (a
 * folded row-level security policy) with the rules of a shape filter;
 * errors carry no position.
 */
void
ShapesyncValidateExpr(Node *expr)
{
	ValidateContext vcxt;

	(void) StripLocationsWalker(expr, NULL);
	memset(&vcxt, 0, sizeof(vcxt));
	(void) ValidateWalker(expr, &vcxt);
}

/*
 * Fold a validated filter expr of rel and fill values[0..3] with
 * (canonical_where, template, template_sql, consts).
 */
void
ShapesyncFinishWhere(Relation rel, Node *expr, Datum *values)
{
	Oid			relid = RelationGetRelid(rel);
	Node	   *lifted;
	LiftContext lcxt;
	List	   *dpcontext;
	Datum	   *cvalues;
	bool	   *cnulls;
	int			i;
	ListCell   *lc;

	/* fold constants: "x = 2 + 3" and "x = 5" are the same shape */
	expr = FoldConstants(expr);

	dpcontext = deparse_context_for(RelationGetRelationName(rel), relid);
	values[0] = CStringGetTextDatum(deparse_expression(expr, dpcontext, false, false));

	memset(&lcxt, 0, sizeof(lcxt));
	lifted = LiftMutator(expr, &lcxt);
	values[1] = CStringGetTextDatum(nodeToString(lifted));
	values[2] = CStringGetTextDatum(deparse_expression(lifted, dpcontext, false, false));
	cvalues = palloc0(sizeof(Datum) * Max(lcxt.nparams, 1));
	cnulls = palloc0(sizeof(bool) * Max(lcxt.nparams, 1));
	i = 0;
	foreach(lc, lcxt.consts)
	{
		Const	   *c = lfirst_node(Const, lc);

		if (c->constisnull)
			cnulls[i] = true;
		else
		{
			Oid			typoutput;
			Oid			typinput;
			Oid			typioparam;
			bool		isvarlena;
			char	   *out;

			/* money's text form depends on lc_monetary, which may differ in the writer */
			if (c->consttype == CASHOID)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("type money is not allowed in a shape's WHERE clause"),
						 errdetail("Its text form depends on the session's lc_monetary."),
						 errhint("Cast the column to numeric.")));
			getTypeOutputInfo(c->consttype, &typoutput, &isvarlena);
			out = OidOutputFunctionCall(typoutput, c->constvalue);

			/* the writer's backend reads it back: it must round-trip */
			getTypeInputInfo(c->consttype, &typinput, &typioparam);
			if (!datumIsEqual(OidInputFunctionCall(typinput, out, typioparam, c->consttypmod),
							  c->constvalue, c->constbyval, c->constlen))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("constant %s of type %s cannot be used in a shape's WHERE clause",
								quote_literal_cstr(out), format_type_be(c->consttype)),
						 errdetail("Its text form does not read back as the same value.")));
			cvalues[i] = CStringGetTextDatum(out);
		}
		i++;
	}
	{
		int			dims[1] = {lcxt.nparams};
		int			lbs[1] = {1};

		values[3] = PointerGetDatum(construct_md_array(cvalues, cnulls, 1, dims, lbs,
													   TEXTOID, -1, false, TYPALIGN_INT));
	}
}

/* parse_where(rel, where_clause, params) → (canonical_where, template, template_sql, consts) */
Datum
shapesync_parse_where(PG_FUNCTION_ARGS)
{
	ArrayType  *params = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("shape table must not be NULL")));
	if (PG_ARGISNULL(1))
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	ParseWhere(PG_GETARG_OID(0), text_to_cstring(PG_GETARG_TEXT_PP(1)), params, values);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/*
 * check_row_security(rel): raise SS002 when row-level security applies to
 * the caller.  get_or_create_shape() calls it from inside SECURITY DEFINER,
 * where the current user is the extension's owner: the caller is the role
 * outside it.
 */
Datum
shapesync_check_row_security(PG_FUNCTION_ARGS)
{
	ShapesyncCheckRowSecurity(PG_GETARG_OID(0), ShapesyncCallerUserId());
	PG_RETURN_VOID();
}

/* what check_shape() checks, and what it found */
typedef struct CheckShapeArgs
{
	Oid			relid;
	char	   *where;
	ArrayType  *params;
	Datum		canonical;
	bool		canonical_null;
} CheckShapeArgs;

/* The checks of check_shape(): row-level security, then the filter. */
static void
CheckShape(void *arg)
{
	CheckShapeArgs *a = (CheckShapeArgs *) arg;
	Datum		parsed[4];

	ShapesyncCheckRowSecurity(a->relid, GetUserId());
	if (a->where != NULL)
	{
		ParseWhere(a->relid, a->where, a->params, parsed);
		a->canonical = parsed[0];
		a->canonical_null = false;
	}
}

/*
 * Run check(arg) in a subtransaction.  An error a request can cause is
 * returned in err_values/err_nulls[0..5] (error_field, error_code,
 * error_message, error_detail, error_hint, error_position) instead of
 * raised, and false is returned; cancels and internal errors are raised.
 * error_field is shapesync_error_field when the failing code set it, else
 * "table" for SS002 and "where" for the rest.
 */
bool
ShapesyncRunChecked(void (*check) (void *arg), void *arg, Datum *err_values, bool *err_nulls)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;
	int			i;

	for (i = 0; i < 6; i++)
		err_nulls[i] = true;
	shapesync_error_field = NULL;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		check(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			cls;
		const char *field = shapesync_error_field;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		cls = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		if (edata->elevel > ERROR || edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			cls == ERRCODE_OPERATOR_INTERVENTION || cls == ERRCODE_SYSTEM_ERROR ||
			cls == ERRCODE_INTERNAL_ERROR || cls == ERRCODE_INSUFFICIENT_RESOURCES)
			ReThrowError(edata);

		ok = false;
		if (field == NULL)
			field = edata->sqlerrcode == ERRCODE_SHAPESYNC_ROW_SECURITY ? "table" : "where";
		err_values[0] = CStringGetTextDatum(field);
		err_nulls[0] = false;
		err_values[1] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
		err_nulls[1] = false;
		err_values[2] = CStringGetTextDatum(edata->message ? edata->message : "unknown error");
		err_nulls[2] = false;
		if (edata->detail)
		{
			err_values[3] = CStringGetTextDatum(edata->detail);
			err_nulls[3] = false;
		}
		if (edata->hint)
		{
			err_values[4] = CStringGetTextDatum(edata->hint);
			err_nulls[4] = false;
		}
		if (edata->internalpos > 0 || edata->cursorpos > 0)
		{
			err_values[5] = Int32GetDatum(edata->internalpos > 0 ? edata->internalpos : edata->cursorpos);
			err_nulls[5] = false;
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	shapesync_error_field = NULL;
	return ok;
}

/*
 * check_shape(rel, where_clause, params) → (canonical_where, error_field,
 * error_code, error_message, error_detail, error_hint, error_position):
 * the checks of get_or_create_shape() that a client's request can fail, in a
 * subtransaction, with the error returned as data instead of raised (so it
 * reaches no server log).  Cancels and internal errors are raised.
 */
Datum
shapesync_check_shape(PG_FUNCTION_ARGS)
{
	CheckShapeArgs args;
	TupleDesc	tupdesc;
	Datum		values[7];
	bool		nulls[7] = {true, true, true, true, true, true, true};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("shape table must not be NULL")));
	memset(&args, 0, sizeof(args));
	args.relid = PG_GETARG_OID(0);
	args.params = PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2);
	args.canonical_null = true;
	if (!PG_ARGISNULL(1))
	{
		args.where = text_to_cstring(PG_GETARG_TEXT_PP(1));
		if (args.where[strspn(args.where, " \t\r\n\f")] == '\0')
			args.where = NULL;
	}
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	if (ShapesyncRunChecked(CheckShape, &args, &values[1], &nulls[1]))
	{
		values[0] = args.canonical;
		nulls[0] = args.canonical_null;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* wait_for_writers(rel): wait for the transactions holding a write lock on rel now. */
Datum
shapesync_wait_for_writers(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	LOCKTAG		tag;

	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	SET_LOCKTAG_RELATION(tag, MyDatabaseId, relid);
	WaitForLockers(tag, ShareLock, false);
	PG_RETURN_VOID();
}

/* invalidate_table_cache(relid): relcache invalidation of relid at commit. */
Datum
shapesync_invalidate_table_cache(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);

	if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		CacheInvalidateRelcacheByRelid(relid);
	PG_RETURN_VOID();
}

/* Mark every active shape of table relid invalid with the given reason. */
void
ShapesyncInvalidateTableShapes(Oid relid, const char *reason)
{
	Oid			registry_relid = ShapesyncRelationOid("shape_registry", false);
	Oid			owner;
	Oid			save_userid;
	int			save_sec_context;
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		args[2];
	HeapTuple	classtup;

	classtup = SearchSysCache1(RELOID, ObjectIdGetDatum(registry_relid));
	if (!HeapTupleIsValid(classtup))
		elog(ERROR, "cache lookup failed for relation %u", registry_relid);
	owner = ((Form_pg_class) GETSTRUCT(classtup))->relowner;
	ReleaseSysCache(classtup);

	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(reason);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("UPDATE shapesync.shape_registry"
							  "   SET state = 'invalid', invalidated_at = pg_catalog.now(), reason = $2"
							  " WHERE relid OPERATOR(pg_catalog.=) $1"
							  "   AND state OPERATOR(pg_catalog.=) 'active'",
							  2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not invalidate the shapes of relation %u", relid);
	SPI_finish();

	SetUserIdAndSecContext(save_userid, save_sec_context);
}
