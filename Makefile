# shapesync — PGXS build of the extension, and the project's entry points.
#
#   make run    install what is missing, build, start a throwaway cluster + shapesyncd
#   make demo   the collaborative todo demo (demo/) next to a running `make run`
#   make test   install what is missing, build, run every test suite
#
EXTENSION    = shapesync
EXTVERSION   = $(shell grep default_version $(EXTENSION).control | sed -e "s/default_version[[:space:]]*=[[:space:]]*'\([^']*\)'/\1/")

MODULE_big   = shapesync
OBJS         = $(patsubst %.c,%.o,$(wildcard extension/*.c))
PG_CPPFLAGS  = -Iextension -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers

# The install script of the current version is built from sql/*.sql; older
# versions' install scripts are frozen copies (sql/shapesync--0.1.0.sql), so
# that a test can install an old version and walk the upgrade scripts.
DATA_built   = sql/$(EXTENSION)--$(EXTVERSION).sql
UPGRADES     = $(wildcard sql/$(EXTENSION)--*--*.sql)
DATA         = $(UPGRADES) $(filter-out $(DATA_built) $(UPGRADES),$(wildcard sql/$(EXTENSION)--*.sql))

TESTS        = $(wildcard tests/regress/sql/*.sql)
REGRESS      = $(patsubst tests/regress/sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --inputdir=tests/regress --outputdir=$(REGRESS_OUTDIR) \
               --temp-instance=$(REGRESS_OUTDIR)/tmp_check --temp-config=tests/regress/regress.conf \
               --load-extension=$(EXTENSION)
REGRESS_OUTDIR ?= tests/regress/out

ISOLATION_SPECS = $(wildcard tests/isolation/specs/*.spec)
ISOLATION      = $(patsubst tests/isolation/specs/%.spec,%,$(ISOLATION_SPECS))
ISOLATION_OPTS = --inputdir=tests/isolation --outputdir=$(ISOLATION_OUTDIR) \
                 --temp-instance=$(ISOLATION_OUTDIR)/tmp_check --temp-config=tests/regress/regress.conf \
                 --load-extension=$(EXTENSION)
ISOLATION_OUTDIR ?= tests/isolation/out

EXTRA_CLEAN  = $(DATA_built) build

PG_CONFIG   ?= pg_config
PGXS        := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifeq ($(PGXS),)
# pg_config missing: only the entry points below work (they install it).
all:
	@echo "pg_config not found: run 'make deps' first (or 'make run' / 'make test')"; exit 1
else
include $(PGXS)
endif

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql sql/retention.sql sql/snapshots.sql sql/security.sql sql/mutations.sql sql/auth.sql sql/monitor.sql
	cat $^ > $@

BUILD_DIR ?= build
# `make install` writes into PostgreSQL's directories: use sudo when not root.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: deps sidecar shapesyncd run demo test bench e2e

deps:
	scripts/install-deps.sh

# Everything C++: shapesyncd, its tests and the request fuzzer.
sidecar:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD_DIR) -j$$(nproc)

# shapesyncd alone: what `make run` needs (CMake prints its progress).
shapesyncd:
	@echo "make: building shapesyncd in $(BUILD_DIR)/ (the first build compiles Asio and Beast: about 2 minutes on 2 cores)"
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD_DIR) --target shapesyncd -j$$(nproc)

# scripts/run.sh exits 0 on Ctrl-C, the normal way to stop it.
run: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	$(MAKE) shapesyncd
	scripts/run.sh

# Needs `make run` in another terminal: its database and sidecar.
demo: deps
	scripts/demo.sh

test: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	$(MAKE) sidecar
	scripts/test.sh

bench: deps
	$(MAKE) all
	$(SUDO) $(MAKE) install
	$(MAKE) sidecar
	cmake --build $(BUILD_DIR) --target benches -j$$(nproc)
	scripts/bench.sh
