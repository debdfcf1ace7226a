#!/usr/bin/env bash
# demo.sh — body of `make demo`: the collaborative todo list (demo/) next to a
# running `make run`.
#
# Needs `make run` in another terminal (its PostgreSQL and shapesyncd). Applies
# demo/db/schema.sql to that database (lists and todos under row-level
# security, tracked, writable by the role `authenticated`; idempotent, rows are
# kept), lets the sidecar's role act as `authenticated`, then runs Vite's dev
# server for demo/ on 127.0.0.1:${DEMO_PORT:-5173}. The dev server signs demo
# tokens with make run's secret (.shapesync/jwt-secret or SHAPESYNC_JWT_SECRET)
# at /api/token and proxies /v1/* to shapesyncd. Ctrl-C stops it.
#
# Settings: SHAPESYNC_HTTP_PORT (3000), SHAPESYNC_PG_PORT (54329), DATABASE_URL
# (as for make run), SHAPESYNC_SIDECAR_ROLE (shapesync_sidecar), DEMO_PORT (5173).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf 'demo: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

HTTP_PORT=${SHAPESYNC_HTTP_PORT:-3000}
PG_PORT=${SHAPESYNC_PG_PORT:-54329}
DEMO_PORT=${DEMO_PORT:-5173}
SIDECAR_ROLE=${SHAPESYNC_SIDECAR_ROLE:-shapesync_sidecar}
SIDECAR=http://127.0.0.1:$HTTP_PORT
url=${DATABASE_URL:-postgresql://postgres@127.0.0.1:$PG_PORT/shapesync}

curl -fsS "$SIDECAR/v1/health" 2>/dev/null | grep -q '"active"' ||
	die "shapesyncd is not answering on $SIDECAR: start 'make run' in another terminal first"
[ -n "${SHAPESYNC_JWT_SECRET:-}" ] || [ -s .shapesync/jwt-secret ] ||
	die "no JWT secret: .shapesync/jwt-secret is missing (make run writes it) and SHAPESYNC_JWT_SECRET is not set"
[ -d node_modules ] || die "npm packages missing: run 'make deps' (npm ci at the top of the repository)"

log "applying demo/db/schema.sql to $url (lists, todos, row-level security; rows are kept)"
PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$url" -f demo/db/schema.sql >/dev/null
PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$url" -v sidecar="$SIDECAR_ROLE" >/dev/null <<-'SQL'
	SELECT format('GRANT authenticated TO %I', :'sidecar')
	 WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'sidecar') \gexec
SQL

cat >&2 <<EOF

  The demo is starting (Vite dev server; Ctrl-C stops it).

  Open two windows, one per user:
    http://127.0.0.1:$DEMO_PORT/?user=alice
    http://127.0.0.1:$DEMO_PORT/?user=bob

  Both see the shared list and their own; edits show at once and reach the
  other window live. Tick "work offline", edit, untick: the queue replays.
  Edit the same todo in both while one is offline: a conflict dialog opens.

EOF
cd demo
export SHAPESYNC_URL=$SIDECAR DEMO_PORT
exec npx --no-install vite --clearScreen false
