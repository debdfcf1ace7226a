#!/usr/bin/env bash
# bench-newshapes.sh — new shapes per second over HTTP, and the reconnect storm
# (issue 15). Program: bench/newshapes.cpp.
#
#   scripts/bench-newshapes.sh [--shapes 100000] [--new 20000] [--conns 64]
#                              [--storm-conns 16000] [--no-storm] [--keep-log FILE]
#                              [--statements] [--perf]
#
# --statements: pg_stat_statements in the server, its top statements after each phase.
# --perf: perf record of the sidecar during storm b (top symbols printed).
#
# A table tp (2 rows per owner), --shapes equality shapes `owner_id = k`
# registered in SQL first; then, twice, --new other owners' shapes requested
# over HTTP from offset=-1 to up-to-date, --conns at a time (new shapes per
# second, per-shape latency, CPU of the sidecar, PostgreSQL and the load
# client): a = one shape at a time (--snapshot-batch 1 --registration-batch 1, the path before issue
# 15), b = this build's defaults. Then the reconnect storm, twice (a, b): 1 000
# rows of b's owners change while the sidecar is down, a new sidecar starts and
# every one of b's shapes comes back with its handle and offset at once
# (--storm-conns connections open at a time: this machine's descriptor limit is
# 20 000 per process) until all are up to date; and the same storm against a
# trivial server (the load client's own ceiling). Prints KV lines.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHAPES=100000
NEW=20000
CONNS=64
STORM_CONNS=16000
STORM=1
KEEP_LOG=
STATEMENTS=0
PERF=0
while [ $# -gt 0 ]; do
	case $1 in
	--shapes) SHAPES=$2; shift 2 ;;
	--new) NEW=$2; shift 2 ;;
	--conns) CONNS=$2; shift 2 ;;
	--storm-conns) STORM_CONNS=$2; shift 2 ;;
	--no-storm) STORM=0; shift ;;
	--keep-log) KEEP_LOG=$2; shift 2 ;;
	--statements) STATEMENTS=1; shift ;;
	--perf) PERF=1; shift ;;
	*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
BIN=${SHAPESYNC_BUILD:-build}
[ -x "$BIN/newshapes" ] && [ -x "$BIN/shapesyncd" ] ||
	{ echo "build first: cmake --build build --target shapesyncd newshapes" >&2; exit 1; }
PGBIN=$("${PG_CONFIG:-pg_config}" --bindir)

WORK=$(mktemp -d /tmp/shapesync-newshapes.XXXXXX)
chmod 755 "$WORK"
SIDECAR_PID=
TRIVIAL_PID=
stop_sidecar() {
	[ -n "$SIDECAR_PID" ] || return 0
	kill "$SIDECAR_PID" 2>/dev/null || true
	for _ in $(seq 1 150); do
		kill -0 "$SIDECAR_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$SIDECAR_PID" 2>/dev/null || true
	SIDECAR_PID=
}
cleanup() {
	stop_sidecar
	[ -z "$TRIVIAL_PID" ] || kill "$TRIVIAL_PID" 2>/dev/null || true
	[ -z "$KEEP_LOG" ] || cat "$WORK"/shapesyncd*.log >"$KEEP_LOG" 2>/dev/null || true
	scripts/pgcluster.sh destroy "$WORK/pg" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PGPORT=$(scripts/pgcluster.sh free-port)
URL=$(SHAPESYNC_PG_FSYNC=off scripts/pgcluster.sh start "$WORK/pg" "$PGPORT" bench 2>/dev/null | tail -n1)
psql_q() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -XAtq -v ON_ERROR_STOP=1 "$URL" "$@"; }
psql_q -c "ALTER SYSTEM SET shared_buffers = '512MB'" -c "ALTER SYSTEM SET jit = off" \
	-c "ALTER SYSTEM SET max_connections = 200" >/dev/null
# --statements: pg_stat_statements (server time per top-level statement) over each create phase
[ "$STATEMENTS" = 0 ] || psql_q -c "ALTER SYSTEM SET shared_preload_libraries = shapesync, pg_stat_statements" >/dev/null
SHAPESYNC_PG_FSYNC=off scripts/pgcluster.sh start "$WORK/pg" "$PGPORT" bench >/dev/null 2>&1
POSTMASTER=$(head -n1 "$WORK/pg/data/postmaster.pid")
OWNERS=$((SHAPES + 2 * NEW))
psql_q <<SQL
CREATE TABLE tp (id bigint PRIMARY KEY, owner_id int NOT NULL, v text, n int NOT NULL DEFAULT 0);
INSERT INTO tp SELECT g, (g - 1) % $OWNERS + 1, 'row ' || g, 0 FROM generate_series(1, 2 * $OWNERS) g;
CREATE INDEX ON tp (owner_id);
VACUUM ANALYZE tp;
$([ "$STATEMENTS" = 0 ] || echo "CREATE EXTENSION pg_stat_statements;")
SELECT shapesync.track('tp');
SQL
T=$(date +%s.%N)
for lo in $(seq $((2 * NEW + 1)) 10000 $OWNERS); do
	hi=$((lo + 9999)); [ $hi -le $OWNERS ] || hi=$OWNERS
	psql_q -c "SELECT count(*) FROM generate_series($lo, $hi) k, LATERAL shapesync.get_or_create_shape('tp', 'owner_id = ' || k, NULL) s" >/dev/null
