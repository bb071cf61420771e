# pgqueue — every developer task is a target here; `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test test-pg15 test-cluster lint fmt docs docs-build bench bench-shards bench-quick bench-memory wheel-check clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP) ## Create the virtualenv and install pgqueue with its dev tools

run: $(STAMP) ## Run the example app's worker (embedded PostgreSQL unless PGQUEUE_DSN is set)
	$(BIN)/python -m example

test: $(STAMP) ## Run the whole test suite (PGQUEUE_TEST_DSN, else Docker, else embedded PostgreSQL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-pg15: $(STAMP) ## Run the suite against the PostgreSQL on 127.0.0.1:5432
	PGQUEUE_TEST_DSN=postgresql://postgres@127.0.0.1:5432/test $(BIN)/python -m pytest $(PYTEST_ARGS)

test-cluster: $(STAMP) ## Run the multi-server suite: a streaming replica and 3 shards, started by the tests
	$(BIN)/python -m pytest tests/cluster -m cluster $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict on pgqueue/
	$(BIN)/ruff check pgqueue adapters migrations tests example benchmarks
	$(BIN)/ruff format --check pgqueue adapters migrations tests example benchmarks
	$(BIN)/mypy

fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format pgqueue adapters migrations tests example benchmarks
	$(BIN)/ruff check --fix pgqueue adapters migrations tests example benchmarks

docs: $(STAMP) ## Serve the documentation on http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-build: $(STAMP) ## Build the documentation strictly (broken links fail)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP) ## Benchmark pgqueue against pgqueuer, procrastinate and chancy
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

bench-shards: $(STAMP) ## Drain time of a one-shard sharded queue against the plain queue (must be within 10 %)
	$(BIN)/python benchmarks/shard_overhead.py $(SHARD_BENCH_ARGS)

bench-memory: $(STAMP) ## One worker drains 1,000,000 tasks; its RSS must stay under 200 MB
	$(BIN)/python benchmarks/memory.py $(MEMORY_ARGS)

bench-quick: $(STAMP) ## A short benchmark run (smaller workloads)
	$(BIN)/python benchmarks/run.py --quick $(BENCH_ARGS)

wheel-check: $(STAMP) ## Build the wheel, install it in a scratch venv, use it without the source tree
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/python -m pip wheel --quiet --no-deps -w build/wheel-check .
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/python -m pip install --quiet build/wheel-check/pgqueue-*.whl
	cd build/wheel-check && venv/bin/python -c "import pgqueue, pgqueue.adapters.psycopg, pgqueue.migrate as m; assert m.migrations_dir().joinpath('env.py').exists(); assert 'CREATE TABLE' in m.plain_sql()"
	cd build/wheel-check && venv/bin/pgqueue sql --schema wheel_check > /dev/null
	@echo "wheel works without the source tree"

clean: ## Remove the virtualenvs, caches and the example's embedded database
	rm -rf $(VENV) benchmarks/.venv-peers .pytest_cache .mypy_cache .ruff_cache site .pgdata build
