#!/usr/bin/env bash
# bench-production.sh — single-row writers on a production-like stack, and
# where the CPU goes.
#
#   scripts/bench-production.sh [--shapes N] [--duration S] [--rounds N]
#                               [--clients N] [--fsync on|off] [--keep]
#                               [--tick-min-interval MS] [--tick-max-interval MS]
#
# The case issue 15 asks about: the cluster `make run` starts (fsync ON,
# default memory settings, shapesync preloaded: the ticker worker ticks and
# every tick is a durable commit), a running shapesyncd holding N per-user
# shapes (`owner_id = k`, k = 1..N, each created over HTTP), and pgbench
# (-M prepared, -c/-j CLIENTS, synchronous_commit=off for the writers, as an
# app with async commit would) doing single-row INSERTs (bench/writer/insert1.sql)
# into the tracked table and into an untracked copy, alternating, ROUNDS times.
#
# Besides tx/s it splits the CPU time of every run by process (from /proc,
# clock ticks, as a difference over the run), per 1 000 transactions:
#   writers     the pgbench backends (cluster total minus the long-lived ones)
#   ticker      the extension's ticker worker (ticks, NOTIFY)
#   wal         walwriter + checkpointer + bgwriter + autovacuum + others
#   sc-backends the sidecar's PostgreSQL sessions (batch reads, pool)
#   sidecar     the shapesyncd process
#   pgbench     the load client
# so the gap between the tracked and the untracked tx/s can be read as CPU
# taken from the writers by each part of the pipeline on a saturated machine.
#
# Prints a Markdown report on stdout. Needs: the extension installed
# (make install), build/shapesyncd built, pgbench, curl. SHAPESYNC_BUILD=<dir>
# runs <dir>/shapesyncd instead (a before/after comparison).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

NSHAPES=1000 DURATION=8 ROUNDS=3 CLIENTS=2 FSYNC=on KEEP=0 TICK_MS="" TICK_MAX_MS=""
while [ $# -gt 0 ]; do
	case $1 in
	--shapes) NSHAPES=${2:?}; shift ;;
	--duration) DURATION=${2:?}; shift ;;
	--rounds) ROUNDS=${2:?}; shift ;;
	--clients) CLIENTS=${2:?}; shift ;;
	--fsync) FSYNC=${2:?}; shift ;;
	--keep) KEEP=1 ;;
	--tick-min-interval) TICK_MS=${2:?}; shift ;;
	--tick-max-interval) TICK_MAX_MS=${2:?}; shift ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "unknown option: $1" >&2; exit 2 ;;
	esac
	shift
done
log() { echo "bench-production: $*" >&2; }
die() { log "$*"; exit 1; }