done
echo "KV sql_registered $SHAPES"
echo "KV sql_register_s $(python3 -c "import time; print('%.1f' % (time.time() - $T))")"

start_sidecar() {
	HTTPPORT=$(scripts/pgcluster.sh free-port)
	"$BIN/shapesyncd" --database-url "$URL" --listen "127.0.0.1:$HTTPPORT" --data-dir "$WORK/sidecar-data" \
		--insecure --max-connections-per-address 0 ${SHAPESYNC_SIDECAR_ARGS:-} >>"$WORK/shapesyncd.$1.log" 2>&1 &
	SIDECAR_PID=$!
	disown "$SIDECAR_PID"
	for _ in $(seq 1 100); do
		curl -sf "http://127.0.0.1:$HTTPPORT/v1/health" | grep -q active && return 0
		sleep 0.1
	done
	echo "shapesyncd did not become healthy" >&2; cat "$WORK/shapesyncd.$1.log" >&2; exit 1
}
# A: the one-shape-at-a-time path (--snapshot-batch 1) on owners 1..NEW;
# B: this build's defaults on owners NEW+1..2*NEW. Same run, same machine.
statements() {  # name: the server time per statement since the last reset
	[ "$STATEMENTS" = 0 ] || psql_q -F ' | ' -c "SELECT calls, round(total_exec_time::numeric, 1) AS ms,
		round((total_exec_time / $NEW)::numeric, 3) AS ms_per_shape, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
		FROM pg_stat_statements WHERE toplevel ORDER BY total_exec_time DESC LIMIT 16" | sed "s/^/STMT $1 /"
	[ "$STATEMENTS" = 0 ] || psql_q -c "SELECT pg_stat_statements_reset()" >/dev/null
}
phase_create() {  # name first sidecar-args...
	local name=$1 first=$2
	shift 2
	SHAPESYNC_SIDECAR_ARGS="$*" start_sidecar "$name"
	echo "KV ${name}_load_before $(cut -d' ' -f1-3 /proc/loadavg)"
	statements none >/dev/null
	"$BIN/newshapes" --http "127.0.0.1:$HTTPPORT" --mode create --first "$first" --count "$NEW" --conns "$CONNS" \
		--state "$WORK/state.$name" --sidecar-pid "$SIDECAR_PID" --postmaster "$POSTMASTER" | sed "s/^KV /KV ${name}_create_/"
	echo "KV ${name}_load_after $(cut -d' ' -f1-3 /proc/loadavg)"
	statements "$name"
	stop_sidecar
}
phase_storm() {  # name state sidecar-args...
	local name=$1 state=$2
	shift 2
	# changes while the sidecar is down: the storm's catch-up has something to bring.
	# Rows NEW+1..2*NEW are owned by b's owners (row i belongs to owner i while
	# i <= OWNERS): 1 000 distinct rows of b's shapes (before, the ids fell in
	# a's owners and the storm brought back no entry at all).
	psql_q -c "UPDATE tp SET n = n + 1 WHERE id IN (SELECT $NEW + 1 + (g * 7) % $NEW FROM generate_series(1, 1000) g)" >/dev/null
	SHAPESYNC_SIDECAR_ARGS="$*" start_sidecar "$name"
	echo "KV ${name}_load_before $(cut -d' ' -f1-3 /proc/loadavg)"
	statements none >/dev/null
	local perf_pid=
	if [ "$PERF" = 1 ] && [ "$name" = storm_b ]; then
		perf record -q -g -p "$SIDECAR_PID" -o "$WORK/perf.data" >/dev/null 2>&1 &
		perf_pid=$!
		sleep 0.5
	fi
	"$BIN/newshapes" --http "127.0.0.1:$HTTPPORT" --mode resume --state "$state" --conns "$STORM_CONNS" \
		--sidecar-pid "$SIDECAR_PID" --postmaster "$POSTMASTER" | sed "s/^KV /KV ${name}_/"
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid"; wait "$perf_pid" || true
		perf report -i "$WORK/perf.data" --stdio --no-children --sort symbol -g none 2>/dev/null |
			grep -E '^ +[0-9.]+%' | head -n 25 | cut -c1-150 | sed "s/^/PERF /"
	fi
	echo "KV ${name}_load_after $(cut -d' ' -f1-3 /proc/loadavg)"
	statements "$name"
	stop_sidecar
}
phase_create a 1 --snapshot-batch 1 --registration-batch 1
phase_create b $((NEW + 1))
[ "$STORM" = 1 ] || exit 0
phase_storm storm_a "$WORK/state.b" --snapshot-batch 1 --registration-batch 1
phase_storm storm_b "$WORK/state.b"

TPORT=$(scripts/pgcluster.sh free-port)
"$BIN/newshapes" --serve-trivial "$TPORT" &
TRIVIAL_PID=$!
sleep 0.3
"$BIN/newshapes" --http "127.0.0.1:$TPORT" --mode resume --state "$WORK/state.b" --conns "$STORM_CONNS" \
	--sidecar-pid "$TRIVIAL_PID" | sed 's/^KV /KV trivial_/'
kill "$TRIVIAL_PID"; TRIVIAL_PID=
echo "KV load_end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "KV commit $(git rev-parse --short HEAD)"
