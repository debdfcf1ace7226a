#!/usr/bin/env bash
# bench-latency.sh — commit-to-client latency of a live shape (one long-polling
# client, single-row transactions) next to the raw LISTEN/NOTIFY round trip,
# measured by build/latency in the same run against a throwaway cluster.
# Prints a Markdown section and, with --write, replaces the "Commit-to-client
# latency" section of bench/RESULTS.md. Beside the figures: the machine's
# other load during the run (CPU busy outside the cluster, the sidecar and
# this script's children, from /proc) and the load average.
#
#   scripts/bench-latency.sh [--count N] [--gap-ms MS] [--write]
#
# --gap-ms: a pause before each write (the pipeline idle in between, as an app's
# occasional writes leave it); 0 = the next write as soon as the last arrived.
#
# PG_CONFIG=/path/to/pg_config runs the cluster from that installation (for
# example a private copy with an uninstalled build of the extension);
# SHAPESYNCD=/path/to/shapesyncd runs that sidecar instead of build/shapesyncd.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COUNT=2000
GAP=0
WRITE=0
while [ $# -gt 0 ]; do
	case $1 in
	--count) COUNT=$2; shift 2 ;;
	--gap-ms) GAP=$2; shift 2 ;;
	--write) WRITE=1; shift ;;
	*) echo "usage: $0 [--count N] [--gap-ms MS] [--write]" >&2; exit 2 ;;
	esac
done
SHAPESYNCD=${SHAPESYNCD:-build/shapesyncd}
[ -x build/latency ] && [ -x "$SHAPESYNCD" ] || { echo "build first: make sidecar && cmake --build build --target benches" >&2; exit 1; }

WORK=$(mktemp -d /tmp/shapesync-bench.XXXXXX)
chmod 755 "$WORK"
SIDECAR_PID=
cleanup() {
	[ -n "$SIDECAR_PID" ] && kill "$SIDECAR_PID" 2>/dev/null && wait "$SIDECAR_PID" 2>/dev/null
	scripts/pgcluster.sh destroy "$WORK/pg" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

PGPORT=$(scripts/pgcluster.sh free-port)
URL=$(SHAPESYNC_PG_FSYNC=off scripts/pgcluster.sh start "$WORK/pg" "$PGPORT" bench 2>/dev/null | tail -n1)
HTTPPORT=$(scripts/pgcluster.sh free-port)
"$SHAPESYNCD" --database-url "$URL" --listen "127.0.0.1:$HTTPPORT" --insecure >"$WORK/shapesyncd.log" 2>&1 &
SIDECAR_PID=$!
for _ in $(seq 1 100); do
	curl -sf "http://127.0.0.1:$HTTPPORT/v1/health" | grep -q active && break
	sleep 0.1
done

# CPU time (clock ticks): a process (utime+stime, plus its reaped children
# with "c"); the cluster (postmaster, its children, the children it reaped);
# the whole machine (busy time of all CPUs)
proc_cpu() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] &&
		awk -v c="${2:-}" '{ sub(/^.*\) /, ""); print $12 + $13 + (c ? $14 + $15 : 0) }' "/proc/$1/stat" || echo 0
}
POSTMASTER_PID=$(head -n1 "$(realpath "$WORK/pg")/data/postmaster.pid")
cluster_cpu() {
	local t p
	t=$(proc_cpu "$POSTMASTER_PID" c)
	for p in $(pgrep -P "$POSTMASTER_PID" || true); do t=$((t + $(proc_cpu "$p"))); done
	echo "$t"
}
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
m0=$(machine_busy); k0=$(cluster_cpu); s0=$(proc_cpu "$SIDECAR_PID"); b0=$(proc_cpu $$ c); n0=$(date +%s%N)
if ! build/latency --database-url "$URL" --http "127.0.0.1:$HTTPPORT" --count "$COUNT" --gap-ms "$GAP" >"$WORK/latency.out"; then
	cp "$WORK/shapesyncd.log" /tmp/bench-latency-shapesyncd.log
	psql -XAtq "$URL" -c 'SELECT tick_id, snap, max_seq FROM shapesync.ticks ORDER BY 1 DESC LIMIT 5' \
		-c 'SELECT xid, seq, op, shape_ops FROM shapesync.changes ORDER BY seq DESC LIMIT 5' >&2 || true
	echo "bench-latency: failed; sidecar log in /tmp/bench-latency-shapesyncd.log" >&2
	exit 1
fi
n1=$(date +%s%N); b1=$(proc_cpu $$ c); s1=$(proc_cpu "$SIDECAR_PID"); k1=$(cluster_cpu); m1=$(machine_busy)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
TABLE=$(cat "$WORK/latency.out")
# % of all CPUs: ours (cluster + sidecar + the latency program), and the rest
read -r OURS OTHER < <(awk -v m="$((m1 - m0))" -v o="$((k1 - k0 + s1 - s0 + b1 - b0))" -v ns="$((n1 - n0))" \
	-v hz="$(getconf CLK_TCK)" -v ncpu="$(nproc)" \
	'BEGIN { d = hz * ns / 1e9 * ncpu; x = (m - o) / d * 100; if (x < 0) x = 0; printf "%.0f %.0f\n", o / d * 100, x }')
BUILT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- extension sql sidecar bench 2>/dev/null || BUILT="$BUILT + uncommitted changes"
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
PGV=$(psql -XAtq "$URL" -c 'SHOW server_version')
SECTION=$(cat <<EOT
## Commit-to-client latency

$(date -u +%Y-%m-%d), $(nproc) cores ($CPU), $MEM, PostgreSQL $PGV, fsync off, the extension's ticker
preloaded; client, sidecar and server on one machine over loopback.
Command: \`${PG_CONFIG:+PG_CONFIG=$PG_CONFIG }scripts/bench-latency.sh --count $COUNT${GAP:+ --gap-ms $GAP}\` (program: bench/latency.cpp), built from $BUILT.
Machine load during the run: this benchmark (cluster, sidecar, latency program) $OURS% of all CPUs, other work $OTHER%;
load average before/after: $LOAD_BEFORE / $LOAD_AFTER.
Each row is sent by a separate single-row INSERT transaction after the previous one arrived; time from
sending the INSERT to the live long-poll response carrying it. The baseline is a NOTIFY sent in its own
transaction and received by a LISTENing connection, measured by the same program in the same run.

$TABLE
EOT
)
echo "$SECTION"
if [ "$WRITE" = 1 ]; then
	printf '%s\n' "$SECTION" | scripts/write-results-section.py "Commit-to-client latency" --keep reading
fi
