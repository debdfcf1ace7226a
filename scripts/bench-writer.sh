#!/usr/bin/env bash
# bench-writer.sh — what shapesync's capture trigger costs the writer.
#
#   scripts/bench-writer.sh [--install] [--quick] [--duration S] [--rounds N]
#                           [--clients N] [--shapes N] [--no-write | --write]
#                           [--no-perf] [--keep] [--auth]
#
# One throwaway cluster (scripts/pgcluster.sh, shapesync preloaded, fsync off),
# one run: pgbench custom scripts (bench/writer/*.sql, -M prepared,
# synchronous_commit=off so CPU cost shows) against the same 100 000-row table
#   untracked | PgQ's pgq.logutriga | tracked with 0 shapes |
#   10, 1 000, 100 000 per-user shapes (owner_id = <const>) |
#   10, 100 general shapes (amount BETWEEN a AND b, title ILIKE '%xy%')
# for single-row INSERT and UPDATE transactions, 100-row INSERT/UPDATE
# (untracked vs 100 000 shapes), single-row UPDATEs that move a row to another
# owner, and the trigger's time per row from EXPLAIN (ANALYZE) of a
# 100 000-row UPDATE. Every case gets its own copy of the table (schema per
# case, reset between runs: inserted rows deleted, logs truncated, VACUUM,
# CHECKPOINT). Rounds alternate the order of the cases; the first second of
# each pgbench run (connections, shape cache build) is not counted.
#
# Besides tx/s, every run measures CPU time per transaction (the cluster's
# processes, the ticker worker's part, and pgbench, from /proc) and EXPLAIN
# runs read the backend's own CPU and CPU-wait time (/proc/self/schedstat):
# on a machine shared with other work these are the steadier figures.
#
# Prints a Markdown report and (unless --no-write; --quick implies --no-write)
# replaces the "Cost to the writer" section of bench/RESULTS.md with it. Text
# between <!-- writer-analysis:begin --> and <!-- writer-analysis:end --> in
# that section is kept.
#
# PG_CONFIG=/path/to/pg_config runs the cluster from that installation (for
# example a private copy of PostgreSQL with an uninstalled build of the extension).
#
# Needs: the extension built and installed (make && make install), PostgreSQL 15
# with pgbench; postgresql-15-pgq3 for the PgQ case (skipped without it); perf
# for the profile of the trigger (skipped without it).
#
# Options:
#   --install      first build the committed HEAD of this repository in a clean
#                  clone and `make install` it (uncommitted edits are not benchmarked)
#   --quick        smoke run (~2 min): 1 round of 3 s, 10 000 instead of 100 000 shapes
#   --duration S   seconds per pgbench run (default 6)
#   --rounds N     rounds over all cases (default 3)
#   --clients N    pgbench clients (default 2: this benchmark is meant for a
#                  2-core machine shared by pgbench, the backends and the ticker)
#   --shapes N     the large per-user shape count (default 100000)
#   --no-write     do not touch bench/RESULTS.md; --write forces it with --quick
#   --no-perf      no perf profile of the trigger
#   --keep         keep the cluster (its directory is printed)
#   --cases LIST   only these cases (comma-separated names: base, peer_pgq, s0,
#                  w1, u10, u1000, u<shapes>, g10, g100); implies --no-write
#   --multi-only   only the 100-row transactions (and EXPLAIN); implies --no-write
#   --auth         issue 11's case instead: per-user shapes derived from a
#                  row-level security policy (owner_id = auth.uid(), folded into
#                  a constant by get_or_create_shape(..., role, claims)) against
#                  the same number of explicit "owner_id = <i>" shapes, 10 and
#                  --shapes users (default 10000 here), and the untracked table;
#                  single-row and 100-row INSERT/UPDATE for every case. Writes
#                  the "Authorization: cost to the writer" section instead.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=$ROOT/bench/writer
SECTION="## Cost to the writer"
COMMAND="scripts/bench-writer.sh${*:+ $*}"

log() { printf 'bench-writer: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,60p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

DURATION=6
ROUNDS=3
EXPLAIN_REPS=3
INSTALL=0
CLIENTS=2
NLARGE=100000
NROWS=100000
WRITE=1
WRITE_FORCED=0
PERF=1
KEEP=0
QUICK=0
ONLY_CASES=""
MULTI_ONLY=0
AUTH=0
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--install) INSTALL=1 ;;
	--duration) DURATION=${2:?}; shift ;;
	--rounds) ROUNDS=${2:?}; shift ;;
	--clients) CLIENTS=${2:?}; shift ;;
	--shapes) NLARGE=${2:?}; shift ;;
	--no-write) WRITE=0 ;;
	--write) WRITE_FORCED=1 ;;
	--no-perf) PERF=0 ;;
	--keep) KEEP=1 ;;
	--cases) ONLY_CASES=${2:?}; WRITE=0; shift ;;
	--multi-only) MULTI_ONLY=1; WRITE=0 ;;
	--auth) AUTH=1 ;;
	-h | --help) usage ;;
	*) log "unknown option $1"; usage ;;
	esac
	shift
done
if [ $QUICK = 1 ]; then
	# explicit options after --quick still win for duration/rounds/shapes
	case " $COMMAND " in *" --duration "*) ;; *) DURATION=3 ;; esac
	case " $COMMAND " in *" --rounds "*) ;; *) ROUNDS=1 ;; esac
	case " $COMMAND " in *" --shapes "*) ;; *) NLARGE=10000 ;; esac
	EXPLAIN_REPS=1
	WRITE=0
fi
if [ $AUTH = 1 ]; then
	SECTION="## Authorization: cost to the writer"
	case " $COMMAND " in *" --shapes "*) ;; *) NLARGE=10000 ;; esac
fi
[ $WRITE_FORCED = 1 ] && WRITE=1
for v in DURATION ROUNDS CLIENTS NLARGE; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer: ${!v}"
done
[ "$DURATION" -ge 3 ] || die "--duration must be at least 3 (the first second is dropped)"

# ---------------------------------------------------------------- binaries
BIN=/usr/lib/postgresql/15/bin
[ -x "$BIN/pgbench" ] || BIN=$(pg_config --bindir 2>/dev/null) || true
[ -x "$BIN/pgbench" ] || die "pgbench not found (PostgreSQL 15 server package)"
PGBENCH=$BIN/pgbench
PSQLBIN=$BIN/psql
HAVE_PERF=0
if [ $PERF = 1 ] && command -v perf >/dev/null 2>&1; then HAVE_PERF=1; fi

