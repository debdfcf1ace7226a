/*-------------------------------------------------------------------------
 *
 * auth.c
 *	  Shape authorization (issue 11, docs/auth.md): the effective shape of
 *	  a request made on behalf of a role with JWT claims, and the DDL that
 *	  must invalidate shapes because it changes what a role may read.
 *
 * Effective shape.  The role must be one the calling role is a member of.
 * When row-level security applies to that role on the table
 * (check_enable_rls), its SELECT policies are read from pg_policy (command
 * SELECT or ALL; roles PUBLIC or one whose privileges the role has, the
 * test PostgreSQL's rowsecurity.c uses) and combined as PostgreSQL does:
 * permissive ones OR-ed, restrictive ones AND-ed, no permissive policy
 * means no row.  Each policy's USING expression (polqual, a node tree) is
 * folded: with request.jwt.claims (and the legacy request.jwt.claim.<key>
 * settings) set to the claims and the role in effect, every sub-expression
 * that references no column is evaluated once and replaced by its value,
 * so "owner_id = auth.uid()" becomes "owner_id = '…'::uuid".  What is left
 * must pass the rules of a client's filter (shapes.c), which makes the
 * effective shape one that the capture trigger evaluates cheaply and that
 * shares templates with explicit per-user shapes.  Policies with
 * subqueries are refused (SS011).  The effective filter is the client's
 * filter AND the folded policies, canonicalised as any filter.
 *
 * Columns.  Only columns the role may SELECT (table or column privilege)
 * may be requested or used in the client's filter (SS013); an omitted
 * column list means the permitted columns.
 *
 * DDL.  ddl_command_relids() and ddl_command_grantees() name the tables
 * and grantees of a GRANT/REVOKE captured by the ddl_command_end event
 * trigger (sql/auth.sql), which pg_event_trigger_ddl_commands() does not
 * expose in SQL.
 *
 * Nothing here keeps state between calls: no locking.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_policy.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteManip.h"
#include "tcop/deparse_utility.h"
#include "utils/acl.h"
#include "utils/aclchk_internal.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/rls.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_effective_where);
PG_FUNCTION_INFO_V1(shapesync_check_shape_as);
PG_FUNCTION_INFO_V1(shapesync_ddl_command_relids);
PG_FUNCTION_INFO_V1(shapesync_ddl_command_grantees);

/* a request for a shape on behalf of a role, and what it comes to */
typedef struct EffectiveArgs
{
	Oid			relid;
	const char *rolename;		/* NULL: no role (the caller's own rights) */
	Jsonb	   *claims;			/* NULL: no claims ("{}") */
	const char *where;			/* NULL: no filter */
	ArrayType  *params;
	ArrayType  *columns;		/* NULL: omitted */

	Datum		values[4];		/* canonical_where, template, template_sql, consts */
	bool		nulls[4];
	bool		policy_applied;
	Datum		shape_columns;
	bool		shape_columns_null;
} EffectiveArgs;

/* what the error context of policy folding names */
typedef struct PolicyErrorContext
{
	const char *policy;
	const char *table;
	const char *role;
} PolicyErrorContext;

/* Error context callback: name the policy being folded. */
static void
PolicyErrorCallback(void *arg)
{
	PolicyErrorContext *p = (PolicyErrorContext *) arg;

	errcontext("row-level security policy \"%s\" of table \"%s\" evaluated for role \"%s\"",
			   p->policy, p->table, p->role);
}

/* Does an expression (sub)tree contain a CaseTestExpr (it needs its CASE)? */
static bool
ContainsCaseTest(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, CaseTestExpr) || IsA(node, CoerceToDomainValue))
		return true;
	return expression_tree_walker(node, ContainsCaseTest, context);
}

/*
 * Mutator: replace every sub-expression that references no column (and
 * needs no enclosing CASE) by its value, evaluated now, once.
 */
static Node *
FoldVarFreeMutator(Node *node, void *context)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, Const) || IsA(node, List) || IsA(node, CaseWhen) ||
		IsA(node, CaseTestExpr) || IsA(node, CoerceToDomainValue))
		return expression_tree_mutator(node, FoldVarFreeMutator, context);
	if (!contain_var_clause(node) && !ContainsCaseTest(node, NULL) &&
		!expression_returns_set(node) && !IsA(node, Param))
		return (Node *) evaluate_expr((Expr *) node, exprType(node), exprTypmod(node),
									  exprCollation(node));
	return expression_tree_mutator(node, FoldVarFreeMutator, context);
}

