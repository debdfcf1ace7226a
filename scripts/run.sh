#!/usr/bin/env bash
# run.sh — body of `make run`: a local shapesync to try.
#
# Without DATABASE_URL: starts (or reuses) a PostgreSQL cluster in .shapesync/pg
# on 127.0.0.1:${SHAPESYNC_PG_PORT:-54329}, database `shapesync`, user `postgres`,
# with a tracked demo table `items`; the extension is created, or upgraded in
# place when the installed version is newer (never dropped), and shapesyncd
# connects as the non-superuser role shapesync_sidecar. With DATABASE_URL:
# uses that database (which must have `CREATE EXTENSION shapesync`) and its
# role as given, and starts no cluster.
# Authorization (docs/auth.md): a demo HS256 secret is generated once into
# .shapesync/jwt-secret (or taken from SHAPESYNC_JWT_SECRET); shapesyncd
# verifies bearer tokens with it, and a ready token for the role
# `authenticated` (created in our own cluster, granted to the sidecar's role,
# SELECT on the demo table) is printed with a curl line and a JS snippet.
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
	log "stopped"
	exit "$rc"
}
trap cleanup EXIT
# Ctrl-C is how `make run` is meant to end, not a failure: exit 0, so make
# reports no error.
trap 'exit 0' INT
trap 'exit 143' TERM

# The cluster outlives builds of the extension. Its sync state (shapes, change
# log, ticks) is never dropped: a database whose extension is older than the
# installed default version is upgraded in place (ALTER EXTENSION ... UPDATE,
# through the upgrade scripts in sql/). Only a missing extension is created.
update_extension() {
	local url=$1 have want
	want=$(psql -X -q -tA -d "$url" -c "SELECT default_version FROM pg_available_extensions WHERE name = 'shapesync'")
	[ -n "$want" ] || die "the shapesync extension is not installed in this PostgreSQL: run 'make install'"
	have=$(psql -X -q -tA -d "$url" -c "SELECT extversion FROM pg_extension WHERE extname = 'shapesync'")
	if [ -z "$have" ]; then
		log "creating extension shapesync $want"
		psql -X -q -v ON_ERROR_STOP=1 -d "$url" -c "CREATE EXTENSION shapesync" >/dev/null
	elif [ "$have" != "$want" ]; then
		log "upgrading extension shapesync $have -> $want (ALTER EXTENSION shapesync UPDATE; shapes and change log are kept)"
		psql -X -q -v ON_ERROR_STOP=1 -d "$url" -c "ALTER EXTENSION shapesync UPDATE" >/dev/null ||
			die "ALTER EXTENSION shapesync UPDATE failed: nothing was dropped; see the error above"
	else
		log "extension shapesync $have is up to date"
	fi
}

# The sidecar runs as a login role that is not a superuser, with exactly the
# privileges of shapesync.grant_sidecar() (docs/security.md).
SIDECAR_ROLE=${SHAPESYNC_SIDECAR_ROLE:-shapesync_sidecar}
setup_sidecar_role() {
	local url=$1
	log "granting the sidecar's privileges to role $SIDECAR_ROLE (SELECT shapesync.grant_sidecar('$SIDECAR_ROLE'))"
	PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$url" -v role="$SIDECAR_ROLE" >/dev/null <<-'SQL'
		SELECT format('CREATE ROLE %I LOGIN', :'role')
		 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
		SELECT shapesync.grant_sidecar(:'role');
	SQL
}

# The demo token's role: what the token's "role" claim selects (PostgREST's
# convention). The sidecar's role must be a member of it to act as it.
DEMO_ROLE=authenticated
setup_demo_role() {
	local url=$1
	log "role $DEMO_ROLE for the demo token (granted to $SIDECAR_ROLE; SELECT, INSERT, UPDATE, DELETE on items; a writer: shapesync.grant_writer)"
	PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -d "$url" -v role="$DEMO_ROLE" \
		-v sidecar="$SIDECAR_ROLE" >/dev/null <<-'SQL'
		SELECT format('CREATE ROLE %I NOLOGIN', :'role')
		 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
		SELECT format('GRANT %I TO %I', :'role', :'sidecar') \gexec
		SELECT format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.items TO %I', :'role') \gexec
		SELECT format('GRANT USAGE ON SEQUENCE public.items_id_seq TO %I', :'role')
		 WHERE to_regclass('public.items_id_seq') IS NOT NULL \gexec
		SELECT shapesync.grant_writer(:'role');
	SQL
}

