#!/usr/bin/env bash
# test.sh — body of `make test` (the Makefile has already built and installed the
# extension and built the sidecar). Runs every suite, continuing after a failing
# one, and ends with the totals on a line of its own: `N passed, N failed`.
#
#   1. scripts/pg-regress.sh   pg_regress + isolation   ("regress: N passed, N failed")
#   2. ctest --test-dir build  sidecar GoogleTest        ("X% tests passed, N tests failed out of M")
#   3. node --test tests/e2e   the real npm clients      ("# pass N" / "# fail N")
#   4. clients/typescript      the client kit: tsc, build, vitest against a real stack
#   5. demo                    the demo app type-checked and built, then in headless Chromium (node --test demo/e2e)
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

phase_start=$SECONDS
note() {
	phase_start=$SECONDS
	printf '\n==> %s\n' "$*"
}

# record NAME PASSED FAILED RC [why]
record() {
	local name=$1 pass=$2 fail=$3 rc=$4 why=${5:-}
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		fail=1
		why=${why:-"exited $rc without reporting a failed test"}
	fi
	total_pass=$((total_pass + pass))
	total_fail=$((total_fail + fail))
	summary+=("$(printf '%-11s %d passed, %d failed, %d s%s' "$name" "$pass" "$fail" $((SECONDS - phase_start)) "${why:+ ($why)}")")
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
# One `node --test` per file, each under its own time limit, so a file that
# hangs is named and the rest still run. Every file closes what it opens and
# ends by itself (on Node 18 as on 20); --test-force-exit (Node >= 20.14) is
# only a safety net. Budgets are sized for a slow 2-core machine (CI allows
# 90 minutes): a file may take SHAPESYNC_E2E_FILE_TIMEOUT s (default 600, the
# slowest takes about 70 s here), the whole suite SHAPESYNC_E2E_BUDGET s
# (default 2700); files not started within the budget count as failed.
note "e2e (tests/e2e, node --test, one file at a time)"
if ! command -v node >/dev/null 2>&1; then
	record e2e 0 1 1 "node not installed"
else
	# node_modules missing, or without a dependency of package.json at its version
	if ! (cd tests/e2e && node -e '
		const fs = require("fs");
		for (const [d, v] of Object.entries(JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies || {})) {
			const f = "node_modules/" + d + "/package.json";
			if (!fs.existsSync(f) || JSON.parse(fs.readFileSync(f, "utf8")).version !== v) process.exit(1);
		}') >/dev/null 2>&1; then
		(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error) || true
	fi
	file_timeout=${SHAPESYNC_E2E_FILE_TIMEOUT:-600}
	budget=${SHAPESYNC_E2E_BUDGET:-2700}
	node_flags=(--test --test-concurrency=1 --test-reporter=tap)
	node --test-force-exit -e 0 >/dev/null 2>&1 && node_flags+=(--test-force-exit)
	echo "node $(node --version), flags: ${node_flags[*]}; ${file_timeout} s per file, ${budget} s in all"
	e2e_pass=0
	e2e_fail=0
	e2e_rc=0
	e2e_why=()
	e2e_start=$SECONDS
	for f in tests/e2e/test/*.test.js; do
		name=${f#tests/e2e/}
		left=$((budget - (SECONDS - e2e_start)))
		if [ "$left" -le 0 ]; then
			echo "e2e: $name not run: the suite's ${budget} s budget is spent"
			e2e_fail=$((e2e_fail + 1))
			e2e_why+=("$name not run")
			continue
		fi
		secs=$((left < file_timeout ? left : file_timeout))
		logf="$LOGDIR/e2e-$(basename "$f" .test.js).log"
		t0=$SECONDS
		(cd tests/e2e && run_suite "$logf" "$secs" node "${node_flags[@]}" "$name")
		rc=$?
		p=$(grep -E '^# pass [0-9]+' "$logf" | tail -n 1 | awk '{print $3}')
		fl=$(grep -E '^# fail [0-9]+' "$logf" | tail -n 1 | awk '{print $3}')
		c=$(grep -E '^# cancelled [0-9]+' "$logf" | tail -n 1 | awk '{print $3}')
		if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
			# killed by timeout: count the tests that finished, and the hang
			p=$(grep -cE '^ok [0-9]+' "$logf")
			fl=$(grep -cE '^not ok [0-9]+' "$logf")
			echo "e2e: $name did not end within ${secs} s (killed): a test hangs, or the file leaves a handle open"
			e2e_fail=$((e2e_fail + fl + 1))
			e2e_pass=$((e2e_pass + p))
			e2e_why+=("$name hung")
			e2e_rc=1
		elif [ -n "$p" ] && [ -n "$fl" ]; then
			e2e_pass=$((e2e_pass + p))
			e2e_fail=$((e2e_fail + fl + ${c:-0}))
			[ "$rc" -ne 0 ] && [ $((fl + ${c:-0})) -eq 0 ] && { e2e_fail=$((e2e_fail + 1)); e2e_why+=("$name exited $rc"); }
		else
			e2e_fail=$((e2e_fail + 1))
			e2e_why+=("$name: no '# pass' / '# fail' lines, exit $rc")
			e2e_rc=1
		fi
		echo "e2e: $name: $((SECONDS - t0)) s"
	done
	why=$(IFS=';'; echo "${e2e_why[*]:-}")
	record e2e "$e2e_pass" "$e2e_fail" "$e2e_rc" "${why# }"
	echo "e2e: $((SECONDS - e2e_start)) s in all"
fi

# --- 4. the client kit: type-check, build, vitest (jsdom) against a real stack --
# Node's npm workspace at the top (clients/typescript, demo), installed by
# scripts/install-deps.sh from package-lock.json.
note "client kit (clients/typescript: tsc, build, vitest)"
if ! command -v node >/dev/null 2>&1; then
	record client 0 1 1 "node not installed"
else
	if [ ! -d node_modules ]; then
		npm ci --no-audit --no-fund --loglevel=error || true
	fi
	kit_pass=0
	kit_fail=0
	kit_why=()
	for step in typecheck build; do
		if (cd clients/typescript && run_suite "$LOGDIR/kit-$step.log" 300 npm run --silent "$step"); then
			kit_pass=$((kit_pass + 1))
		else
			kit_fail=$((kit_fail + 1))
			kit_why+=("$step failed")
		fi
	done
	(cd clients/typescript && NO_COLOR=1 run_suite "$LOGDIR/kit-vitest.log" 900 npx --no-install vitest run --reporter=default)
	rc=$?
	line=$(grep -E '^ +Tests +' "$LOGDIR/kit-vitest.log" | tail -n 1)
	p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)
	f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || true)
	if [ -n "$line" ]; then
		kit_pass=$((kit_pass + ${p:-0}))
		kit_fail=$((kit_fail + ${f:-0}))
		[ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ] && { kit_fail=$((kit_fail + 1)); kit_why+=("vitest exited $rc"); }
	else
		kit_fail=$((kit_fail + 1))
		kit_why+=("vitest: no 'Tests' line, exit $rc")
	fi
	why=$(IFS=';'; echo "${kit_why[*]:-}")
	record client "$kit_pass" "$kit_fail" 0 "$why"
fi

# --- 5. the demo in headless Chromium ---------------------------------------
note "demo (vite build, tsc, node --test demo/e2e in headless Chromium)"
if ! command -v node >/dev/null 2>&1; then
	record demo 0 1 1 "node not installed"
elif ! (cd demo && run_suite "$LOGDIR/demo-build.log" 300 npx --no-install vite build --logLevel warn); then
	record demo 0 1 1 "vite build failed"
else
	demo_pass=0
	demo_fail=0
	demo_why=()
	if (cd demo && run_suite "$LOGDIR/demo-tsc.log" 300 npx --no-install tsc -p tsconfig.json); then
		demo_pass=$((demo_pass + 1))
	else
		demo_fail=$((demo_fail + 1))
		demo_why+=("tsc failed")
	fi
	node_flags=(--test --test-concurrency=1 --test-reporter=tap)
	for f in demo/e2e/*.test.js; do
		logf="$LOGDIR/demo-$(basename "$f" .test.js).log"
		(cd demo && run_suite "$logf" 600 node "${node_flags[@]}" "${f#demo/}")
		rc=$?
		p=$(grep -E '^# pass [0-9]+' "$logf" | tail -n 1 | awk '{print $3}')
		fl=$(grep -E '^# fail [0-9]+' "$logf" | tail -n 1 | awk '{print $3}')
		c=$(grep -E '^# cancelled [0-9]+' "$logf" | tail -n 1 | awk '{print $3}')
		if [ -n "$p" ] && [ -n "$fl" ]; then
			demo_pass=$((demo_pass + p))
			demo_fail=$((demo_fail + fl + ${c:-0}))
			[ "$rc" -ne 0 ] && [ $((fl + ${c:-0})) -eq 0 ] && { demo_fail=$((demo_fail + 1)); demo_why+=("$f exited $rc"); }
		else
			demo_fail=$((demo_fail + 1))
			demo_why+=("$f: no '# pass' / '# fail' lines, exit $rc")
		fi
	done
	why=$(IFS=';'; echo "${demo_why[*]:-}")
	record demo "$demo_pass" "$demo_fail" 0 "$why"
fi

printf '\n==> summary\n'
printf '%s\n' "${summary[@]}"
printf '%d passed, %d failed\n' "$total_pass" "$total_fail"
[ "$total_fail" -eq 0 ]
