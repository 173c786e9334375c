# keiko: `make demo` runs the main job, `make test` runs every test; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export KEIKO_HOME ?= $(CURDIR)/.keiko
export AIRFLOW_HOME ?= $(KEIKO_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False

DEMO_DATE ?= 2026-11-21
DEMO_DAYS ?= 21
DEMO_ROWS ?= 300000
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: install chromium demo canary test test-fast lint lock protos bench bench-serving bench-batch serve airflow backfill backfill-cancel \
	clean batch-store batch-store-down \
	stack-packages stack stack-down stack-status

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every process would otherwise
# recompile what it imports; importing Great Expectations took 16 s instead of 6.5 s.
$(BIN)/activate: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -r requirements.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(BIN)/activate

# bootstrap-table, which Great Expectations' Data Docs draw their tables with, is on neither PyPI nor Debian (the
# other Data Docs assets come from requirements.txt): npm's tarball, checked against its sha512, unpacked into
# the venv, where keiko.gates.data_docs finds it.
BOOTSTRAP_TABLE_VERSION := 1.19.1
BOOTSTRAP_TABLE := bootstrap-table-$(BOOTSTRAP_TABLE_VERSION)
BOOTSTRAP_TABLE_SHA512 := 5af57e975008fc2fb34e168a99f1e68bf22e6b254d074a9d172121171d63c9984ed282ed349340364091debbc97fa0e487bd9db0b125c6913f6f32bdb1e1102c
BOOTSTRAP_TABLE_DIR := $(VENV)/share/keiko/$(BOOTSTRAP_TABLE)
$(BOOTSTRAP_TABLE_DIR)/LICENSE: | $(BIN)/activate
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT \
		&& npm pack --silent --pack-destination "$$tmp" bootstrap-table@$(BOOTSTRAP_TABLE_VERSION) >/dev/null \
		&& echo "$(BOOTSTRAP_TABLE_SHA512)  $$tmp/$(BOOTSTRAP_TABLE).tgz" | sha512sum --check --quiet \
		&& mkdir -p $(BOOTSTRAP_TABLE_DIR) \
		&& tar -xzmf "$$tmp/$(BOOTSTRAP_TABLE).tgz" -C $(BOOTSTRAP_TABLE_DIR) --strip-components=1 package/LICENSE \
			package/dist/bootstrap-table.min.css package/dist/bootstrap-table.min.js \
			package/dist/extensions/filter-control/bootstrap-table-filter-control.min.css \
			package/dist/extensions/filter-control/bootstrap-table-filter-control.min.js

install: $(BIN)/activate $(BOOTSTRAP_TABLE_DIR)/LICENSE

demo: install stack-packages
	DEMO_DATE=$(DEMO_DATE) DEMO_DAYS=$(DEMO_DAYS) DEMO_ROWS=$(DEMO_ROWS) scripts/demo.sh

# Two pytest-xdist workers, a test module each at a time (module fixtures such as the Airflow standalone are
# built once): 11 minutes instead of 18 on 2 cores (README, Tests). PYTEST_WORKERS=0 runs in one process.
test: install chromium stack-packages
	$(BIN)/uv pip check --python $(BIN)/python
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# The inner loop: ruff, then every test that needs no pipeline run, moto server, model server or browser
# (pytest -m fast on the same two workers; the tiers are in pyproject.toml and tests/conftest.py).
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m fast -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# The run page's test opens report.html in headless Chromium, from Debian's packages.
chromium:
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq chromium; }

# The stack's PostgreSQL and Redis (make stack, and the tests that start it), from Debian's packages. Where services
# may start, Debian starts a system instance of each (ports 5432 and 6379); the stack runs its own beside them.
stack-packages:
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && command -v redis-server >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq postgresql redis-server; }

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# After `make demo`: ctr retrained on the next day and deployed as a two-step canary under `airflow dags test`, with
# `keiko traffic` living days through the replicas meanwhile (README, "A canary, step by step").
canary: install
	DEMO_DATE=$(DEMO_DATE) scripts/canary.sh

# The batch store of batch models (user_value) on this machine: redis-server on KEIKO_BATCH_STORE_URL's port (6390),
# data under $(KEIKO_HOME)/batch-store. `make demo` starts it; `make batch-store-down` stops it.
batch-store: stack-packages
	scripts/batch_store.sh up

batch-store-down:
	scripts/batch_store.sh down

serve: install
	$(BIN)/keiko serve --model $(or $(MODEL),ctr) $(if $(PORT),--port $(PORT)) $(if $(REPLICAS),--replicas $(REPLICAS))

# Airflow on this machine: scheduler, DAG processor and API server (UI and REST API on :8080), SQLite.
# The schedule is off here: runs start from the trigger form, the REST API and `make backfill`.
airflow: install
	AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False \
		PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/airflow standalone

# The production shape on this machine (README, Production stack on this machine): PostgreSQL, Redis, Airflow's
# api-server (:8080), scheduler, dag-processor, triggerer and a Celery worker as processes of their own, and the
# model servers; data and logs under $(KEIKO_HOME)/stack. The schedule is off, as for `make airflow`.
stack: install stack-packages
	AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False scripts/stack.sh up

stack-down:
	scripts/stack.sh down

stack-status:
	scripts/stack.sh status

# Retrain MODEL for every day FROM..TO (both included) with Airflow's backfill on the running `make airflow`.
backfill: install
	MODEL=$(MODEL) FROM=$(FROM) TO=$(TO) scripts/backfill.sh

# End MODEL's backfill in progress (what Ctrl-C on `make backfill` does): its queued days fail, running ones finish.
backfill-cancel: install
	$(BIN)/python -m keiko.oncall.backfill cancel --model $(MODEL)

bench: install
	$(BIN)/python bench/pipeline.py

# The load generators are wrk and h2load (gRPC), from Debian's packages; MLServer installs into a virtualenv of its own
# (bench/mlserver_peer), never into the project's.
bench-serving: install
	command -v wrk >/dev/null && command -v h2load >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq wrk nghttp2-client; }
	$(BIN)/python bench/serving.py

# Batch pre-inference: scoring 1M keys into Redis, and lookups next to online scoring (bench/RESULTS.md, "Batch
# serving"); bench/batch_store.py times the store alone.
bench-batch: install stack-packages
	$(BIN)/python bench/batch_serving.py

# The inference protocol's proto (KServe's, in plugins/keiko/serving/protos) compiled into the descriptor set keiko
# loads; tests/unit/serving/test_protos.py fails until it is current.
protos: install
	$(BIN)/python -m grpc_tools.protoc -I plugins --descriptor_set_out=plugins/keiko/serving/protos/open_inference_grpc.binpb \
		keiko/serving/protos/open_inference_grpc.proto

# Re-resolve requirements.in into the fully pinned requirements.txt.
lock: install
	$(BIN)/uv pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.txt

clean:
	scripts/batch_store.sh down
	rm -rf $(KEIKO_HOME)
