/*-------------------------------------------------------------------------
 *
 * decode.c
 *	  Decoding of the row images stored in shapesync.changes:
 *	  row_values() (text[] by attnum) and row_json(), plus the *_or_null
 *	  variants used by batch() and the change_log view, which return NULL
 *	  instead of raising when the image cannot be decoded (table dropped,
 *	  layout changed).
 *
 * Decoding runs in the reader's session: the type output functions see
 * the reader's DateStyle, TimeZone, extra_float_digits, ...; what the
 * writer had set plays no part (the image is binary).
 *
 * The per-attribute output functions are cached in fn_extra, keyed by
 * (relid, layout), so a batch decodes many rows with one lookup.
 *
 * An UPDATE's old image is written with only the columns the update
 * changed (ShapesyncDeltaHeader in shapesync.h); ShapesyncExpandOldImage()
 * turns it back into the whole old row, taking every other column from the
 * new image.  shapesync.change_entries() does that for every reader, so the
 * decoding functions here only ever see whole images; given a partial one
 * they raise.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "shapesync.h"

PG_FUNCTION_INFO_V1(shapesync_row_values);
PG_FUNCTION_INFO_V1(shapesync_row_json);
PG_FUNCTION_INFO_V1(shapesync_row_values_or_null);
PG_FUNCTION_INFO_V1(shapesync_row_json_or_null);

/* decoding cache for one (relation, layout), kept in fn_extra */
typedef struct DecodeCache
{
	Oid			relid;
	int32		layout;
	int			natts;
	FmgrInfo   *out;			/* per attribute output function */
	bool	   *dropped;
	char	  **names;
} DecodeCache;

/* Build (or reuse) the decoding cache for rel. */
static DecodeCache *
GetDecodeCache(FunctionCallInfo fcinfo, Relation rel, int32 layout)
{
	DecodeCache *cache = (DecodeCache *) fcinfo->flinfo->fn_extra;
	TupleDesc	tupdesc = RelationGetDescr(rel);
	MemoryContext oldcxt;

	if (cache != NULL && cache->relid == RelationGetRelid(rel) &&
		cache->layout == layout && cache->natts == tupdesc->natts)
		return cache;

	oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	cache = palloc0(sizeof(DecodeCache));
	cache->relid = RelationGetRelid(rel);
	cache->layout = layout;
	cache->natts = tupdesc->natts;
	cache->out = palloc0(sizeof(FmgrInfo) * Max(tupdesc->natts, 1));
	cache->dropped = palloc0(sizeof(bool) * Max(tupdesc->natts, 1));
	cache->names = palloc0(sizeof(char *) * Max(tupdesc->natts, 1));
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		Oid			typoutput;
		bool		isvarlena;

		cache->dropped[i] = att->attisdropped;
		cache->names[i] = pstrdup(NameStr(att->attname));
		if (att->attisdropped)
			continue;
		getTypeOutputInfo(att->atttypid, &typoutput, &isvarlena);
		fmgr_info_cxt(typoutput, &cache->out[i], fcinfo->flinfo->fn_mcxt);
	}
	MemoryContextSwitchTo(oldcxt);
	fcinfo->flinfo->fn_extra = cache;
	return cache;
}

/*
 * Check that every attribute of the image lies inside it, walking the
 * tuple as heap_deform_tuple will, so that a truncated or forged image is
 * an error rather than a read past the buffer.  The values themselves are
 * trusted (only images taken from shapesync.changes should be passed in;
 * EXECUTE is not granted to PUBLIC).
 */
/*
 * A change's relation must be a table the caller may SELECT from: the
 * decoders give its rows' values, so they check what a SELECT would.
 */
static void
CheckReadableTable(Relation rel)
{
	AclResult	aclresult;

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel))));
	aclresult = pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, RelationGetRelationName(rel));
}

