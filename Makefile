# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/libs:$(CURDIR)/services:$(CURDIR)/deploy
PYTEST_ARGS ?=

.PHONY: trace install run test test-unit test-integration lint typecheck boundaries check lock clean \
	kafka-jars loadtest loadtest-smoke bench

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	touch $@

install: $(VENV)/.installed ## create .venv with the pinned dependencies

kafka-jars: install ## resolve the pinned Apache Kafka from Maven Central into ~/.cache/cdt
	$(PY) -c "from devstack.kafka import resolve_classpath; print(resolve_classpath())"

run: install ## Postgres + Kafka + topics + migrations + the four services, in the foreground
	$(PY) -m devstack.run

trace: install ## print a trace as a tree: make trace (the last one) or make trace ID=<trace_id>
	$(PY) -m devstack.trace $(if $(ID),show $(ID),last)

# Reuses a running `make run` (ports 8001-8004 + .data/admin-token) or starts the stack itself.
# ~5 min here with the national fixture already loaded; the first run adds its import through the
# bulk APIs (95 s on a quiet machine) and the replicas' catch-up (docs/capacity.md).
# Extra flags: make loadtest ARGS="--rate 500 --duration 120" (python -m tests.load.loadtest -h).
# A bulk import under live load: ARGS="--import-during-load"; a flatness soak: ARGS="--soak 60".
LOADTEST := $(PY) -m tests.load.loadtest
loadtest: install ## national fixture, calibration, ramp, 50%/80% phases; reports/loadtest-*.{json,png}
	$(LOADTEST) --scale national $(ARGS)

loadtest-smoke: install ## the same at smoke scale (two provinces, ~1 min of load)
	$(LOADTEST) --scale smoke --ramp-start 20 --ramp-factor 2 --ramp-step 10 --duration 20 \
		--calibration-records 50000 $(ARGS)

# Each benchmark starts its own PostgreSQL and Kafka in a temp dir (removed afterwards) and prints
# its figures; ~13 min in all here. One at a time: python -m tests.load.bench_<name> -h.
bench: install ## the per-service benchmarks (ingest, scoring, recompute, teams import, replicas, notifications)
	$(PY) -m tests.load.bench_activities_ingest --batches 150 --rate 500 --seconds 15 --api-processes 2
	$(PY) -m tests.load.bench_scoring_throughput 30000 2000
	$(PY) -m tests.load.bench_scoring_ceiling 30000 2000
	$(PY) -m tests.load.bench_scoring_recompute 200000 1500
	$(PY) -m tests.load.bench_teams_import
	$(PY) -m tests.load.bench_replicas_catchup
	$(PY) -m tests.load.bench_notifications_pipeline
	$(PY) -m tests.load.bench_reports
	$(PY) -m tests.load.bench_search

# Ends with the in-process line coverage of libs/ and services/ (settings in pyproject.toml).
test: install ## the whole suite against real Postgres and Kafka (started by the suite)
	$(PY) -m pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

test-unit: install ## no I/O, a few seconds
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install ## each service against real Postgres and Kafka (started by the suite)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check libs services deploy tests examples
	$(VENV)/bin/ruff format --check libs services deploy tests examples

typecheck: install
	$(VENV)/bin/mypy libs/common services deploy/devstack

# The contracts live in pyproject.toml ([tool.importlinter]): services independent of each other,
# `common` imports no service, `domain` modules import no database, broker, HTTP or telemetry code,
# and within a service a layer imports only the layers below it (README, layout).
boundaries: install
	$(VENV)/bin/lint-imports

check: lint typecheck boundaries ## the fast checks, run by .ci/run before the tests

lock: install ## re-pin the full dependency set after editing requirements*.txt
	$(PY) -m pip freeze --exclude-editable | sed '1i # Full pinned set (pip freeze of requirements-dev.txt). Regenerate with: make lock' > constraints.txt

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .coverage deploy/kafka/target
