#!/usr/bin/env bash
# Build the Apache Airflow environment of the provider's tests (`make airflow-env`):
#   providers/airflow/make_env.sh VENV PIP_PYTHON
# VENV: where (.venv-airflow). PIP_PYTHON: a Python with pip (the project's .venv), used to
# fetch uv. Airflow 3 does not fit the project's pins, so it gets an environment of its own:
# exactly providers/airflow/requirements.lock (Airflow and the engine's runtime deps), then
# the engine (`connectors`, without its Dagster deps) and the provider, both editable.
# uv installs the lock in ~15 s from a cold cache (pip needs ~3 min: it fetches 140 index
# pages one after the other); pip is the fallback if uv cannot be had. PyPI only.
set -euo pipefail
VENV=${1:?venv dir}
PIP_PYTHON=${2:?python with pip}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOCK=$HERE/requirements.lock
UV_VERSION=0.13.8
PYTHON=${PYTHON:-python3}

started=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv --without-pip "$VENV"
UV=$VENV/uv/bin/uv
if "$PIP_PYTHON" -m pip install --quiet --disable-pip-version-check --target "$VENV/uv" "uv==$UV_VERSION" \
   && "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps -r "$LOCK" \
   && "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps -e "$ROOT" -e "$HERE"; then
  :
else
  echo "make_env.sh: uv failed; installing with pip (slower)" >&2
  "$VENV/bin/python" -m ensurepip --upgrade >/dev/null
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$LOCK"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT" -e "$HERE"
fi
# The engine imports without Dagster, the provider with Airflow, and Airflow sees the provider.
"$VENV/bin/python" -c 'import connectors.flows, connectors.warehouse, connectors.formats, connectors.settings
import cloudevents.core.bindings.kafka  # lazily imported by connectors.formats.cloudevents (structured mode)
from quality.expectations import known_expectation_types; assert known_expectation_types()  # spec checks need GX, as in Dagster
import flowsuite_airflow.operators.flowsuite, flowsuite_airflow.sensors.flowsuite, flowsuite_airflow.triggers.flowsuite
import sys; assert "dagster" not in sys.modules'
echo "make_env.sh: $VENV ready in $(( $(date +%s) - started ))s"