static bool
ImageIsSane(HeapTupleHeader td, uint32 len, TupleDesc tupdesc)
{
	int			natts = HeapTupleHeaderGetNatts(td);
	bool		hasnulls = (td->t_infomask & HEAP_HASNULL) != 0;
	char	   *tp = (char *) td + td->t_hoff;
	uint32		datalen = len - td->t_hoff;
	uint32		off = 0;

	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (hasnulls && att_isnull(i, td->t_bits))
			continue;

		if (att->attlen > 0)
		{
			off = att_align_nominal(off, att->attalign);
			if (off > datalen || (uint32) att->attlen > datalen - off)
				return false;
			off += att->attlen;
		}
		else if (att->attlen == -1)
		{
			uint32		size;

			/* as att_align_pointer: a non-pad byte starts the value */
			if (off >= datalen)
				return false;
			if (!VARATT_NOT_PAD_BYTE(tp + off))
				off = att_align_nominal(off, att->attalign);
			if (off >= datalen)
				return false;
			if (VARATT_IS_EXTERNAL(tp + off))
				return false;	/* images hold no TOAST pointers */
			if (VARATT_IS_1B(tp + off))
			{
				size = VARSIZE_1B(tp + off);
				if (size < VARHDRSZ_SHORT)
					return false;
			}
			else
			{
				if (datalen - off < VARHDRSZ)
					return false;
				size = VARSIZE_4B(tp + off);
				if (size < VARHDRSZ)
					return false;
			}
			if (size > datalen - off)
				return false;
			off += size;
		}
		else if (att->attlen == -2)
		{
			size_t		slen;

			if (off >= datalen)
				return false;
			slen = strnlen(tp + off, datalen - off);
			if (slen >= datalen - off)
				return false;
			off += slen + 1;
		}
		else
			return false;
	}
	return true;
}


/*
 * Is the composite datum td of len bytes a sane image of a row of tupdesc
 * (row type typeid)?
 */
static bool
TupleImageIsSane(HeapTupleHeader td, uint32 len, TupleDesc tupdesc, Oid typeid)
{
	return len >= SizeofHeapTupleHeader &&
		td->t_hoff >= SizeofHeapTupleHeader && td->t_hoff <= len &&
		HeapTupleHeaderGetNatts(td) <= tupdesc->natts &&
		(!(td->t_infomask & HEAP_HASNULL) ||
		 offsetof(HeapTupleHeaderData, t_bits) + BITMAPLEN(HeapTupleHeaderGetNatts(td)) <= td->t_hoff) &&
		HeapTupleHeaderGetTypeId(td) == typeid &&
		ImageIsSane(td, len, tupdesc);
}

/* Is img (a detoasted varlena) an UPDATE's old image of its changed columns only? */
bool
ShapesyncIsDeltaImage(const struct varlena *img)
{
	uint32		magic;
	Oid			no_type;

	if (VARATT_IS_1B(img) || VARSIZE(img) < offsetof(ShapesyncDeltaHeader, changed))
		return false;
	memcpy(&magic, (const char *) img + offsetof(ShapesyncDeltaHeader, magic), sizeof(magic));
	memcpy(&no_type, (const char *) img + offsetof(ShapesyncDeltaHeader, no_type), sizeof(no_type));
	return magic == SHAPESYNC_DELTA_MAGIC && no_type == InvalidOid;
}

/*
 * Raise unless img is a whole composite datum of rel's row type that lies
 * inside itself (an UPDATE's old image of its changed columns only is
 * expanded first: ShapesyncExpandOldImage).
 */
static void
CheckImage(Relation rel, bytea *img)
{
	if (ShapesyncIsDeltaImage(img))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("row image of table \"%s\" holds only the columns an update changed",
						RelationGetRelationName(rel)),
				 errdetail("The old image of an update is written without the columns that kept their value."),
				 errhint("Read the images through shapesync.change_entries(), which returns whole rows.")));
	if (!TupleImageIsSane((HeapTupleHeader) img, VARSIZE(img), RelationGetDescr(rel), rel->rd_rel->reltype))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid row image for table \"%s\"", RelationGetRelationName(rel))));
}


