"""Where flowsuite keeps things, read once from the environment (names in DESIGN.md).

Only plain values live here; resources.py turns them into Dagster resources and the CLI
passes them to connectors/ directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"


@dataclass(frozen=True)
class Settings:
    home: Path
    kafka_bootstrap: str
    lake_url: str
    metastore_url: str
    warehouse_url: str
    products_dir: Path

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env.get("FLOWSUITE_HOME") or REPO_ROOT / ".flowsuite").resolve()
    products_dir = Path(env.get("FLOWSUITE_PRODUCTS_DIR") or REPO_ROOT / "dataproducts")
    if not products_dir.is_absolute():
        products_dir = (REPO_ROOT / products_dir).resolve()
    return Settings(
        home=home,
        kafka_bootstrap=env.get("FLOWSUITE_KAFKA_BOOTSTRAP") or DEFAULT_KAFKA_BOOTSTRAP,
        lake_url=env.get("FLOWSUITE_LAKE_URL") or str(home / "lake"),
        metastore_url=env.get("FLOWSUITE_METASTORE_URL") or f"sqlite:///{home / 'metastore.db'}",
        warehouse_url=env.get("FLOWSUITE_WAREHOUSE_URL") or f"sqlite:///{home / 'warehouse.db'}",
        products_dir=products_dir,
    )
