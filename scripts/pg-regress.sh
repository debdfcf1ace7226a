#!/usr/bin/env bash
# Run the extension's pg_regress and isolationtester suites (PGXS installcheck
# with --temp-instance), as the postgres user when started as root, in a
# temporary directory so that it works from any checkout.  The extension must
# be installed (make install).  Prints "regress: N passed, N failed" last.
set -u

src=$(cd "$(dirname "$0")/.." && pwd)
pg_config=${PG_CONFIG:-$(command -v pg_config)}
if [ -z "$pg_config" ]; then
    echo "pg_config not found" >&2
    echo "regress: 0 passed, 1 failed"
    exit 1
fi

runas=()
if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null; then
        runas=(runuser -u postgres --)
    else
        runas=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shapesync-regress.XXXXXX")
mkdir -p "$work/tests"
cp -R "$src/tests/regress" "$src/tests/isolation" "$work/tests/"
cp "$src/Makefile" "$src/shapesync.control" "$work/"
rm -rf "$work/tests/regress/out" "$work/tests/isolation/out"
if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$work"
fi

# a port nobody listens on (pg_regress's temp instance uses it for its socket)
port=
for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && \
       ! ls /tmp/.s.PGSQL."$p" >/dev/null 2>&1; then
        port=$p
        break
    fi
done
port=${port:-54329}

run_suite() {                       # run_suite NAME MAKE-VARS...
    local name=$1; shift
    (cd "$work" && "${runas[@]}" make -s installcheck PG_CONFIG="$pg_config" \
        EXTRA_REGRESS_OPTS="--port=$port" "$@") >"$work/$name.log" 2>&1
}

run_suite regress ISOLATION=
rc_regress=$?
run_suite isolation REGRESS=
rc_isolation=$?

cat "$work/regress.log" "$work/isolation.log"

count() {
    cat "$work/regress.log" "$work/isolation.log" | grep -Ec "^(test |     | ?[0-9]+ +)?.* \.\.\. $1" || true
}
passed=$(count "ok")
failed=$(count "(FAILED|failed)")

status=0
if [ $rc_regress -ne 0 ] || [ $rc_isolation -ne 0 ]; then
    status=1
    for d in "$work/tests/regress/out/regression.diffs" "$work/tests/isolation/out/regression.diffs"; do
        if [ -s "$d" ]; then
            echo "=== $d"
            cat "$d"
        fi
    done
    for l in "$work"/tests/*/out/log/postmaster.log; do
        if [ -f "$l" ]; then
            echo "=== $l (tail)"
            tail -n 40 "$l"
        fi
    done
    # a suite that failed without a failing test (e.g. could not start) counts as one failure
    if [ "$failed" -eq 0 ]; then
        failed=1
    fi
else
    rm -rf "$work"
fi

echo "regress: $passed passed, $failed failed"
exit $status
