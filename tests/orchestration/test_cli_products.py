"""Every subcommand that names a data product resolves it the same way: an unknown name is a
one-line error listing the known ones, and a spec whose expectation is wrong is refused with
the file and the expectation — whichever subcommand is asked first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestration.cli import main

REPO = Path(__file__).resolve().parents[2]

PRODUCT_COMMANDS = [
    ["land", "{p}"],
    ["offsets", "show", "{p}"],
    ["offsets", "reset", "{p}", "--partition", "0", "--to", "0"],
    ["read", "{p}", "--hour", "2026-01-01-00"],
    ["compact", "{p}", "--hour", "2026-01-01-00"],
    ["quarantine", "list", "{p}"],
    ["quarantine", "replay", "{p}"],
    ["quality", "blocked", "{p}"],
    ["quality", "unblock", "{p}"],
    ["warehouse", "sync", "{p}"],
]


@pytest.fixture
def products(flowsuite_home, monkeypatch, tmp_path):
    folder = tmp_path / "products"
    folder.mkdir()
    (folder / "clicks.yaml").write_text((REPO / "dataproducts" / "clicks.yaml").read_text())
    monkeypatch.setenv("FLOWSUITE_PRODUCTS_DIR", str(folder))
    return folder


def _argv(template: list[str], product: str) -> list[str]:
    return [part.format(p=product) for part in template]


@pytest.mark.parametrize("template", PRODUCT_COMMANDS, ids=lambda t: " ".join(t[:2]))
def test_an_unknown_product_is_a_one_line_error_naming_the_known_ones(template, products, capsys):
    assert main(_argv(template, "nope")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no data product 'nope'" in err and "known: clicks" in err


@pytest.mark.parametrize("template", PRODUCT_COMMANDS, ids=lambda t: " ".join(t[:2]))
def test_a_misspelt_expectation_is_refused_by_every_product_command(template, products, capsys):
    spec = products / "clicks.yaml"
    spec.write_text(
        re.sub(
            r"expect_column_values_to_match_regex",
            "expect_column_values_to_match_regexx",
            spec.read_text(),
            count=1,
        )
    )
    assert main(_argv(template, "clicks")) == 1
    err = capsys.readouterr().err
    assert "clicks.yaml" in err and "expect_column_values_to_match_regexx" in err