PKGLIB=$("${PG_CONFIG:-pg_config}" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-writer.XXXXXX")
BUILT_FROM=""
if [ $INSTALL = 1 ]; then
	BUILT_FROM=$(git -C "$ROOT" rev-parse HEAD)
	log "building and installing the extension from a clean clone of ${BUILT_FROM:0:7}"
	git clone -q "$ROOT" "$TMP/src"
	git -C "$TMP/src" checkout -q "$BUILT_FROM"
	(cd "$TMP/src" && make -j"$(nproc)" >"$TMP/build.log" 2>&1 && make install >>"$TMP/build.log" 2>&1) ||
		{ tail -n 30 "$TMP/build.log" >&2; die "extension build failed (log above)"; }
	BUILT_MD5=$(md5sum <"$TMP/src/shapesync.so" | cut -c1-12)
fi

# ---------------------------------------------------------------- cluster
CLUSTER=$TMP/cluster
DB=bench
cleanup() {
	local rc=$?
	if [ $KEEP = 1 ]; then
		log "cluster kept in $CLUSTER (port $PORT): $ROOT/scripts/pgcluster.sh destroy $CLUSTER"
	else
		"$ROOT/scripts/pgcluster.sh" destroy "$CLUSTER" >/dev/null 2>&1 || true
		rm -rf -- "$TMP"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
PORT=$("$ROOT/scripts/pgcluster.sh" free-port)
export SHAPESYNC_PG_FSYNC=off
log "cluster in $CLUSTER, port $PORT"
"$ROOT/scripts/pgcluster.sh" start "$CLUSTER" "$PORT" "$DB" >/dev/null
psql_cmd() { env PGOPTIONS="-c client_min_messages=warning" "$PSQLBIN" -X -q -v ON_ERROR_STOP=1 -h "$PGHOST_" -p "$PORT" -U postgres -d "$DB" "$@"; }
PGHOST_=127.0.0.1
# Server settings for a stable benchmark: everything in memory, no checkpoint
# during a run, no JIT. Applied with a restart. Autovacuum stays on (the
# ticker's plans depend on fresh statistics of shapesync.ticks) but is off for
# the tables that every run rewrites: the benchmark tables and the logs.
psql_cmd -c "ALTER SYSTEM SET shared_buffers = '1GB'" \
	-c "ALTER SYSTEM SET max_wal_size = '8GB'" \
	-c "ALTER SYSTEM SET checkpoint_timeout = '1h'" \
	-c "ALTER SYSTEM SET jit = off"
"$ROOT/scripts/pgcluster.sh" start "$CLUSTER" "$PORT" "$DB" >/dev/null 2>&1
# The server loaded the library at this start (preload): that is what is measured,
# whoever installs another one later. Which file was it?
SO_MD5=$(md5sum <"$PKGLIB/shapesync.so" | cut -c1-12)
SO_DATE=$(date -u -r "$PKGLIB/shapesync.so" '+%Y-%m-%d %H:%M UTC')
if [ $INSTALL = 1 ] && [ "$SO_MD5" != "$BUILT_MD5" ]; then
	die "$PKGLIB/shapesync.so changed between our install and the cluster start (someone else installed); run again"
fi
# The unix socket, when pgcluster made one, is what pgbench uses: the cheaper
# the baseline, the more the trigger shows.
SOCK=$(realpath "$CLUSTER")/run
if [ -S "$SOCK/.s.PGSQL.$PORT" ]; then PGHOST_=$SOCK; fi
q() { psql_cmd -At -c "$1"; }

PGVERSION=$(q "SHOW server_version")
SHAPESYNC_VERSION=$(q "SELECT extversion FROM pg_extension WHERE extname = 'shapesync'")
WORKER_PID=$(q "SELECT shapesync.worker_pid()")
[ -n "$WORKER_PID" ] || log "warning: no shapesync ticker worker running (its CPU is not reported)"
q "ALTER TABLE shapesync.changes SET (autovacuum_enabled = off)" >/dev/null
HAVE_WHERE=$(q "SELECT (count(*) > 0)::int FROM pg_proc WHERE proname = 'get_or_create_shape' AND pronamespace = 'shapesync'::regnamespace AND 'shape_id' = ANY (proargnames)")
HAVE_PGQ=0
PGQ_VERSION=""
if [ -n "$(q "SELECT 1 FROM pg_available_extensions WHERE name = 'pgq'")" ]; then
	q "CREATE EXTENSION pgq" >/dev/null
	q "SELECT pgq.create_queue('q')" >/dev/null
	PGQ_VERSION=$(q "SELECT extversion FROM pg_extension WHERE extname = 'pgq'")
	q "SELECT format('ALTER TABLE %s SET (autovacuum_enabled = off)', c.oid::regclass)
	     FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
	    WHERE i.inhparent = (SELECT queue_data_pfx FROM pgq.queue WHERE queue_name = 'q')::regclass" |
		while read -r stmt; do q "$stmt" >/dev/null; done
	HAVE_PGQ=1
else
	log "PgQ not installed (Debian: postgresql-15-pgq3): the pgq case is skipped"
fi

# ---------------------------------------------------------------- cases
# name|label|owners|kind|shapes
fmtn() { echo "$1" | sed -E ':a; s/^([0-9]+)([0-9]{3})/\1 \2/; ta'; }
CASES=()
CASES+=("base|untracked|$NROWS|none|0")
[ $HAVE_PGQ = 1 ] && CASES+=("peer_pgq|PgQ pgq.logutriga|$NROWS|pgq|0")
CASES+=("s0|tracked, 0 shapes|$NROWS|track|0")
CASES+=("w1|tracked, 1 whole-table shape|$NROWS|whole|1")
CASES+=("u10|10 per-user shapes|10|user|10")
CASES+=("u1000|1 000 per-user shapes|1000|user|1000")
CASES+=("u$NLARGE|$(fmtn "$NLARGE") per-user shapes|$NLARGE|user|$NLARGE")
if [ "$HAVE_WHERE" = 1 ]; then
	CASES+=("g10|10 general shapes|$NROWS|general|10")
	CASES+=("g100|100 general shapes|$NROWS|general|100")
else
	log "SKIPPED: general (WHERE) shapes and per-user shapes need shape membership in the extension" \
		"(get_or_create_shape(..., params) returning shape_id); rebuild and reinstall once it is committed"
	CASES=("${CASES[@]:0:4}")
fi
if [ -n "$ONLY_CASES" ]; then
	kept=()
	for c in "${CASES[@]}"; do
		case ",$ONLY_CASES," in *",${c%%|*},"*) kept+=("$c") ;; esac
	done
	[ ${#kept[@]} -gt 0 ] || die "--cases $ONLY_CASES matches no case"
	CASES=("${kept[@]}")
fi
if [ $AUTH = 1 ]; then
	# Issue 11: each user's shape derived from the table's RLS policy (kind
	# policy), beside the same filters asked for explicitly (kind user).
	[ "$HAVE_WHERE" = 1 ] || die "--auth needs shape membership and the role-aware get_or_create_shape"
	CASES=("base|untracked|$NROWS|none|0")
	CASES+=("u10|10 explicit \`owner_id = <i>\` shapes|10|user|10")
	CASES+=("p10|10 users' policy shapes|10|policy|10")
	CASES+=("u$NLARGE|$(fmtn "$NLARGE") explicit \`owner_id = <i>\` shapes|$NLARGE|user|$NLARGE")
	CASES+=("p$NLARGE|$(fmtn "$NLARGE") users' policy shapes|$NLARGE|policy|$NLARGE")
	# the role the tokens name, and Supabase's auth.uid() for an int owner
	q "CREATE ROLE bench_user NOLOGIN" >/dev/null
	q "CREATE SCHEMA auth" >/dev/null
	q "CREATE FUNCTION auth.uid() RETURNS int LANGUAGE sql STABLE
	     AS \$\$ SELECT nullif(current_setting('request.jwt.claims', true)::json->>'sub', '')::int \$\$" >/dev/null
	q "GRANT USAGE ON SCHEMA auth TO bench_user" >/dev/null
fi
UL="u$NLARGE"
[ $AUTH = 1 ] && UL="p$NLARGE"
declare -A LABEL OWNERS KIND NSHAPES REGMS
for c in "${CASES[@]}"; do
	IFS='|' read -r name label owners kind n <<<"$c"
	LABEL[$name]=$label; OWNERS[$name]=$owners; KIND[$name]=$kind; NSHAPES[$name]=$n
done
case_names() { local c; for c in "${CASES[@]}"; do echo "${c%%|*}"; done; }
has_case() { [ -n "${KIND[$1]:-}" ]; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
log "creating ${#CASES[@]} tables of $(fmtn $NROWS) rows"
for name in $(case_names); do
	psql_cmd -v schema="$name" -v nrows="$NROWS" -v owners="${OWNERS[$name]}" -f "$W/make_table.sql" >/dev/null
	case ${KIND[$name]} in
	none) ;;
	policy)
		q "SELECT shapesync.track('$name.t')" >/dev/null
		q "ALTER TABLE $name.t ENABLE ROW LEVEL SECURITY" >/dev/null
		q "CREATE POLICY own_rows ON $name.t FOR SELECT TO bench_user USING (owner_id = auth.uid())" >/dev/null
		q "GRANT USAGE ON SCHEMA $name TO bench_user" >/dev/null
		q "GRANT SELECT ON $name.t TO bench_user" >/dev/null ;;
	pgq)
		q "CREATE TRIGGER pgq_logutriga AFTER INSERT OR UPDATE OR DELETE ON $name.t
		   FOR EACH ROW EXECUTE FUNCTION pgq.logutriga('q')" >/dev/null ;;
	*) q "SELECT shapesync.track('$name.t')" >/dev/null ;;
	esac
	t0=$(now_ms)
	case ${KIND[$name]} in
	whole) q "SELECT count(*) FROM shapesync.get_or_create_shape('$name.t', NULL, NULL, '')" >/dev/null ;;
	user)
		log "registering $(fmtn "${NSHAPES[$name]}") per-user shapes on $name.t"
		psql_cmd -v schema="$name" -v n="${NSHAPES[$name]}" -f "$W/register_per_user.sql" >/dev/null ;;
	general) psql_cmd -v schema="$name" -v n="${NSHAPES[$name]}" -f "$W/register_general.sql" >/dev/null ;;
	policy)
		log "registering $(fmtn "${NSHAPES[$name]}") users' shapes on $name.t as bench_user with their claims"
		psql_cmd -v schema="$name" -v n="${NSHAPES[$name]}" -f "$W/register_policy.sql" >/dev/null ;;
	esac
	REGMS[$name]=$(($(now_ms) - t0))
	case ${KIND[$name]} in user | general | policy) log "  ${NSHAPES[$name]} shapes in ${REGMS[$name]} ms" ;; esac
