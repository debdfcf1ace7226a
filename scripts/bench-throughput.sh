#!/usr/bin/env bash
# bench-throughput.sh — sustained change throughput routed through shapesyncd:
# pgbench writers (100-row INSERT and UPDATE transactions spread over owners)
# on a tracked table with N equality shapes `owner_id = k`, H of them held by
# the sidecar; row changes committed per second, row changes per second the
# sidecar applied (until a sentinel write arrived), deliveries into shape logs,
# lag, sidecar CPU and RSS; and, in the same run, the same pgbench workload on an
# untracked copy of the table (the baseline). Program: bench/throughput.cpp.
# Prints a Markdown section and, with --write, replaces the "Sustained change
# throughput" section of bench/RESULTS.md.
#
#   scripts/bench-throughput.sh [--quick] [--write] [--shapes 100000] [--held N]
#                               [--duration 30] [--clients 2] [--perf] [--perf-backends]
#                               [--owner-index] [--catch-up]
#
# --quick: 10 000 shapes, 2 000 held by the sidecar, 5 s of writes (a smoke run).
# --held:  shapes the sidecar holds (default: all of --shapes).
# --owner-index: index owner_id in both tables (the baseline's too), so that holding
#          100 000 shapes does not scan the table once per snapshot.
# --catch-up: stop the sidecar (SIGSTOP) while the writers run and resume it after:
#          how fast it applies the waiting changes alone on the machine (its ceiling).
# BENCH_KV_OUT=<file>: also copy the program's KV lines there (e.g. the memory budget's
#          figures from /metrics: held bytes, evictions); sidecar settings come from its
#          environment (SHAPESYNC_MAX_MEMORY=1G, ...).
# --perf:  perf record on the sidecar from the start of the writes to the sentinel;
#          --perf-backends: on the sidecar's PostgreSQL sessions instead (batch reads).
set -euo pipefail
ARGS=()
for a in "$@"; do [ "$a" != --write ] && ARGS+=("$a"); done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHAPES=100000
HELD=
DURATION=30
CLIENTS=2
WRITE=0
PERF=0
PERF_WHAT=sidecar
OWNER_INDEX=0
CATCH_UP=0
while [ $# -gt 0 ]; do
	case $1 in
	--quick) SHAPES=10000; HELD=${HELD:-2000}; DURATION=5; shift ;;
	--write) WRITE=1; shift ;;
	--shapes) SHAPES=$2; shift 2 ;;
	--held) HELD=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--clients) CLIENTS=$2; shift 2 ;;
	--perf) PERF=1; shift ;;
	--perf-backends) PERF=1; PERF_WHAT=backends; shift ;;
	--owner-index) OWNER_INDEX=1; shift ;;
	--catch-up) CATCH_UP=1; shift ;;
	*) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
HELD=${HELD:-$SHAPES}
[ "$HELD" -le "$SHAPES" ] || HELD=$SHAPES
BIN=${SHAPESYNC_BUILD:-build}
[ -x "$BIN/throughput" ] && [ -x "$BIN/shapesyncd" ] ||
	{ echo "build first: cmake --build build --target shapesyncd benches" >&2; exit 1; }
PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/pgbench" ] || PGBIN=$(pg_config --bindir)

WORK=$(mktemp -d /tmp/shapesync-throughput.XXXXXX)
chmod 755 "$WORK"
SIDECAR_PID=
CLEAN_EXIT=unknown
stop_sidecar() {
	[ -n "$SIDECAR_PID" ] || return 0
	kill "$SIDECAR_PID" 2>/dev/null || true
	for _ in $(seq 1 150); do
		kill -0 "$SIDECAR_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$SIDECAR_PID" 2>/dev/null || true
	if grep -q 'info stopped' "$WORK/shapesyncd.log"; then CLEAN_EXIT=yes; else CLEAN_EXIT=no; fi
	SIDECAR_PID=
}
cleanup() {
	stop_sidecar
	scripts/pgcluster.sh destroy "$WORK/pg" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PGPORT=$(scripts/pgcluster.sh free-port)
URL=$(SHAPESYNC_PG_FSYNC=off scripts/pgcluster.sh start "$WORK/pg" "$PGPORT" bench 2>/dev/null | tail -n1)
psql_q() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -XAtq -v ON_ERROR_STOP=1 "$URL" "$@"; }
# Everything in memory, no checkpoint during a run, no JIT (as bench-writer.sh); restart to apply.
psql_q -c "ALTER SYSTEM SET shared_buffers = '1GB'" -c "ALTER SYSTEM SET max_wal_size = '8GB'" \
	-c "ALTER SYSTEM SET checkpoint_timeout = '1h'" -c "ALTER SYSTEM SET jit = off" >/dev/null
