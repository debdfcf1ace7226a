
------------------------------------------------------------------------
-- Shape snapshots: the truth every sidecar serves a shape from.
--
-- The first sidecar to build a shape (under an advisory lock on its
-- shape_id) stores the snapshot's pg_snapshot, the last tick it contains
-- and its chunks here; every other sidecar, and the same one after a
-- restart, loads them and rebuilds the log from the change log, so
-- handles, offsets and bodies are the same everywhere.
------------------------------------------------------------------------

CREATE TABLE shapesync.shape_snapshots (
    handle      text PRIMARY KEY,
    snap        pg_catalog.pg_snapshot NOT NULL,
    start_tick  bigint NOT NULL,
    chunk_count int CHECK (chunk_count > 0),
    row_count   bigint,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE shapesync.shape_snapshots IS
    'One row per built shape: the snapshot it was taken at and the last tick it contains.';
COMMENT ON COLUMN shapesync.shape_snapshots.chunk_count IS
    'NULL while its builder (holding advisory lock (21320, shape_id)) streams it to clients and stores it; a NULL row whose lock is free was abandoned: the shape is retired, never rebuilt under the same handle.';

CREATE TABLE shapesync.shape_snapshot_chunks (
    handle   text NOT NULL REFERENCES shapesync.shape_snapshots ON DELETE CASCADE,
    chunk_no int NOT NULL,
    body     text NOT NULL,
    PRIMARY KEY (handle, chunk_no)
);
ALTER TABLE shapesync.shape_snapshot_chunks ALTER COLUMN body SET COMPRESSION lz4;
COMMENT ON TABLE shapesync.shape_snapshot_chunks IS
    'The wire bodies (JSON arrays) of each shape''s snapshot chunks, byte for byte.';

CREATE FUNCTION shapesync.gc_snapshots() RETURNS bigint
    LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM shapesync.shape_snapshots s
         WHERE NOT EXISTS (SELECT 1 FROM shapesync.shapes r
                            WHERE r.handle = s.handle AND r.state = 'active')
        RETURNING 1)
    SELECT count(*) FROM gone;
$$;
COMMENT ON FUNCTION shapesync.gc_snapshots() IS
    'Drop the stored snapshots of shapes that are no longer active; returns how many.';

REVOKE ALL ON shapesync.shape_snapshots, shapesync.shape_snapshot_chunks FROM PUBLIC;
REVOKE ALL ON FUNCTION shapesync.gc_snapshots() FROM PUBLIC;
