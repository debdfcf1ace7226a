#!/usr/bin/env bash
# bench-monitoring.sh — what monitoring costs the live path: build/latency
# (commit-to-client latency of a live long-poll, single-row transactions) run
# alternately without and with a scraper that fetches /metrics and
# /dashboard/data once a second, against the same sidecar and cluster in the
# same run; also the sidecar's CPU time per run (/proc/<pid>/stat). The
# sidecar's live reports to the database (--report-interval, default 3 s) run
# in both. Prints a Markdown section.
#
#   scripts/bench-monitoring.sh [--count N] [--rounds R] [--write]
#
# --write replaces the "Cost of monitoring" section of bench/RESULTS.md (the
# hand-written reading between <!-- reading:begin/end --> is kept).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COUNT=500
ROUNDS=3
WRITE=0
while [ $# -gt 0 ]; do
	case $1 in
	--count) COUNT=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--write) WRITE=1; shift ;;
	*) echo "usage: $0 [--count N] [--rounds R] [--write]" >&2; exit 2 ;;
	esac
done
[ -x build/latency ] && [ -x build/shapesyncd ] || { echo "build first: cmake --build build --target latency shapesyncd" >&2; exit 1; }

WORK=$(mktemp -d /tmp/shapesync-bench-mon.XXXXXX)
chmod 755 "$WORK"
SIDECAR_PID=
SCRAPER_PID=
cleanup() {
	[ -n "$SCRAPER_PID" ] && kill "$SCRAPER_PID" 2>/dev/null && wait "$SCRAPER_PID" 2>/dev/null
	[ -n "$SIDECAR_PID" ] && kill "$SIDECAR_PID" 2>/dev/null && wait "$SIDECAR_PID" 2>/dev/null
	scripts/pgcluster.sh destroy "$WORK/pg" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

PGPORT=$(scripts/pgcluster.sh free-port)
URL=$(SHAPESYNC_PG_FSYNC=off scripts/pgcluster.sh start "$WORK/pg" "$PGPORT" bench 2>/dev/null | tail -n1)
HTTPPORT=$(scripts/pgcluster.sh free-port)
BASE="http://127.0.0.1:$HTTPPORT"
build/shapesyncd --database-url "$URL" --listen "127.0.0.1:$HTTPPORT" --insecure >"$WORK/shapesyncd.log" 2>&1 &
SIDECAR_PID=$!
for _ in $(seq 1 100); do
	curl -sf "$BASE/v1/health" | grep -q active && break
	sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SIDECAR_PID/stat"; }
HZ=$(getconf CLK_TCK)

# one run: prints "median p99 mean cpu_s"
run() {
	local table=$1 c0 c1 row
	c0=$(cpu_ticks)
	row=$(build/latency --database-url "$URL" --http "127.0.0.1:$HTTPPORT" --count "$COUNT" --table "$table" |
		grep 'shapesync commit-to-client')
	c1=$(cpu_ticks)
	echo "$row" | awk -F'|' -v cpu="$(echo "($c1 - $c0) / $HZ" | bc -l)" \
		'{gsub(/ /, "", $4); gsub(/ /, "", $5); gsub(/ /, "", $7); printf "%s %s %s %.2f\n", $4, $5, $7, cpu}'
}

scraper() {
	local n=0
	while true; do
		curl -sf -o /dev/null "$BASE/metrics" && curl -sf -o /dev/null "$BASE/dashboard/data" && n=$((n + 1))
		echo "$n" >"$WORK/scrapes"
		sleep 1
	done
}

ROWS=()
for r in $(seq 1 "$ROUNDS"); do
	ROWS+=("off $r $(run "bench_mon_off_$r")")
	scraper &
	SCRAPER_PID=$!
	ROWS+=("on $r $(run "bench_mon_on_$r")")
	kill "$SCRAPER_PID" 2>/dev/null; wait "$SCRAPER_PID" 2>/dev/null || true
	SCRAPER_PID=
	echo "round $r done ($(cat "$WORK/scrapes" 2>/dev/null || echo 0) scrapes in the last 'on' run)" >&2
done
METRICS_BYTES=$(curl -sf "$BASE/metrics" | wc -c)
DATA_BYTES=$(curl -sf "$BASE/dashboard/data" | wc -c)

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
PGV=$(psql -XAtq "$URL" -c 'SHOW server_version')
section() {
	echo "## Cost of monitoring"
	echo
	echo "$(date -u +%Y-%m-%d), $(nproc) cores ($CPU), $MEM, PostgreSQL $PGV, fsync off, the extension's ticker"
	echo "preloaded; client, sidecar and server on one machine over loopback."
	echo "Command: \`scripts/bench-monitoring.sh --count $COUNT --rounds $ROUNDS\` (program: bench/latency.cpp)."
	echo "One sidecar and cluster; runs alternate without (off) and with (on) a scraper fetching \`/metrics\`"
	echo "($METRICS_BYTES bytes) and \`/dashboard/data\` ($DATA_BYTES bytes) once a second. Each run: $COUNT single-row"
	echo "INSERTs, each after the previous arrived at a live long-poll client; sidecar CPU from /proc over the run."
	echo
	echo "| scraper | round | median ms | p99 ms | mean ms | sidecar CPU s |"
	echo "|---|---|---|---|---|---|"
	for row in "${ROWS[@]}"; do
		set -- $row
		echo "| $1 | $2 | $3 | $4 | $5 | $6 |"
	done
	printf '%s\n' "${ROWS[@]}" | awk '
		{ n[$1]++; med[$1] += $3; p99[$1] += $4; mean[$1] += $5; cpu[$1] += $6 }
		END {
			printf "| **ratio on / off** (means over rounds) | | %.3f | %.3f | %.3f | %.3f |\n",
				(med["on"] / n["on"]) / (med["off"] / n["off"]), (p99["on"] / n["on"]) / (p99["off"] / n["off"]),
				(mean["on"] / n["on"]) / (mean["off"] / n["off"]), (cpu["on"] / n["on"]) / (cpu["off"] / n["off"])
		}'
}
section
if [ "$WRITE" = 1 ]; then
	section | scripts/write-results-section.py "Cost of monitoring" --keep reading
fi
