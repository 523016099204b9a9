"""The `dg` CLI on the code location, as a Dagster user runs it: `dg list defs --json` and
`dg check defs` on the repository, and `dg scaffold defs flowsuite.DataProduct` in a fresh
project, whose spec errors `dg check yaml` and `dg check defs` report with file and field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.settings import REPO_ROOT
from connectors.spec import load_specs
from tests.support.dg import make_dg_project

REPO = Path(REPO_ROOT)
DG = str(Path(sys.executable).with_name("dg"))
TIMEOUT_S = 600  # dg starts a code-server subprocess per command; minutes on shared cores

pytestmark = pytest.mark.timeout(1800)


def _env(home: Path, pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSUITE_")}
    env.update(FLOWSUITE_HOME=str(home), VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
               NO_COLOR="1", DAGSTER_HOME=str(home / "dagster"))
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def dg(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([DG, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_dg_lists_every_product_of_the_repository(tmp_path: Path):
    listed = dg("list", "defs", "--json", cwd=REPO, env=_env(tmp_path))
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    assets = {a["asset_key"] for a in defs["assets"]}
    checks = {c["key"] for c in defs["asset_checks"]}
    jobs = {j["name"] for j in defs["jobs"]}
    sensors = {s["name"] for s in defs["sensors"]}
    schedules = {s["name"] for s in defs["schedules"]}
    for spec in load_specs(REPO / "dataproducts"):
        p = spec.name
        assert {f"{p}/landed", f"{p}/hourly"} <= assets, p
        assert f"{p}/hourly:hours_sealed" in checks and f"{p}/landed:product_health" in checks, p
        assert f"{p}/landed:records_accounted" in checks, p
        assert f"{p}_offsets" in sensors, p
        assert any(j.startswith(p) for j in jobs), p
    assert "hourly_compaction" in schedules
    assert [r["name"] for r in defs["resources"]] == ["flowsuite"]  # one shared resource

    checked = dg("check", "defs", cwd=REPO, env=_env(tmp_path))
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-3000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr


def test_a_scaffolded_product_loads_and_its_spec_errors_name_file_and_field(tmp_path: Path):
    root = tmp_path / "shop"
    defs_folder = make_dg_project(root, "shop")
    env = _env(tmp_path / "home", pythonpath=root)

    made = dg("scaffold", "defs", "flowsuite.DataProduct", "orders", cwd=root, env=env)
    assert made.returncode == 0, made.stdout + made.stderr[-3000:]
    defs_yaml = defs_folder / "orders" / "defs.yaml"
    assert defs_yaml.read_text().startswith("type: flowsuite.DataProduct\n")

    for command in (("check", "yaml"), ("check", "defs")):
        ok = dg(*command, cwd=root, env=env)
        assert ok.returncode == 0, f"dg {' '.join(command)}:\n{ok.stdout[-2000:]}{ok.stderr[-3000:]}"
    listed = dg("list", "defs", "--json", cwd=root, env=env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    defs = json.loads(listed.stdout)
    assert {"orders/landed", "orders/hourly", "orders/warehouse"} <= {a["asset_key"] for a in defs["assets"]}
    assert "hourly_compaction_orders" in {s["name"] for s in defs["schedules"]}
    assert "orders_offsets" in {s["name"] for s in defs["sensors"]}

    # What the spec's JSON schema states, dg check yaml (and dg check defs first) reports by line.
    scaffolded = defs_yaml.read_text()
    defs_yaml.write_text(scaffolded.replace("type: timestamp,", "type: timestampz,", 1))
    for command in (("check", "yaml"), ("check", "defs")):
        bad = dg(*command, cwd=root, env=env)
        assert bad.returncode != 0
        said = bad.stdout + bad.stderr
        assert f"{defs_yaml}:12 - flowsuite.DataProduct attributes.fields.1.type 'timestampz' is not one of" in said, said[-3000:]
    # A rule no schema states (the key names a declared field) is the loader's, with file and field.
    defs_yaml.write_text(scaffolded.replace("key: id", "key: order_id", 1))
    assert dg("check", "yaml", cwd=root, env=env).returncode == 0
    bad = dg("check", "defs", cwd=root, env=env)
    assert bad.returncode != 0
    said = bad.stdout + bad.stderr
    assert f"{defs_yaml} at attributes: key field 'order_id' is not declared in fields" in said, said[-3000:]
