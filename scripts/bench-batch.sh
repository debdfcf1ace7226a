#!/usr/bin/env bash
# bench-batch.sh — shapesync.batch() alone: pgbench writes a fixed change log
# (the workload of bench-throughput.sh: 100-row INSERT ... SELECT and 100-row
# UPDATE transactions on a tracked table with equality shapes), the ticker
# worker ticks it, then one session reads every tick's batch with the C reader
# (shapesync.batch) and the SQL formulation it replaced (shapesync.batch_sql,
# the reference), alternating, and compares their output.
#
#   scripts/bench-batch.sh [--seconds 10] [--rounds 3] [--shapes 1000] [--keep]
#
# Prints rows per round, seconds per reader and the ratio; --keep leaves the
# cluster running (its URL is printed) for perf record on a backend.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_W=10
ROUNDS=3
SHAPES=1000
KEEP=0
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) SECONDS_W=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--shapes) SHAPES=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	*) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
PGBIN=$("${PG_CONFIG:-pg_config}" --bindir)
WORK=$(mktemp -d /tmp/shapesync-batch.XXXXXX)
chmod 755 "$WORK"
cleanup() {
	if [ "$KEEP" = 0 ]; then
		scripts/pgcluster.sh destroy "$WORK/pg" >/dev/null 2>&1 || true
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
PGPORT=$(scripts/pgcluster.sh free-port)
URL=$(SHAPESYNC_PG_FSYNC=off scripts/pgcluster.sh start "$WORK/pg" "$PGPORT" bench 2>/dev/null | tail -n1)
q() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -XAtq -v ON_ERROR_STOP=1 "$URL" "$@"; }

NROWS=$((SHAPES * 200))
q -c "CREATE TABLE tp (id bigint PRIMARY KEY, owner_id int NOT NULL, v text, n int)" \
	-c "INSERT INTO tp SELECT g, (g - 1) % $SHAPES + 1, 'row ' || g, 0 FROM generate_series(1, $NROWS) g" \
	-c "CREATE SEQUENCE tp_ids START $((NROWS + 1))" -c "VACUUM ANALYZE tp" \
	-c "SELECT shapesync.track('tp')" \
	-c "SELECT count(*) FROM generate_series(1, $SHAPES) k, LATERAL shapesync.get_or_create_shape('tp', 'owner_id = ' || k, NULL) s" >/dev/null
cat >"$WORK/ins.sql" <<'SQL'
\set o random(1, :owners)
INSERT INTO tp (id, owner_id, v, n)
SELECT nextval('tp_ids'), (:o + g * 7919) % :owners + 1, 'inserted row ' || g, 0 FROM generate_series(1, 100) g;
SQL
cat >"$WORK/upd.sql" <<'SQL'
\set lo random(1, :nrows - 99)
UPDATE tp SET n = n + 1 WHERE id BETWEEN :lo AND :lo + 99;
SQL
T0=$(q -c "SELECT max(tick_id) FROM shapesync.ticks")
"$PGBIN/pgbench" -n -M prepared -c 2 -j 1 -T "$SECONDS_W" -D owners="$SHAPES" -D nrows="$NROWS" \
	-f "$WORK/ins.sql@1" -f "$WORK/upd.sql@1" -h 127.0.0.1 -p "$PGPORT" -U postgres bench >"$WORK/pgbench.out" 2>&1
sleep 1
q -c "SELECT shapesync.tick(true)" >/dev/null
T1=$(q -c "SELECT max(tick_id) FROM shapesync.ticks")
echo "log: $(q -c "SELECT (SELECT count(*) FROM shapesync.changes) || ' records, ' || pg_size_pretty(sum(bytes)) FROM shapesync.log_tables"), ticks $((T0 + 1))..$T1"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"

# same session, alternating readers; the first pass warms caches
q <<SQL
\timing off
SELECT 'rows new ' || sum(n) FROM (SELECT (SELECT count(*) FROM shapesync.batch(t)) n FROM generate_series($((T0 + 1)), $T1) t) s;
SELECT 'rows ref ' || sum(n) FROM (SELECT (SELECT count(*) FROM shapesync.batch_sql(t)) n FROM generate_series($((T0 + 1)), $T1) t) s;
SELECT 'differences ' || count(*) FROM generate_series($((T0 + 1)), $T1) t,
  LATERAL (SELECT * FROM (SELECT row_number() OVER () n, b.* FROM shapesync.batch(t) b) x
           FULL JOIN (SELECT row_number() OVER () n, r.* FROM shapesync.batch_sql(t) r) y USING (n)
           WHERE x IS DISTINCT FROM y) d;
SQL
for r in $(seq 1 "$ROUNDS"); do
	for f in batch batch_sql; do
		s=$(date +%s.%N)
		q -c "SELECT sum(n) FROM (SELECT (SELECT count(*) FROM shapesync.$f(t)) n FROM generate_series($((T0 + 1)), $T1) t) s" >/dev/null
		e=$(date +%s.%N)
		printf 'round %s %-10s %.3f s  load %s\n' "$r" "$f" "$(echo "$e - $s" | bc)" "$(cut -d' ' -f1 /proc/loadavg)"
	done
done
[ "$KEEP" = 0 ] || echo "cluster kept: $URL (ticks $((T0 + 1))..$T1; stop with scripts/pgcluster.sh destroy $WORK/pg)"
