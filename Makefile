# Two entry points on a fresh machine with Python 3.11+:  make run  |  make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LOCK := requirements.lock

.PHONY: setup system-deps test-deps run test test-unit test-workflow lint lock report clean

# The exact versions of requirements.lock, every file checked against its sha256; then
# multirun itself (editable, no dependencies: the lock has them all). --no-compile: Python
# byte-compiles the ~1,200 modules a run imports on first use, not all 12,000 at install.
$(STAMP): $(LOCK) pyproject.toml src/multirun/kernel/fused.cpp
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --require-hashes --no-deps --no-compile -r $(LOCK)
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	$(BIN)/python -m multirun.kernel.build  # the fused CPU kernel loops, once per machine
	touch $(STAMP)

setup: $(STAMP)

# After changing dependencies in pyproject.toml: re-resolve requirements.lock (the newest
# releases allowed, keeping the locked versions that still fit), pin envs/multirun.yaml to
# it; the next make run / make test installs it. `make lock UPGRADE=--upgrade` moves every pin.
LOCK_FLAGS := --extra dev --extra slurm --universal --python-version 3.11 --generate-hashes \
	--constraint envs/lock-constraints.txt --custom-compile-command "make lock"
$(BIN)/uv:             # make lock needs only uv (a dev dependency): set up once if missing
	$(MAKE) setup

lock: | $(BIN)/uv     ## re-resolve requirements.lock and envs/multirun.yaml from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) $(UPGRADE) --quiet -o $(LOCK)
	$(BIN)/python -m multirun.lockfile

# Debian packages of the tests that start a one-node SLURM and open the report in Chromium;
# installed once when missing (as root with apt-get), else those tests skip and say why.
DEB_PACKAGES := slurm-wlm munge chromium fonts-dejavu-core
system-deps:          ## apt-get install $(DEB_PACKAGES) when missing (quiet; log in /tmp)
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "system-deps: not installing$$missing (needs root and apt-get); the SLURM/browser tests will skip"; \
	  exit 0; fi; \
	echo "system-deps: apt-get install$$missing (log: /tmp/multirun-apt.log)"; \
	{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; } \
	  >/tmp/multirun-apt.log 2>&1 || \
	  echo "system-deps: apt-get failed (see /tmp/multirun-apt.log); the SLURM/browser tests will skip"

run: setup            ## the default workflow (MNIST-1D, offline, CPU)
	$(BIN)/snakemake --cores 2

# What the tests need, side by side: apt-get runs while pip installs (about 25 s saved on a
# fresh machine; GNU make 4.3 takes -j only from the command line, hence the sub-make).
test-deps:
	@$(MAKE) --no-print-directory -j2 setup system-deps

# Two tiers, both in `make test`: the unit tier (library against references, seconds each)
# and the workflow tier (pytest -m workflow: the tiny workflow end to end, every README
# command, the report in Chromium, a local SLURM). One worker per core (pytest-xdist); a
# test file stays on one worker, files are handed out in tests/conftest.py's order (slowest
# first), and the tiny run is made once and shared (tests/conftest.py).
PYTEST := $(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder
test: test-deps       ## both tiers: unit tests, the tiny workflow end to end (also on SLURM), lint
	$(PYTEST)

test-unit: setup      ## the unit tier only (no workflow runs)
	$(PYTEST) -m "not workflow"

test-workflow: test-deps ## the workflow tier only
	$(PYTEST) -m workflow

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

report: setup         ## results/report.html from the finished default run
	$(BIN)/snakemake --report results/report.html

clean:
	rm -rf results .snakemake
