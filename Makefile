# keiko: `make demo` runs the main job, `make test` runs every test; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export KEIKO_HOME ?= $(CURDIR)/.keiko
export AIRFLOW_HOME ?= $(KEIKO_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False

DEMO_DATE ?= 2026-11-21
DEMO_DAYS ?= 14
DEMO_ROWS ?= 300000
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: install chromium demo test test-fast lint lock bench bench-serving serve airflow backfill clean

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every process would otherwise
# recompile what it imports; importing Great Expectations took 16 s instead of 6.5 s.
$(BIN)/activate: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -r requirements.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(BIN)/activate

install: $(BIN)/activate

demo: install
	DEMO_DATE=$(DEMO_DATE) DEMO_DAYS=$(DEMO_DAYS) DEMO_ROWS=$(DEMO_ROWS) scripts/demo.sh

# Two pytest-xdist workers, a test module each at a time (module fixtures such as the Airflow standalone are
# built once): 11 minutes instead of 18 on 2 cores (README, Tests). PYTEST_WORKERS=0 runs in one process.
test: install chromium
	$(BIN)/uv pip check --python $(BIN)/python
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# The inner loop: ruff, then every test that needs no pipeline run, moto server, model server or browser
# (pytest -m fast; the tiers are in pyproject.toml and tests/conftest.py).
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m fast $(PYTEST_ARGS)

# The run page's test opens report.html in headless Chromium, from Debian's packages.
chromium:
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq chromium; }

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

serve: install
	$(BIN)/keiko serve --model $(or $(MODEL),ctr) $(if $(PORT),--port $(PORT)) $(if $(REPLICAS),--replicas $(REPLICAS))

# Airflow on this machine: scheduler, DAG processor and API server (UI and REST API on :8080), SQLite.
# The schedule is off here: runs start from the trigger form, the REST API and `make backfill`.
airflow: install
	AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False \
		PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/airflow standalone

# Retrain MODEL for every day FROM..TO (both included) with Airflow's backfill on the running `make airflow`.
backfill: install
	MODEL=$(MODEL) FROM=$(FROM) TO=$(TO) scripts/backfill.sh

bench: install
	$(BIN)/python bench/pipeline.py

# The load generator is wrk, from Debian's packages.
bench-serving: install
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python bench/serving.py

# Re-resolve requirements.in into the fully pinned requirements.txt.
lock: install
	$(BIN)/uv pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.txt

clean:
	rm -rf $(KEIKO_HOME)
