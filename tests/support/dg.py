"""A minimal dg project on disk, for the component and `dg` CLI tests."""

from __future__ import annotations

from pathlib import Path

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