SIDECAR=${SHAPESYNC_BUILD:-$ROOT/build}/shapesyncd
[ -x "$SIDECAR" ] || die "$SIDECAR not built (cmake --build build)"
BINDIR=$("${PG_CONFIG:-pg_config}" --bindir)
PGBENCH=$BINDIR/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench) || die "pgbench not found"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d /tmp/shapesync-prod.XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(free_port)
HTTP_PORT=$(free_port)
SIDECAR_PID=""
cleanup() {
	[ -n "$SIDECAR_PID" ] && kill "$SIDECAR_PID" 2>/dev/null && wait "$SIDECAR_PID" 2>/dev/null || true
	if [ "$KEEP" = 1 ]; then log "kept $WORK"; else
		scripts/pgcluster.sh stop "$WORK/pg" >/dev/null 2>&1 || true
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

log "cluster in $WORK/pg (fsync $FSYNC) on port $PG_PORT"
URL=$(SHAPESYNC_PG_FSYNC=$FSYNC scripts/pgcluster.sh start "$WORK/pg" "$PG_PORT" prod)
PSQL=(env PGOPTIONS="-c client_min_messages=warning" "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "$URL")
q() { "${PSQL[@]}" -At -c "$1"; }

q "CREATE TABLE t (id bigserial PRIMARY KEY, owner_id int NOT NULL, amount int NOT NULL,
                   title text NOT NULL, payload text)" >/dev/null
q "CREATE TABLE t_base (LIKE t INCLUDING ALL)" >/dev/null
q "SELECT shapesync.track('t')" >/dev/null
[ -n "$TICK_MS" ] && q "ALTER SYSTEM SET shapesync.tick_min_interval_ms = $TICK_MS" >/dev/null
[ -n "$TICK_MAX_MS" ] && q "ALTER SYSTEM SET shapesync.tick_max_interval_ms = $TICK_MAX_MS" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null

log "shapesyncd on $HTTP_PORT"
"$SIDECAR" --database-url "$URL" --listen "127.0.0.1:$HTTP_PORT" --insecure \
	--data-dir "$WORK/sidecar-data" >"$WORK/sidecar.log" 2>&1 </dev/null &
SIDECAR_PID=$!
for _ in $(seq 1 100); do
	curl -fsS "http://127.0.0.1:$HTTP_PORT/v1/health" 2>/dev/null | grep -q active && break
	sleep 0.1
done
curl -fsS "http://127.0.0.1:$HTTP_PORT/v1/health" | grep -q active || die "shapesyncd not healthy: $(tail -5 "$WORK/sidecar.log")"

log "creating $NSHAPES shapes over HTTP"
t0=$(date +%s%N)
seq 1 "$NSHAPES" | xargs -P 16 -I{} curl -fsS -o /dev/null \
	"http://127.0.0.1:$HTTP_PORT/v1/shape?table=t&offset=-1&where=owner_id%20%3D%20{}"
t1=$(date +%s%N)
SHAPE_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
q "VACUUM ANALYZE" >/dev/null

# ------------------------------------------------------------ CPU accounting
proc_cpu() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] &&
		awk -v c="${2:-}" '{ sub(/^.*\) /, ""); print $12 + $13 + (c ? $14 + $15 : 0) }' "/proc/$1/stat" || echo 0
}
sum_cpu() { local t=0 p; for p in "$@"; do t=$((t + $(proc_cpu "$p"))); done; echo "$t"; }
PM=$(head -n1 "$(realpath "$WORK/pg")/data/postmaster.pid")
cluster_cpu() { local t p; t=$(proc_cpu "$PM" c); for p in $(pgrep -P "$PM"); do t=$((t + $(proc_cpu "$p"))); done; echo "$t"; }
TICKER=$(pgrep -P "$PM" -f 'shapesync ticker' | head -n1 || true)
SC_BACKENDS=$(q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
BASE_CHILDREN=$(pgrep -c -P "$PM")
settle() { local i; for i in $(seq 1 100); do [ "$(pgrep -c -P "$PM" || true)" -le "$BASE_CHILDREN" ] && return 0; sleep 0.05; done; }
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
HZ=$(getconf CLK_TCK)

declare -A TPS CPU_W CPU_T CPU_O CPU_B CPU_S CPU_P BUSY NTX
run_one() { # table key
	local table=$1 key=$2 c0 t0 b0 s0 k0 m0 c1 t1 b1 s1 k1 m1 out tx el pb0 pb1
	# no TRUNCATE: on the tracked table it would invalidate the shapes
	settle
	c0=$(cluster_cpu); t0=$(proc_cpu "$TICKER"); b0=$(sum_cpu $SC_BACKENDS); s0=$(proc_cpu "$SIDECAR_PID")
	m0=$(machine_busy); pb0=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
	out=$(sed "s/INSERT INTO t /INSERT INTO $table /" bench/writer/insert1.sql >"$WORK/script.sql" &&
		PGOPTIONS="-c synchronous_commit=off" "$PGBENCH" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" \
			-T "$DURATION" -D owners="$NSHAPES" -f "$WORK/script.sql" "$URL" 2>&1)
	settle
	c1=$(cluster_cpu); t1=$(proc_cpu "$TICKER"); b1=$(sum_cpu $SC_BACKENDS); s1=$(proc_cpu "$SIDECAR_PID")
	m1=$(machine_busy); pb1=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
	tx=$(printf '%s\n' "$out" | awk '/number of transactions actually processed/ { print $NF }')
	TPS[$key]=$(printf '%s\n' "$out" | awk '/^tps/ { print $3; exit }')
	NTX[$key]=$tx
	CPU_T[$key]=$((t1 - t0)); CPU_B[$key]=$((b1 - b0)); CPU_S[$key]=$((s1 - s0)); CPU_P[$key]=$((pb1 - pb0))
	BUSY[$key]=$((m1 - m0))
	# the writers: cluster total minus the long-lived processes we can name
	CPU_W[$key]=$((c1 - c0 - (t1 - t0) - (b1 - b0)))
	CPU_O[$key]=0
	log "$key: ${TPS[$key]} tx/s, $tx tx"
}
# split the cluster's long-lived auxiliary processes out of "writers"
AUX=$(pgrep -P "$PM" | while read -r p; do
	a=$(tr '\0' ' ' </proc/$p/cmdline)
	case $a in *walwriter* | *checkpointer* | *"background writer"* | *autovacuum* | *logical*) echo "$p" ;; esac
done | tr '\n' ' ')
run_case() {
	local a0 a1
	a0=$(sum_cpu $AUX)
	run_one "$1" "$2"
	a1=$(sum_cpu $AUX)
	CPU_O[$2]=$((a1 - a0))
	CPU_W[$2]=$((CPU_W[$2] - CPU_O[$2]))
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
	if [ $((r % 2)) = 1 ]; then run_case t_base "base:$r"; run_case t "tracked:$r"
	else run_case t "tracked:$r"; run_case t_base "base:$r"; fi
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ report
per1k() { awk -v c="$1" -v n="$2" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.1f", c / hz * 1e6 / n; else print "–" }'; }
sumk() { local name=$1 arr=$2 t=0 r; for r in $(seq 1 "$ROUNDS"); do eval "t=\$((t + \${$arr[\$name:\$r]}))"; done; echo "$t"; }
sumn() { local t=0 r; for r in $(seq 1 "$ROUNDS"); do t=$((t + NTX[$1:$r])); done; echo "$t"; }
mean_tps() { local r; for r in $(seq 1 "$ROUNDS"); do echo "${TPS[$1:$r]}"; done | awk '{ s += $1 } END { printf "%.0f", s / NR }'; }

bt=$(mean_tps base); tt=$(mean_tps tracked)
bn=$(sumn base); tn=$(sumn tracked)
echo "### Single-row INSERT on a production-like stack ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo
echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); PostgreSQL $("$BINDIR/postgres" --version | awk '{ print $3 }'), fsync **$FSYNC**, default memory settings, shapesync preloaded (ticker worker); shapesyncd (--insecure) holding $NSHAPES per-user shapes created over HTTP in $SHAPE_S s; pgbench -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION, synchronous_commit=off, bench/writer/insert1.sql, $ROUNDS alternating rounds. Load average before/after: $LOAD0 / $LOAD1. Command: \`scripts/bench-production.sh --shapes $NSHAPES --duration $DURATION --rounds $ROUNDS --clients $CLIENTS --fsync $FSYNC${TICK_MS:+ --tick-min-interval $TICK_MS}${TICK_MAX_MS:+ --tick-max-interval $TICK_MAX_MS}\` (shapesync.tick_min_interval_ms = $(q "SHOW shapesync.tick_min_interval_ms"), tick_max_interval_ms = $(q "SHOW shapesync.tick_max_interval_ms")) at $(git rev-parse --short HEAD)."
echo
echo "| | untracked | tracked | tracked ÷ untracked |"
echo "|---|---:|---:|---:|"
echo "| tx/s (mean of rounds: $(for r in $(seq 1 "$ROUNDS"); do printf '%s/%s ' "${TPS[base:$r]%.*}" "${TPS[tracked:$r]%.*}"; done)) | $bt | $tt | $(awk -v a="$tt" -v b="$bt" 'BEGIN { printf "%.2f", a / b }') |"
for part in W:writers O:"wal, checkpointer, bgwriter, autovacuum" T:"ticker worker" B:"sidecar's PostgreSQL sessions" S:"shapesyncd" P:"pgbench"; do
	k=${part%%:*}; label=${part#*:}
	b=$(per1k "$(sumk base CPU_$k)" "$bn"); t=$(per1k "$(sumk tracked CPU_$k)" "$tn")
	echo "| CPU µs per tx: $label | $b | $t | +$(awk -v a="$t" -v b="$b" 'BEGIN { printf "%.1f", a - b }') µs |"
done
b=$(per1k "$(sumk base BUSY)" "$bn"); t=$(per1k "$(sumk tracked BUSY)" "$tn")
echo "| CPU µs per tx: whole machine (all processes) | $b | $t | $(awk -v a="$t" -v b="$b" 'BEGIN { printf "%.2f", b / a }') (untracked ÷ tracked) |"
echo
echo "Ticks recorded: $(q "SELECT count(*) FROM shapesync.ticks"); sidecar RSS $(awk '/VmRSS/ { printf "%.0f MiB", $2 / 1024 }' /proc/$SIDECAR_PID/status)."
