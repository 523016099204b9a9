# flowsuite: `make demo` and `make test` are the two commands a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLOWSUITE_HOME ?= $(CURDIR)/.flowsuite
export DAGSTER_HOME ?= $(FLOWSUITE_HOME)/dagster

.PHONY: install demo dev test reliability bench lint lock browsers airflow-env clean

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
	@$(BIN)/python -c 'import sys; from orchestration.demo import ensure_dagster_home; ensure_dagster_home(sys.argv[1])' '$(DAGSTER_HOME)'
	$(BIN)/flowsuite broker start
	$(BIN)/dagster dev -w workspace.yaml

# The browser tests drive Debian's chromium (playwright cannot download browsers here).
browsers:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (apt-get) for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Apache Airflow 3 does not fit the project's pins: the provider's tests run it in an
# environment of its own, built once from providers/airflow/requirements.lock (docs/airflow.md).
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
airflow-env: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): providers/airflow/requirements.lock providers/airflow/pyproject.toml pyproject.toml | $(STAMP)
	PYTHON=$(PYTHON) providers/airflow/make_env.sh $(AIRFLOW_VENV) $(BIN)/python
	@touch $(AIRFLOW_STAMP)

test: install browsers airflow-env
	$(BIN)/python -m pytest -q

# The fault suite at full strength (FLOWSUITE_RELIABILITY=N for N iterations per scenario; about
# an hour, so the per-test timeout of make test is raised);
# the crash tests of landing, warehouse sync and compaction live with their modules.
RELIABILITY_TESTS := tests/connectors/test_landing_crash.py \
	tests/connectors/test_sql_sink.py::test_sigkill_mid_sync_then_completion_equals_latest_per_key \
	tests/connectors/test_compaction.py::test_random_sigkills_during_compaction \
	tests/reliability
reliability: install
	FLOWSUITE_RELIABILITY=$${FLOWSUITE_RELIABILITY:-full} $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=3600 $(RELIABILITY_TESTS)

bench: install
	$(BIN)/python bench/run_all.py

lint: install
	$(BIN)/ruff check .

clean:
	-$(BIN)/flowsuite broker stop
	rm -rf $(FLOWSUITE_HOME)
