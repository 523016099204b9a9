"""A temporary dg project (pyproject.toml with [tool.dg], a root module, a defs folder) in which
tests scaffold and load `flowsuite.DataProduct` components."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.dg import make_dg_project

_SEQ = itertools.count()


@pytest.fixture(autouse=True)
def live_instance():
    """A live instance around each test: Dagster's component tree reads the current instance's
    defs state, and an earlier test's `instance_for_test` can leave a dead one current."""
    import dagster as dg

    with dg.instance_for_test() as instance:
        yield instance


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
