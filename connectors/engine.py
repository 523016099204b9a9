"""The engine's front door: where flowsuite reads and writes, built once from `Settings`.

Every face wraps one `Engine`: the Dagster resource (orchestration/resources.py), the Airflow
provider's `FlowsuiteConfig` (providers/airflow) and the CLI (orchestration/cli). It hands out

- the lake, with the S3 options of the settings (never read again from the environment);
- the metastore, one per URL and process (steps, sensors and triggers share its pool);
- the Kafka bootstrap and client configuration (the pass-through settings, secrets included);
- a run's context (`run_context`: stores, broker, run id, claim takeover, lease, clock), which
  the flows take instead of those values one by one;
- the warehouse URL and the Iceberg tables (the catalog database over the lake);
- the data product specs, with the expectation checks the face installs (`spec_checks`), and
  the one message of an unknown product: "no data product 'x' in <dir> (known: …)".

It reads nothing from the process environment: `Engine.from_settings(load_settings())` is where
a face reads it (connectors/settings.py), and a face with its own configuration (a Dagster
resource's fields, an Airflow connection's extras) builds the engine from those values instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.errors import TerminalError
from connectors.flows.context import DEFAULT_LEASE_S, RunContext
from connectors.lake import Lake, S3Options
from connectors.metastore import Metastore
from connectors.settings import Settings

if TYPE_CHECKING:
    from connectors.spec import DataProductSpec
    from connectors.tables import IcebergTables


class UnknownProductError(TerminalError, ValueError):
    """No spec of that name in the products folder (retrying does not make a product appear)."""


_METASTORES: dict[str, Metastore] = {}
_METASTORES_LOCK = threading.Lock()


def shared_metastore(url: str) -> Metastore:
    """One metastore (engine and connection pool) per process and URL.

    The lock keeps threads that ask at once (concurrent sensor ticks, a triggerer's triggers)
    from opening several; opening may wait for another process's schema change, an open one is
    returned at once. A SQLite file's folder is created first (a fresh FLOWSUITE_HOME)."""
    store = _METASTORES.get(url)
    if store is not None:
        return store
    with _METASTORES_LOCK:
        if url not in _METASTORES:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            _METASTORES[url] = Metastore(url)
        return _METASTORES[url]


def release_metastore(url: str) -> None:
    """Dispose of the shared metastore of `url` and forget it, for an installation whose files
    are removed while this process lives (the demo's second organisation starts afresh each
    time): the next `shared_metastore(url)` opens, and creates, it again."""
    with _METASTORES_LOCK:
        store = _METASTORES.pop(url, None)
    if store is not None:
        store.dispose()


@dataclass(frozen=True)
class Engine:
    """Where flowsuite reads and writes. `repr` hides the URLs and secrets: they may hold passwords."""

    lake_url: str
    metastore_url: str = field(repr=False)
    warehouse_url: str = field(repr=False)
    kafka_bootstrap: str
    products_dir: Path
    kafka_config: Mapping[str, str] = field(default_factory=dict, repr=False)
    s3: S3Options = field(default_factory=S3Options, repr=False)
    iceberg_catalog_url: str | None = field(default=None, repr=False)
    # Gives the checks a spec must also pass (quality.expectations.spec_checks), passed to
    # load_specs when specs are loaded with `checks=True`. The engine cannot import quality/.
    spec_checks: Callable[[], list] | None = field(default=None, repr=False, compare=False)
    _lakes: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, spec_checks: Callable[[], list] | None = None) -> Engine:
        return cls(
            lake_url=settings.lake_url, metastore_url=settings.metastore_url,
            warehouse_url=settings.warehouse_url, kafka_bootstrap=settings.kafka_bootstrap,
            products_dir=Path(settings.products_dir), kafka_config=settings.kafka_client_config(),
            s3=S3Options.from_settings(settings), iceberg_catalog_url=settings.iceberg_catalog_url,
            spec_checks=spec_checks,
        )

    def with_values(self, **values: Any) -> Engine:
        """This engine with some fields replaced (an Airflow connection's extras)."""
        return replace(self, **values)

    # --- stores -----------------------------------------------------------------------------

    def lake(self) -> Lake:
        """The lake (one per engine: its S3 filesystem is built once)."""
        lake = self._lakes.get(self.lake_url)
        if lake is None:
            lake = self._lakes.setdefault(self.lake_url, Lake(self.lake_url, self.s3))
        return lake

    def metastore(self) -> Metastore:
        return shared_metastore(self.metastore_url)

    def kafka(self) -> dict[str, Any]:
        """The Kafka client settings passed through (security.protocol, sasl.*, ssl.*)."""
        return dict(self.kafka_config)

    def iceberg_tables(self, *, read_only: bool = False) -> IcebergTables:
        """The Iceberg catalog (the iceberg_catalog_url's database, else the metastore's) over the lake."""
        from connectors.tables import IcebergTables, catalog_url

        return IcebergTables(catalog_url(self.metastore_url, self.iceberg_catalog_url), self.lake(),
                             self.s3, read_only=read_only)

    def run_context(self, *, run_id: str | None = None, is_dead: Callable[[str], bool] | None = None,
                    lease_s: float = DEFAULT_LEASE_S) -> RunContext:
        """What one run's steps carry (connectors/flows/context.py), over this engine's stores."""
        return RunContext(lake=self.lake(), metastore=self.metastore(), bootstrap=self.kafka_bootstrap,
                          kafka_config=self.kafka(), is_dead=is_dead, lease_s=lease_s,
                          **({"run_id": run_id} if run_id else {}))

    # --- specs ------------------------------------------------------------------------------

    def specs(self, *, checks: bool = True) -> dict[str, DataProductSpec]:
        """Every data product spec by name; `checks` also checks what `spec_checks` installs
        (expectation types and kwargs), which costs Great Expectations' import (~4 s)."""
        from connectors.spec import load_specs

        installed = self.spec_checks() if checks and self.spec_checks is not None else []
        return {s.name: s for s in load_specs(self.products_dir, checks=installed)}

    def spec(self, product: str, *, checks: bool = True) -> DataProductSpec:
        """The spec of `product`; an unknown name raises UnknownProductError naming the known ones."""
        specs = self.specs(checks=checks)
        if product not in specs:
            raise UnknownProductError(unknown_product_message(product, self.products_dir, specs))
        return specs[product]


def unknown_product_message(product: str, products_dir: Path, known: Mapping[str, Any] | list[str]) -> str:
    names = ", ".join(sorted(known)) or "none"
    return f"no data product {product!r} in {products_dir} (known: {names})"
