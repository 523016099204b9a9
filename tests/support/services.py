"""A service a test needs is missing: skip with the reason locally, fail under CI=true."""

from __future__ import annotations

import os

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
MARIADB_HOST, MARIADB_PORT = "127.0.0.1", 3306

IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def unavailable(message: str) -> None:
    """Skip locally; fail under CI, where every service must be up (.ci/run starts them)."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: services must be running; see .ci/run)", pytrace=False)
    pytest.skip(message)
