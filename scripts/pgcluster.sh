#!/usr/bin/env bash
# pgcluster.sh — throwaway PostgreSQL 15 clusters for shapesync's run and tests.
#
#   pgcluster.sh start DIR PORT DBNAME   initdb DIR (once), start it on 127.0.0.1:PORT,
#                                        create DBNAME + the shapesync extension;
#                                        prints postgresql://postgres@127.0.0.1:PORT/DBNAME
#   pgcluster.sh stop DIR                fast shutdown (no error when not running)
#   pgcluster.sh destroy DIR             stop, then remove DIR
#   pgcluster.sh status DIR              exit 0 when running
#   pgcluster.sh free-port               print a TCP port free on 127.0.0.1
#
# Layout of DIR: data/ (PGDATA), run/ (unix socket), log (server log).
# As root, the server runs as the `postgres` OS user (runuser); otherwise as the
# caller. The superuser is always named `postgres`; loopback uses trust auth.
#
# Environment:
#   SHAPESYNC_PG_FSYNC=off       fsync/full_page_writes off (tests; default on)
#   SHAPESYNC_PG_PRELOAD=0       do not put shapesync in shared_preload_libraries
#   SHAPESYNC_PG_EXTENSION=0     do not CREATE EXTENSION shapesync
#   PG_CONFIG                    pg_config to find the server binaries (default pg_config)
set -euo pipefail