SHAPESYNC_PG_FSYNC=off scripts/pgcluster.sh start "$WORK/pg" "$PGPORT" bench >/dev/null 2>&1
WORKER=$(psql_q -c 'SELECT shapesync.worker_pid()')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

HTTPPORT=$(scripts/pgcluster.sh free-port)
SIDECAR_ARGS=(--data-dir "$WORK/sidecar-data" --insecure)
"$BIN/shapesyncd" --database-url "$URL" --listen "127.0.0.1:$HTTPPORT" "${SIDECAR_ARGS[@]}" \
	>"$WORK/shapesyncd.log" 2>&1 &
SIDECAR_PID=$!
disown "$SIDECAR_PID"
for _ in $(seq 1 100); do
	curl -sf "http://127.0.0.1:$HTTPPORT/v1/health" | grep -q active && break
	sleep 0.1
done
curl -sf "http://127.0.0.1:$HTTPPORT/v1/health" | grep -q active ||
	{ echo "shapesyncd did not become healthy:" >&2; cat "$WORK/shapesyncd.log" >&2; exit 1; }

PERF_ARGS=()
HAVE_PERF=0
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then PERF_ARGS=(--perf-out "$WORK/perf.data" --perf-what "$PERF_WHAT"); HAVE_PERF=1; fi
T0=$(date +%s)
if ! "$BIN/throughput" --database-url "$URL" --http "127.0.0.1:$HTTPPORT" --sidecar-pid "$SIDECAR_PID" \
	--pgbench "$PGBIN/pgbench" --pg-host 127.0.0.1 --pg-port "$PGPORT" --pg-db bench --work "$WORK" \
	--shapes "$SHAPES" --held "$HELD" --duration "$DURATION" --clients "$CLIENTS" --owner-index "$OWNER_INDEX" --catch-up "$CATCH_UP" "${PERF_ARGS[@]}" >"$WORK/kv"; then
	echo "throughput failed; sidecar log tail:" >&2
	tail -n 30 "$WORK/shapesyncd.log" >&2
	exit 1
fi
ELAPSED=$(($(date +%s) - T0))
# every KV line of the program (memory figures included), for a caller that wants more than the section
[ -z "${BENCH_KV_OUT:-}" ] || cp "$WORK/kv" "$BENCH_KV_OUT"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
SIDECAR_WARN=$(grep -iE 'warn|error' "$WORK/shapesyncd.log" | sed -E 's/^[^ ]+ [^ ]+ //' | sort | uniq -c | sort -rn | head -n 5 || true)
PGV=$(psql_q -c 'SHOW server_version')
stop_sidecar

PERF_TOP=
PERF_DSO=
if [ "$HAVE_PERF" = 1 ] && [ -s "$WORK/perf.data" ]; then
	PERF_TOP=$(perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
		grep -E '^ +[0-9.]+%' | head -n 20 | cut -c1-160 | sed 's/ *$//' || true)
	PERF_DSO=$(perf report -i "$WORK/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null |
		grep -E '^ +[0-9.]+%' | head -n 6 | sed 's/ *$//' || true)
