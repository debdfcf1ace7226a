/*-------------------------------------------------------------------------
 *
 * shapes.c
 *	  Shape registry helpers needed from C.  The registry itself
 *	  (shapesync.shapes, get_or_create_shape, invalidate_shape) is SQL in
 *	  sql/shapesync.sql.
 *
 * Writers (the TRUNCATE trigger, untrack) may not have privileges on the
 * registry: the update runs as the owner of shapesync.shapes, in a
 * security-restricted operation, as referential-integrity triggers do.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "shapesync.h"

/* Mark every active shape of table relid invalid with the given reason. */
void
ShapesyncInvalidateTableShapes(Oid relid, const char *reason)
{
	Oid			shapes_relid = ShapesyncRelationOid("shapes", false);
	Oid			owner;
	Oid			save_userid;
	int			save_sec_context;
	Oid			argtypes[2] = {OIDOID, TEXTOID};
	Datum		args[2];
	HeapTuple	classtup;

	classtup = SearchSysCache1(RELOID, ObjectIdGetDatum(shapes_relid));
	if (!HeapTupleIsValid(classtup))
		elog(ERROR, "cache lookup failed for relation %u", shapes_relid);
	owner = ((Form_pg_class) GETSTRUCT(classtup))->relowner;
	ReleaseSysCache(classtup);

	args[0] = ObjectIdGetDatum(relid);
	args[1] = CStringGetTextDatum(reason);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("UPDATE shapesync.shapes"
							  "   SET state = 'invalid', invalidated_at = pg_catalog.now(), reason = $2"
							  " WHERE relid OPERATOR(pg_catalog.=) $1"
							  "   AND state OPERATOR(pg_catalog.=) 'active'",
							  2, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not invalidate the shapes of relation %u", relid);
	SPI_finish();

	SetUserIdAndSecContext(save_userid, save_sec_context);
}
