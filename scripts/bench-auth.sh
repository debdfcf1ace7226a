#!/usr/bin/env bash
# bench-auth.sh — what authorization costs: verifications per second of the JWT
# verifier (and its cache), and GET /v1/shape latency against two sidecars of
# one throwaway cluster in the same run, one without a key (--insecure) and one
# with --jwt-secret (program: bench/auth.cpp). Prints Markdown.
#
#   scripts/bench-auth.sh [--count N] [--rows N]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COUNT=2000
ROWS=100
while [ $# -gt 0 ]; do
	case $1 in
	--count) COUNT=$2; shift 2 ;;
	--rows) ROWS=$2; shift 2 ;;
	*) echo "usage: $0 [--count N] [--rows N]" >&2; exit 2 ;;
	esac
done
[ -x build/auth ] && [ -x build/shapesyncd ] || { echo "build first: cmake --build build --target shapesyncd auth" >&2; exit 1; }

WORK=$(mktemp -d /tmp/shapesync-bench-auth.XXXXXX)
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
CREATE TABLE bench_auth (id int PRIMARY KEY, owner text, title text);
INSERT INTO bench_auth SELECT g, 'user-' || (g % 10), 'row ' || g FROM generate_series(1, $ROWS) g;
SELECT shapesync.track('bench_auth');
GRANT SELECT ON bench_auth TO authenticated;
SQL
start() {
	local port=$1; shift
	build/shapesyncd --database-url "$URL" --listen "127.0.0.1:$port" --data-dir "$WORK/data-$port" "$@" \
		>"$WORK/shapesyncd-$port.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 1 100); do
		curl -sf "http://127.0.0.1:$port/v1/health" | grep -q active && return 0
		sleep 0.1
	done
	echo "sidecar on $port not healthy" >&2; cat "$WORK/shapesyncd-$port.log" >&2; exit 1
}
OPEN=$(scripts/pgcluster.sh free-port); start "$OPEN" --insecure
AUTH=$(scripts/pgcluster.sh free-port)
# SHAPESYNC_BENCH_AUTH_CONTROL=1: the second sidecar has no key either (an A/A run: what two processes differ by)
if [ -n "${SHAPESYNC_BENCH_AUTH_CONTROL:-}" ]; then start "$AUTH" --insecure; else start "$AUTH" --jwt-secret "$SECRET"; fi

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($CPU), PostgreSQL $(psql -XAtq "$URL" -c 'SHOW server_version'), fsync off;"
echo "client, sidecars and server on one machine over loopback. Command: \`scripts/bench-auth.sh --count $COUNT --rows $ROWS\`."
echo
# CPU time of each sidecar process over the run (user + system, clock ticks)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
OPEN_PID=${PIDS[0]} AUTH_PID=${PIDS[1]}
o0=$(cpu_ticks "$OPEN_PID") a0=$(cpu_ticks "$AUTH_PID")
build/auth --open "127.0.0.1:$OPEN" --auth "127.0.0.1:$AUTH" --secret "$SECRET" --table bench_auth --count "$COUNT" ${SHAPESYNC_BENCH_AUTH_FRESH:+--fresh "$SHAPESYNC_BENCH_AUTH_FRESH"}
o1=$(cpu_ticks "$OPEN_PID") a1=$(cpu_ticks "$AUTH_PID")
HZ=$(getconf CLK_TCK)
FRESH=${SHAPESYNC_BENCH_AUTH_FRESH:-1}
# requests each served: open 2 per round (+50 warm-up), auth 1 (+1 fresh) per round (+50)
echo
echo "CPU per request, whole process (user+system, ${HZ} Hz ticks): no key $(awk -v t=$((o1 - o0)) -v n=$((2 * COUNT + 50)) -v hz="$HZ" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') µs;" \
	"--jwt-secret $(awk -v t=$((a1 - a0)) -v n=$(((1 + (FRESH != 0)) * COUNT + 50)) -v hz="$HZ" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') µs$([ "$FRESH" != 0 ] && echo ' (half of its requests register a new token)')."