/* Raise the error of a partial old image that cannot be read. */
static void
BadDeltaImage(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("invalid old row image of an update"),
			 errdetail("%s", detail)));
}

/* the tuple descriptors ShapesyncImageDesc() found, kept in fn_extra */
#define IMAGE_DESC_SLOTS 4
typedef struct ImageDescCache
{
	int			next;			/* slot to fill next */
	struct
	{
		Oid			relid;
		int32		layout;
		TupleDesc	desc;		/* NULL: no such table with that layout */
	}			slots[IMAGE_DESC_SLOTS];
} ImageDescCache;

/*
 * The tuple descriptor of images of table relid written with layout (a
 * copy, with the defaults of columns added since rows were written), or
 * NULL when the table is gone or has another layout now; cached in
 * flinfo->fn_extra.  A descriptor of the same layout hash describes the
 * same physical tuple, so one found once stays right for the query.
 */
TupleDesc
ShapesyncImageDesc(FmgrInfo *flinfo, Oid relid, int32 layout)
{
	ImageDescCache *cache = (ImageDescCache *) flinfo->fn_extra;
	Relation	rel;
	TupleDesc	desc = NULL;
	int			slot;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(ImageDescCache));
		flinfo->fn_extra = cache;
	}
	for (int i = 0; i < IMAGE_DESC_SLOTS; i++)
		if (OidIsValid(cache->slots[i].relid) && cache->slots[i].relid == relid &&
			cache->slots[i].layout == layout)
			return cache->slots[i].desc;

	rel = try_relation_open(relid, AccessShareLock);
	if (rel != NULL)
	{
		if (rel->rd_rel->relkind == RELKIND_RELATION &&
			ShapesyncLayoutHash(RelationGetDescr(rel)) == layout)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(flinfo->fn_mcxt);

			desc = CreateTupleDescCopyConstr(RelationGetDescr(rel));
			MemoryContextSwitchTo(oldcxt);
		}
		relation_close(rel, AccessShareLock);
	}
	slot = cache->next;
	cache->next = (cache->next + 1) % IMAGE_DESC_SLOTS;
	if (cache->slots[slot].desc != NULL)
		FreeTupleDesc(cache->slots[slot].desc);
	cache->slots[slot].relid = relid;
	cache->slots[slot].layout = layout;
	cache->slots[slot].desc = desc;
	return desc;
}

/*
 * The whole old row of an UPDATE from its old image old_img and its new
 * image new_img (both detoasted, MAXALIGNed, of rows described by desc):
 * old_img itself when it is whole (written by shapesync.full_old_images or
 * before partial images existed), else a new composite datum holding the
 * changed columns from old_img and every other column from new_img.
 */
