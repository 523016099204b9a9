"""The Airflow-free half of the provider: settings, hour readiness, claim owners.

Everything here imports the engine (`connectors`) and the standard library only, so it is
tested without Airflow and shared by the hook, the trigger, the sensor and the operators.
Engine imports that the restructure of the tree moves live in this module alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import connectors
from connectors.compaction import merge_ranges, normalize_hour
from connectors.lake import Lake
from connectors.metastore import Metastore
from connectors.spec import DataProductSpec, load_specs

# The repository holding `connectors/` (an editable install): where the defaults live.
REPO_ROOT = Path(connectors.__file__).resolve().parent.parent
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"

# The assets the operators update, as `flowsuite://<product>/<asset>` (Dagster's asset keys).
ASSETS = ("landed", "hourly", "warehouse")

# Kafka client settings that may come from the environment (as in orchestration/resources.py).
KAFKA_ENV_SETTINGS = {
    "FLOWSUITE_KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "FLOWSUITE_KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "FLOWSUITE_KAFKA_SASL_USERNAME": "sasl.username",
    "FLOWSUITE_KAFKA_SASL_PASSWORD": "sasl.password",
    "FLOWSUITE_KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "FLOWSUITE_KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "FLOWSUITE_KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "FLOWSUITE_KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
}
# Connection extras that replace the environment's settings (same meaning, lower case).
CONFIG_KEYS = ("metastore_url", "lake_url", "warehouse_url", "kafka_bootstrap", "products_dir")


@dataclass(frozen=True)
class FlowsuiteConfig:
    """Where flowsuite reads and writes. `repr` hides the URLs: they may hold passwords."""

    metastore_url: str = field(repr=False)
    lake_url: str
    warehouse_url: str = field(repr=False)
    kafka_bootstrap: str
    products_dir: Path
    kafka_config: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FlowsuiteConfig:
        """DESIGN.md's variables, with the same defaults as the CLI and Dagster."""
        env = dict(os.environ if env is None else env)
        home = Path(env.get("FLOWSUITE_HOME") or REPO_ROOT / ".flowsuite").resolve()
        products_dir = Path(env.get("FLOWSUITE_PRODUCTS_DIR") or REPO_ROOT / "dataproducts")
        if not products_dir.is_absolute():
            products_dir = (REPO_ROOT / products_dir).resolve()
        return cls(
            metastore_url=env.get("FLOWSUITE_METASTORE_URL") or f"sqlite:///{home / 'metastore.db'}",
            lake_url=env.get("FLOWSUITE_LAKE_URL") or str(home / "lake"),
            warehouse_url=env.get("FLOWSUITE_WAREHOUSE_URL") or f"sqlite:///{home / 'warehouse.db'}",
            kafka_bootstrap=env.get("FLOWSUITE_KAFKA_BOOTSTRAP") or DEFAULT_KAFKA_BOOTSTRAP,
            products_dir=products_dir,
            kafka_config={s: env[v] for v, s in KAFKA_ENV_SETTINGS.items() if env.get(v)},
        )

    def with_extras(self, extras: Mapping[str, Any], *, login: str | None = None,
                    password: str | None = None) -> FlowsuiteConfig:
        """This configuration with a `flowsuite` connection's fields on top: its extras
        (CONFIG_KEYS, and `kafka`: librdkafka settings), login/password as SASL credentials."""
        values: dict[str, Any] = {k: extras[k] for k in CONFIG_KEYS if extras.get(k)}
        if "products_dir" in values:
            values["products_dir"] = Path(values["products_dir"])
        kafka = dict(self.kafka_config)
        kafka.update({str(k): str(v) for k, v in (extras.get("kafka") or {}).items()})
        if login:
            kafka["sasl.username"] = login
        if password:
            kafka["sasl.password"] = password
        return FlowsuiteConfig(**{**self.__dict__, **values, "kafka_config": kafka})

    def spec(self, product: str) -> DataProductSpec:
        specs = {s.name: s for s in load_specs(self.products_dir)}
        if product not in specs:
            known = ", ".join(sorted(specs)) or "none"
            raise ValueError(f"no data product {product!r} in {self.products_dir} (known: {known})")
        return specs[product]

    def lake(self) -> Lake:
        return Lake(self.lake_url)

    def metastore(self) -> Metastore:
        return shared_metastore(self.metastore_url)


_METASTORES: dict[str, Metastore] = {}
_METASTORES_LOCK = threading.Lock()


def shared_metastore(url: str) -> Metastore:
    """One engine per process and URL: a triggerer runs many sensors' triggers at once."""
    with _METASTORES_LOCK:
        if url not in _METASTORES:
            if url.startswith("sqlite:///"):  # a fresh FLOWSUITE_HOME: SQLite creates files, not folders
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            _METASTORES[url] = Metastore(url)
        return _METASTORES[url]


