# pgqueue — every developer task is a target here; `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# `make run` installs only what running the example needs; `make venv`/`test` add the dev tools.
RUN_STAMP := $(VENV)/.run-stamp
# A second venv on Python 3.12, with Django 6 (which needs it): the Django suite runs there too
# (make test-django), the whole suite once more (make test-py312: 3.12 starts attempts as eager
# tasks), and pgqueue's benchmark driver, on the interpreter the peers run on (make bench).
PYTHON312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python) $(shell command -v python3.12))
VENV312 := .venv-py312
STAMP312 := $(VENV312)/.installed-stamp
PYTEST_ARGS ?=
# The default tier runs on this many pytest-xdist processes (its tests wait on the database far
# more than they compute); each process starts its own embedded server.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help venv venv-py312 run test test-all test-django test-pg15 test-py312 test-prometheus test-fleet test-minutes test-browser screenshots test-cluster chaos lint fmt docs docs-build bench bench-shards bench-quick bench-memory bench-fleet bench-soak test-soak-lite bench-flow bench-wait bench-workflows bench-http bench-dashboard wheel-check clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP) $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e ".[embedded,migrations,http]"
	touch $(RUN_STAMP)

venv: $(STAMP) ## Create the virtualenv and install pgqueue with its dev tools

$(STAMP312): pyproject.toml
	@test -n "$(PYTHON312)" || { echo "this target needs Python 3.12: set PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(VENV312)/bin/python -m pip install --quiet -e ".[test,django]" "Django>=6.0,<7"
	touch $(STAMP312)

venv-py312: $(STAMP312) ## A Python 3.12 virtualenv with Django 6 (its built-in django.tasks) and the test tools

run: $(RUN_STAMP) ## Run the example app's worker and the dashboard (installs only what it needs; embedded PostgreSQL unless PGQUEUE_DSN is set)
	$(BIN)/python -m example

test: $(STAMP) ## The fast default tier: unit, integration and acceptance tests (PGQUEUE_TEST_DSN, else Docker, else embedded PostgreSQL)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-all: $(STAMP) ## Every tier: the default one, then fleet, Prometheus, minutes, chaos, browser, cluster and the soak smoke
	$(MAKE) test
	$(MAKE) test-fleet
	$(MAKE) test-prometheus
	$(MAKE) test-minutes
	$(MAKE) chaos
	$(MAKE) test-browser
	$(MAKE) test-cluster
	$(MAKE) test-soak-lite
	$(MAKE) test-django

test-py312: $(STAMP312) ## The default tier on Python 3.12 (PGQUEUE_TEST_DSN, else Docker, else embedded PostgreSQL)
	$(VENV312)/bin/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-django: $(STAMP) $(STAMP312) ## The Django backend's suite twice: Django 5.2 + django-tasks (Python 3.11) and Django 6 (Python 3.12)
	$(BIN)/python -m pytest tests/django $(PYTEST_ARGS)
	$(VENV312)/bin/python -m pytest tests/django $(PYTEST_ARGS)

test-pg15: $(STAMP) ## Run the suite against the PostgreSQL on 127.0.0.1:5432
	PGQUEUE_TEST_DSN=postgresql://postgres@127.0.0.1:5432/test $(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-browser: $(STAMP) ## Dashboard tests in headless Chromium (Debian's chromium + chromium-driver)
	$(BIN)/python -m pytest tests/dashboard -m browser $(PYTEST_ARGS)

screenshots: $(STAMP) ## Screenshots of every dashboard page into docs/images/ (headless Chromium)
	$(BIN)/python -m tests.dashboard.screenshots

test-prometheus: $(STAMP) ## A real Prometheus scrapes a real worker (needs the prometheus binary)
	$(BIN)/python -m pytest -m prometheus $(PYTEST_ARGS)

test-fleet: $(STAMP) ## Acceptance tests with fleets of worker processes (flow control, pause, workflows, periodic)
	$(BIN)/python -m pytest -m "fleet and not minutes" -n $(TEST_WORKERS) $(PYTEST_ARGS)
test-minutes: $(STAMP) ## Tests that run for several wall-clock minutes (throughput history)
	$(BIN)/python -m pytest -m minutes $(PYTEST_ARGS)
chaos: $(STAMP) ## Fault injection: real workers, a PostgreSQL cluster the suite owns (needs pgbouncer)
	$(BIN)/python -m pytest tests/chaos -m chaos -p no:cacheprovider -s $(PYTEST_ARGS)

test-cluster: $(STAMP) ## Run the multi-server suite: a streaming replica and 3 shards, started by the tests
	$(BIN)/python -m pytest tests/cluster -m cluster $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check), mypy --strict, and the layer contract (no import circle; import-linter)
	$(BIN)/ruff check pgqueue adapters migrations tests example benchmarks
	$(BIN)/ruff format --check pgqueue adapters migrations tests example benchmarks
	$(BIN)/mypy
	$(BIN)/python -m tests.architecture.layers

fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format pgqueue adapters migrations tests example benchmarks
	$(BIN)/ruff check --fix pgqueue adapters migrations tests example benchmarks

docs: $(STAMP) ## Serve the documentation on http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-build: $(STAMP) ## Build the documentation strictly (broken links fail)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP) $(STAMP312) ## Benchmark pgqueue against pgqueuer, procrastinate, chancy and oban, all on Python 3.12
	$(BIN)/python benchmarks/run.py --pgqueue-python $(VENV312)/bin/python $(BENCH_ARGS)

bench-shards: $(STAMP) ## Drain time of a one-shard sharded queue against the plain queue (must be within 10 %)
	$(BIN)/python benchmarks/shard_overhead.py $(SHARD_BENCH_ARGS)