/*
 * ShapesyncFoldFunc: evaluate the column-free parts of a policy expression,
 * then simplify; a policy that comes to NULL allows no row, like false.
 */
static Node *
FoldVarFree(Node *expr, void *arg)
{
	expr = eval_const_expressions(NULL, FoldVarFreeMutator(expr, arg));
	if (IsA(expr, Const) && ((Const *) expr)->constisnull)
		return makeBoolConst(false, false);
	return expr;
}

/* ShapesyncFoldFunc: PostgreSQL's constant folding. */
static Node *
EvalConst(Node *expr, void *arg)
{
	return eval_const_expressions(NULL, expr);
}

/* Is name a valid last part of a custom setting name (request.jwt.claim.<name>)? */
static bool
ValidClaimSettingName(const char *name)
{
	const char *p;

	if (name[0] == '\0' || !(isalpha((unsigned char) name[0]) || name[0] == '_'))
		return false;
	for (p = name; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '$'))
			return false;
	return strlen(name) < 40;
}

/*
 * Set request.jwt.claims to the claims, and request.jwt.claim.<key> to each
 * top-level claim (PostgREST's older convention, which Supabase's auth.uid()
 * still reads first), at the current GUC nest level.
 */
static void
SetClaims(Jsonb *claims)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (claims == NULL)
	{
		(void) set_config_option("request.jwt.claims", "{}", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		return;
	}
	(void) set_config_option("request.jwt.claims",
							 JsonbToCString(NULL, &claims->root, VARSIZE(claims)),
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (!JB_ROOT_IS_OBJECT(claims))
		return;
	it = JsonbIteratorInit(&claims->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		char	   *value = NULL;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		if (tok != WJB_VALUE || !ValidClaimSettingName(key))
			continue;
		switch (v.type)
		{
			case jbvString:
				value = pnstrdup(v.val.string.val, v.val.string.len);
				break;
			case jbvNumeric:
				value = DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v.val.numeric)));
				break;
			case jbvBool:
				value = v.val.boolean ? "true" : "false";
				break;
			case jbvBinary:
				value = JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
				break;
			default:
				value = "";
				break;
		}
		(void) set_config_option(psprintf("request.jwt.claim.%s", key), value,
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	}
}

/* Does a policy with roles array polroles apply to roleid (rowsecurity.c's test)? */
static bool
PolicyAppliesToRole(ArrayType *polroles, Oid roleid)
{
	Datum	   *roles;
	int			n;
	int			i;

	deconstruct_array(polroles, OIDOID, sizeof(Oid), true, TYPALIGN_INT, &roles, NULL, &n);
	if (n > 0 && DatumGetObjectId(roles[0]) == ACL_ID_PUBLIC)
		return true;
	for (i = 0; i < n; i++)
		if (has_privs_of_role(roleid, DatumGetObjectId(roles[i])))
			return true;
	return false;
}

/* Validate a folded policy as a shape filter; refuse it with SS011 if it is not one. */
static void
ValidatePolicy(Node *qual, PolicyErrorContext *pcxt)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		ShapesyncValidateExpr(qual);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_FEATURE_NOT_SUPPORTED)
			PG_RE_THROW();
		FlushErrorState();
		shapesync_error_field = "table";
		ereport(ERROR,
				(errcode(ERRCODE_SHAPESYNC_POLICY_NOT_SUPPORTED),
				 errmsg("row-level security policy \"%s\" of table \"%s\" cannot be applied to a shape",
						pcxt->policy, pcxt->table),
				 errdetail("After evaluating its parts that reference no column for role \"%s\": %s.",
						   pcxt->role, edata->message),
				 errhint("A policy may compare columns with built-in immutable operators and functions; "
						 "compute anything else from the claims (e.g. auth.uid()) or store it in a column.")));
	}
	PG_END_TRY();
}

/*
 * The folded SELECT policies of roleid on rel: restrictive ones AND-ed with
 * the OR of the permissive ones (false when there is none).  Each policy
 * is folded as the role, with the claims set, and validated alone, so an
 * error names it.
 */
