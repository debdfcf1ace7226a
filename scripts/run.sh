#!/usr/bin/env bash
# run.sh — body of `make run`: a local shapesync to try.
#
# Without DATABASE_URL: starts (or reuses) a PostgreSQL cluster in .shapesync/pg
# on 127.0.0.1:${SHAPESYNC_PG_PORT:-54329}, database `shapesync`, user `postgres`,
# with a tracked demo table `items`. With DATABASE_URL: uses that database
# (which must have `CREATE EXTENSION shapesync`) and starts no cluster.
# Then runs build/shapesyncd in the foreground on 127.0.0.1:${SHAPESYNC_HTTP_PORT:-3000}.
# Ctrl-C (or SIGTERM) stops shapesyncd, then the cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf 'run: %s\n' "$*" >&2 2>/dev/null || true; }
die() { log "error: $*"; exit 1; }

HTTP_PORT=${SHAPESYNC_HTTP_PORT:-3000}
PG_PORT=${SHAPESYNC_PG_PORT:-54329}
SIDECAR=${SHAPESYNCD:-$ROOT/build/shapesyncd}
CLUSTER_DIR=$ROOT/.shapesync/pg
HTTP=http://127.0.0.1:$HTTP_PORT

[ -x "$SIDECAR" ] || die "$SIDECAR not built: run 'make sidecar' (or 'make run')"
if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn "( sport = :$HTTP_PORT )" 2>/dev/null)" ]; then
	die "port $HTTP_PORT is already in use: set SHAPESYNC_HTTP_PORT"
fi

own_cluster=0
sidecar_pid=""

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# Keep going if our output is gone (a pipe reader killed by the same Ctrl-C).
	trap '' PIPE
	set +e
	if [ -n "$sidecar_pid" ] && kill -0 "$sidecar_pid" 2>/dev/null; then
		log "stopping shapesyncd"
		kill -TERM "$sidecar_pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$sidecar_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$sidecar_pid" 2>/dev/null || true
		wait "$sidecar_pid" 2>/dev/null || true
	fi
	if [ "$own_cluster" = 1 ]; then
		log "stopping PostgreSQL"
		scripts/pgcluster.sh stop "$CLUSTER_DIR" 2>/dev/null || true
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The cluster outlives builds of the extension whose version number does not
# change: when the installed files differ from the ones the database was set up
# with, re-create the extension (and re-track the tables that were tracked).
refresh_extension() {
	local url=$1 sharedir pkglibdir stamp_file stamp tracked t
	sharedir=$(pg_config --sharedir)
	pkglibdir=$(pg_config --pkglibdir)
	stamp_file=$ROOT/.shapesync/extension.stamp
	stamp=$(cat "$sharedir"/extension/shapesync.control "$sharedir"/extension/shapesync--*.sql \
		"$pkglibdir"/shapesync.so 2>/dev/null | sha256sum | cut -d' ' -f1)
	if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
		return 0
	fi
	tracked=$(psql -X -q -tA -d "$url" -c "SELECT relid::regclass::text FROM shapesync.tracked" 2>/dev/null || true)
	log "extension files changed since this cluster was set up: re-creating the extension"
	PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$url" \
		-c "DROP EXTENSION IF EXISTS shapesync CASCADE" -c "CREATE EXTENSION shapesync" >/dev/null
	while IFS= read -r t; do
		[ -n "$t" ] || continue
		psql -X -q -v ON_ERROR_STOP=1 -d "$url" -v t="$t" >/dev/null <<<"SELECT shapesync.track(:'t')" ||
			log "could not re-track $t"
	done <<<"$tracked"
	echo "$stamp" >"$stamp_file"
}

if [ -n "${DATABASE_URL:-}" ]; then
	url=$DATABASE_URL
	log "using DATABASE_URL (no cluster started)"
else
	mkdir -p "$ROOT/.shapesync"
	own_cluster=1
	log "starting PostgreSQL in $CLUSTER_DIR on 127.0.0.1:$PG_PORT"
	url=$(scripts/pgcluster.sh start "$CLUSTER_DIR" "$PG_PORT" shapesync)
	refresh_extension "$url"
	PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$url" >/dev/null <<-'SQL'
		CREATE TABLE IF NOT EXISTS public.items (
		  id         bigserial PRIMARY KEY,
		  title      text NOT NULL,
		  done       boolean NOT NULL DEFAULT false,
		  created_at timestamptz DEFAULT now()
		);
		SELECT shapesync.track('public.items');
		INSERT INTO public.items (title, done)
		SELECT t, d FROM (VALUES ('Buy milk', false), ('Write the README', true), ('Try shapesync', false)) v(t, d)
		 WHERE NOT EXISTS (SELECT 1 FROM public.items);
	SQL
fi

# Own process group, so a terminal's Ctrl-C reaches shapesyncd only through us.
set -m
mkdir -p "$ROOT/.shapesync"
"$SIDECAR" --database-url "$url" --listen "127.0.0.1:$HTTP_PORT" --data-dir "$ROOT/.shapesync/sidecar-data" </dev/null &
sidecar_pid=$!
set +m

for _ in $(seq 1 300); do
	kill -0 "$sidecar_pid" 2>/dev/null || die "shapesyncd exited during startup"
	if curl -fsS "$HTTP/v1/health" 2>/dev/null | grep -q '"active"'; then
		break
	fi
	sleep 0.1
done
curl -fsS "$HTTP/v1/health" 2>/dev/null | grep -q '"active"' || die "shapesyncd not healthy after 30 s"

cat <<EOF

  shapesync is running.

  database   $url
  shape API  $HTTP/v1/shape?table=items&offset=-1

  Try it:
    curl -i '$HTTP/v1/shape?table=items&offset=-1'
    psql '$url' -c "INSERT INTO items (title) VALUES ('hello')"

  Follow changes live: take electric-handle and electric-offset from a response, then
    curl -i '$HTTP/v1/shape?table=items&handle=HANDLE&offset=OFFSET&live=true'

  Ctrl-C stops shapesyncd$([ "$own_cluster" = 1 ] && echo " and PostgreSQL").

EOF

set +e
wait "$sidecar_pid"
rc=$?
set -e
sidecar_pid=""
log "shapesyncd exited ($rc)"
exit "$rc"
