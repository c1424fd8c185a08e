# MLOps for tabular data: `make run` trains on the built-in data, `make test` runs the fast tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.yaml
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --upgrade "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true
	@echo "Installing the pinned package set into $(VENV) (constraints.txt) ..."
	@PYTHONWARNINGS=ignore $(PIP) install -c constraints.txt -e ".[dev]" 2>&1 | grep -vE "^WARNING: Location|^\s*$$" || true
	@$(BIN)/python -c "import prefect, mlflow, great_expectations, evidently, sklearn" && touch $(STAMP)
	@# a migrated empty Prefect database that new state folders start from (mlops.core.startup; ~/.cache/mlops-tabular)
	@$(BIN)/python -c "from mlops.core.startup import prefect_database_template as t; t()"

setup: $(STAMP) ## create .venv and install the pinned package set

run: $(STAMP) bytecode ## train on the built-in data (CONFIG=... for another use case)
	$(BIN)/mlops train --config $(CONFIG)

# The test tiers (markers registered with their reasons in pyproject.toml; tests/conftest.py checks every test
# is in exactly one tier). CI runs `make test`, then `make test-slow`.
FAST_TIER := not e2e and not process and not slow
SLOW_TIER := e2e or process or slow
# The fast tier runs on two pytest-xdist workers, one per core, a module on one worker (its module fixtures start
# once): 135 s instead of 195 s on 2 cores of the faster kind (220-306 s on the slower kind, README's Testing). The
# slow tier runs on two as well, a module on one worker and the modules on the shared live stack together
# (tests/support/scopes.py), so one stack starts; `SLOW_WORKERS=` runs it on one (about 19 minutes instead of about
# 14 on the faster kind; on two, 29-33 minutes on the slower kind).
WORKERS := -n 2 --dist loadfile
SLOW_WORKERS := -n 2 --dist loadscope

# The project's modules byte-compiled before a run: where PYTHONDONTWRITEBYTECODE is set (CI machines), Python
# never caches them, so each process the tests start (flow runs, servers, CLI calls: about 150 in the slow tier)
# compiled them again, 0.26 s of CPU for the flows' imports; compiling all of them here takes 0.3 s.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 mlops flows tasks deployments

test: $(STAMP) bytecode ## the fast tier: unit and flow tests that start no stack and no server (a few minutes)
	$(BIN)/python -m pytest -q -m "$(FAST_TIER)" $(WORKERS)

test-slow: $(STAMP) bytecode ## only what `make test` leaves out: tests marked e2e, process or slow
	$(BIN)/python -m pytest -q -m "$(SLOW_TIER)" $(SLOW_WORKERS) --durations=15

test-all: $(STAMP) bytecode ## every test in one run: the fast tier plus the process, slow and e2e tiers (20+ minutes)
	$(BIN)/python -m pytest -q

lint: $(STAMP) ## ruff, and the import contract (.importlinter: cli > flows > tasks > capabilities > deployments > core)
	$(BIN)/ruff check mlops flows tasks deployments tests bench
	$(BIN)/lint-imports --no-cache

demo-drift: $(STAMP) ## the drift loop on built-in data: train, drifted batch, monitor, retrain, compare
	MLOPS_HOME=$${MLOPS_HOME:-.mlops/demo-drift} $(BIN)/mlops demo-drift --config $(CONFIG)

monitor: $(STAMP) ## run the monitoring flow once on the prediction log
	$(BIN)/mlops monitor --config $(CONFIG)

up: $(STAMP) ## start the local stack on loopback (Prefect, MLflow, worker, model server, webhook bridge)
	$(BIN)/mlops up --config $(CONFIG)

up-production: $(STAMP) ## the production profile: own PostgreSQL for Prefect and MLflow, served artifacts, two workers
	$(BIN)/mlops up --profile production --config $(CONFIG)

down: $(STAMP) ## stop what `make up` started
	$(BIN)/mlops down

status: $(STAMP) ## what is champion now
	$(BIN)/mlops status --config $(CONFIG) --history

mlflow-ui: $(STAMP) ## open the MLflow UI on the local store (http://127.0.0.1:5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.mlops/mlflow.db --host 127.0.0.1 --port 5000

clean: ## remove local state (.mlops/): models, runs, logs
	rm -rf .mlops

.PHONY: help setup bytecode run test test-slow test-all lint status mlflow-ui clean demo-drift monitor up up-production down