static Node *
FoldedPolicies(Relation rel, Oid roleid, const char *rolename, Jsonb *claims)
{
	Relation	pol;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *permissive = NIL;
	List	   *restrictive = NIL;
	Node	   *permexpr;
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;
	PolicyErrorContext pcxt;
	ErrorContextCallback errcb;

	pcxt.table = RelationGetRelationName(rel);
	pcxt.role = rolename;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	nestlevel = NewGUCNestLevel();
	SetClaims(claims);

	pol = table_open(PolicyRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_policy_polrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(RelationGetRelid(rel)));
	/* by (polrelid, polname): the same policies always combine in the same order */
	scan = systable_beginscan(pol, PolicyPolrelidPolnameIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_policy form = (Form_pg_policy) GETSTRUCT(tup);
		Datum		d;
		bool		isnull;
		Node	   *qual;

		if (form->polcmd != ACL_SELECT_CHR && form->polcmd != '*')
			continue;
		d = heap_getattr(tup, Anum_pg_policy_polroles, RelationGetDescr(pol), &isnull);
		if (isnull || !PolicyAppliesToRole(DatumGetArrayTypeP(d), roleid))
			continue;
		d = heap_getattr(tup, Anum_pg_policy_polqual, RelationGetDescr(pol), &isnull);
		if (isnull)
			continue;			/* no USING expression: allows no row (rowsecurity.c) */
		qual = (Node *) stringToNode(TextDatumGetCString(d));
		pcxt.policy = pstrdup(NameStr(form->polname));

		if (checkExprHasSubLink(qual))
		{
			shapesync_error_field = "table";
			ereport(ERROR,
					(errcode(ERRCODE_SHAPESYNC_POLICY_NOT_SUPPORTED),
					 errmsg("row-level security policy \"%s\" of table \"%s\" uses a subquery: subquery policies are not supported yet",
							pcxt.policy, pcxt.table),
					 errdetail("A shape applies policies to live changes one row at a time; a policy that reads other tables cannot be folded into a shape."),
					 errhint("Write the policy with functions of the claims and the row's columns only, or serve the table through a role it does not apply to.")));
		}

		/* evaluate what does not depend on the row, as the role, with its claims */
		errcb.callback = PolicyErrorCallback;
		errcb.arg = &pcxt;
		errcb.previous = error_context_stack;
		error_context_stack = &errcb;
		shapesync_error_field = "policy";
		SetUserIdAndSecContext(roleid, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		qual = ShapesyncFoldBounded(qual, FoldVarFree, NULL);
		SetUserIdAndSecContext(save_userid, save_sec_context);

		/* what is left must be a valid shape filter */
		error_context_stack = errcb.previous;
		ValidatePolicy(qual, &pcxt);
		shapesync_error_field = NULL;

		if (form->polpermissive)
			permissive = lappend(permissive, qual);
		else
			restrictive = lappend(restrictive, qual);
	}
	systable_endscan(scan);
	table_close(pol, AccessShareLock);
	AtEOXact_GUC(true, nestlevel);

	if (permissive == NIL)
		permexpr = makeBoolConst(false, false);
	else if (list_length(permissive) == 1)
		permexpr = linitial(permissive);
	else
		permexpr = (Node *) makeBoolExpr(OR_EXPR, permissive, -1);
	if (restrictive == NIL)
		return permexpr;
	return (Node *) makeBoolExpr(AND_EXPR, lappend(restrictive, permexpr), -1);
}

/* Raise SS013 for a column the role may not select. */
static void
ColumnNotPermitted(Relation rel, const char *column, const char *rolename, const char *why,
				   const char *field)
{
	shapesync_error_field = field;
	ereport(ERROR,
			(errcode(ERRCODE_SHAPESYNC_COLUMN_NOT_PERMITTED),
			 errmsg("column \"%s\" of table \"%s\" is not permitted for role \"%s\"",
					column, RelationGetRelationName(rel), rolename),
			 errdetail("%s", why),
			 errhint("Ask only for columns the role may SELECT, or GRANT SELECT on the column to the role.")));
}

/*
 * The columns of rel that roleid may SELECT (attnums); refuses a role with
 * no USAGE on the schema, no column at all, or not the primary key.
 */
static Bitmapset *
PermittedColumns(Relation rel, Oid roleid, const char *rolename)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	bool		table_ok;
	Bitmapset  *permitted = NULL;
	Bitmapset  *pk;
	int			i;

	if (pg_namespace_aclcheck(RelationGetNamespace(rel), roleid, ACL_USAGE) != ACLCHECK_OK)
	{
		shapesync_error_field = "table";
		ereport(ERROR,
				(errcode(ERRCODE_SHAPESYNC_COLUMN_NOT_PERMITTED),
				 errmsg("role \"%s\" may not use schema \"%s\" of table \"%s\"", rolename,
						get_namespace_name(RelationGetNamespace(rel)), RelationGetRelationName(rel)),
				 errhint("GRANT USAGE ON SCHEMA to the role.")));
	}
	table_ok = pg_class_aclcheck(relid, roleid, ACL_SELECT) == ACLCHECK_OK;
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped)
			continue;
		if (table_ok || pg_attribute_aclcheck(relid, att->attnum, roleid, ACL_SELECT) == ACLCHECK_OK)
			permitted = bms_add_member(permitted, att->attnum);
	}
	if (permitted == NULL)
	{
		shapesync_error_field = "table";
		ereport(ERROR,
				(errcode(ERRCODE_SHAPESYNC_COLUMN_NOT_PERMITTED),
				 errmsg("role \"%s\" may not select from table \"%s\"", rolename,
						RelationGetRelationName(rel)),
				 errhint("GRANT SELECT on the table, or on some of its columns, to the role.")));
	}
	pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	i = -1;
	while ((i = bms_next_member(pk, i)) >= 0)
	{
		AttrNumber	attnum = i + FirstLowInvalidHeapAttributeNumber;

		if (!bms_is_member(attnum, permitted))
			ColumnNotPermitted(rel, get_attname(relid, attnum, false), rolename,
							   "It is part of the primary key, which every shape carries.", "columns");
	}
	return permitted;
}

