/*-------------------------------------------------------------------------
 *
 * versions.c
 *	  Row versions (docs/mutations.md): the version of a row is the xid8 of
 *	  the (sub)transaction that wrote its live tuple, i.e. the tuple's xmin
 *	  with its epoch.
 *
 * shapesync.row_version(xmin) widens a 32-bit xid read from a tuple (the
 * xmin system column) to an xid8, the way PostgreSQL's xid8 functions
 * widen the xids of a snapshot: an xid is never newer than the next xid
 * to be assigned, so it belongs to the next xid's epoch when it is not
 * above it, and to the epoch before otherwise.  Exact for every xid less
 * than 2^32 transactions old; a live unfrozen tuple's xmin is always less
 * than 2^31 old.  The change log stores the same value for rows written
 * inside a subtransaction (changelog.c), where it differs from the
 * top-level xid.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "fmgr.h"
#include "utils/xid8.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_row_version);

/* Widen a 32-bit xid that is not in the future to a FullTransactionId. */
FullTransactionId
ShapesyncWidenXid(TransactionId xid)
{
	FullTransactionId next;
	uint32		epoch;

	/* bootstrap, frozen and invalid xids belong to no epoch */
	if (!TransactionIdIsNormal(xid))
		return FullTransactionIdFromEpochAndXid(0, xid);

	next = ReadNextFullTransactionId();
	epoch = EpochFromFullTransactionId(next);
	if (xid > XidFromFullTransactionId(next) && epoch > 0)
		epoch--;
	return FullTransactionIdFromEpochAndXid(epoch, xid);
}

/* row_version(xmin xid) returns xid8: the version of a row from its xmin. */
Datum
shapesync_row_version(PG_FUNCTION_ARGS)
{
	TransactionId xid = DatumGetTransactionId(PG_GETARG_DATUM(0));

	PG_RETURN_FULLTRANSACTIONID(ShapesyncWidenXid(xid));
}
