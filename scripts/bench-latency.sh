#!/usr/bin/env bash
# bench-latency.sh — commit-to-client latency of a live shape (one long-polling
# client, single-row transactions) next to the raw LISTEN/NOTIFY round trip,
# measured by build/latency in the same run against a throwaway cluster.
# Prints a Markdown section and, with --write, replaces the "Commit-to-client
# latency" section of bench/RESULTS.md.
#
#   scripts/bench-latency.sh [--count N] [--write]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
COUNT=2000
WRITE=0
while [ $# -gt 0 ]; do
	case $1 in
	--count) COUNT=$2; shift 2 ;;
	--write) WRITE=1; shift ;;
	*) echo "usage: $0 [--count N] [--write]" >&2; exit 2 ;;
	esac
done
[ -x build/latency ] && [ -x build/shapesyncd ] || { echo "build first: make sidecar && cmake --build build --target benches" >&2; exit 1; }

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
build/shapesyncd --database-url "$URL" --listen "127.0.0.1:$HTTPPORT" --insecure >"$WORK/shapesyncd.log" 2>&1 &
SIDECAR_PID=$!
for _ in $(seq 1 100); do
	curl -sf "http://127.0.0.1:$HTTPPORT/v1/health" | grep -q active && break
	sleep 0.1
done

if ! TABLE=$(build/latency --database-url "$URL" --http "127.0.0.1:$HTTPPORT" --count "$COUNT"); then
	cp "$WORK/shapesyncd.log" /tmp/bench-latency-shapesyncd.log
	psql -XAtq "$URL" -c 'SELECT tick_id, snap, max_seq FROM shapesync.ticks ORDER BY 1 DESC LIMIT 5' \
		-c 'SELECT xid, seq, op, shape_ops FROM shapesync.changes ORDER BY seq DESC LIMIT 5' >&2 || true
	echo "bench-latency: failed; sidecar log in /tmp/bench-latency-shapesyncd.log" >&2
	exit 1
fi
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
PGV=$(psql -XAtq "$URL" -c 'SHOW server_version')
SECTION=$(cat <<EOT
## Commit-to-client latency

$(date -u +%Y-%m-%d), $(nproc) cores ($CPU), $MEM, PostgreSQL $PGV, fsync off, the extension's ticker
preloaded; client, sidecar and server on one machine over loopback.
Command: \`scripts/bench-latency.sh --count $COUNT\` (program: bench/latency.cpp).
Each row is sent by a separate single-row INSERT transaction after the previous one arrived; time from
sending the INSERT to the live long-poll response carrying it. The baseline is a NOTIFY sent in its own
transaction and received by a LISTENing connection, measured by the same program in the same run.

$TABLE
EOT
)
echo "$SECTION"
if [ "$WRITE" = 1 ]; then
	printf '%s\n' "$SECTION" | scripts/write-results-section.py "Commit-to-client latency"
fi