log() { printf 'pgcluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# Locate the PostgreSQL 15 server binaries.
pg_bindir() {
	local d
	# an explicit PG_CONFIG wins (e.g. a private installation of the extension)
	if [ -z "${PG_CONFIG:-}" ] && [ -x /usr/lib/postgresql/15/bin/initdb ]; then
		echo /usr/lib/postgresql/15/bin
		return
	fi
	d=$("${PG_CONFIG:-pg_config}" --bindir 2>/dev/null) || die "PostgreSQL 15 not found: run scripts/install-deps.sh"
	[ -x "$d/initdb" ] || die "no initdb in $d: run scripts/install-deps.sh"
	echo "$d"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the OS user that owns the cluster, from a neutral directory.
as_owner() {
	if is_root; then
		runuser -u postgres -- sh -c 'cd / && exec "$@"' sh "$@"
	else
		(cd / && exec "$@")
	fi
}

# Print a TCP port nobody listens on at 127.0.0.1.
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		if command -v ss >/dev/null 2>&1; then
			if [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
				echo "$p"
				return 0
			fi
		elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

abspath() { realpath -m -s -- "$1"; }

# Make DIR usable by the server's OS user. As root, when a parent directory is
# not traversable by `postgres`, DIR becomes a symlink to a directory under /tmp.
prepare_dir() {
	local dir=$1 parent real
	if [ -L "$dir" ] && [ -d "$dir" ]; then
		return 0
	fi
	parent=$(dirname "$dir")
	mkdir -p "$parent"
	if ! is_root; then
		mkdir -p "$dir"
		chmod 700 "$dir"
		return 0
	fi
	id postgres >/dev/null 2>&1 || die "OS user 'postgres' missing: run scripts/install-deps.sh"
	if runuser -u postgres -- test -x "$parent" 2>/dev/null; then
		mkdir -p "$dir"
		chown postgres: "$dir"
		chmod 700 "$dir"
	else
		[ -e "$dir" ] && die "$dir exists but user postgres cannot reach it (a parent is not traversable)"
		real=$(mktemp -d "${TMPDIR:-/tmp}/shapesync-pg.XXXXXX")
		chmod 755 "$real"
		chown postgres: "$real"
		ln -s "$real" "$dir"
		log "$parent is not reachable by user postgres; cluster lives in $real (symlinked from $dir)"
	fi
}

# Resolve DIR to the path the server sees (symlinks followed).
real_dir() { realpath -e -- "$1"; }

cmd_start() {
	[ $# -eq 3 ] || usage
	local dir port db bindir rdir data sockdir conf preload fsync
	dir=$(abspath "$1")
	port=$2
	db=$3
	[[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number: $port"
	[[ $db =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "DBNAME must be a plain identifier: $db"
	bindir=$(pg_bindir)

	if [ "${SHAPESYNC_PG_PRELOAD:-1}" != 0 ]; then
		local pkglib
		pkglib=$("${PG_CONFIG:-pg_config}" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
		[ -f "$pkglib/shapesync.so" ] || die "shapesync.so not installed in $pkglib: run 'make && make install' first"
	fi

	prepare_dir "$dir"
	rdir=$(real_dir "$dir")
	data=$rdir/data
	sockdir=$rdir/run

	if [ ! -f "$data/PG_VERSION" ]; then
		log "initdb $data"
		as_owner mkdir -p "$sockdir"
		as_owner "$bindir/initdb" -D "$data" -U postgres -E UTF8 --locale=C \
			--auth-local=trust --auth-host=trust >"$rdir/initdb.log" 2>&1 ||
			{ cat "$rdir/initdb.log" >&2; die "initdb failed"; }
		echo "include_if_exists = 'shapesync_cluster.conf'" | as_owner tee -a "$data/postgresql.conf" >/dev/null
	fi
	as_owner mkdir -p "$sockdir"

	# A unix socket path must fit in 107 bytes; past that, TCP only.
	if [ $((${#sockdir} + 20)) -gt 100 ]; then
		sockdir=""
	fi
	preload=""
	[ "${SHAPESYNC_PG_PRELOAD:-1}" != 0 ] && preload=shapesync
	fsync=on
	[ "${SHAPESYNC_PG_FSYNC:-on}" = off ] && fsync=off

	conf=$(
		cat <<-EOF
			# written by scripts/pgcluster.sh on every start
			listen_addresses = '127.0.0.1'
			port = $port
			unix_socket_directories = '$sockdir'
			shared_preload_libraries = '$preload'
			shapesync.database = '$db'
			max_prepared_transactions = 10
			fsync = $fsync
			full_page_writes = $fsync
			log_line_prefix = '%m [%p] %q%a '
			log_min_messages = warning
		EOF
	)
	printf '%s\n' "$conf" | as_owner tee "$data/shapesync_cluster.conf" >/dev/null

	if as_owner "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1; then
		log "already running ($data); restarting to apply settings"
		as_owner "$bindir/pg_ctl" restart -D "$data" -m fast -w -t 60 -l "$rdir/log" >/dev/null ||
			{ tail -n 30 "$rdir/log" >&2; die "restart failed"; }
	else
		as_owner "$bindir/pg_ctl" start -D "$data" -w -t 60 -l "$rdir/log" >/dev/null ||
			{ tail -n 30 "$rdir/log" >&2; die "server did not start (log: $rdir/log)"; }
	fi

	local psql=(env PGOPTIONS="-c client_min_messages=warning" "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
	if [ -z "$("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
		"${psql[@]}" -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null
	fi
	if [ "${SHAPESYNC_PG_EXTENSION:-1}" != 0 ]; then
		"${psql[@]}" -d "$db" -c "CREATE EXTENSION IF NOT EXISTS shapesync" >/dev/null ||
			die "CREATE EXTENSION shapesync failed"
	fi
	echo "postgresql://postgres@127.0.0.1:$port/$db"
}

cmd_stop() {
	[ $# -eq 1 ] || usage
	local dir data bindir
	dir=$(abspath "$1")
	[ -e "$dir" ] || return 0
	data=$(real_dir "$dir")/data
	[ -f "$data/PG_VERSION" ] || return 0
	bindir=$(pg_bindir)
	if as_owner "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1; then
		as_owner "$bindir/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null ||
			as_owner "$bindir/pg_ctl" stop -D "$data" -m immediate -w -t 30 >/dev/null
	fi
}

cmd_destroy() {
	[ $# -eq 1 ] || usage
	local dir rdir
	dir=$(abspath "$1")
	[ -e "$dir" ] || [ -L "$dir" ] || return 0
	cmd_stop "$1"
	rdir=$(real_dir "$dir" 2>/dev/null || true)
	if [ -L "$dir" ]; then
		rm -f "$dir"
	fi
	[ -n "$rdir" ] && rm -rf -- "$rdir"
	return 0
}

cmd_status() {
	[ $# -eq 1 ] || usage
	local data
	data=$(real_dir "$(abspath "$1")" 2>/dev/null)/data || return 1
	as_owner "$(pg_bindir)/pg_ctl" status -D "$data" >/dev/null 2>&1
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
destroy) cmd_destroy "$@" ;;
status) cmd_status "$@" ;;
free-port) free_port ;;
-h | --help | help) usage ;;
*) usage ;;
esac