fi

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
CMD="scripts/bench-throughput.sh${ARGS[*]:+ ${ARGS[*]}}"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
SECTION=$(python3 - "$WORK/kv" <<PY
import sys
kv = {}
for line in open(sys.argv[1]):
    if line.startswith("KV "):
        _, k, *v = line.rstrip("\n").split(" ")
        kv[k] = " ".join(v)
f = lambda k: float(kv[k])
def n(x):
    return "{:,.0f}".format(x).replace(",", " ")
shapes, held, dur, clients = $SHAPES, $HELD, $DURATION, $CLIENTS
base, tracked = f("base_rows_per_s"), f("tracked_rows_per_s")
applied, deliv = f("applied_rows_per_s"), f("deliveries_per_s")
target = 50000
held_txt = ("all %s of them" % n(held)) if held == shapes else ("%s of them (owner_id 1..%s)" % (n(held), n(held)))
out = []
out.append("## Sustained change throughput")
out.append("")
out.append("""$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($CPU), $MEM RAM, $(uname -sr); PostgreSQL $PGV on a
throwaway cluster (scripts/pgcluster.sh, shapesync preloaded: the ticker worker ticks; **fsync off**, synchronous_commit on,
shared_buffers 1GB, JIT off). pgbench, the server, the sidecar (one I/O thread per core) and the load program share the
machine. Load average before/after: $LOAD_BEFORE / $LOAD_AFTER; the run took $ELAPSED s.
Command: \`$CMD\` (program: bench/throughput.cpp), built from commit $COMMIT.
Sidecar: \`shapesyncd --data-dir <work dir>/sidecar-data\`, default settings otherwise.""")
out.append("")
out.append(("Table \`tp (id bigint primary key, owner_id int not null, v text, n int)\`, %s rows (row i owned by "
            "(i − 1) %% %s + 1), tracked with \`shapesync.track\`; an untracked copy \`tp_base\` with the same rows. "
            "%s equality shapes \`owner_id = k\` registered in the extension (one statement of "
            "\`shapesync.get_or_create_shape\` per 10 000 shapes, %s s in all; per statement: %s s); the sidecar holds %s: each requested over HTTP "
            "(\`where=owner_id = k\`, offset=-1 to up-to-date, 64 connections) in %s s (%s shapes/s, %s retried), "
            "so it routes every change into them. Writers: pgbench -M prepared, %d clients, %d s, two scripts "
            "half each: a 100-row \`INSERT ... SELECT\` (owners spread over 1..%s) and a 100-row \`UPDATE ... SET n = n + 1\` "
            "of consecutive ids (100 different owners); every row change is in exactly one shape. Baseline: the same "
            "pgbench run on \`tp_base\` first, in the same run.")
           % (n(f("rows")), n(shapes), n(shapes), kv["reg_sql_s"], kv["reg_sql_batches"], held_txt, kv["hold_s"], kv["hold_per_s"],
              kv["hold_errors"], clients, dur, n(shapes)))
out.append("")
out.append("While the writers run, a probe row (\`owner_id = 0\`, its own transaction) is inserted every second into "
           "a shape the program long-polls; commit → arrival is the sidecar's lag at that moment. When pgbench has "
           "exited, a last probe, the *sentinel*: ticks are applied in order, so when it arrives the sidecar has "
           "applied every earlier change. *Applied* = row changes committed by the writers (counted in the table: "
           "inserted rows + sum(n)) ÷ (sentinel arrival − start of the writes). *Deliveries* = entries found in the "
           "held shapes' logs afterwards (every held shape read from its offset before the writes to up-to-date) ÷ "
           "the same time. Sidecar CPU is utime+stime from /proc in % of one core.")
out.append("")
out.append("| measure | value | × baseline |")
out.append("|---|---:|---:|")
out.append("| baseline: writers on the untracked table, row changes/s | %s | 1.00 |" % n(base))
out.append("| writers on the tracked table, row changes committed/s | %s | %.2f |" % (n(tracked), tracked / base))
out.append("| row changes applied by the sidecar per second (until the sentinel) | **%s** | %.2f |" % (n(applied), applied / base))
out.append("| deliveries into shape logs per second | %s | %.2f |" % (n(deliv), deliv / base))
out.append("| row changes in the run (inserted + updated) | %s (%s + %s; pgbench: %s tx × 100 = %s) | |"
           % (n(f("changes")), n(f("changes_inserted")), n(f("changes_updated")), n(f("tracked_tx")), n(f("changes_expected_tx"))))
out.append("| entries in the held shapes' logs / row changes to held owners (table) | %s / %s%s | |"
           % (n(f("delivered")), n(f("changes_held")), "" if kv["readback_errors"] == "0" else " (%s read-back errors)" % kv["readback_errors"]))
out.append("| writes took / sentinel arrived after | %s s / %s s | |" % (kv["tracked_write_s"], kv["applied_s"]))
out.append("| lag at the end of the writes (sentinel commit → arrival) | %s s | |" % kv["lag_end_s"])
if "catch_up_s" in kv:
    out.append("| --catch-up: the sidecar, stopped during the writes, resumed → sentinel arrived | %s s: **%s** row changes/s | %.2f |"
               % (kv["catch_up_s"], n(f("catch_up_rows_per_s")), f("catch_up_rows_per_s") / base))
out.append("| lag during the writes, %s probes: median / p90 / max | %s / %s / %s s | |"
           % (kv["probe_lag_n"], kv["probe_lag_median_s"], kv["probe_lag_p90_s"], kv["probe_lag_max_s"]))
out.append("| sidecar CPU, during the writes / until the sentinel | %s%% / %s%% of a core | |" % (kv["sidecar_cpu_writes_pct"], kv["sidecar_cpu_all_pct"]))
out.append("| the sidecar's %s PostgreSQL sessions (batch reads, pool) CPU until the sentinel | %s%% of a core | |" % (kv["backends_n"], kv["backends_cpu_all_pct"]))
out.append("| ticker worker CPU until the sentinel | %s%% of a core | |" % kv["worker_cpu_all_pct"])
out.append("| machine busy, during the writes / until the sentinel | %s%% / %s%% of all CPUs | |" % (kv["machine_writes_pct"], kv["machine_all_pct"]))
out.append("| sidecar RSS: idle / holding the shapes / after the run (peak) | %s / %s / %s (%s) MiB | |"
           % (kv["rss_idle_mib"], kv["rss_held_mib"], kv["rss_end_mib"], kv["rss_peak_mib"]))
out.append("")
out.append("Probe lag per second of the writes (s): %s." % kv["probe_lag_series"])
out.append("")
ms = kv["metrics_status"]
out.append("Counters: this sidecar has no \`/metrics\` endpoint (GET /metrics → %s), so the figures above come from the "
           "table, the probes and reading the shape logs back." % ms if ms != "200" else "GET /metrics → 200.")
out.append("")
def verdict(v):
    return "met" if v >= target else "missed: %.2f of the target" % (v / target)
out.append("Target (the issue): 50 000 row changes per second into shapes, with 100 000 equality shapes registered.")
out.append("")
out.append("| target | measured | verdict |")
out.append("|---|---|---|")
cond = "%s shapes registered, %s held by the sidecar" % (n(shapes), n(held))
out.append("| ≥ 50 000 row changes/s applied into shapes (%s) | %s/s | %s |" % (cond, n(applied), verdict(applied)))
out.append("| ≥ 50 000 deliveries/s into shape logs (%s) | %s/s | %s |" % (cond, n(deliv), verdict(deliv)))
out.append("| writers ≥ 50 000 row changes/s on the tracked table | %s/s | %s |" % (n(tracked), verdict(tracked)))
print("\n".join(out))
PY
)
if [ -n "$PERF_TOP" ]; then
	PWHO="Sidecar"; [ "$PERF_WHAT" = backends ] && PWHO="The sidecar's PostgreSQL sessions'"
	SECTION+=$(printf '\n\n%s profile from the start of the writes to the sentinel (`perf record -g -F 499`; self time, top symbols):\n\n```\n%s\n```\n\nBy binary:\n\n```\n%s\n```' "$PWHO" "$PERF_TOP" "$PERF_DSO")
fi
if [ -n "$SIDECAR_WARN" ]; then
	SECTION+=$(printf '\n\nSidecar log warnings/errors (count, message):\n\n```\n%s\n```' "$SIDECAR_WARN")
fi
[ "$CLEAN_EXIT" = no ] && SECTION+=$'\n\nThe sidecar did not log "stopped" on SIGTERM (crashed or killed).'
echo "$SECTION"
if [ "$WRITE" = 1 ]; then
	printf '%s\n' "$SECTION" | scripts/write-results-section.py "Sustained change throughput"
fi
