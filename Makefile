# soko: setup, tests, demo and benchmarks on a Debian 12 machine (run as root).
# Every target is idempotent: it installs or rebuilds only what is missing or stale.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.soko-installed
PYTEST_ARGS ?=
# Test files spread over JOBS worker processes (pytest-xdist; JOBS=0 runs in one process). Each file
# stays on one worker, so module fixtures are set up once; tests use private ports, roots and
# daemons, so workers do not meet. On 2 cores the suite is I/O- and subprocess-bound: 4 workers
# took it from 17m23s to 8m49s on the same loaded machine (1,346 tests).
JOBS ?= 4

# Debian packages the tests and benchmarks use (python3-venv: for the .venv itself; gcc, libc6-dev:
# the static seccomp probe in tests/runtime; linux-libc-dev: syscall numbers, runtime/seccomp_tables.py;
# git: ADD of a git repository; openssh-client: ssh-agent for RUN --mount=type=ssh tests; openssl: a
# certificate for the ADD https test; chromium, chromium-driver: the registry web UI's browser tests;
# postgresql: the registry's PostgreSQL metadata, a private cluster per test session, tests/pgserver.py;
# haproxy: round-robin in front of several `soko serve` replicas, tests/replicas.py).
APT_PACKAGES := busybox-static skopeo umoci podman buildah runc crun docker-registry \
	debootstrap apache2-utils curl pigz zstd hey wrk hyperfine python3-venv docker.io \
	gcc libc6-dev linux-libc-dev git openssh-client openssl chromium chromium-driver \
	ceph-mon ceph-osd radosgw ceph-common postgresql haproxy nftables

DEMO_DIR := $(CURDIR)/.demo-store

.PHONY: help setup apt venv fixtures test demo bench mutate clean distclean

help:
	@echo "make demo       set up, then build, run, push, remove, pull and run an image with soko"
	@echo "make test       set up, then run the test suite (PYTEST_ARGS='-k foo -x' to narrow it)"
	@echo "make setup      apt packages, .venv and fixtures; only what is missing"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make mutate     mutation testing (PKG=storage for one package): mutants no test noticed"
	@echo "make clean      remove built fixtures, demo store and caches (keeps .venv and the bookworm cache)"
	@echo "make distclean  clean, plus .venv and fixtures/cache"

setup: apt venv fixtures

# dpkg-query decides; apt-get update runs only when something must be installed.
apt:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  if [ "$$(dpkg-query -W -f='$${db:Status-Status}' "$$p" 2>/dev/null)" != installed ]; then missing="$$missing $$p"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run make as root, or apt-get install them)" >&2; exit 1; fi; \
	  echo "+ apt-get install$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing; \
	fi

venv: $(VENV_STAMP)

# Redone only when pyproject.toml is newer than the stamp.
$(VENV_STAMP): pyproject.toml
	@if [ ! -x $(VPY) ]; then echo "+ $(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV); fi
	@echo "+ pip install -e '.[test]'"
	@$(VPY) -m pip install -q -e '.[test]'
	@touch $@

# The recipe keeps its own stamp (busybox sha256), so calling it is cheap when nothing changed.
fixtures: venv
	@$(VPY) fixtures/recipes.py busybox >/dev/null

test: setup
	$(VPY) -m pytest -n $(JOBS) --dist loadfile $(PYTEST_ARGS)

# A throwaway store, reset each run: build from fixtures/dockerfiles/demo, run, serve, push, rmi,
# pull, run again; each command is echoed before it runs, and the registry is stopped whatever fails.
demo: setup
	@bash fixtures/demo.sh $(DEMO_DIR)

# Every bench/*.py that exists (files starting with _ are helpers, not benchmarks).
bench: setup
	@shopt -s nullglob; found=0; \
	for f in bench/[!_]*.py; do found=1; echo "+ $(VPY) $$f"; $(VPY) "$$f"; done; \
	if [ $$found = 0 ]; then echo "no benchmarks in bench/ yet"; fi

# Not part of `make test`: minutes per package. Reports go to .mutate/<package>.txt.
# PKG=storage: one package; ONLY=storage/gc.py: mutmut mutates only that file (space-separated globs).
PKG ?=
ONLY ?=
mutate: setup
	@$(VPY) -c 'import mutmut' 2>/dev/null || { echo "+ pip install -e '.[mutate]'"; $(VPY) -m pip install -q -e '.[mutate]'; }
	$(VPY) tests/mutation/mutate.py $(PKG) $(foreach g,$(ONLY),--only $(g))

clean:
	rm -rf fixtures/out $(DEMO_DIR) .pytest_cache bench/out build *.egg-info .mutate mutants
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) fixtures/cache
