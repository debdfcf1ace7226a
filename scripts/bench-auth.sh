#!/usr/bin/env bash
# bench-auth.sh — what authorization costs (program: bench/auth.cpp). Prints Markdown.
#
#   scripts/bench-auth.sh [--count N] [--rows N] [--no-fresh] [--cache-tokens N,N,...] [--perf DIR]
#
# - verifications per second of the JWT verifier, its cache and the whole gate;
# - how the gate's per-token memory behaves with N users' tokens in use;
# - GET /v1/shape latency against sidecars of one throwaway cluster in the
#   same run, one request to each per round in a random order: two without a
#   key (--insecure; the second gets the token's header, which it ignores: an
#   A/A control), one with --jwt-secret and the same token every time, and
#   (unless --no-fresh) one with --jwt-secret and a new token every time. The
#   table has row-level security with an `owner = <the token's sub>` policy,
#   and every request asks for `where=owner='user-1'`: the sidecars without a
#   key (the superuser: no RLS) and those with a key (role `authenticated`,
#   the policy folded into the shape) serve the same 100 rows of the same
#   request target. Also CPU per request of each sidecar process and the
#   database transactions per request during the timed requests. Last, a
#   control with no key anywhere in the first version's layout (two requests
#   per round to one process, one to the other).
#
# --perf DIR: perf record every sidecar during the timed requests (DIR/<name>.data).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COUNT=3000
ROWS=100
FRESH=1
CACHE_TOKENS=1,1000,10000,20000,100000
PERF_DIR=""
ARGS="$*"
while [ $# -gt 0 ]; do
	case $1 in
	--count) COUNT=$2; shift 2 ;;
	--rows) ROWS=$2; shift 2 ;;
	--no-fresh) FRESH=0; shift ;;
	--cache-tokens) CACHE_TOKENS=$2; shift 2 ;;
	--perf) PERF_DIR=$2; shift 2 ;;
	*) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
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
INSERT INTO bench_auth SELECT g, 'user-' || (g % 10), 'row ' || g FROM generate_series(1, $ROWS * 10) g;
SELECT shapesync.track('bench_auth');
ALTER TABLE bench_auth ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON bench_auth FOR SELECT TO authenticated
  USING (owner = current_setting('request.jwt.claims', true)::json->>'sub');
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
P1=$(scripts/pgcluster.sh free-port); start "$P1" --insecure
P2=$(scripts/pgcluster.sh free-port); start "$P2" --insecure
P3=$(scripts/pgcluster.sh free-port); start "$P3" --jwt-secret "$SECRET"
NAMES=(open open2 auth)
FRESH_ARGS=()
if [ "$FRESH" = 1 ]; then
	P4=$(scripts/pgcluster.sh free-port); start "$P4" --jwt-secret "$SECRET"
	NAMES+=(auth-fresh)
	FRESH_ARGS=(--auth-fresh "127.0.0.1:$P4")
fi

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($CPU), PostgreSQL $(psql -XAtq "$URL" -c 'SHOW server_version'), fsync off;"
echo "client, sidecars and server on one machine over loopback; sidecar from commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sidecar bench || echo ' + uncommitted changes')."
echo "Command: \`scripts/bench-auth.sh${ARGS:+ $ARGS}\`."
echo
# CPU time of a process (user + system, clock ticks); busy CPU of the machine
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
commits() { psql -XAtq "$URL" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"; }
# 1, 2: in-process (verifications, the gate's per-token memory)
build/auth --secret "$SECRET" --sub user-1 --cache-tokens "$CACHE_TOKENS"
# 3: latency, with CPU and database transactions counted over this part only
declare -A C0 C1
for i in "${!NAMES[@]}"; do C0[$i]=$(cpu_ticks "${PIDS[$i]}"); done
if [ -n "$PERF_DIR" ]; then
	mkdir -p "$PERF_DIR"
	PERF_PIDS=()
	for i in "${!NAMES[@]}"; do
		perf record -F 2999 -p "${PIDS[$i]}" -o "$PERF_DIR/${NAMES[$i]}.data" >/dev/null 2>&1 &
		PERF_PIDS+=($!)
	done
	sleep 1
fi
m0=$(machine_busy); x0=$(commits); self0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat); t0=$(date +%s%N)
build/auth --open "127.0.0.1:$P1" --open2 "127.0.0.1:$P2" --auth "127.0.0.1:$P3" "${FRESH_ARGS[@]}" \
	--secret "$SECRET" --sub user-1 --target "/v1/shape?table=bench_auth&offset=-1&where=owner%3D%27user-1%27" \
	--count "$COUNT" --latency-only 1
t1=$(date +%s%N); self1=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat); m1=$(machine_busy)
for i in "${!NAMES[@]}"; do C1[$i]=$(cpu_ticks "${PIDS[$i]}"); done
if [ -n "$PERF_DIR" ]; then
	for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
fi
# idle backends publish their transaction counts within 10 s (PostgreSQL 15's PGSTAT_IDLE_INTERVAL)
sleep 11
x1=$(commits)
HZ=$(getconf CLK_TCK)
N=$((COUNT + 50))	# requests each sidecar served in the run (50 warm-up)
echo
line="CPU per request, whole process (user+system, ${HZ} Hz ticks, over the latency run: $N requests each):"
for i in "${!NAMES[@]}"; do
	line+=" ${NAMES[$i]} $(awk -v t=$((C1[$i] - C0[$i])) -v n=$N -v hz="$HZ" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') µs;"
done
echo "${line%;}."
echo "Database transactions (pg_stat_database commits + rollbacks) from the start of the latency run to 11 s after its end: $((x1 - x0 - 1)) for $((N * ${#NAMES[@]})) requests (the ticker's and the sidecars' own background work included$([ "$FRESH" = 1 ] && echo "; each new token's registration is a few"))."
# other load: machine busy time not spent by this script's processes (bench program, sidecars)
echo "Other load on the machine during the run: $(awk -v m=$((m1 - m0)) -v s=$((self1 - self0)) -v c="$(for i in "${!NAMES[@]}"; do echo $((C1[$i] - C0[$i])); done | paste -sd+ | bc)" \
	-v ns=$((t1 - t0)) -v hz="$HZ" -v n="$(nproc)" 'BEGIN { o = (m - s - c) / hz / (ns / 1e9) / n * 100; if (o < 0) o = 0; printf "%.0f", o }')% of the machine's CPUs (busy time outside this benchmark's client and sidecars; PostgreSQL's own work counts as other)."
# the first version of this benchmark's layout, with no key anywhere (see bench/auth.cpp --old-layout)
echo
echo "Control for the first version's layout (two requests per round to one process, one to the other; no key anywhere):"
build/auth --latency-only 1 --old-layout 1 --open "127.0.0.1:$P1" --open2 "127.0.0.1:$P2" --secret "$SECRET" \
	--target "/v1/shape?table=bench_auth&offset=-1&where=owner%3D%27user-1%27" --count "$COUNT"