/*
 * The column list of the shape: the requested columns, each checked, or
 * when omitted the permitted ones (NULL when that is every column).
 */
static void
ShapeColumns(Relation rel, Bitmapset *permitted, const char *rolename, EffectiveArgs *a)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	Datum	   *names;
	bool	   *nulls;
	int			n;
	int			i;
	bool		all = true;

	if (a->columns != NULL)
	{
		deconstruct_array(a->columns, TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &n);
		for (i = 0; i < n; i++)
		{
			char	   *name;
			AttrNumber	attnum;

			if (nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("a shape's column name must not be NULL")));
			name = TextDatumGetCString(names[i]);
			attnum = get_attnum(relid, name);
			if (attnum <= 0)
			{
				shapesync_error_field = "columns";
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of table \"%s\" does not exist", name,
								RelationGetRelationName(rel))));
			}
			if (!bms_is_member(attnum, permitted))
				ColumnNotPermitted(rel, name, rolename,
								   "The role has no SELECT privilege on it.", "columns");
		}
		a->shape_columns = PointerGetDatum(a->columns);
		a->shape_columns_null = false;
		return;
	}

	names = palloc(sizeof(Datum) * Max(tupdesc->natts, 1));
	n = 0;
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (att->attisdropped)
			continue;
		if (bms_is_member(att->attnum, permitted))
			names[n++] = CStringGetTextDatum(NameStr(att->attname));
		else
			all = false;
	}
	if (all)
	{
		a->shape_columns_null = true;
		return;
	}
	a->shape_columns = PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
	a->shape_columns_null = false;
}

