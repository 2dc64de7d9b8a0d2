SHELL := /bin/bash
# Two commands on a fresh machine: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
TORCH  := torch==2.13.0
# pytest-xdist workers for `make test` (auto: one per core); a test file stays on one worker
TEST_WORKERS ?= auto
# --no-loadscope-reorder: keep tests/conftest.py's order (longest files first); xdist's default
# reorders files by their number of tests, which started the long end-to-end files last
# OMP_NUM_THREADS=1: one torch thread per test process (subprocesses inherit it). Two workers on
# two cores with torch's default of a thread per core oversubscribe the CPU, and the idle threads
# spin: the suite spent 23 min of CPU in 13 min; with one thread 17 min in 10 (same tree, 2 cores)
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: setup run ablate semantic-ids test test-fast lint format ui clean

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. torch goes in first so that nothing
# resolves a CUDA build; recbole is only the carrier of the MovieLens-100K files (--no-deps).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
	$(PIP) install -q $(TORCH) 2>&1 | grep -v "is ignored: it is neither" ; test $${PIPESTATUS[0]} -eq 0
	$(PIP) install -q -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" ; test $${PIPESTATUS[0]} -eq 0
	$(PIP) install -q --no-deps "recbole==1.2.1" 2>&1 | grep -v "is ignored: it is neither" ; test $${PIPESTATUS[0]} -eq 0
	touch $(STAMP)

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# RecFound's ablation table: three more trainings at the main run's budget (outside `make run`)
ablate: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro ablation/dvc.yaml

# Semantic vs atomic item identifiers on ml-100k at a reduced budget (outside `make run`):
# reports/semantic_ids.{md,json}; each arm's work under /tmp/recfound_semantic_ids
semantic-ids: setup
	OMP_NUM_THREADS=1 $(BIN)/python bench/semantic_ids.py --fresh

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/vulture

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# MLflow's UI (3.17, 3.18) opens experiments in its GenAI view unless the browser chose
# "Model training" once; the link below does that (it is remembered).
# Without MLflow's job runner (GenAI scorers, which RecFound does not use): a sqlite store would
# otherwise start eight more processes, 1.1 GiB, for a UI.
ui: setup
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlartifacts

clean:
	rm -rf $(VENV)