struct varlena *
ShapesyncExpandOldImage(TupleDesc desc, struct varlena *new_img, struct varlena *old_img)
{
	ShapesyncDeltaHeader *d = (ShapesyncDeltaHeader *) old_img;
	int			natts = desc->natts;
	uint32		size = VARSIZE(old_img);
	Size		off;
	HeapTupleHeader ntd = (HeapTupleHeader) new_img;
	HeapTupleHeader otd;
	HeapTupleData ntup;
	HeapTupleData otup;
	HeapTuple	merged;
	Datum	   *nvalues;
	bool	   *nnulls;
	Datum	   *ovalues;
	bool	   *onulls;
	Datum		result;

	if (!ShapesyncIsDeltaImage(old_img))
		return old_img;
	if (size < offsetof(ShapesyncDeltaHeader, changed) + BITMAPLEN(d->natts))
		BadDeltaImage("Its column bitmap is truncated.");
	if (d->natts != natts)
		BadDeltaImage("It was written for another number of columns.");
	off = ShapesyncDeltaTupleOffset(natts);
	if (off > size)
		BadDeltaImage("It holds no row.");
	if (VARATT_IS_1B(new_img) ||
		!TupleImageIsSane(ntd, VARSIZE(new_img), desc, desc->tdtypeid))
		BadDeltaImage("The new row image is not a row of the table.");
	otd = (HeapTupleHeader) ((char *) old_img + off);
	if (!TupleImageIsSane(otd, size - off, desc, desc->tdtypeid))
		BadDeltaImage("Its row is not a row of the table.");

	ntup.t_len = VARSIZE(new_img);
	ItemPointerSetInvalid(&ntup.t_self);
	ntup.t_tableOid = InvalidOid;
	ntup.t_data = ntd;
	otup.t_len = size - off;
	ItemPointerSetInvalid(&otup.t_self);
	otup.t_tableOid = InvalidOid;
	otup.t_data = otd;

	nvalues = palloc(sizeof(Datum) * Max(natts, 1));
	nnulls = palloc(sizeof(bool) * Max(natts, 1));
	ovalues = palloc(sizeof(Datum) * Max(natts, 1));
	onulls = palloc(sizeof(bool) * Max(natts, 1));
	heap_deform_tuple(&ntup, desc, nvalues, nnulls);
	heap_deform_tuple(&otup, desc, ovalues, onulls);
	for (int i = 0; i < natts; i++)
	{
		if (TupleDescAttr(desc, i)->attisdropped)
			nnulls[i] = true;
		else if (d->changed[i / 8] & (1 << (i % 8)))
		{
			nvalues[i] = ovalues[i];
			nnulls[i] = onulls[i];
		}
	}
	merged = heap_form_tuple(desc, nvalues, nnulls);
	result = heap_copy_tuple_as_datum(merged, desc);
	heap_freetuple(merged);
	pfree(nvalues);
	pfree(nnulls);
	pfree(ovalues);
	pfree(onulls);
	return (struct varlena *) DatumGetPointer(result);
}

/*
 * Decode img (an image of table relid written with layout) into output
 * texts, one per attribute (NULL for SQL NULL and dropped columns).
 * Returns false instead of raising if the table is gone or its layout
 * changed and raise is false; *cache_out describes the attributes.
 */
static bool
DecodeImage(FunctionCallInfo fcinfo, Oid relid, int32 layout, bytea *img,
			bool raise, DecodeCache **cache_out, char ***texts_out)
{
	Relation	rel;
	TupleDesc	tupdesc;
	DecodeCache *cache;
	HeapTupleHeader td;
	HeapTupleData tuple;
	uint32		len;
	Datum	   *values;
	bool	   *nulls;
	char	  **texts;

	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
	{
		if (!raise)
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	}
	CheckReadableTable(rel);

	tupdesc = RelationGetDescr(rel);
	if (ShapesyncLayoutHash(tupdesc) != layout)
	{
		if (!raise)
		{
			relation_close(rel, AccessShareLock);
			return false;
		}
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("row image layout of table \"%s\" changed",
						RelationGetRelationName(rel)),
				 errdetail("The image was written with layout %d; the table now has layout %d.",
						   layout, ShapesyncLayoutHash(tupdesc)),
				 errhint("Invalidate the table's shapes and take a new snapshot.")));
	}

	CheckImage(rel, img);
	len = VARSIZE(img);
	td = (HeapTupleHeader) img;

	cache = GetDecodeCache(fcinfo, rel, layout);

	tuple.t_len = len;
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = relid;
	tuple.t_data = td;

	values = palloc(sizeof(Datum) * Max(tupdesc->natts, 1));
	nulls = palloc(sizeof(bool) * Max(tupdesc->natts, 1));
	texts = palloc0(sizeof(char *) * Max(tupdesc->natts, 1));
	heap_deform_tuple(&tuple, tupdesc, values, nulls);
	for (int i = 0; i < tupdesc->natts; i++)
	{
		if (cache->dropped[i] || nulls[i])
			continue;
		texts[i] = OutputFunctionCall(&cache->out[i], values[i]);
	}

	relation_close(rel, NoLock);
	*cache_out = cache;
	*texts_out = texts;
	return true;
}

