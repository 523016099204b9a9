"""A temporary dg project (pyproject.toml with [tool.dg], a root module, a defs folder) in which
tests scaffold and load `flowsuite.DataProduct` components."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

_SEQ = itertools.count()

DEFINITIONS = '''\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
'''


def make_dg_project(root: Path, module: str) -> Path:
    """A minimal dg project at `root` whose root module is `module`; returns the defs folder."""
    (root / module / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{module}"\nversion = "0.1.0"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        f'[tool.dg.project]\nroot_module = "{module}"\nregistry_modules = ["flowsuite"]\n'
    )
    (root / module / "__init__.py").write_text("")
    (root / module / "defs" / "__init__.py").write_text("")
    (root / module / "definitions.py").write_text(DEFINITIONS)
    return root / module / "defs"


@pytest.fixture
def dg_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], tuple[Path, Path]]:
    """() → (project root, defs folder) of a fresh project importable in this process."""

    def make() -> tuple[Path, Path]:
        module = f"dgproj_{next(_SEQ)}_{tmp_path.name[-8:].replace('-', '_')}"
        root = tmp_path / module
        defs = make_dg_project(root, module)
        monkeypatch.syspath_prepend(str(root))
        return root, defs

    yield make
    for name in [m for m in sys.modules if m.startswith("dgproj_")]:
        del sys.modules[name]
