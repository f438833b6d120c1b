# Two entry points on a fresh machine with Python 3.11+:  make run  |  make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps run test lint report clean

$(STAMP): pyproject.toml src/multirun/kernel/fused.cpp
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,slurm]'
	$(BIN)/python -m multirun.kernel.build  # the fused CPU kernel loops, once per machine
	touch $(STAMP)

setup: $(STAMP)

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

test: setup system-deps ## unit tests, the tiny workflow end to end (also on a local SLURM), lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

report: setup         ## results/report.html from the finished default run
	$(BIN)/snakemake --report results/report.html

clean:
	rm -rf results .snakemake
