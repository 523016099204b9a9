# flowsuite: `make demo` and `make test` are the two commands a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLOWSUITE_HOME ?= $(CURDIR)/.flowsuite
export DAGSTER_HOME ?= $(FLOWSUITE_HOME)/dagster

.PHONY: install demo dev test reliability bench lint lock browsers clean

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
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/flowsuite broker start
	$(BIN)/dagster dev -w workspace.yaml

test: install
	$(BIN)/python -m pytest -q

reliability: install
	FLOWSUITE_RELIABILITY=full $(BIN)/python -m pytest -q -m slow tests/reliability

bench: install
	$(BIN)/python bench/run_all.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	-$(BIN)/flowsuite broker stop
	rm -rf $(FLOWSUITE_HOME)