# base64url without padding, and an HS256 token of a JSON payload (openssl).
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
hs256_token() {
	local secret=$1 payload=$2 head body sig
	head=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
	body=$(printf '%s' "$payload" | b64url)
	sig=$(printf '%s.%s' "$head" "$body" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
	printf '%s.%s.%s' "$head" "$body" "$sig"
}

mkdir -p "$ROOT/.shapesync"
if [ -n "${SHAPESYNC_JWT_SECRET:-}" ]; then
	jwt_secret=$SHAPESYNC_JWT_SECRET
else
	if [ ! -s "$ROOT/.shapesync/jwt-secret" ]; then
		log "generating a demo JWT secret in .shapesync/jwt-secret"
		(umask 077 && openssl rand -hex 32 >"$ROOT/.shapesync/jwt-secret")
	fi
	jwt_secret=$(cat "$ROOT/.shapesync/jwt-secret")
fi

if [ -n "${DATABASE_URL:-}" ]; then
	url=$DATABASE_URL
	log "using DATABASE_URL (no cluster started, its extension and roles left as they are)"
	have=$(psql -X -q -tA -d "$url" -c "SELECT extversion FROM pg_extension WHERE extname = 'shapesync'" 2>/dev/null || true)
	want=$(psql -X -q -tA -d "$url" -c "SELECT default_version FROM pg_available_extensions WHERE name = 'shapesync'" 2>/dev/null || true)
	if [ -n "$have" ] && [ -n "$want" ] && [ "$have" != "$want" ]; then
		log "note: the database has shapesync $have, the installed files are $want: run ALTER EXTENSION shapesync UPDATE"
	fi
else
	mkdir -p "$ROOT/.shapesync"
	own_cluster=1
	log "starting PostgreSQL in $CLUSTER_DIR on 127.0.0.1:$PG_PORT"
	url=$(SHAPESYNC_PG_EXTENSION=0 scripts/pgcluster.sh start "$CLUSTER_DIR" "$PG_PORT" shapesync)
	update_extension "$url"
	log "creating the demo table items (if missing) and tracking it"
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
	setup_sidecar_role "$url"
	setup_demo_role "$url"
	# postgresql://postgres@host:port/db -> postgresql://ROLE@host:port/db
	sidecar_url=$(printf '%s' "$url" | sed -E "s#^(postgres(ql)?://)([^@/]*@)?#\1$SIDECAR_ROLE@#")
	sidecar_note="  sidecar    connects as $sidecar_url (role $SIDECAR_ROLE, not a superuser)"
fi
sidecar_url=${sidecar_url:-$url}

# Own process group, so a terminal's Ctrl-C reaches shapesyncd only through us.
set -m
mkdir -p "$ROOT/.shapesync"
# (a password in the URL is not printed)
log "starting shapesyncd on $HTTP (database $(printf '%s' "$sidecar_url" | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#'))"
SHAPESYNC_JWT_SECRET=$jwt_secret "$SIDECAR" --database-url "$sidecar_url" --listen "127.0.0.1:$HTTP_PORT" \
	--data-dir "$ROOT/.shapesync/sidecar-data" </dev/null &
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

exp=$(( $(date +%s) + 86400 ))
token=$(hs256_token "$jwt_secret" "{\"sub\":\"demo-user\",\"role\":\"$DEMO_ROLE\",\"exp\":$exp}")

if [ "$own_cluster" = 1 ]; then
	cat <<EOF

  shapesync is running.

  database   $url
$sidecar_note
  shape API  $HTTP/v1/shape?table=items&offset=-1

  Every shape request needs a bearer token (HS256, secret in .shapesync/jwt-secret;
  docs/auth.md). A demo token for role $DEMO_ROLE, valid 24 h:

    TOKEN=$token

  Try it:
    curl -i -H "Authorization: Bearer \$TOKEN" '$HTTP/v1/shape?table=items&offset=-1'
    psql '$url' -c "INSERT INTO items (title) VALUES ('hello')"

  Write through the sidecar (docs/mutations.md; the answer's txid comes back on the stream):
    curl -i -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
      -d '{"mutations":[{"id":"$(cat /proc/sys/kernel/random/uuid)","table":"items","op":"insert","values":{"title":"from curl"}}]}' \\
      '$HTTP/v1/mutations'

  Follow changes live: take electric-handle and electric-offset from a response, then
    curl -i -H "Authorization: Bearer \$TOKEN" '$HTTP/v1/shape?table=items&handle=HANDLE&offset=OFFSET&live=true'

  From JavaScript (@electric-sql/client):
    import { ShapeStream, Shape } from '@electric-sql/client'
    const stream = new ShapeStream({
      url: '$HTTP/v1/shape',
      params: { table: 'items' },
      headers: { Authorization: () => 'Bearer $token' },
    })
    new Shape(stream).subscribe(({ rows }) => console.log(rows))

  The React todo demo (clients/typescript's hooks, offline outbox, conflicts):
    make demo        (in another terminal, next to this one; then open http://127.0.0.1:5173/?user=alice)

  Ctrl-C stops shapesyncd and PostgreSQL.

EOF
else
	# No demo table in someone else's database: offer the tables it tracks.
	tracked=$(psql -X -q -tA -d "$url" \
		-c "SELECT string_agg(relid::regclass::text, ', ' ORDER BY relid::regclass::text) FROM shapesync.tracked" \
		2>/dev/null || true)
	first=${tracked%%,*}
	cat <<EOF

  shapesync is running.

  database   (DATABASE_URL)
  tracked    ${tracked:-no table yet: run SELECT shapesync.track('schema.table') in that database}
  shape API  $HTTP/v1/shape?table=${first:-TABLE}&offset=-1

  Every shape request needs a bearer token (HS256, secret in .shapesync/jwt-secret;
  docs/auth.md). A token for role $DEMO_ROLE, valid 24 h (that role must exist, be
  granted to the sidecar's role and may SELECT the table:
  CREATE ROLE $DEMO_ROLE NOLOGIN; GRANT $DEMO_ROLE TO <sidecar role>;):

    TOKEN=$token


  Follow changes live: take electric-handle and electric-offset from a response, then
    curl -i -H "Authorization: Bearer \$TOKEN" '$HTTP/v1/shape?table=${first:-TABLE}&handle=HANDLE&offset=OFFSET&live=true'

  Ctrl-C stops shapesyncd.

EOF
fi

set +e
wait "$sidecar_pid"
rc=$?
set -e
sidecar_pid=""
log "shapesyncd exited ($rc)"
exit "$rc"
