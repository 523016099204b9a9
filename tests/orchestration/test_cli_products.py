"""Every subcommand that names a data product resolves it the same way: an unknown name is a
one-line error listing the known ones, and a spec whose expectation is wrong is refused with
the file and the expectation — whichever subcommand is asked first."""

from __future__ import annotations

import os
import subprocess
import sys
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
    ["contract", "export", "{p}"],
]


def _argv(template: list[str], product: str) -> list[str]:
    return [part.format(p=product) for part in template]


@pytest.mark.parametrize("template", PRODUCT_COMMANDS, ids=lambda t: " ".join(t[:2]))
def test_an_unknown_product_is_a_one_line_error_naming_the_known_ones(template, products, capsys):
    assert main(_argv(template, "nope")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no data product 'nope'" in err and "known: clicks" in err


# The commands that write data under the spec check its expectations first.
WRITING_COMMANDS = [t for t in PRODUCT_COMMANDS if t[0] in ("land", "compact", "warehouse") or t[:2] == ["quarantine", "replay"]]


def _misspell(spec: Path) -> None:
    text = spec.read_text()
    spec.write_text(text.replace("expect_column_values_to_match_regex", "expect_column_values_to_match_regexx", 1))


@pytest.mark.parametrize("template", WRITING_COMMANDS, ids=lambda t: " ".join(t[:2]))
def test_a_misspelt_expectation_is_refused_by_every_writing_command(template, products, capsys):
    _misspell(products / "clicks.yaml")
    assert main(_argv(template, "clicks")) == 1
    err = capsys.readouterr().err
    assert "clicks.yaml" in err and "expect_column_values_to_match_regexx" in err


def test_looking_commands_work_despite_a_bad_expectation_and_skip_great_expectations(products, flowsuite_home):
    """An operator can still inspect and repair a product whose expectation is wrong; the
    command runs in a fresh process, as from a shell, so nothing registered the checks."""
    _misspell(products / "clicks.yaml")
    probe = (
        "import sys; from orchestration.cli import main; code = main(sys.argv[1:]); "
        "print('GX imported' if 'great_expectations' in sys.modules else 'GX not imported'); sys.exit(code)"
    )
    env = {**os.environ, "FLOWSUITE_PRODUCTS_DIR": str(products), "CI": "true"}
    proc = subprocess.run([sys.executable, "-c", probe, "quality", "blocked", "clicks"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GX not imported" in proc.stdout