bench-memory: $(STAMP) ## One worker drains 1,000,000 tasks; its RSS must stay under 200 MB
	$(BIN)/python benchmarks/memory.py $(MEMORY_ARGS)

bench-fleet: $(STAMP) ## Idle cost, latency with 500 kinds, delayed-task lateness and fairness
	$(BIN)/python benchmarks/fleet.py $(FLEET_ARGS)

bench-soak: $(STAMP) ## Soak: push at a fixed rate while workers drain for 20 min on a stock cluster it starts (SOAK_ARGS="--rate 5000 --ttl 0 --pin-seconds 300")
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

test-soak-lite: $(STAMP) ## Two-minute soak at 1,000 tasks/s; fails when lag or the table's size grows without bound
	$(BIN)/python benchmarks/soak.py --minutes 2 --rate 1000 --warmup 70 --check --max-lag 5 --max-growth 0.5 --out-dir build/soak

bench-flow: $(STAMP) ## Flow control with 4 worker processes: unlimited drain, a kind limited to 1,000/s, group_concurrency=1 over 1,000 groups, the unlimited drain beside a kind limited to 500/s
	$(BIN)/python benchmarks/flow_control.py $(FLOW_ARGS)

bench-workflows: $(STAMP) ## A 10,000-node fan-out + fan-in workflow vs 10,000 plain tasks, 4 worker processes (at least 30 % of the plain drain rate)
	$(BIN)/python benchmarks/workflows.py $(WORKFLOW_ARGS)

bench-wait: $(STAMP) ## 1,000 concurrent queue.wait() calls in one process: latency after each success
	$(BIN)/python benchmarks/wait_latency.py $(WAIT_ARGS)

bench-http: $(STAMP) ## Enqueue over HTTP (pgqueue serve, 64 keep-alive clients, 20 s) vs push_task
	$(BIN)/python benchmarks/http_load.py $(HTTP_BENCH_ARGS)

bench-dashboard: $(STAMP) ## Time every dashboard page with 1,000,000 tasks (each must be under 300 ms)
	$(BIN)/python benchmarks/dashboard_pages.py $(BENCH_ARGS)

bench-quick: $(STAMP) $(STAMP312) ## A short benchmark run (smaller workloads)
	$(BIN)/python benchmarks/run.py --quick --pgqueue-python $(VENV312)/bin/python $(BENCH_ARGS)

wheel-check: $(STAMP) ## Build the wheel, install it in a scratch venv, use it without the source tree
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/python -m pip wheel --quiet --no-deps -w build/wheel-check .
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/python -m pip install --quiet build/wheel-check/pgqueue_tasks-*.whl
	cd build/wheel-check && venv/bin/python -c "import pgqueue, pgqueue.adapters.psycopg, pgqueue.migrate as m; assert m.migrations_dir().joinpath('env.py').exists(); assert 'CREATE TABLE' in m.plain_sql(); from importlib import resources; assert resources.files('pgqueue').joinpath('grafana', 'pgqueue-dashboard.json').is_file()"
	cd build/wheel-check && venv/bin/python -c "import importlib.util as u, pgqueue, pgqueue.typed; assert [m for m in ('fastapi', 'starlette', 'django', 'opentelemetry') if u.find_spec(m)] == []"
	cd build/wheel-check && ! venv/bin/python -c "import pgqueue.adapters.fastapi" 2> err.txt && grep -q "No module named 'fastapi'" err.txt
	cd build/wheel-check && venv/bin/python -c "import pgqueue.tracing as t; assert not t.AVAILABLE and t.current_trace_context() is None"
	cd build/wheel-check && venv/bin/pgqueue sql --schema wheel_check > /dev/null
	cd build/wheel-check && ! venv/bin/pgqueue migrate --dsn postgresql:///none 2> err.txt
	grep -q "pgqueue-tasks\[migrations\]" build/wheel-check/err.txt
	build/wheel-check/venv/bin/python -m pip install --quiet "$$(ls build/wheel-check/pgqueue_tasks-*.whl)[fastapi]"
	cd build/wheel-check && venv/bin/python -c "import pgqueue.adapters.fastapi as f, pgqueue.http.dashboard as d; assert f.lifespan and d.mount"
	cd build/wheel-check && ! venv/bin/python -c "import pgqueue.adapters.django" 2> err.txt && grep -q "No module named 'django'" err.txt
	build/wheel-check/venv/bin/python -m pip install --quiet "$$(ls build/wheel-check/pgqueue_tasks-*.whl)[django]"
	cd build/wheel-check && venv/bin/python -c "import importlib, pgqueue.adapters.django as d; [importlib.import_module('pgqueue.adapters.django.' + m) for m in ('apps', 'migrations.0001_pgqueue_schema', 'management.commands.pgqueue_worker', 'worker')]; assert d.PgQueueBackend.supports_get_result"
	build/wheel-check/venv/bin/python -m pip install --quiet "$$(ls build/wheel-check/pgqueue_tasks-*.whl)[otel]"
	cd build/wheel-check && venv/bin/python -c "import importlib.util as u, pgqueue.tracing as t, pgqueue.stamps as s; assert t.AVAILABLE and t.current_trace_context() is None and s.tracing_stamp(parent='link'); assert u.find_spec('opentelemetry.sdk') is None"
	@echo "wheel works without the source tree"

clean: ## Remove the virtualenvs, caches and the example's embedded database
	rm -rf $(VENV) $(VENV312) benchmarks/.venv-peers .pytest_cache .mypy_cache .ruff_cache site .pgdata build
