# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test fuzz lint format migrate migrations seed schema bench bench-short load load-short faults clean

# (Re)install when the project's declared dependencies change.
$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/ketafollow migrate
	$(BIN)/ketafollow seed
	exec $(BIN)/ketafollow serve

test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fuzz tests of `make test` with many more examples per role (a few minutes; they stop by
# themselves). FUZZ_EXAMPLES=1000 make fuzz for a longer run.
FUZZ_EXAMPLES ?= 300
fuzz: $(INSTALLED)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/schema/test_fuzz.py $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(INSTALLED)
	$(BIN)/ketafollow migrate

# After changing models: write the next migration file (commit it).
migrations: $(INSTALLED)
	$(BIN)/tortoise makemigrations

seed: $(INSTALLED)
	$(BIN)/ketafollow seed

schema: $(INSTALLED)
	$(BIN)/ketafollow export-schema

# Figures, not assertions (see docs/benchmarks.md: Benchmarks).
bench: $(INSTALLED)
	$(BIN)/python -m bench.bench_scheduler
	$(BIN)/python -m bench.bench_panel
	$(BIN)/python -m bench.bench_home
	$(BIN)/python -m bench.bench_changes

# Real servers under a mix of users for a few minutes, loopback only (see docs/benchmarks.md: Load test).
# SQLite, then PostgreSQL with one, two and four workers when 127.0.0.1:5432 (and Redis) answer;
# at the end, the targets of issue #18 beside the run's figures.
load: $(INSTALLED)
	$(BIN)/python -m bench.load

# Every benchmark and the load test in a few seconds each, no figures asserted: what CI runs so a
# broken benchmark fails the build instead of rotting unnoticed.
bench-short: $(INSTALLED)
	BENCH_ROWS=2000 $(BIN)/python -m bench.bench_scheduler
	BENCH_PANEL_PATIENTS=50 BENCH_PANEL_RUNS=3 $(BIN)/python -m bench.bench_panel
	BENCH_HOME_SECONDS=0.5 BENCH_HOME_ROUNDS=1 $(BIN)/python -m bench.bench_home
	BENCH_CHANGES=2000 $(BIN)/python -m bench.bench_changes

load-short: $(INSTALLED)
	LOAD_SECONDS=3 LOAD_PATIENTS=6 LOAD_ONLY=sqlite-1,postgres-1,postgres-2 $(BIN)/python -m bench.load

# Backend faults under two replicas, through the suite's own proxies in front of PostgreSQL
# (127.0.0.1:5432) and Redis (127.0.0.1:6379); loopback only, bounded, fails when a write or an
# event is lost, a wait exceeds its bound or an answer is not in its shape (docs/operations.md,
# Fault suite). FAULTS_SHORT=1 for the short mode of CI (a couple of minutes).
faults: $(INSTALLED)
	$(BIN)/python -m tests.faults

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
