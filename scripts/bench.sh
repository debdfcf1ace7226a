#!/usr/bin/env bash
# bench.sh — body of `make bench`: every benchmark, each writing its section of
# bench/RESULTS.md. Pass --quick for a short smoke run (RESULTS.md untouched).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ "${1:-}" = --quick ]; then
	scripts/bench-latency.sh --count 200
	[ -x scripts/bench-writer.sh ] && scripts/bench-writer.sh --quick
	[ -x scripts/bench-fanout.sh ] && scripts/bench-fanout.sh --quick
	[ -x scripts/bench-throughput.sh ] && scripts/bench-throughput.sh --quick
	[ -x scripts/bench-mutations.sh ] && scripts/bench-mutations.sh --quick
	[ -x scripts/bench-client.sh ] && scripts/bench-client.sh --edits 20
	exit 0
fi
scripts/bench-latency.sh --count 2000 --write
[ -x scripts/bench-writer.sh ] && scripts/bench-writer.sh
[ -x scripts/bench-fanout.sh ] && scripts/bench-fanout.sh --write
[ -x scripts/bench-throughput.sh ] && scripts/bench-throughput.sh --write
[ -x scripts/bench-client.sh ] && scripts/bench-client.sh --write