/* Build a text[] (lower bound 1) from decoded texts. */
static Datum
TextsToArray(DecodeCache *cache, char **texts)
{
	int			n = cache->natts;
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1];
	int			lbs[1];

	for (int i = 0; i < n; i++)
	{
		nulls[i] = (texts[i] == NULL);
		elems[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(texts[i]);
	}
	if (n == 0)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	dims[0] = n;
	lbs[0] = 1;
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
											  TEXTOID, -1, false, TYPALIGN_INT));
}

/* Build a json object {"col": "text", ...} from decoded texts. */
static Datum
TextsToJson(DecodeCache *cache, char **texts)
{
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i < cache->natts; i++)
	{
		if (cache->dropped[i])
			continue;
		if (!first)
			appendStringInfoString(&buf, ", ");
		first = false;
		escape_json(&buf, cache->names[i]);
		appendStringInfoString(&buf, ": ");
		if (texts[i] == NULL)
			appendStringInfoString(&buf, "null");
		else
			escape_json(&buf, texts[i]);
	}
	appendStringInfoChar(&buf, '}');
	return PointerGetDatum(cstring_to_text_with_len(buf.data, buf.len));
}

/* row_values(relid, layout, img): column output texts by attnum. */
Datum
shapesync_row_values(PG_FUNCTION_ARGS)
{
	DecodeCache *cache;
	char	  **texts;

	DecodeImage(fcinfo, PG_GETARG_OID(0), PG_GETARG_INT32(1),
				PG_GETARG_BYTEA_P_COPY(2), true, &cache, &texts);
	PG_RETURN_DATUM(TextsToArray(cache, texts));
}

/* row_json(relid, layout, img): the row as a json object. */
Datum
shapesync_row_json(PG_FUNCTION_ARGS)
{
	DecodeCache *cache;
	char	  **texts;

	DecodeImage(fcinfo, PG_GETARG_OID(0), PG_GETARG_INT32(1),
				PG_GETARG_BYTEA_P_COPY(2), true, &cache, &texts);
	PG_RETURN_DATUM(TextsToJson(cache, texts));
}

/* row_values_or_null: as row_values, NULL if the table is gone or changed layout. */
Datum
shapesync_row_values_or_null(PG_FUNCTION_ARGS)
{
	DecodeCache *cache;
	char	  **texts;

	if (!DecodeImage(fcinfo, PG_GETARG_OID(0), PG_GETARG_INT32(1),
					 PG_GETARG_BYTEA_P_COPY(2), false, &cache, &texts))
		PG_RETURN_NULL();
	PG_RETURN_DATUM(TextsToArray(cache, texts));
}

/* row_json_or_null: as row_json, NULL if the table is gone or changed layout. */
Datum
shapesync_row_json_or_null(PG_FUNCTION_ARGS)
{
	DecodeCache *cache;
	char	  **texts;

	if (!DecodeImage(fcinfo, PG_GETARG_OID(0), PG_GETARG_INT32(1),
					 PG_GETARG_BYTEA_P_COPY(2), false, &cache, &texts))
		PG_RETURN_NULL();
	PG_RETURN_DATUM(TextsToJson(cache, texts));
}

/*
 * The batch reader's decoder: what row_values_or_null() does per call, with
 * the table opened, its privilege checked and its layout hashed once per
 * table and reader call rather than once per image, and the text[] built in
 * one allocation.  Tables stay open (and locked, as row_values_or_null()
 * leaves them) until ShapesyncDecoderClose().
 */
typedef struct DecoderTable
{
	Oid			relid;
	Relation	rel;			/* NULL: the table is gone */
	int32		layout;			/* its current layout hash */
	int			natts;
	FmgrInfo   *out;
	bool	   *dropped;
} DecoderTable;

struct ShapesyncDecoder
{
	MemoryContext cxt;
	DecoderTable *tables;
	int			ntables;
	int			cap;
	DecoderTable *last;			/* the table of the previous image */
	Datum	   *values;			/* heap_deform_tuple output, widest table */
	bool	   *nulls;
	char	  **texts;
	int			width;
};

