#!/usr/bin/env bash
# bench-client.sh — the client kit's benchmark (bench/client-kit.mjs): click in
# one browser → rendered in the other (median, p99 over --edits edits, default
# 200) and the bundle size the kit adds to an app. Builds the kit (dist/) and
# the demo (demo/dist) first; needs the extension installed and build/shapesyncd.
#
#   scripts/bench-client.sh [--edits N] [--write]
#
# --write replaces the "Client kit (issue 14)" section of bench/RESULTS.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
write=0
args=()
while [ $# -gt 0 ]; do
	case $1 in
	--write) write=1 ;;
	--edits) args+=(--edits "$2"); shift ;;
	*) echo "usage: $0 [--edits N] [--write]" >&2; exit 2 ;;
	esac
	shift
done
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
(cd clients/typescript && npm run --silent build)
(cd demo && npx --no-install vite build --logLevel warn)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
node bench/client-kit.mjs "${args[@]}" | tee "$out"
if [ "$write" = 1 ]; then
	scripts/write-results-section.py "Client kit (issue 14)" <"$out"
	echo "bench-client: bench/RESULTS.md updated" >&2
fi