done
# --auth: what the registrations made of the filters: shapes, templates, the
# filter of user 7, and whether the policy shapes' filters are exactly the
# explicit ones (the same canonical text: the same template, the same index)
declare -A REG_SHAPES REG_TEMPLATES REG_WHERE7 REG_TEMPLATE
if [ $AUTH = 1 ]; then
	for name in $(case_names); do
		case ${KIND[$name]} in user | policy) ;; *) continue ;; esac
		IFS='|' read -r REG_SHAPES[$name] REG_TEMPLATES[$name] REG_WHERE7[$name] REG_TEMPLATE[$name] < <(q "
			SELECT count(*), count(DISTINCT s.template_id),
			       (SELECT canonical_where FROM shapesync.shape_registry r
			         WHERE r.relid = '$name.t'::regclass AND r.state = 'active' AND r.consts = '{7}'),
			       (SELECT string_agg(t.template_sql, ' / ') FROM shapesync.shape_templates t WHERE t.relid = '$name.t'::regclass)
			  FROM shapesync.shape_registry s WHERE s.relid = '$name.t'::regclass AND s.state = 'active'")
	done
	declare -A SAME_FILTERS
	for n in 10 "$NLARGE"; do
		SAME_FILTERS[$n]=$(q "SELECT count(*) FROM (
			(SELECT canonical_where FROM shapesync.shape_registry WHERE relid = 'p$n.t'::regclass AND state = 'active'
			 EXCEPT SELECT canonical_where FROM shapesync.shape_registry WHERE relid = 'u$n.t'::regclass AND state = 'active')
			UNION ALL
			(SELECT canonical_where FROM shapesync.shape_registry WHERE relid = 'u$n.t'::regclass AND state = 'active'
			 EXCEPT SELECT canonical_where FROM shapesync.shape_registry WHERE relid = 'p$n.t'::regclass AND state = 'active')) d")
	done
fi
q "VACUUM ANALYZE" >/dev/null

# ---------------------------------------------------------------- pgbench
# CPU time (clock ticks) of a process: utime+stime, plus cutime+cstime with "c"
proc_cpu() {
	[ -n "$1" ] && [ -r "/proc/$1/stat" ] &&
		awk -v c="${2:-}" '{ sub(/^.*\) /, ""); print $12 + $13 + (c ? $14 + $15 : 0) }' "/proc/$1/stat" || echo 0
}
# CPU time of the whole cluster: the postmaster, its live children, and the
# children it reaped (cutime); meaningful as a difference
POSTMASTER_PID=$(head -n1 "$(realpath "$CLUSTER")/data/postmaster.pid")
cluster_cpu() {
	local t p
	t=$(proc_cpu "$POSTMASTER_PID" c)
	for p in $(pgrep -P "$POSTMASTER_PID" || true); do t=$((t + $(proc_cpu "$p"))); done
	echo "$t"
}
# Wait until the postmaster has reaped every backend that exited (at most 5 s):
# until then their CPU time is in neither a live child nor the postmaster's cutime.
BASE_CHILDREN=""
settle() {
	local i
	for i in $(seq 1 100); do
		[ "$(pgrep -c -P "$POSTMASTER_PID" || true)" -le "$BASE_CHILDREN" ] && return 0
		sleep 0.05
	done
	log "warning: backends still running after 5 s; CPU figures may be off"
}
# busy CPU time of the machine (all CPUs, clock ticks)
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
max_tick() { q "SELECT coalesce(max(tick_id), 0) FROM shapesync.ticks"; }
# the ticker's time on CPU in ns (/proc/PID/schedstat), 0 when unknown
ticker_ns() { [ -n "$WORKER_PID" ] && [ -r "/proc/$WORKER_PID/schedstat" ] && awk '{ print $1 }' "/proc/$WORKER_PID/schedstat" || echo 0; }
sleep 0.5
BASE_CHILDREN=$(pgrep -c -P "$POSTMASTER_PID" || true)

# per case:script — SAMPLES: transactions of each whole second (all rounds,
# first second of each run dropped); TPS: per run; TICKS, TICKCPU: per run;
# OTHER: % of the machine's CPUs busy with something other than this benchmark
declare -A SAMPLES TPS TICKS TICKCPU CPU_ALL CPU_TICKER NTX NTICKS LOGROWS LOGOPS
OTHER_ALL=""
reset_case() {
	psql_cmd -v schema="$1" -v nrows="$NROWS" -v pgq="$([ $HAVE_PGQ = 1 ] && echo true || echo false)" \
		-f "$W/reset.sql" >/dev/null
}
# run_case NAME SCRIPT ROUND
run_case() {
	local name=$1 script=$2 round=$3 pfx=$TMP/agg.$1.$2.$3 t0 t1 c0 c1 k0 k1 m0 m1 b0 b1 n0 n1 tps secs samples other
	reset_case "$name"
	t0=$(max_tick)
	settle
	c0=$(ticker_ns); k0=$(cluster_cpu); m0=$(machine_busy)
	n0=$(date +%s%N); b0=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
	(cd "$TMP" && exec env PGOPTIONS="-c synchronous_commit=off -c search_path=$name" \
		"$PGBENCH" -n -M prepared -c "$CLIENTS" -j 1 -T "$DURATION" -D owners="${OWNERS[$name]}" \
		-f "$W/$script.sql" -l --aggregate-interval=1 --log-prefix="$pfx" \
		-h "$PGHOST_" -p "$PORT" -U postgres "$DB" >"$pfx.out" 2>&1) ||
		{ cat "$pfx.out" >&2; die "pgbench failed: $name $script"; }
	b1=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
	settle
	n1=$(date +%s%N); m1=$(machine_busy); k1=$(cluster_cpu); c1=$(ticker_ns); t1=$(max_tick)
	# what the run logged (reset_case emptied the log): change rows, shape ops
	local lr lo
	IFS='|' read -r lr lo < <(q "SELECT count(*), coalesce(sum(cardinality(shape_ops)), 0) FROM shapesync.changes")
	LOGROWS[$name:$script]=$(( ${LOGROWS[$name:$script]:-0} + lr ))
	LOGOPS[$name:$script]=$(( ${LOGOPS[$name:$script]:-0} + lo ))
	# transactions of each second, summed over pgbench threads; the first
	# second (connections, shape cache build) and a short last one dropped
	samples=$(cat "$pfx".* 2>/dev/null | awk -v d="$DURATION" '$1 ~ /^[0-9]+$/ { n[$1] += $2 }
		END { k = 0; for (s in n) ks[++k] = s + 0
		      for (i = 2; i <= k; i++) { v = ks[i]; j = i - 1; while (j > 0 && ks[j] > v) { ks[j+1] = ks[j]; j-- } ks[j+1] = v }
		      last = (k > d) ? k - 1 : k
		      for (i = 2; i <= last; i++) printf "%d ", n[ks[i]] }')
	[ -n "$samples" ] || { cat "$pfx.out" >&2; die "no pgbench intervals for $name $script"; }
	# CPU per transaction: cluster (ticker included) + pgbench, over the whole run
	CPU_ALL[$name:$script]=$(( ${CPU_ALL[$name:$script]:-0} + (k1 - k0) + (b1 - b0) ))
	CPU_TICKER[$name:$script]=$(( ${CPU_TICKER[$name:$script]:-0} + (c1 - c0) ))	# ns
	NTICKS[$name:$script]=$(( ${NTICKS[$name:$script]:-0} + (t1 - t0) ))
	NTX[$name:$script]=$(( ${NTX[$name:$script]:-0} + $(awk '/^number of transactions actually processed:/ { print $6; exit }' "$pfx.out") ))
	tps=$(echo "$samples" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.1f", s / NF }')
	SAMPLES[$name:$script]+="$samples"
	TPS[$name:$script:$round]=$tps
	TICKS[$name:$script:$round]=$(awk -v a="$t0" -v b="$t1" -v ns="$((n1 - n0))" 'BEGIN { printf "%.0f", (b - a) / (ns / 1e9) }')
	TICKCPU[$name:$script:$round]=$(awk -v a="$c0" -v b="$c1" -v ns="$((n1 - n0))" 'BEGIN { printf "%.0f", 100 * (b - a) / ns }')
	# CPU busy outside the cluster and pgbench, in % of all CPUs
	other=$(awk -v m="$((m1 - m0))" -v k="$((k1 - k0))" -v b="$((b1 - b0))" -v ns="$((n1 - n0))" -v hz="$CLK_TCK" -v ncpu="$NCPU" \
		'BEGIN { o = (m - k - b) / hz / (ns / 1e9) / ncpu * 100; if (o < 0) o = 0; printf "%.0f", o }')
	OTHER_ALL+="$other "
	log "  round $round $(printf '%-8s %-13s' "$name" "$script") $(printf '%9.0f' "$tps") tx/s  (ticker ${TICKS[$name:$script:$round]} ticks/s ${TICKCPU[$name:$script:$round]}% CPU; other load ${other}% of the machine)"
}

SINGLE=($(case_names))
MULTI=(base)
has_case "$UL" && MULTI+=("$UL")
# the per-user case that can move rows between owners
MOVE=(base)
has_case "$UL" && MOVE+=("$UL")
if [ $AUTH = 1 ]; then
	MULTI=("${SINGLE[@]}")
	MOVE=()
fi
# Warm-up, not counted: a few seconds of logged writes give shapesync.ticks a
# realistic history (a ticker whose plan was made on an empty ticks table, and
# not replanned, slows down as the table grows) and warm the caches.
WARM=w1
has_case "$WARM" || WARM=s0
if ! has_case "$WARM"; then
	WARM=base
	for name in $(case_names); do case ${KIND[$name]} in none | pgq) ;; *) WARM=$name; break ;; esac; done
fi
if [ $MULTI_ONLY = 1 ]; then SINGLE=(); MOVE=(); fi
log "warm-up: 3 s of single-row INSERTs on $WARM.t"
(cd "$TMP" && env PGOPTIONS="-c synchronous_commit=off -c search_path=$WARM" \
	"$PGBENCH" -n -M prepared -c "$CLIENTS" -j 1 -T 3 -D owners="${OWNERS[$WARM]}" -f "$W/insert1.sql" \
	-h "$PGHOST_" -p "$PORT" -U postgres "$DB" >"$TMP/warmup.out" 2>&1) ||
	{ cat "$TMP/warmup.out" >&2; die "warm-up pgbench failed"; }
runs=$(( (${#SINGLE[@]} * 2 + ${#MULTI[@]} * 2 + ${#MOVE[@]}) * ROUNDS ))
log "$runs pgbench runs of ${DURATION} s, $CLIENTS clients"
for round in $(seq 1 "$ROUNDS"); do
	order=("${SINGLE[@]}")
	if [ $((round % 2)) = 0 ]; then
		order=(); for ((i = ${#SINGLE[@]} - 1; i >= 0; i--)); do order+=("${SINGLE[$i]}"); done
	fi
	for name in "${order[@]}"; do
		run_case "$name" insert1 "$round"
		run_case "$name" update1 "$round"
	done
	# the 100-row cases (all of them with --multi-only, where SINGLE is empty)
	morder=("${MULTI[@]}")
	if [ $((round % 2)) = 0 ]; then
		morder=(); for ((i = ${#MULTI[@]} - 1; i >= 0; i--)); do morder+=("${MULTI[$i]}"); done
	fi
	for name in "${morder[@]}"; do
		run_case "$name" insert100 "$round"
		run_case "$name" update100 "$round"
	done
	# last: moves change which owner holds which row
	for name in "${MOVE[@]+"${MOVE[@]}"}"; do
		run_case "$name" update1_move "$round"
	done
done

# ---------------------------------------------------------------- EXPLAIN
declare -A TRIG_US EXEC_US STMT_CPU SHARE TRIG_CPU CACHE_N CACHE_MB CACHE_MS
PERF_TOP=""
explain_case() {
	local name=$1 out=$TMP/explain.$1 tracked=false mem us i reps=()
	for i in $(seq 1 "$EXPLAIN_REPS"); do reps+=(-f "$W/explain_update.sql"); done
	case ${KIND[$name]} in none | pgq) ;; *) tracked=true ;; esac
	reset_case "$name"
	# The same physical table for every case: the pgbench runs left each table
	# with different free space (and so different HOT update rates); rewrite it.
	q "VACUUM FULL $name.t" >/dev/null
	q "VACUUM ANALYZE $name.t" >/dev/null
	if [ "$name" = "$UL" ] && [ $HAVE_PERF = 1 ]; then
		# profile the backend while it runs the three UPDATEs
		psql_cmd -At -v schema="$name" -v nrows="$NROWS" -v tracked=$tracked \
			-c "SELECT pg_backend_pid()" -c "SELECT pg_sleep(1)" -f "$W/explain_warmup.sql" "${reps[@]}" >"$out" 2>&1 &
		local ppid=$! bpid=""
		for i in $(seq 1 50); do bpid=$(head -n1 "$out" 2>/dev/null || true); [[ $bpid =~ ^[0-9]+$ ]] && break; sleep 0.1; done
		# perf record -p ends when the backend does (psql disconnects at the end)
		if [[ $bpid =~ ^[0-9]+$ ]]; then
			perf record -F 2000 -p "$bpid" -o "$TMP/perf.data" >"$TMP/perf.log" 2>&1 &
			local perfpid=$!
		fi
		wait "$ppid" || { cat "$out" >&2; die "EXPLAIN failed: $name"; }
		[ -n "${perfpid:-}" ] && { wait "$perfpid" 2>/dev/null || true; }
		sed -i '1d' "$out"
		if [ -s "$TMP/perf.data" ]; then
			PERF_TOP=$(perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --percent-limit 1.5 --stdio 2>/dev/null |
				awk '/^ +[0-9.]+%/ { printf "%s\n", $0 }' | head -n 25)
		fi
	else
		psql_cmd -At -v schema="$name" -v nrows="$NROWS" -v tracked=$tracked \
			-f "$W/explain_warmup.sql" "${reps[@]}" >"$out" 2>&1 || { cat "$out" >&2; die "EXPLAIN failed: $name"; }
	fi
	# Per repetition: trigger wall time, statement wall time, the backend's
	# on-CPU and CPU-wait time. share = on-CPU / (on-CPU + waiting): the part of
	# the wall-clock time the backend really ran; trigger CPU ≈ trigger wall ×
	# share. Of the repetitions, the least disturbed value of each (noise only adds).
	read -r TRIG_US[$name] EXEC_US[$name] STMT_CPU[$name] SHARE[$name] TRIG_CPU[$name] < <(awk -v rows="$NROWS" '
		/^Trigger [a-z_]+: time=/ { split($3, a, "="); split($4, b, "="); trig = a[2] * 1000 / b[2] }
		/^Execution Time: / { ex = $3 * 1000 / rows }
		/^SCHED\|/ { split($0, f, "|"); n++
			cpu = f[2] / 1000 / rows; sh = f[2] / (f[2] + f[3])
			if (n == 1 || ex < mex) mex = ex
			if (n == 1 || cpu < mcpu) mcpu = cpu
			if (n == 1 || sh > msh) msh = sh
			if (trig != "") { tc = trig * sh; if (mtrig == "" || trig < mtrig) mtrig = trig; if (mtc == "" || tc < mtc) mtc = tc }
			trig = "" }
		END { if (n == 0) { print "– – – – –"; exit }
		      printf "%s %.2f %.2f %.2f %s\n", (mtrig == "" ? "–" : sprintf("%.2f", mtrig)), mex, mcpu, msh, (mtc == "" ? "–" : sprintf("%.2f", mtc)) }' "$out")
	IFS='|' read -r _ CACHE_N[$name] mem us < <(grep '^CACHE|' "$out" || echo "CACHE|-|0|0")
	CACHE_MB[$name]=$(awk -v m="${mem:-0}" 'BEGIN { printf "%.1f", m / 1048576 }')
	CACHE_MS[$name]=$(awk -v u="${us:-0}" 'BEGIN { printf "%.1f", u / 1000 }')
	log "  EXPLAIN $name: trigger ${TRIG_US[$name]} µs/row (CPU ≈ ${TRIG_CPU[$name]}), statement ${EXEC_US[$name]} µs/row, on CPU ${STMT_CPU[$name]} µs/row (share ${SHARE[$name]})"
}
log "EXPLAIN (ANALYZE) of a $(fmtn $NROWS)-row UPDATE"
for name in $(case_names); do explain_case "$name"; done

# ---------------------------------------------------------------- report
# median (over all whole seconds of all rounds) of a case:script, in tx/s
mean() { echo "${SAMPLES[$1]:-}" | tr ' ' '\n' | awk 'NF' | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# CPU µs per transaction (cluster + pgbench), and the ticker's part of it
cpu_us() { awk -v c="${CPU_ALL[$1]:-0}" -v n="${NTX[$1]:-0}" -v hz="$CLK_TCK" -v per="${2:-1}" 'BEGIN { if (n > 0) printf "%.1f", c / hz * 1e6 / n / per; else print "–" }'; }
ticker_us() { awk -v c="${CPU_TICKER[$1]:-0}" -v n="${NTX[$1]:-0}" 'BEGIN { if (n > 0) printf "%.1f", c / 1000 / n; else print "–" }'; }
ticks_per_tx() { awk -v t="${NTICKS[$1]:-0}" -v n="${NTX[$1]:-0}" 'BEGIN { if (n > 0) printf "%.2f", t / n; else print "–" }'; }
# a per-run counter summed over rounds, per transaction
per_tx() { local -n a=$1; awk -v c="${a[$2]:-0}" -v n="${NTX[$2]:-0}" 'BEGIN { if (n > 0) printf "%.2f", c / n; else print "–" }'; }
# half the interquartile range of those seconds, in % of the median
spread() { echo "${SAMPLES[$1]:-}" | tr ' ' '\n' | awk 'NF' | sort -n | awk '{ v[NR] = $1 }
	END { if (NR < 4) exit; q1 = v[int(NR / 4) + 1]; q3 = v[int(3 * NR / 4) + 1]; m = v[int(NR / 2) + 1]; if (m > 0) printf " ±%.0f%%", 50 * (q3 - q1) / m }'; }
avg_of() { # mean over rounds of an integer array value
	local -n arr=$1; local k=$2 r vals=""
	for r in $(seq 1 "$ROUNDS"); do vals+=" ${arr[$k:$r]:-}"; done
	echo "$vals" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; if (NF) printf "%.0f", s / NF }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.2f", a / b }'; }
num() { awk -v a="$1" -v m="${2:-1}" 'BEGIN { printf "%.0f", a * m }' | sed -E ':a; s/^([0-9]+)([0-9]{3})/\1 \2/; ta'; }
ms_h() { awk -v m="$1" 'BEGIN { if (m >= 10000) printf "%.1f s", m / 1000; else printf "%d ms", m }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a != "–" && a >= b) }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", 100 * (a / b - 1) }'; }

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
RAM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
HOST_DESC="$(nproc) CPUs ($CPU_MODEL), $RAM RAM, $(uname -sr)"

B_I=$(mean base:insert1); B_U=$(mean base:update1)
P_I=""; P_U=""
if [ $HAVE_PGQ = 1 ]; then P_I=$(mean peer_pgq:insert1); P_U=$(mean peer_pgq:update1); fi

load_note() { echo "$OTHER_ALL" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; if (NF && s / NF > 10) printf " The machine was shared with other work: absolute numbers are low and noisy; ratios come from interleaved runs."; }'; }
# target_row DESC CASE REFERENCE ROWS(1|100) MIN: one line of the targets table
target_row() {
	local desc=$1 c=$2 r=$3 sfx=$4 min=$5 op ti ci wi cells="" nmet=0 ntot=0
	for op in insert update; do
		ti=$(ratio "$(mean "$c:$op$sfx")" "$(mean "$r:$op$sfx")")
		ci=$(ratio "$(cpu_us "$r:$op$sfx")" "$(cpu_us "$c:$op$sfx")")
		wi=$(ratio "$(awk -v a="$(cpu_us "$r:$op$sfx")" -v b="$(ticker_us "$r:$op$sfx")" 'BEGIN { print a - b }')" \
			"$(awk -v a="$(cpu_us "$c:$op$sfx")" -v b="$(ticker_us "$c:$op$sfx")" 'BEGIN { print a - b }')")
		ge "$ti" "$min" && nmet=$((nmet + 1)); ge "$ci" "$min" && nmet=$((nmet + 1)); ntot=$((ntot + 2))
		cells+=" $ti, $ci ($wi) |"
	done
	local met="**no**"
	[ $nmet = $ntot ] && met=yes
	[ $nmet -gt 0 ] && [ $nmet -lt $ntot ] && met="borderline ($nmet of $ntot)"
	echo "| $desc |$cells $met |"
}
report() {
	local name i u
	echo "$SECTION"
	echo
	echo "_Generated by \`$COMMAND\` on $(date -u '+%Y-%m-%d %H:%M UTC')._"
	echo
	echo "- Machine: $HOST_DESC. pgbench, the server backends and the shapesync ticker share these CPUs."
	if [ -n "$BUILT_FROM" ]; then
		echo "- PostgreSQL $PGVERSION; shapesync $SHAPESYNC_VERSION built from commit ${BUILT_FROM:0:7} (clean clone, --install; shapesync.so md5 $SO_MD5)${PGQ_VERSION:+; PgQ $PGQ_VERSION}."
	else
		echo "- PostgreSQL $PGVERSION; shapesync $SHAPESYNC_VERSION as installed when the run started ($PKGLIB/shapesync.so of $SO_DATE, md5 $SO_MD5; repository HEAD was $COMMIT)${PGQ_VERSION:+; PgQ $PGQ_VERSION}."
	fi
	echo "- Cluster: scripts/pgcluster.sh, shapesync preloaded (ticker worker on), fsync off, shared_buffers 1GB, JIT off; autovacuum off for the benchmark tables and the logs (shapesync.changes, PgQ's event tables), which are reset before every run (rows added by the previous run deleted, logs truncated, VACUUM, ANALYZE shapesync.ticks, CHECKPOINT); clients use synchronous_commit=off."
	echo "- pgbench -M prepared, $CLIENTS clients, 1 thread, unix socket, ${DURATION} s per run, $ROUNDS round(s) over all cases in alternating order. tx/s is the median of the per-second transaction counts of all rounds (the first second of each run — connections, shape cache build — dropped); ± is half their interquartile range."
	echo "- Other load on the machine during the runs (CPU busy outside this cluster and pgbench, in % of all CPUs): mean $(echo "$OTHER_ALL" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", NF ? s / NF : 0 }')%, max $(echo "$OTHER_ALL" | awk '{ m = 0; for (i = 1; i <= NF; i++) if ($i > m) m = $i; print m }')%.$(load_note)"
	echo "- Table \`t(id bigserial primary key, owner_id int not null, amount int, title text, payload text)\`, $(fmtn $NROWS) rows, one copy per case. Per-user cases spread the rows over as many owners as there are shapes, so every written row is in exactly one shape and every write is logged (100 000 owners otherwise). General shapes: half \`amount BETWEEN a AND b\` ranges partitioning 0..9999, half \`title ILIKE '%xy%'\`. INSERT: one row, random owner. UPDATE: \`amount = amount + 1\` by random id (owner unchanged, the row stays in its shape)."
	echo
	echo "### Single-row transactions"
	echo
	echo "| table | shapes registered in | INSERT tx/s | × untracked | × PgQ | UPDATE tx/s | × untracked | × PgQ | change rows (shape ops) per tx, INSERT / UPDATE | ticks/s | ticker CPU, µs per tick |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for name in "${SINGLE[@]}"; do
		i=$(mean "$name:insert1"); u=$(mean "$name:update1")
		local reg="–"
		case ${KIND[$name]} in user | general) reg="$(ms_h "${REGMS[$name]}") ($(num "$(awk -v n="${NSHAPES[$name]}" -v m="${REGMS[$name]}" 'BEGIN { print (m > 0 ? n * 1000 / m : 0) }')")/s)" ;; esac
		local pi="–" pu="–"
		if [ -n "$P_I" ] && [ "$name" != base ] && [ "$name" != peer_pgq ]; then pi=$(ratio "$i" "$P_I"); pu=$(ratio "$u" "$P_U"); fi
		local tk="–" tc="–"
		case ${KIND[$name]} in none | pgq) ;; *)
			tk=$(( ($(avg_of TICKS "$name:insert1") + $(avg_of TICKS "$name:update1")) / 2 ))
			tc="$(( ($(avg_of TICKCPU "$name:insert1") + $(avg_of TICKCPU "$name:update1")) / 2 ))%, $(awk -v c="$(( ${CPU_TICKER[$name:insert1]:-0} + ${CPU_TICKER[$name:update1]:-0} ))" -v t="$(( ${NTICKS[$name:insert1]:-0} + ${NTICKS[$name:update1]:-0} ))" -v hz="$CLK_TCK" 'BEGIN { if (t > 0) printf "%.0f", c / 1000 / t; else print "–" }')" ;;
		esac
		local lg="–"
		case ${KIND[$name]} in none | pgq) ;; *) lg="$(per_tx LOGROWS "$name:insert1") ($(per_tx LOGOPS "$name:insert1")) / $(per_tx LOGROWS "$name:update1") ($(per_tx LOGOPS "$name:update1"))" ;; esac
		echo "| ${LABEL[$name]} | $reg | $(num "$i")$(spread "$name:insert1") | $(ratio "$i" "$B_I") | $pi | $(num "$u")$(spread "$name:update1") | $(ratio "$u" "$B_U") | $pu | $lg | $tk | $tc |"
	done
	echo
	echo "Ticks/s and ticker CPU (in % of one CPU): the shapesync ticker worker during the runs. It ticks once per doorbell ring, so under a steady write load it ticks back to back; µs per tick = its CPU time ÷ ticks."
	echo
	echo "### CPU per single-row transaction"
	echo
	echo "CPU time of the whole cluster (backends, ticker, WAL writer, ...) plus pgbench, divided by the transactions of all rounds — what throughput would follow on a machine with nothing else running; less sensitive to other load than tx/s. × untracked = untracked µs/tx ÷ this µs/tx (comparable to a throughput ratio)."
	echo
	echo "| table | INSERT µs/tx | × untracked | of which ticker | UPDATE µs/tx | × untracked | of which ticker |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	local bci bcu
	bci=$(cpu_us base:insert1); bcu=$(cpu_us base:update1)
	for name in "${SINGLE[@]}"; do
		local ci cu
		ci=$(cpu_us "$name:insert1"); cu=$(cpu_us "$name:update1")
		echo "| ${LABEL[$name]} | $ci | $(ratio "$bci" "$ci") | $(ticker_us "$name:insert1") | $cu | $(ratio "$bcu" "$cu") | $(ticker_us "$name:update1") |"
	done
	if [ ${#MULTI[@]} -gt 1 ]; then
		echo
		echo "### 100-row transactions"
		echo
		echo "INSERT ... SELECT of 100 rows from generate_series (random owners); UPDATE of 100 consecutive ids (\`amount = amount + 1\`)."
		echo
		echo "| table | INSERT tx/s | rows/s | × untracked | CPU µs/row | × untracked | UPDATE tx/s | rows/s | × untracked | CPU µs/row | × untracked |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		local bi bu
		bi=$(mean base:insert100); bu=$(mean base:update100)
		for name in "${MULTI[@]}"; do
			i=$(mean "$name:insert100"); u=$(mean "$name:update100")
			local pi pu
			pi=$(cpu_us "$name:insert100" 100); pu=$(cpu_us "$name:update100" 100)
			echo "| ${LABEL[$name]} | $(num "$i")$(spread "$name:insert100") | $(num "$i" 100) | $(ratio "$i" "$bi") | $pi | $(ratio "$(cpu_us base:insert100 100)" "$pi") | $(num "$u")$(spread "$name:update100") | $(num "$u" 100) | $(ratio "$u" "$bu") | $pu | $(ratio "$(cpu_us base:update100 100)" "$pu") |"
		done
	fi
	if [ ${#MOVE[@]} -gt 1 ]; then
		echo
		echo "### Single-row UPDATE that moves the row to another owner"
		echo
		echo "\`UPDATE t SET owner_id = <random owner> WHERE id = <random id>\`: with per-user shapes, a move-out of one shape and a move-in to another (one change row with two shape ops)."
		echo
		echo "| table | UPDATE tx/s | × untracked | CPU µs/tx | × untracked |"
		echo "|---|---:|---:|---:|---:|"
		local bm
		bm=$(mean base:update1_move)
		for name in "${MOVE[@]}"; do
			u=$(mean "$name:update1_move")
			echo "| ${LABEL[$name]} | $(num "$u")$(spread "$name:update1_move") | $(ratio "$u" "$bm") | $(cpu_us "$name:update1_move") | $(ratio "$(cpu_us base:update1_move)" "$(cpu_us "$name:update1_move")") |"
		done
	fi
	echo
	echo "### Trigger CPU per changed row"
	echo
	echo "EXPLAIN (ANALYZE) of \`UPDATE t SET amount = amount + 1 WHERE id <= $NROWS\` ($(fmtn $NROWS) rows, rolled back) on a freshly rewritten table (VACUUM FULL), after one warm-up write that built the backend's shape cache; $EXPLAIN_REPS repetition(s), each column the least disturbed one. *Trigger (EXPLAIN)*: the \"Trigger ...: time=... calls=...\" line ÷ calls — wall-clock time. *On-CPU share*: the backend's time on CPU ÷ (on CPU + waiting for a CPU) during the statement, from /proc/self/schedstat. *Trigger CPU* = trigger wall time × that share. *Statement CPU*: the backend's CPU time for the whole statement per row; *− untracked* is the extra CPU per row, trigger and after-trigger queue included."
	echo
	echo "| table | trigger (EXPLAIN) µs/row | on-CPU share | trigger CPU µs/row | statement CPU µs/row | − untracked µs/row | shape cache: shapes, memory, build time |"
	echo "|---|---:|---:|---:|---:|---:|---|"
	for name in "${SINGLE[@]}"; do
		local cache="–"
		if [ "${CACHE_N[$name]:-}" != "" ] && [ "${CACHE_N[$name]}" != "-" ]; then
			cache="$(fmtn "${CACHE_N[$name]}"), ${CACHE_MB[$name]} MB, ${CACHE_MS[$name]} ms"
		fi
		echo "| ${LABEL[$name]} | ${TRIG_US[$name]} | ${SHARE[$name]} | ${TRIG_CPU[$name]} | ${STMT_CPU[$name]} | $(awk -v a="${STMT_CPU[$name]}" -v b="${STMT_CPU[base]}" 'BEGIN { printf "%.2f", a - b }') | $cache |"
	done
	echo
	echo "### Targets (issue 3)"
	echo
	echo "Each ratio from throughput (tx/s) and from CPU per transaction (the reference's µs/tx ÷ this case's), and in parentheses the CPU ratio without the ticker worker's CPU — the writer's own path. Met = the first two met; \"borderline\" = only some."
	echo
	echo "| target | INSERT: tx/s ratio, CPU ratio (w/o ticker) | UPDATE: tx/s ratio, CPU ratio (w/o ticker) | met |"
	echo "|---|---|---|---|"
	local L="${LABEL[$UL]:-}" z
	if has_case "$UL"; then
		target_row "$L ≥ 0.85 × untracked, single-row" "$UL" base 1 0.85
		[ ${#MULTI[@]} -gt 1 ] && target_row "$L ≥ 0.7 × untracked, 100-row" "$UL" base 100 0.7
		has_case u10 && target_row "$L within 5% of 10 shapes, single-row (ratio to 10 shapes ≥ 0.95)" "$UL" u10 1 0.95
		z=${TRIG_CPU[$UL]}
		echo "| trigger CPU ≤ 2 µs/row at $L | $z µs/row (EXPLAIN: ${TRIG_US[$UL]} µs/row wall-clock) | | $(awk -v a="$z" 'BEGIN { exit !(a + 0 <= 2) }' && echo yes || echo "**no** ($(awk -v a="$z" 'BEGIN { printf "%.1f×", a / 2 }') the budget)") |"
	fi
	[ -n "$P_I" ] && target_row "tracked, 0 shapes ≥ PgQ" s0 peer_pgq 1 1
	if has_case w1 && has_case "$UL" && has_case s0; then
		echo
		echo "Where the time goes (trigger CPU column): the trigger call and shape cache check with no shape ${TRIG_CPU[s0]} µs/row (nothing written); writing the change row with nothing to classify ${TRIG_CPU[w1]} µs/row (1 whole-table shape); classifying against $(fmtn "$NLARGE") per-user shapes and writing the row ${TRIG_CPU[$UL]} µs/row. So the change-row write is ≈ $(awk -v a="${TRIG_CPU[w1]}" -v b="${TRIG_CPU[s0]}" 'BEGIN { printf "%.2f", a - b }') µs/row and the hash lookup of the per-user shapes ≈ $(awk -v a="${TRIG_CPU[$UL]}" -v b="${TRIG_CPU[w1]}" 'BEGIN { printf "%.2f", a - b }') µs/row. Outside the trigger function, an AFTER ROW trigger also costs PostgreSQL's after-trigger queue (an event saved per row, both row versions fetched again when it fires): 0 shapes, statement CPU − untracked − trigger CPU = $(awk -v a="${STMT_CPU[s0]}" -v b="${STMT_CPU[base]}" -v t="${TRIG_CPU[s0]}" 'BEGIN { printf "%.2f", a - b - t }') µs/row."
	fi
	if has_case "$UL"; then
		local op ex tk
		echo
		for op in insert update; do
			ex=$(awk -v a="$(cpu_us "$UL:${op}1")" -v b="$(cpu_us "base:${op}1")" 'BEGIN { printf "%.1f", a - b }')
			tk=$(ticker_us "$UL:${op}1")
			echo "Single-row ${op^^} at $L: $ex µs/tx more CPU than untracked, of which the ticker worker $tk µs/tx ($(ticks_per_tx "$UL:${op}1") ticks per transaction)."
		done
	fi
	if [ -n "$PERF_TOP" ]; then
		echo
		echo "<details><summary>perf profile of the backend during the EXPLAIN UPDATEs at $L (self time, ≥ 1.5%)</summary>"
		echo
		echo '```'
		echo "$PERF_TOP"
		echo '```'
		echo "</details>"
	fi
	[ "$HAVE_PGQ" = 1 ] || { echo; echo "PgQ was not installed: its case was skipped."; }
	[ "$HAVE_WHERE" = 1 ] || { echo; echo "The extension had no shape membership (WHERE) yet: per-user and general shapes were skipped."; }
}

# --auth: issue 11's benchmark, its own section
report_auth() {
	local name i u c bi bu
	echo "$SECTION"
	echo
	echo "_Generated by \`$COMMAND\` on $(date -u '+%Y-%m-%d %H:%M UTC')._"
	echo
	echo "- Machine: $HOST_DESC. pgbench, the server backends and the shapesync ticker share these CPUs."
	if [ -n "$BUILT_FROM" ]; then
		echo "- PostgreSQL $PGVERSION; shapesync $SHAPESYNC_VERSION built from commit ${BUILT_FROM:0:7} (clean clone, --install; shapesync.so md5 $SO_MD5)."
	else
		echo "- PostgreSQL $PGVERSION; shapesync $SHAPESYNC_VERSION as installed when the run started ($PKGLIB/shapesync.so of $SO_DATE, md5 $SO_MD5; repository HEAD was $COMMIT)."
	fi
	echo "- Cluster and measurement as in \"Cost to the writer\" (scripts/pgcluster.sh, shapesync preloaded, fsync off, shared_buffers 1GB, JIT off, tables and logs reset before every run; pgbench -M prepared, $CLIENTS clients, 1 thread, unix socket, synchronous_commit=off, ${DURATION} s per run, $ROUNDS round(s) in alternating order; tx/s = median of the per-second counts, the first second dropped; ± = half the interquartile range). CPU µs = CPU time of the whole cluster (ticker included) plus pgbench ÷ transactions."
	echo "- Other load on the machine during the runs (CPU busy outside this cluster and pgbench, in % of all CPUs): mean $(echo "$OTHER_ALL" | awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", NF ? s / NF : 0 }')%, max $(echo "$OTHER_ALL" | awk '{ m = 0; for (i = 1; i <= NF; i++) if ($i > m) m = $i; print m }')%.$(load_note)"
	echo "- Table \`t(id bigserial primary key, owner_id int not null, amount int, title text, payload text)\`, $(fmtn $NROWS) rows spread over as many owners as there are users (every written row is in exactly one user's shape), one copy per case."
	echo "- **Policy shapes**: \`ALTER TABLE t ENABLE ROW LEVEL SECURITY; CREATE POLICY own_rows ON t FOR SELECT TO bench_user USING (owner_id = auth.uid())\`, \`auth.uid()\` a STABLE SQL function reading \`request.jwt.claims\` (Supabase's, returning int here). Each user's shape is \`get_or_create_shape(t, NULL, NULL, '', NULL, 'bench_user', '{\"sub\": <i>, \"role\": \"bench_user\"}')\` — no filter of its own; the effective filter is the folded policy (bench/writer/register_policy.sql). **Explicit shapes**: \`get_or_create_shape(t, 'owner_id = <i>', NULL, '')\` on a table without RLS (bench/writer/register_per_user.sql). The writer is pgbench as a superuser (RLS does not apply to it), so the two differ only in how their shapes were made."
	echo
	echo "### What the registrations made"
	echo
	echo "| case | shapes registered in | active shapes | templates | filter of user 7 | template |"
	echo "|---|---:|---:|---:|---|---|"
	for name in "${SINGLE[@]}"; do
		case ${KIND[$name]} in user | policy) ;; *) continue ;; esac
		echo "| ${LABEL[$name]} | $(ms_h "${REGMS[$name]}") ($(num "$(awk -v n="${NSHAPES[$name]}" -v m="${REGMS[$name]}" 'BEGIN { print (m > 0 ? n * 1000 / m : 0) }')")/s) | $(fmtn "${REG_SHAPES[$name]}") | ${REG_TEMPLATES[$name]} | \`${REG_WHERE7[$name]}\` | \`${REG_TEMPLATE[$name]}\` |"
	done
	echo
	for n in 10 "$NLARGE"; do
		if [ "${SAME_FILTERS[$n]}" = 0 ]; then
			echo "The $(fmtn "$n") policy shapes' effective filters are exactly the $(fmtn "$n") explicit ones (set difference of the canonical filters both ways: empty)."
		else
			echo "**The $(fmtn "$n") policy shapes' filters differ from the explicit ones in ${SAME_FILTERS[$n]} place(s).**"
		fi
	done
	echo
	echo "### Writer throughput and CPU"
	echo
	echo "| case | INSERT tx/s | × untracked | CPU µs/tx | UPDATE tx/s | × untracked | CPU µs/tx | 100-row INSERT tx/s | × untracked | CPU µs/row | 100-row UPDATE tx/s | × untracked | CPU µs/row |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	B_I100=$(mean base:insert100); B_U100=$(mean base:update100)
	for name in "${SINGLE[@]}"; do
		i=$(mean "$name:insert1"); u=$(mean "$name:update1")
		echo "| ${LABEL[$name]} | $(num "$i")$(spread "$name:insert1") | $(ratio "$i" "$B_I") | $(cpu_us "$name:insert1") | $(num "$u")$(spread "$name:update1") | $(ratio "$u" "$B_U") | $(cpu_us "$name:update1") | $(num "$(mean "$name:insert100")")$(spread "$name:insert100") | $(ratio "$(mean "$name:insert100")" "$B_I100") | $(cpu_us "$name:insert100" 100) | $(num "$(mean "$name:update100")")$(spread "$name:update100") | $(ratio "$(mean "$name:update100")" "$B_U100") | $(cpu_us "$name:update100" 100) |"
	done
	echo
	echo "### Targets (issue 11)"
	echo
	echo "Each cell: tx/s ratio, CPU ratio (the reference's CPU per transaction ÷ this case's). \"The same\" is read as within 5% (≥ 0.95) on both."
	echo
	echo "| target | single-row INSERT | single-row UPDATE | 100-row INSERT | 100-row UPDATE | met |"
	echo "|---|---|---|---|---|---|"
	auth_target() {
		local desc=$1 c=$2 r=$3 cells="" nmet=0 ntot=0 sc sfx op ti ci
		for sc in insert1 update1 insert100 update100; do
			ti=$(ratio "$(mean "$c:$sc")" "$(mean "$r:$sc")")
			ci=$(ratio "$(cpu_us "$r:$sc")" "$(cpu_us "$c:$sc")")
			ge "$ti" 0.95 && nmet=$((nmet + 1)); ge "$ci" 0.95 && nmet=$((nmet + 1)); ntot=$((ntot + 2))
			cells+=" $ti, $ci |"
		done
		local met="**no** ($nmet of $ntot)"
		[ $nmet = $ntot ] && met=yes
		echo "| $desc |$cells $met |"
	}
	auth_target "$(fmtn "$NLARGE") users' policy shapes vs 10 users' (O(1) in users)" "p$NLARGE" p10
	auth_target "$(fmtn "$NLARGE") users' policy shapes vs $(fmtn "$NLARGE") explicit shapes" "p$NLARGE" "u$NLARGE"
	auth_target "10 users' policy shapes vs 10 explicit shapes" p10 u10
	echo
	echo "### Trigger CPU per changed row"
	echo
	echo "EXPLAIN (ANALYZE) of \`UPDATE t SET amount = amount + 1 WHERE id <= $NROWS\` (rolled back) after a warm-up write, as in \"Cost to the writer\": trigger CPU = the trigger's wall time × the backend's on-CPU share; statement CPU per row; the backend's shape cache after the warm-up."
	echo
	echo "| case | trigger CPU µs/row | statement CPU µs/row | − untracked µs/row | shape cache: shapes, memory, build time |"
	echo "|---|---:|---:|---:|---|"
	for name in "${SINGLE[@]}"; do
		c="–"
		if [ "${CACHE_N[$name]:-}" != "" ] && [ "${CACHE_N[$name]}" != "-" ]; then
			c="$(fmtn "${CACHE_N[$name]}"), ${CACHE_MB[$name]} MB, ${CACHE_MS[$name]} ms"
		fi
		echo "| ${LABEL[$name]} | ${TRIG_CPU[$name]} | ${STMT_CPU[$name]} | $(awk -v a="${STMT_CPU[$name]}" -v b="${STMT_CPU[base]}" 'BEGIN { printf "%.2f", a - b }') | $c |"
	done
	if [ -n "$PERF_TOP" ]; then
		echo
		echo "<details><summary>perf profile of the backend during the EXPLAIN UPDATEs at ${LABEL[$UL]} (self time, ≥ 1.5%)</summary>"
		echo
		echo '```'
		echo "$PERF_TOP"
		echo '```'
		echo "</details>"
	fi
}

if [ $AUTH = 1 ]; then REPORT=$(report_auth); else REPORT=$(report); fi
echo "$REPORT"

# ---------------------------------------------------------------- RESULTS.md
if [ $WRITE = 1 ]; then
	printf '%s\n' "$REPORT" | "$ROOT/scripts/write-results-section.py" "${SECTION#\#\# }" --keep "$([ $AUTH = 1 ] && echo auth-writer-analysis || echo writer-analysis)"
fi
