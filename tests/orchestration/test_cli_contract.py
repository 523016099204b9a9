"""`flowsuite contract export|import`: the product's ODCS contract to a file and back to a spec."""

from __future__ import annotations

import json

import pytest
import yaml

from connectors.contracts.odcs import validate
from connectors.spec import parse_spec_file
from orchestration.cli import main


@pytest.fixture
def products(products, monkeypatch):
    """conftest's clicks folder, with the lake on S3 (the contract names its server)."""
    monkeypatch.setenv("FLOWSUITE_LAKE_URL", "s3://lake-bucket/lake")
    return products


def test_export_writes_a_valid_contract_in_yaml_and_json(products, tmp_path, capsys):
    assert main(["contract", "export", "clicks"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    validate(doc)
    assert doc["name"] == "clicks"
    assert {s["server"]: s for s in doc["servers"]}["lake"]["location"] == "s3://lake-bucket/lake/clicks/"
    out = tmp_path / "clicks.odcs.json"
    assert main(["contract", "export", "clicks", "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == doc
    assert main(["contract", "export", "clicks", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


def test_import_gives_the_spec_back(products, tmp_path, capsys):
    exported = tmp_path / "clicks.odcs.yaml"
    assert main(["contract", "export", "clicks", "-o", str(exported)]) == 0
    spec_file = tmp_path / "back" / "clicks.yaml"
    spec_file.parent.mkdir()
    assert main(["contract", "import", str(exported), "-o", str(spec_file)]) == 0
    assert parse_spec_file(spec_file) == parse_spec_file(products / "clicks.yaml")


def test_import_of_a_bad_contract_is_one_line_naming_the_file(products, tmp_path, capsys):
    bad = tmp_path / "bad.odcs.yaml"
    bad.write_text("apiVersion: v3.1.0\nkind: DataContract\n")
    assert main(["contract", "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.odcs.yaml" in err and "'id' is a required property" in err
