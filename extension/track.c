/*-------------------------------------------------------------------------
 *
 * track.c
 *	  shapesync.track(regclass) and shapesync.untrack(regclass): install or
 *	  remove the capture triggers of a table and keep the registry
 *	  shapesync.tracked in step.
 *
 * Only ordinary, permanent, user tables with a primary key can be
 * tracked.  track() is idempotent (it re-creates a missing trigger);
 * untrack() of a table that is not tracked is an error.  Untracking
 * invalidates the table's shapes and logs an 'S' change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_track);
PG_FUNCTION_INFO_V1(shapesync_untrack);

#define CAPTURE_TRIGGER "shapesync_capture"
#define TRUNCATE_TRIGGER "shapesync_truncate"

/* Refuse anything but an ordinary, permanent user table with a primary key. */
static void
CheckTrackable(Relation rel)
{
	const char *relname = RelationGetRelationName(rel);
	char		relkind = rel->rd_rel->relkind;

	if (relkind == RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot track partitioned table \"%s\"", relname),
				 errdetail("Tracking of partitioned tables is not supported yet."),
				 errhint("Track its partitions one by one.")));
	if (relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot track \"%s\"", relname),
				 errdetail("\"%s\" is not a table; only ordinary tables can be tracked.", relname)));
	if (IsCatalogRelation(rel) || IsToastRelation(rel) ||
		RelationGetNamespace(rel) == PG_CATALOG_NAMESPACE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot track system catalog \"%s\"", relname)));
	if (RelationGetNamespace(rel) == ShapesyncSchemaOid(true))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot track \"%s\"", relname),
				 errdetail("Tables of the shapesync extension cannot be tracked.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot track temporary table \"%s\"", relname),
				 errdetail("Changes of a temporary table are visible to one session only.")));
	if (!OidIsValid(RelationGetPrimaryKeyIndex(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table \"%s\" has no primary key", relname),
				 errdetail("shapesync identifies rows by their primary key."),
				 errhint("Add a primary key to the table, then track it.")));
	if (!pg_class_ownercheck(RelationGetRelid(rel), GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, relname);
}

/* Run a utility or DML statement through SPI; return SPI_processed. */
static uint64
RunSql(const char *sql, int nargs, Oid *argtypes, Datum *args, int expected)
{
	int			ret = SPI_execute_with_args(sql, nargs, argtypes, args, NULL, false, 0);

	if (ret != expected)
		elog(ERROR, "shapesync: \"%s\" failed: %s", sql, SPI_result_code_string(ret));
	return SPI_processed;
}

/* Does relation relid have a trigger named tgname? */
static bool
HasTrigger(Oid relid, const char *tgname)
{
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		args[2] = {ObjectIdGetDatum(relid), CStringGetTextDatum(tgname)};

	return RunSql("SELECT 1 FROM pg_catalog.pg_trigger"
				  " WHERE tgrelid OPERATOR(pg_catalog.=) $1"
				  "   AND tgname OPERATOR(pg_catalog.=) $2::pg_catalog.name",
				  2, argtypes, args, SPI_OK_SELECT) > 0;
}

