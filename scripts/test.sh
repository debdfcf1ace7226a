#!/usr/bin/env bash
# test.sh — body of `make test` (the Makefile has already built and installed the
# extension and built the sidecar). Runs every suite, continuing after a failing
# one, and ends with the totals on a line of its own: `N passed, N failed`.
#
#   1. scripts/pg-regress.sh   pg_regress + isolation   ("regress: N passed, N failed")
#   2. ctest --test-dir build  sidecar GoogleTest        ("X% tests passed, N tests failed out of M")
#   3. node --test tests/e2e   the real npm clients      ("# pass N" / "# fail N")
#
# A suite that cannot run, or exits non-zero without reporting a failure, counts
# as one failure. Exit status 1 when anything failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/shapesync-test.XXXXXX")
trap 'rm -rf "$LOGDIR"' EXIT

total_pass=0
total_fail=0
summary=()

note() { printf '\n==> %s\n' "$*"; }

# record NAME PASSED FAILED RC [why]
record() {
	local name=$1 pass=$2 fail=$3 rc=$4 why=${5:-}
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		fail=1
		why=${why:-"exited $rc without reporting a failed test"}
	fi
	total_pass=$((total_pass + pass))
	total_fail=$((total_fail + fail))
	summary+=("$(printf '%-11s %d passed, %d failed%s' "$name" "$pass" "$fail" "${why:+ ($why)}")")
}

# run_suite LOG TIMEOUT_S CMD... — run with output shown and kept, return its status.
run_suite() {
	local logf=$1 secs=$2
	shift 2
	timeout --kill-after=15 "$secs" "$@" 2>&1 | tee "$logf"
	return "${PIPESTATUS[0]}"
}

# --- 0. metadata: META.json's versions match shapesync.control ---------------
note "metadata (META.json vs shapesync.control)"
ctl_version=$(sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" shapesync.control)
meta_bad=$(python3 - "$ctl_version" <<'PY'
import json, sys
v = sys.argv[1]
m = json.load(open("META.json"))
bad = [k for k, x in [("version", m.get("version"))] + [("provides." + n, p.get("version")) for n, p in m.get("provides", {}).items()] if x != v]
print(" ".join(bad))
PY
)
if [ -n "$ctl_version" ] && [ -z "$meta_bad" ]; then
	echo "META.json and shapesync.control agree on $ctl_version"
	record metadata 1 0 0
else
	echo "META.json disagrees with shapesync.control ($ctl_version): $meta_bad"
	record metadata 0 1 1 "version mismatch"
fi

# --- 1. extension: pg_regress + isolation ------------------------------------
if [ -f scripts/pg-regress.sh ]; then
	note "pg-regress (scripts/pg-regress.sh)"
	run_suite "$LOGDIR/regress.log" 300 bash scripts/pg-regress.sh
	rc=$?
	line=$(grep -E '^regress: [0-9]+ passed, [0-9]+ failed' "$LOGDIR/regress.log" | tail -n 1)
	if [ -n "$line" ]; then
		p=$(sed -E 's/^regress: ([0-9]+) passed, ([0-9]+) failed.*/\1/' <<<"$line")
		f=$(sed -E 's/^regress: ([0-9]+) passed, ([0-9]+) failed.*/\2/' <<<"$line")
		record pg-regress "$p" "$f" "$rc"
	else
		record pg-regress 0 1 "$rc" "no 'regress: N passed, N failed' line; exit $rc"
	fi
else
	note "pg-regress: scripts/pg-regress.sh not present, skipped"
	summary+=("$(printf '%-11s skipped (scripts/pg-regress.sh not present)' pg-regress)")
fi

# --- 2. sidecar: GoogleTest through ctest ------------------------------------
if [ -d build ] && [ -f build/CTestTestfile.cmake ]; then
	note "ctest (build/)"
	run_suite "$LOGDIR/ctest.log" 300 ctest --test-dir build --output-on-failure --timeout 300
	rc=$?
	line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$LOGDIR/ctest.log" | tail -n 1)
	if [ -n "$line" ]; then
		f=$(sed -E 's/.*% tests passed, ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
		m=$(sed -E 's/.*% tests passed, ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
		record ctest $((m - f)) "$f" "$rc"
	elif grep -q 'No tests were found' "$LOGDIR/ctest.log"; then
		record ctest 0 0 0 "no tests registered"
	else
		record ctest 0 1 "$rc" "no ctest summary line; exit $rc"
	fi
else
	note "ctest: build/ has no CTest files"
	record ctest 0 1 1 "build/ not configured: 'make sidecar' did not run"
fi

# --- 3. end-to-end: the real @electric-sql clients ----------------------------
note "e2e (tests/e2e, node --test)"
if ! command -v node >/dev/null 2>&1; then
	record e2e 0 1 1 "node not installed"
else
	if [ ! -d tests/e2e/node_modules ]; then
		(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error) || true
	fi
	# @electric-sql/client leaves a 60 s timer behind (its localStorage write
	# throttle); --test-force-exit (Node >= 20.14) does not wait for it.
	node_flags=(--test --test-concurrency=1 --test-reporter=tap)
	node --test-force-exit -e 0 >/dev/null 2>&1 && node_flags+=(--test-force-exit)
	(
		cd tests/e2e &&
			run_suite "$LOGDIR/e2e.log" 900 node "${node_flags[@]}" test/
	)
	rc=$?
	p=$(grep -E '^# pass [0-9]+' "$LOGDIR/e2e.log" | tail -n 1 | awk '{print $3}')
	f=$(grep -E '^# fail [0-9]+' "$LOGDIR/e2e.log" | tail -n 1 | awk '{print $3}')
	c=$(grep -E '^# cancelled [0-9]+' "$LOGDIR/e2e.log" | tail -n 1 | awk '{print $3}')
	if [ -n "$p" ] && [ -n "$f" ]; then
		record e2e "$p" $((f + ${c:-0})) "$rc"
	else
		record e2e 0 1 "$rc" "no '# pass' / '# fail' lines; exit $rc"
	fi
fi

printf '\n==> summary\n'
printf '%s\n' "${summary[@]}"
printf '%d passed, %d failed\n' "$total_pass" "$total_fail"
[ "$total_fail" -eq 0 ]
