# Two entry points on a fresh machine with Python 3.11+:  make run  |  make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint report clean

$(STAMP): pyproject.toml src/multirun/kernel/fused.cpp
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/python -m multirun.kernel.build  # the fused CPU kernel loops, once per machine
	touch $(STAMP)

setup: $(STAMP)

run: setup            ## the default workflow (MNIST-1D, offline, CPU)
	$(BIN)/snakemake --cores 2

test: setup           ## unit tests, the tiny workflow end to end, lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

report: setup         ## results/report.html from the finished default run
	$(BIN)/snakemake --report results/report.html

clean:
	rm -rf results .snakemake