/* A decoder whose state lives in cxt. */
ShapesyncDecoder *
ShapesyncDecoderCreate(MemoryContext cxt)
{
	ShapesyncDecoder *d = MemoryContextAllocZero(cxt, sizeof(ShapesyncDecoder));

	d->cxt = cxt;
	return d;
}

/* Open table relid for decoding, as DecodeImage() does (same errors). */
static DecoderTable *
DecoderOpen(ShapesyncDecoder *d, Oid relid)
{
	DecoderTable *t;
	Relation	rel;
	MemoryContext oldcxt;

	for (int i = 0; i < d->ntables; i++)
		if (d->tables[i].relid == relid)
			return &d->tables[i];

	oldcxt = MemoryContextSwitchTo(d->cxt);
	if (d->ntables == d->cap)
	{
		d->cap = d->cap == 0 ? 8 : d->cap * 2;
		d->tables = d->tables == NULL ? palloc(sizeof(DecoderTable) * d->cap) :
			repalloc(d->tables, sizeof(DecoderTable) * d->cap);
		d->last = NULL;
	}
	t = &d->tables[d->ntables];
	memset(t, 0, sizeof(*t));
	t->relid = relid;

	rel = try_relation_open(relid, AccessShareLock);
	if (rel != NULL)
	{
		TupleDesc	tupdesc = RelationGetDescr(rel);

		CheckReadableTable(rel);
		t->rel = rel;
		t->layout = ShapesyncLayoutHash(tupdesc);
		t->natts = tupdesc->natts;
		t->out = palloc0(sizeof(FmgrInfo) * Max(t->natts, 1));
		t->dropped = palloc0(sizeof(bool) * Max(t->natts, 1));
		for (int i = 0; i < t->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, i);
			Oid			typoutput;
			bool		isvarlena;

			t->dropped[i] = att->attisdropped;
			if (att->attisdropped)
				continue;
			getTypeOutputInfo(att->atttypid, &typoutput, &isvarlena);
			fmgr_info_cxt(typoutput, &t->out[i], d->cxt);
		}
		if (t->natts > d->width)
		{
			d->width = t->natts;
			d->values = palloc(sizeof(Datum) * d->width);
			d->nulls = palloc(sizeof(bool) * d->width);
			d->texts = palloc(sizeof(char *) * d->width);
		}
	}
	d->ntables++;
	MemoryContextSwitchTo(oldcxt);
	return t;
}

/* A text[] (lower bound 1) of texts[0..n), NULL entries as NULLs, built in place. */
static Datum
CStringsToTextArray(char **texts, int n)
{
	Size		datalen = 0;
	bool		hasnulls = false;
	Size		overhead;
	Size		total;
	ArrayType  *a;
	char	   *p;
	bits8	   *bitmap;

	if (n == 0)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	for (int i = 0; i < n; i++)
	{
		if (texts[i] == NULL)
			hasnulls = true;
		else
			datalen = INTALIGN(datalen + VARHDRSZ + strlen(texts[i]));
	}
	overhead = hasnulls ? ARR_OVERHEAD_WITHNULLS(1, n) : ARR_OVERHEAD_NONULLS(1);
	total = overhead + datalen;
	if (!AllocSizeIsValid(total))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("array size exceeds the maximum allowed (%d)",
						(int) MaxAllocSize)));
	a = (ArrayType *) palloc0(total);
	SET_VARSIZE(a, total);
	a->ndim = 1;
	a->dataoffset = hasnulls ? (int32) overhead : 0;
	a->elemtype = TEXTOID;
	ARR_DIMS(a)[0] = n;
	ARR_LBOUND(a)[0] = 1;
	bitmap = ARR_NULLBITMAP(a);
	p = (char *) a + overhead;
	for (int i = 0; i < n; i++)
	{
		if (texts[i] != NULL)
		{
			Size		len = strlen(texts[i]);

			SET_VARSIZE(p, VARHDRSZ + len);
			memcpy(VARDATA(p), texts[i], len);
			p += INTALIGN(VARHDRSZ + len);
			if (bitmap)
				bitmap[i / 8] |= 1 << (i % 8);
		}
	}
	Assert(p == (char *) a + total);
	return PointerGetDatum(a);
}

