#!/usr/bin/env bash
# bench-mutations.sh — what a write through POST /v1/mutations costs (issue 12):
# commit-to-own-echo latency on a live shape, and mutations/s through the
# sidecar (1 and N mutations per request, 1 and 2 clients) against the same
# updates sent with libpq (plain UPDATEs; shapesync.apply_mutations() called
# directly), one throwaway cluster and sidecar, all cases in one run
# (program: bench/mutations.cpp). Prints Markdown.
#
#   scripts/bench-mutations.sh [--seconds S] [--rounds R] [--echo N] [--echo-gap-ms MS] [--rows N] [--batch N] [--quick]
#
# The sidecar connects as a least-privilege login role (shapesync_sidecar:
# grant_sidecar() plus membership in `authenticated`), as tests/e2e does; the
# libpq cases use the same login and SET ROLE authenticated.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_PER_RUN=3 ROUNDS=3 ECHO=300 GAP=5 ROWS=10000 BATCH=100
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) SECONDS_PER_RUN=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--echo) ECHO=$2; shift 2 ;;
	--echo-gap-ms) GAP=$2; shift 2 ;;
	--rows) ROWS=$2; shift 2 ;;
	--batch) BATCH=$2; shift 2 ;;
	--quick) SECONDS_PER_RUN=1 ROUNDS=1 ECHO=50; shift ;;
	*) echo "usage: $0 [--seconds S] [--rounds R] [--echo N] [--echo-gap-ms MS] [--rows N] [--batch N] [--quick]" >&2; exit 2 ;;
	esac
done
[ -x build/mutations ] && [ -x build/shapesyncd ] || { echo "build first: cmake --build build --target shapesyncd mutations" >&2; exit 1; }

WORK=$(mktemp -d /tmp/shapesync-bench-mutations.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	scripts/pgcluster.sh destroy "$WORK/pg" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

SECRET=$(openssl rand -hex 32)
PGPORT=$(scripts/pgcluster.sh free-port)
URL=$(SHAPESYNC_PG_FSYNC=off scripts/pgcluster.sh start "$WORK/pg" "$PGPORT" bench 2>/dev/null | tail -n1)
psql -XAtq -v ON_ERROR_STOP=1 "$URL" >/dev/null <<SQL
CREATE ROLE authenticated NOLOGIN;
CREATE ROLE shapesync_sidecar LOGIN;
SELECT shapesync.grant_sidecar('shapesync_sidecar');
GRANT authenticated TO shapesync_sidecar;
CREATE TABLE bench_mut (id int PRIMARY KEY, owner_id uuid NOT NULL, n int NOT NULL, title text);
INSERT INTO bench_mut SELECT g, md5(g::text)::uuid, g, 'row ' || g FROM generate_series(1, $ROWS) g;
SELECT shapesync.track('bench_mut');
GRANT SELECT, INSERT, UPDATE, DELETE ON bench_mut TO authenticated;
SELECT shapesync.grant_writer('authenticated');
VACUUM ANALYZE bench_mut;
SQL
SIDECAR_URL=${URL/postgres@/shapesync_sidecar@}
HTTP=$(scripts/pgcluster.sh free-port)
build/shapesyncd --database-url "$SIDECAR_URL" --listen "127.0.0.1:$HTTP" --data-dir "$WORK/data" --jwt-secret "$SECRET" \
	>"$WORK/shapesyncd.log" 2>&1 &
PIDS+=($!)
SIDECAR_PID=$!
for _ in $(seq 1 100); do
	curl -sf "http://127.0.0.1:$HTTP/v1/health" | grep -q active && break
	sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTP/v1/health" | grep -q active || { echo "sidecar not healthy" >&2; cat "$WORK/shapesyncd.log" >&2; exit 1; }
POSTMASTER_PID=$(head -n1 "$WORK/pg/data/postmaster.pid")

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($CPU), $MEM, PostgreSQL $(psql -XAtq "$URL" -c 'SHOW server_version'), fsync off,"
echo "the extension as installed on the machine (shapesync $(psql -XAtq "$URL" -c "SELECT extversion FROM pg_extension WHERE extname = 'shapesync'")), sidecar built from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sidecar || echo ' + uncommitted changes');"
echo "client program, sidecar (default threads, --write-connections 2) and server on one machine over loopback; the sidecar logs in"
echo "as shapesync_sidecar (grant_sidecar + member of authenticated), every write acts as authenticated."
echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Command: \`scripts/bench-mutations.sh --seconds $SECONDS_PER_RUN --rounds $ROUNDS --echo $ECHO --echo-gap-ms $GAP --rows $ROWS --batch $BATCH\`."
echo
build/mutations --database-url "$SIDECAR_URL" --http "127.0.0.1:$HTTP" --secret "$SECRET" \
	--sidecar-pid "$SIDECAR_PID" --postmaster-pid "$POSTMASTER_PID" --table bench_mut --rows "$ROWS" \
	--seconds "$SECONDS_PER_RUN" --rounds "$ROUNDS" --echo "$ECHO" --echo-gap-ms "$GAP" --batch "$BATCH"
echo
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg). Rows in shapesync.mutation_log at the end: $(psql -XAtq "$URL" -c 'SELECT count(*) FROM shapesync.mutation_log')."