/* The effective shape of a request (see the file header); fills a's results. */
static void
EffectiveWhere(void *arg)
{
	EffectiveArgs *a = (EffectiveArgs *) arg;
	Relation	rel;
	Oid			roleid;
	Oid			caller = ShapesyncCallerUserId();
	Node	   *expr = NULL;
	Bitmapset  *permitted;
	int			i;

	for (i = 0; i < 4; i++)
		a->nulls[i] = true;
	a->policy_applied = false;
	a->shape_columns = PointerGetDatum(a->columns);
	a->shape_columns_null = (a->columns == NULL);

	if (a->rolename == NULL)
	{
		/* no role: the caller's own rights, as get_or_create_shape(5 args) */
		ShapesyncCheckRowSecurity(a->relid, caller);
		if (a->where == NULL)
			return;
		rel = ShapesyncOpenShapeTable(a->relid);
		ShapesyncFinishWhere(rel, ShapesyncAnalyseWhere(rel, a->where, a->params), a->values);
		for (i = 0; i < 4; i++)
			a->nulls[i] = false;
		relation_close(rel, NoLock);
		return;
	}

	roleid = get_role_oid(a->rolename, true);
	if (!OidIsValid(roleid) || !is_member_of_role(caller, roleid))
	{
		shapesync_error_field = "role";
		ereport(ERROR,
				(errcode(ERRCODE_SHAPESYNC_ROLE_NOT_PERMITTED),
				 errmsg("role \"%s\" is not permitted", a->rolename),
				 OidIsValid(roleid) ?
				 errdetail("The calling role \"%s\" is not a member of role \"%s\".",
						   GetUserNameFromId(caller, false), a->rolename) :
				 errdetail("There is no such role."),
				 errhint("The sidecar's role must be a member of every role it serves: GRANT %s TO %s.",
						 quote_identifier(a->rolename),
						 quote_identifier(GetUserNameFromId(caller, false)))));
	}

	rel = ShapesyncOpenShapeTable(a->relid);
	permitted = PermittedColumns(rel, roleid, a->rolename);
	ShapeColumns(rel, permitted, a->rolename, a);

	if (a->where != NULL)
	{
		Bitmapset  *used = NULL;

		expr = ShapesyncAnalyseWhere(rel, a->where, a->params);
		/* a filter on a column the role may not read would reveal its values */
		pull_varattnos(expr, 1, &used);
		i = -1;
		while ((i = bms_next_member(used, i)) >= 0)
		{
			AttrNumber	attnum = i + FirstLowInvalidHeapAttributeNumber;

			if (attnum > 0 && !bms_is_member(attnum, permitted))
				ColumnNotPermitted(rel, get_attname(a->relid, attnum, false), a->rolename,
								   "The shape's WHERE clause uses it and the role has no SELECT privilege on it.",
								   "where");
		}
	}

	if (check_enable_rls(a->relid, roleid, true) == RLS_ENABLED)
	{
		Node	   *policies = FoldedPolicies(rel, roleid, a->rolename, a->claims);

		expr = expr != NULL ? (Node *) make_andclause(list_make2(expr, policies)) : policies;
		a->policy_applied = true;
	}

	if (expr != NULL)
	{
		expr = ShapesyncFoldBounded(expr, EvalConst, NULL);
		/* a policy that allows every row adds nothing: the same shape as without */
		if (IsA(expr, Const) && !((Const *) expr)->constisnull &&
			DatumGetBool(((Const *) expr)->constvalue) && a->where == NULL)
			expr = NULL;
	}
	if (expr != NULL)
	{
		ShapesyncFinishWhere(rel, expr, a->values);
		for (i = 0; i < 4; i++)
			a->nulls[i] = false;
	}
	relation_close(rel, NoLock);
}

/* Fill a from the arguments (rel, where_clause, params, role, claims, columns) at argument positions. */
static void
ReadEffectiveArgs(FunctionCallInfo fcinfo, EffectiveArgs *a, int rel_arg, int where_arg,
				  int params_arg, int role_arg, int claims_arg, int columns_arg)
{
	memset(a, 0, sizeof(*a));
	if (PG_ARGISNULL(rel_arg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("shape table must not be NULL")));
	a->relid = PG_GETARG_OID(rel_arg);
	if (!PG_ARGISNULL(where_arg))
	{
		char	   *w = text_to_cstring(PG_GETARG_TEXT_PP(where_arg));

		if (w[strspn(w, " \t\r\n\f")] != '\0')
			a->where = w;
	}
	a->params = PG_ARGISNULL(params_arg) ? NULL : PG_GETARG_ARRAYTYPE_P(params_arg);
	a->rolename = PG_ARGISNULL(role_arg) ? NULL : pstrdup(NameStr(*PG_GETARG_NAME(role_arg)));
	a->claims = PG_ARGISNULL(claims_arg) ? NULL : PG_GETARG_JSONB_P(claims_arg);
	a->columns = PG_ARGISNULL(columns_arg) ? NULL : PG_GETARG_ARRAYTYPE_P(columns_arg);
	if (a->columns != NULL && ARR_NDIM(a->columns) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("columns must be a one-dimensional array")));
}

