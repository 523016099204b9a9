"""The session's migrated Airflow database, shared by the Airflow tests (a migration costs
~20-40 s; each test copies the file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import airflow as af
from tests.support.services import unavailable


@pytest.fixture(scope="session")
def airflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = af.missing_reason()
    if reason:
        unavailable(reason)
    home = tmp_path_factory.mktemp("airflow-template")
    af.migrate(home)
    return home
