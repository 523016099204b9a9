"""Fixtures the CLI tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def products(flowsuite_home, monkeypatch, tmp_path):
    """A products folder holding a copy of the repository's clicks.yaml, as FLOWSUITE_PRODUCTS_DIR."""
    folder = tmp_path / "products"
    folder.mkdir()
    (folder / "clicks.yaml").write_text((REPO / "dataproducts" / "clicks.yaml").read_text())
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(folder))
    return folder