/*
 * effective_where(rel, role, claims, where_clause, params, columns) →
 * (canonical_where, template, template_sql, consts, policy_applied,
 * shape_columns): the effective shape of a request on behalf of role.
 */
Datum
shapesync_effective_where(PG_FUNCTION_ARGS)
{
	EffectiveArgs a;
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6];
	int			i;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	ReadEffectiveArgs(fcinfo, &a, 0, 3, 4, 1, 2, 5);
	EffectiveWhere(&a);
	shapesync_error_field = NULL;
	for (i = 0; i < 4; i++)
	{
		values[i] = a.values[i];
		nulls[i] = a.nulls[i];
	}
	values[4] = BoolGetDatum(a.policy_applied);
	nulls[4] = false;
	values[5] = a.shape_columns;
	nulls[5] = a.shape_columns_null;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* check_shape() on behalf of a role: the checks of effective_where(), errors as data. */
static void
CheckEffective(void *arg)
{
	EffectiveWhere((EffectiveArgs *) arg);
}

/*
 * check_shape(rel, where_clause, params, role, claims, columns) →
 * (canonical_where, error_field, error_code, error_message, error_detail,
 * error_hint, error_position, policy_applied, shape_columns).
 */
Datum
shapesync_check_shape_as(PG_FUNCTION_ARGS)
{
	EffectiveArgs a;
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9];
	int			i;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	ReadEffectiveArgs(fcinfo, &a, 0, 1, 2, 3, 4, 5);
	for (i = 0; i < 9; i++)
		nulls[i] = true;
	if (ShapesyncRunChecked(CheckEffective, &a, &values[1], &nulls[1]))
	{
		values[0] = a.values[0];
		nulls[0] = a.nulls[0];
		values[7] = BoolGetDatum(a.policy_applied);
		nulls[7] = false;
		values[8] = a.shape_columns;
		nulls[8] = a.shape_columns_null;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* Does a collected GRANT/REVOKE on tables give or take a SELECT privilege? */
static bool
GrantTouchesSelect(InternalGrant *istmt)
{
	ListCell   *lc;

	if (istmt->all_privs || (istmt->privileges & ACL_SELECT) != 0)
		return true;
	foreach(lc, istmt->col_privs)
	{
		AccessPriv *priv = (AccessPriv *) lfirst(lc);

		if (priv->priv_name == NULL || strcmp(priv->priv_name, "select") == 0)
			return true;
	}
	return false;
}

/* The collected GRANT/REVOKE on tables of an event trigger's command, or NULL. */
static InternalGrant *
TableGrant(CollectedCommand *cmd)
{
	if (cmd != NULL && cmd->type == SCT_Grant && cmd->d.grant.istmt != NULL &&
		cmd->d.grant.istmt->objtype == OBJECT_TABLE)
		return cmd->d.grant.istmt;
	return NULL;
}

/* An oid[] of the oids in list. */
static ArrayType *
OidListArray(List *list)
{
	Datum	   *oids = palloc(sizeof(Datum) * Max(list_length(list), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, list)
		oids[n++] = ObjectIdGetDatum(lfirst_oid(lc));
	return construct_array(oids, n, OIDOID, sizeof(Oid), true, TYPALIGN_INT);
}

/*
 * ddl_command_relids(command pg_ddl_command) → oid[]: the tables of a
 * GRANT/REVOKE that gives or takes SELECT (table or column) collected for
 * ddl_command_end; empty for other commands.
 */
Datum
shapesync_ddl_command_relids(PG_FUNCTION_ARGS)
{
	InternalGrant *istmt = TableGrant((CollectedCommand *) PG_GETARG_POINTER(0));

	if (istmt == NULL || !GrantTouchesSelect(istmt))
		PG_RETURN_ARRAYTYPE_P(OidListArray(NIL));
	PG_RETURN_ARRAYTYPE_P(OidListArray(istmt->objects));
}

/*
 * ddl_command_grantees(command pg_ddl_command) → oid[]: the grantees of a
 * GRANT/REVOKE on tables (0 for PUBLIC); empty for other commands.
 */
Datum
shapesync_ddl_command_grantees(PG_FUNCTION_ARGS)
{
	InternalGrant *istmt = TableGrant((CollectedCommand *) PG_GETARG_POINTER(0));

	PG_RETURN_ARRAYTYPE_P(OidListArray(istmt != NULL ? istmt->grantees : NIL));
}
