#!/usr/bin/env bash
# install-deps.sh — install what shapesync needs to build, run and test, and
# nothing that is already there (Debian 12). Idempotent: a second run installs
# nothing and does not touch the network unless tests/e2e/node_modules is missing
# or lacks a dependency of tests/e2e/package.json at its version, or
# node_modules (the client kit and demo workspace) is missing.
#
# Works as root (also in a minimal debootstrap chroot: no sudo, no systemd) or as
# a user with sudo.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

PACKAGES=(
	# build
	build-essential cmake pkg-config git
	# network and certificates (npm)
	curl ca-certificates
	# PostgreSQL 15 server (contrib modules ship inside postgresql-15 on Debian 12),
	# headers for PGXS, libpq, and PgQ for reference and benchmarks
	postgresql-15 postgresql-client-15 postgresql-server-dev-15 libpq-dev postgresql-15-pgq3
	# sidecar (jemalloc: its allocator; ~25% less sidecar CPU per applied change than glibc's)
	libboost1.81-dev nlohmann-json3-dev libssl-dev libjemalloc-dev
	# sidecar tests; the request fuzzer (clang with its libFuzzer runtime)
	libgtest-dev libgmock-dev googletest clang libclang-rt-14-dev
	# metrics_test checks /metrics text with the Prometheus client's own parser
	python3 python3-prometheus-client
	# used by the scripts: ps/pkill-free process checks, ss, runuser, realpath
	procps iproute2 util-linux coreutils
	# e2e scale-out test: round-robin proxy in front of two sidecars (Debian 12's
	# nginx-light is only a transitional package for nginx + an extra module)
	nginx
	# e2e dashboard test: headless Chromium, driven by npm playwright-core
	chromium
)

if [ "$(id -u)" -eq 0 ]; then
	SUDO=()
elif command -v sudo >/dev/null 2>&1; then
	SUDO=(sudo)
else
	SUDO=()
fi

is_installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# Node.js >= 18 with npm, from any source (Debian's packages or NodeSource's).
node_ok() {
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
	local major
	major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || return 1
	[ "${major:-0}" -ge 18 ]
}

missing=()
for p in "${PACKAGES[@]}"; do
	is_installed "$p" || missing+=("$p")
done
if ! node_ok; then
	is_installed nodejs || missing+=(nodejs)
	command -v npm >/dev/null 2>&1 || missing+=(npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
		die "missing packages (${missing[*]}) and neither root nor sudo available"
	fi
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends -o Dpkg::Options::=--force-confdef \
		-o Dpkg::Options::=--force-confold "${missing[@]}"
else
	log "system packages: all present"
fi

node_ok || die "Node.js >= 18 with npm is required (found: $(node -v 2>/dev/null || echo none))"
id postgres >/dev/null 2>&1 || die "OS user 'postgres' is missing after installing postgresql-15"

# End-to-end test dependencies (the real @electric-sql npm packages).
E2E=$ROOT/tests/e2e
# installed: every dependency of package.json at its (exact) version
e2e_deps_ok() {
	(cd "$E2E" && node -e '
		const fs = require("fs");
		const deps = JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies || {};
		for (const [d, v] of Object.entries(deps)) {
			const f = "node_modules/" + d + "/package.json";
			if (!fs.existsSync(f) || JSON.parse(fs.readFileSync(f, "utf8")).version !== v) process.exit(1);
		}') >/dev/null 2>&1
}
if [ -f "$E2E/package.json" ] && ! e2e_deps_ok; then
	log "npm dependencies for tests/e2e"
	if [ -f "$E2E/package-lock.json" ]; then
		(cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error)
	else
		(cd "$E2E" && npm install --no-audit --no-fund --loglevel=error)
	fi
fi
# The client kit and the demo (an npm workspace at the top: clients/typescript,
# demo), from the committed package-lock.json.
if [ -f "$ROOT/package-lock.json" ] && [ ! -d "$ROOT/node_modules" ]; then
	log "npm dependencies for clients/typescript and demo (npm ci)"
	(cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
fi
log "done"
