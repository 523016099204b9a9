"""The `flowsuite` connection form as Airflow 3 shows it, read from the real Airflow of
`.venv-airflow`: `airflow providers behaviours` / `widgets` (the CLI) and the API server's
connection-hook metadata, which the UI's connection form is drawn from."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import airflow as af


@pytest.fixture(scope="module")
def airflow_ready() -> None:
    reason = af.missing_reason()
    if reason:
        from tests.support.services import unavailable

        unavailable(reason)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*args], capture_output=True, text=True, timeout=300,
                          env=af.airflow_env(tmp_path / "airflow", {}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _json_tail(text: str):
    return json.loads(text[text.index("["):])


def test_cli_lists_the_flowsuite_behaviour_and_fields(airflow_ready, tmp_path):
    out = _run(tmp_path, str(af.AIRFLOW), "providers", "behaviours", "-o", "json").stdout
    assert {"field_behaviours": "flowsuite"} in _json_tail(out)
    out = _run(tmp_path, str(af.AIRFLOW), "providers", "widgets", "-o", "json").stdout
    ours = {w["connection_parameter_name"] for w in _json_tail(out)
            if w["class"] == "flowsuite_airflow.hooks.flowsuite.FlowsuiteHook"}
    assert ours == {f"extra__flowsuite__{k}" for k in
                    ("metastore_url", "lake_url", "warehouse_url", "kafka_bootstrap", "products_dir", "kafka")}


def test_the_connection_form_hides_labels_and_masks(airflow_ready, tmp_path):
    code = """
import json, warnings
warnings.simplefilter("error", DeprecationWarning)  # a deprecated hook classmethod would be an error
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
from airflow.providers_manager import ProvidersManager
meta = next(m for m in HookMetaService.hook_meta_data() if m.connection_type == "flowsuite")
pm = ProvidersManager()
print(json.dumps({"meta": meta.model_dump(mode="json"),
                  "sensitive": sorted(k for k, w in pm.connection_form_widgets.items()
                                      if k.startswith("extra__flowsuite__") and w.is_sensitive)}))
"""
    out = json.loads(_run(tmp_path, str(af.AIRFLOW_PYTHON), "-c", code).stdout.strip().splitlines()[-1])
    meta, std = out["meta"], out["meta"]["standard_fields"]
    assert meta["hook_name"] == "flowsuite"
    assert std["host"]["hidden"] and std["port"]["hidden"] and std["url_schema"]["hidden"]
    assert std["login"]["title"] == "Kafka SASL username" and std["login"]["placeholder"] == "svc-flowsuite"
    assert std["password"]["title"] == "Kafka SASL password" and not std["password"]["hidden"]
    extra = meta["extra_fields"]
    assert extra["lake_url"]["schema"]["title"] == "Lake URL"
    assert "FLOWSUITE_LAKE_URL" in extra["lake_url"]["description"]
    assert extra["kafka"]["schema"]["type"] == ["object", "null"]
    # URLs that carry a database password are masked, the others are not
    assert out["sensitive"] == ["extra__flowsuite__metastore_url", "extra__flowsuite__warehouse_url"]
