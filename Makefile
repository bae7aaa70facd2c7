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

## Backfill plays and every mart for the last $(DAYS) complete days into ./lakehouse, then open the Dagster UI on it.
demo: install
	mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/dagster asset materialize -m sonik_pipeline.definitions --select 'plays*' \
		--partition-range "$$($(BIN)/sonik days --last $(DAYS))"
	$(BIN)/dagster dev

## The Dagster UI (webserver and daemon) on the same lakehouse and instance as `make demo`.
dev: install
	mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/dagster dev

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