/* Grant SELECT on rel (and USAGE on its schema) to the roles of shapesync.sidecar_roles. */
static void
GrantToSidecars(Relation rel, const char *qualname)
{
	StringInfoData sql;
	StringInfoData roles;

	/* an extension still at 0.1.0 (not yet ALTER EXTENSION UPDATEd) has none */
	if (!OidIsValid(ShapesyncRelationOid("sidecar_roles", true)))
		return;
	RunSql("SELECT pg_catalog.quote_ident(r.rolname) FROM shapesync.sidecar_roles s"
		   " JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) s.roleid",
		   0, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	initStringInfo(&roles);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *role = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		appendStringInfo(&roles, "%s%s", i > 0 ? ", " : "", role);
	}
	initStringInfo(&sql);
	appendStringInfo(&sql, "GRANT SELECT ON %s TO %s", qualname, roles.data);
	RunSql(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
	resetStringInfo(&sql);
	appendStringInfo(&sql, "GRANT USAGE ON SCHEMA %s TO %s",
					 quote_identifier(get_namespace_name(RelationGetNamespace(rel))), roles.data);
	RunSql(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
}

/*
 * track(rel): install the capture triggers and register the table.
 * Partitioned tables are refused (track their partitions).  A table with
 * inheritance children is tracked with a notice: its shapes hold its own
 * rows only (snapshots read FROM ONLY the table, and a child's changes fire
 * no trigger of the parent).  The table is granted to the sidecar roles of
 * shapesync.grant_sidecar().
 */
Datum
shapesync_track(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	rel;
	char	   *qualname;
	StringInfoData sql;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};

	/* the lock CREATE TRIGGER takes, up front: no lock upgrade */
	rel = relation_open(relid, ShareRowExclusiveLock);
	CheckTrackable(rel);
	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  RelationGetRelationName(rel));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	initStringInfo(&sql);
	if (!HasTrigger(relid, CAPTURE_TRIGGER))
	{
		appendStringInfo(&sql,
						 "CREATE TRIGGER " CAPTURE_TRIGGER
						 " AFTER INSERT OR UPDATE OR DELETE ON %s"
						 " FOR EACH ROW EXECUTE FUNCTION shapesync.capture()",
						 qualname);
		RunSql(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
	}
	if (!HasTrigger(relid, TRUNCATE_TRIGGER))
	{
		resetStringInfo(&sql);
		appendStringInfo(&sql,
						 "CREATE TRIGGER " TRUNCATE_TRIGGER
						 " AFTER TRUNCATE ON %s"
						 " FOR EACH STATEMENT EXECUTE FUNCTION shapesync.capture_truncate()",
						 qualname);
		RunSql(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
	}
	RunSql("INSERT INTO shapesync.tracked (relid) VALUES ($1) ON CONFLICT (relid) DO NOTHING",
		   1, argtypes, args, SPI_OK_INSERT);
	GrantToSidecars(rel, qualname);

	if (RunSql("SELECT 1 FROM pg_catalog.pg_inherits WHERE inhparent OPERATOR(pg_catalog.=) $1",
			   1, argtypes, args, SPI_OK_SELECT) > 0)
		ereport(NOTICE,
				(errmsg("table \"%s\" has inheritance children: its shapes hold only its own rows",
						RelationGetRelationName(rel)),
				 errdetail("Shapes read FROM ONLY the tracked table, and changes to a child table fire no trigger of its parent."),
				 errhint("Track the child tables to serve their rows.")));

	SPI_finish();
	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}

/* untrack(rel): drop the capture triggers, unregister, invalidate shapes. */
Datum
shapesync_untrack(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	rel;
	char	   *qualname;
	StringInfoData sql;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};

	rel = relation_open(relid, ShareRowExclusiveLock);
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, RelationGetRelationName(rel));
	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  RelationGetRelationName(rel));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (RunSql("DELETE FROM shapesync.tracked WHERE relid OPERATOR(pg_catalog.=) $1",
			   1, argtypes, args, SPI_OK_DELETE) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is not tracked", RelationGetRelationName(rel)),
				 errhint("See shapesync.tracked_tables for the tracked tables.")));

	initStringInfo(&sql);
	appendStringInfo(&sql, "DROP TRIGGER IF EXISTS " CAPTURE_TRIGGER " ON %s", qualname);
	RunSql(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);
	resetStringInfo(&sql);
	appendStringInfo(&sql, "DROP TRIGGER IF EXISTS " TRUNCATE_TRIGGER " ON %s", qualname);
	RunSql(sql.data, 0, NULL, NULL, SPI_OK_UTILITY);

	SPI_finish();

	ShapesyncInvalidateTableShapes(relid, "untrack");
	ShapesyncLogRow(relid, NULL, 'S', ShapesyncLayoutHash(RelationGetDescr(rel)),
					NULL, NULL, NULL, "untrack");

	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}
