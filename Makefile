# A newcomer needs two commands: `make demo` and `make test` (see README.md).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DAYS ?= 7
export SONIK_HOME ?= $(CURDIR)/lakehouse
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: install demo dev test test-fast lint

$(BIN)/dagster: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/dagster

# On a demo lakehouse, `dagster dev` reads its landing files and its partitions start at its first day
# (SONIK_START_DATE, SONIK_SOURCE; either set by you wins); elsewhere it changes nothing. `dagster dev` is
# the command the docs teach, so Dagster's advice to use `dg dev` instead is left out (that notice only).
DEMO_ENV = env PYTHONWARNINGS='ignore:Function `dev_command` is superseded' $$($(BIN)/python -m sonik_pipeline.demo env)

## The last $(DAYS) complete days into ./lakehouse as a story (landing files, rejects, a late upload, compaction,
## expiry; sonik_pipeline/demo.py), then the Dagster UI on it.
demo: install
	mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/python -m sonik_pipeline.demo --days $(DAYS)
	$(DEMO_ENV) $(BIN)/dagster dev

## The Dagster UI (webserver and daemon) on the same lakehouse and instance as `make demo`.
dev: install
	mkdir -p "$(DAGSTER_HOME)"
	$(DEMO_ENV) $(BIN)/dagster dev

test: install
	$(BIN)/ruff check sonik_pipeline sonik_pipeline_tests benchmarks
	$(BIN)/pytest

## For iterating: the same, without the tests marked slow (CLI subprocesses, races). `make test` runs everything.
test-fast: install
	$(BIN)/ruff check sonik_pipeline sonik_pipeline_tests benchmarks
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check sonik_pipeline sonik_pipeline_tests benchmarks
	$(BIN)/ruff format --check sonik_pipeline sonik_pipeline_tests benchmarks