/*
 * The output texts of img by attnum (NULL for NULL and dropped columns), *n
 * of them, as row_values_or_null(relid, layout, img) gives them; NULL when
 * the table is gone or its layout changed; the same errors.  img must be
 * MAXALIGNed and not TOASTed.  The array is the decoder's, valid until its
 * next decode; the texts are allocated in CurrentMemoryContext.
 */
char	  **
ShapesyncDecodeTexts(ShapesyncDecoder *d, Oid relid, int32 layout, bytea *img, int *n)
{
	DecoderTable *t = d->last;
	HeapTupleData tuple;

	if (t == NULL || t->relid != relid)
		t = d->last = DecoderOpen(d, relid);
	if (t->rel == NULL || t->layout != layout)
		return NULL;
	CheckImage(t->rel, img);

	tuple.t_len = VARSIZE(img);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = relid;
	tuple.t_data = (HeapTupleHeader) img;
	heap_deform_tuple(&tuple, RelationGetDescr(t->rel), d->values, d->nulls);
	for (int i = 0; i < t->natts; i++)
		d->texts[i] = (t->dropped[i] || d->nulls[i]) ? NULL :
			OutputFunctionCall(&t->out[i], d->values[i]);
	*n = t->natts;
	return d->texts;
}

/*
 * The same for an UPDATE's old image, which may hold only the columns the
 * update changed: those from it, every other column from new_img (the
 * same row back as change_entries() gives).
 */
char	  **
ShapesyncDecodeOldTexts(ShapesyncDecoder *d, Oid relid, int32 layout, bytea *old_img,
						bytea *new_img, int *n)
{
	DecoderTable *t;

	if (!ShapesyncIsDeltaImage(old_img))
		return ShapesyncDecodeTexts(d, relid, layout, old_img, n);
	t = d->last;
	if (t == NULL || t->relid != relid)
		t = d->last = DecoderOpen(d, relid);
	if (t->rel == NULL || t->layout != layout)
		return NULL;
	if (new_img == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("invalid old row image for table \"%s\"", RelationGetRelationName(t->rel)),
				 errdetail("It holds only the columns the update changed, and the change has no new row.")));
	return ShapesyncDecodeTexts(d, relid, layout,
								(bytea *) ShapesyncExpandOldImage(RelationGetDescr(t->rel),
																  new_img, old_img),
								n);
}

/*
 * row_values_or_null(relid, layout, img) for the batch reader: the texts
 * of ShapesyncDecodeTexts() as a text[], *isnull when the table is gone or
 * its layout changed.  Allocates the result (and garbage) in
 * CurrentMemoryContext.
 */
Datum
ShapesyncDecodeValuesOrNull(ShapesyncDecoder *d, Oid relid, int32 layout, bytea *img,
							bool *isnull)
{
	int			n;
	char	  **texts = ShapesyncDecodeTexts(d, relid, layout, img, &n);

	*isnull = texts == NULL;
	return texts == NULL ? (Datum) 0 : CStringsToTextArray(texts, n);
}

/* The same for an UPDATE's old image (ShapesyncDecodeOldTexts()). */
Datum
ShapesyncDecodeOldValuesOrNull(ShapesyncDecoder *d, Oid relid, int32 layout, bytea *old_img,
							   bytea *new_img, bool *isnull)
{
	int			n;
	char	  **texts = ShapesyncDecodeOldTexts(d, relid, layout, old_img, new_img, &n);

	*isnull = texts == NULL;
	return texts == NULL ? (Datum) 0 : CStringsToTextArray(texts, n);
}

/* Close the tables the decoder opened (their locks stay until the end of the transaction). */
void
ShapesyncDecoderClose(ShapesyncDecoder *d)
{
	for (int i = 0; i < d->ntables; i++)
		if (d->tables[i].rel != NULL)
			relation_close(d->tables[i].rel, NoLock);
	d->ntables = 0;
	d->last = NULL;
}