def asset_uri(product: str, asset: str) -> str:
    """`flowsuite://<product>/<asset>`: the Airflow Asset of a product's Dagster asset."""
    if asset not in ASSETS:
        raise ValueError(f"unknown flowsuite asset {asset!r} (one of {', '.join(ASSETS)})")
    return f"flowsuite://{product}/{asset}"


# --- is an hour whole? ------------------------------------------------------------------------


@dataclass(frozen=True)
class HourStatus:
    """`ready` (whole: compacted, marked at its generation, not blocked), `blocked` (a failing
    quality gate; `reason` says which) or `waiting` (`reason` says for what)."""

    state: str
    reason: str
    info: dict[str, Any] | None = None  # when ready: what the sensor returns


def _hour_and_marker(metastore: Metastore, product: str, hour: str) -> tuple[Any, int | None]:
    return metastore.hour(product, hour), metastore.marked_hours(product).get(hour)


def hour_status(metastore: Metastore, lake: Lake, product: str, hour: str) -> HourStatus:
    """Whether `hour` of `product` is whole, from the metastore alone (never a listing).

    The hour and its marker are read before and after its files; if either moved in between
    (a late record reopened it, a compaction swapped it) the answer is `waiting`, so the
    files returned are exactly the generation the marker names, on any metastore database.
    """
    hour = normalize_hour(hour)
    rec, marked = _hour_and_marker(metastore, product, hour)
    if rec is None:
        return HourStatus("waiting", f"nothing has landed in {product} {hour} yet")
    if rec.blocked_reason:
        return HourStatus("blocked", f"{product} {hour} is blocked by a failing quality gate: {rec.blocked_reason}")
    if rec.state != "compacted":
        return HourStatus("waiting", f"{product} {hour} is {rec.state}, not compacted (generation {rec.generation})")
    if marked != rec.generation:
        seen = "no marker" if marked is None else f"marker of generation {marked}"
        return HourStatus("waiting", f"{product} {hour} is compacted at generation {rec.generation} but has {seen} "
                                     "(not closed yet, or the compaction's tail is unfinished)")
    files = metastore.live_files(product, hour)
    after, marked_after = _hour_and_marker(metastore, product, hour)
    if (after, marked_after) != (rec, marked):
        return HourStatus("waiting", f"{product} {hour} changed while it was read; asking again")
    stale = [f.path for f in files if f.kind != "compacted" or f.generation != rec.generation]
    if stale:
        return HourStatus("waiting", f"{product} {hour}: {len(stale)} live file(s) outside generation {rec.generation}")
    ranges = merge_ranges(f.ranges for f in files)
    info = {
        "product": product,
        "hour": hour,
        "generation": rec.generation,
        "rows": sum(f.rows for f in files),
        "bytes": sum(f.bytes for f in files),
        "files": [
            {"path": f.path, "uri": lake.uri(f.path), "rows": f.rows, "bytes": f.bytes,
             "offset_ranges": {str(p): r for p, r in sorted((f.ranges or {}).items())}}
            for f in sorted(files, key=lambda f: f.path)
        ],
        # JSON keys are strings: {"0": [[first, last], ...], ...}
        "offset_ranges": {str(p): r for p, r in sorted(ranges.items())},
        "compacted_at": rec.compacted_at,
    }
    json.dumps(info)  # XCom stores JSON: fail here, not in Airflow, if it ever is not
    return HourStatus("ready", f"{product} {hour} is whole at generation {rec.generation}", info)


# --- claims owned by Airflow task tries -------------------------------------------------------


def claim_run_id(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """The run id recorded with metastore claims and files for one try of one task instance.

    The metastore keeps run ids to 64 characters, so the task instance is a digest; the try
    number stays readable, which is what `try_is_dead` needs."""
    digest = hashlib.sha1(f"{dag_id}\x00{run_id}\x00{task_id}\x00{map_index}".encode()).hexdigest()[:20]
    return f"airflow-{digest}-try{int(try_number)}"


def try_is_dead(own_run_id: str) -> Callable[[str], bool]:
    """`is_dead(run_id)` for claim takeover: an earlier try of the same task instance.

    Airflow starts a retry only once the previous try has failed (its process exited or was
    declared a zombie), so that try's claims can be taken over at once instead of after their
    lease; any other holder (a Dagster run, another DAG run, the CLI) keeps its lease. Were a
    zombie try still running, its commit fails anyway: commits compare-and-set the claim."""
    prefix, _, own_try = own_run_id.rpartition("-try")

    def is_dead(run_id: str) -> bool:
        other_prefix, _, other_try = run_id.rpartition("-try")
        return other_prefix == prefix and other_try.isdigit() and int(other_try) < int(own_try)

    return is_dead
