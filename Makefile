# flowsuite: `make demo` and `make test` are the two commands a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLOWSUITE_HOME ?= $(CURDIR)/.flowsuite
export DAGSTER_HOME ?= $(FLOWSUITE_HOME)/dagster

.PHONY: install demo dev test reliability bench lint lock browsers duckdb-iceberg airflow-env peers-env clean

install: $(STAMP)

# Reproducible: the venv gets exactly requirements.lock, then the project itself without deps.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v -i '^flowsuite' > requirements.lock

demo: install
	$(BIN)/flowsuite demo

dev: install
	@$(BIN)/python -c 'import sys; from orchestration.ingest import ensure_dagster_home; ensure_dagster_home(sys.argv[1])' '$(DAGSTER_HOME)'
	$(BIN)/flowsuite broker start
	@# the flow gateway next to the UI (its API on :8787; stopped with the UI)
	FLOWSUITE_FLOW_ALLOW_HTTP=true FLOWSUITE_FLOW_ALLOW_SINKS=127.0.0.1/32 $(BIN)/flowsuite flow serve --port 8787 & \
	  GATEWAY=$$!; trap "kill $$GATEWAY" EXIT; $(BIN)/dagster dev -w workspace.yaml

# The browser tests drive Debian's chromium (playwright cannot download browsers here).
browsers:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (apt-get) for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# DuckDB reads the Iceberg tables in a test through its iceberg extension, whose pip packages pin
# their own (older) DuckDB: a small venv of its own, built once (stamped), not the project's pins.
DUCKDB_ICEBERG := .venv-duckdb-iceberg
duckdb-iceberg: $(DUCKDB_ICEBERG)/.installed

$(DUCKDB_ICEBERG)/.installed: requirements-duckdb-iceberg.txt
	@test -x $(DUCKDB_ICEBERG)/bin/python || $(PYTHON) -m venv $(DUCKDB_ICEBERG)
	$(DUCKDB_ICEBERG)/bin/python -m pip install --quiet -r requirements-duckdb-iceberg.txt
	@touch $@

# Apache Airflow 3 does not fit the project's pins: the provider's tests run it in an
# environment of its own, built once from providers/airflow/requirements.lock (docs/airflow.md).
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
airflow-env: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): providers/airflow/requirements.lock providers/airflow/pyproject.toml pyproject.toml | $(STAMP)
	PYTHON=$(PYTHON) providers/airflow/make_env.sh $(AIRFLOW_VENV) $(BIN)/python
	@touch $(AIRFLOW_STAMP)

test: install browsers duckdb-iceberg airflow-env peers-env
	$(BIN)/python -m pytest -q

# The fault suite at full strength (FLOWSUITE_RELIABILITY=N for N iterations per scenario; about
# an hour, so the per-test timeout of make test is raised);
# the crash tests of landing, warehouse sync and compaction live with their modules.
RELIABILITY_TESTS := tests/connectors/flows/test_landing_crash.py \
	tests/connectors/warehouse/test_sql_sink.py::test_sigkill_mid_sync_then_completion_equals_latest_per_key \
	tests/connectors/flows/compaction/test_compaction.py::test_random_sigkills_during_compaction \
	tests/connectors/gateway/test_flow_kill.py \
	tests/connectors/gateway/test_flow_chaos.py \
	tests/connectors/tables/test_iceberg_publish.py::test_sigkilled_publishing_is_finished_by_the_next_attempt_never_doubled \
	tests/connectors/sources/cdc/test_cdc_crash.py \
	tests/reliability
reliability: install
	FLOWSUITE_RELIABILITY=$${FLOWSUITE_RELIABILITY:-full} $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=3600 $(RELIABILITY_TESTS)

# The peer tools bench/peers.py compares flowsuite with (quixstreams, dlt) have pins of their own:
# a venv of their own, built once (stamped) from requirements-peers.txt.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
peers-env: $(PEERS_STAMP)

$(PEERS_STAMP): requirements-peers.txt
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(PEERS_VENV)/bin/python -m pip install --quiet -r requirements-peers.txt
	@touch $@

bench: install peers-env
	$(BIN)/python -m bench.run_all

lint: install
	$(BIN)/ruff check .

clean:
	-$(BIN)/flowsuite broker stop
	rm -rf $(FLOWSUITE_HOME)
