"""The Airflow-free half of the provider: settings, hour readiness, claim owners.

Everything here imports the engine (`connectors`) and the standard library only, so it is
tested without Airflow and shared by the hook, the trigger, the sensor and the operators.
Engine imports that the restructure of the tree moves live in this module alone. The
configuration is the engine's one front door (`connectors.engine.Engine`), not a copy of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.engine import Engine, UnknownProductError, shared_metastore
from connectors.flows.compaction import merge_ranges
from connectors.lake import Lake, hour_key, normalize_hour, parse_hour_key
from connectors.metastore import Metastore
from connectors.settings import load_settings

__all__ = ["ASSETS", "CONFIG_KEYS", "FlowsuiteConfig", "UnknownProductError", "shared_metastore"]

# The assets the operators update, as `flowsuite://<product>/<asset>` (Dagster's asset keys).
ASSETS = ("landed", "hourly", "warehouse")

# Connection extras that replace the environment's settings (same meaning, lower case).
CONFIG_KEYS = ("metastore_url", "lake_url", "warehouse_url", "kafka_bootstrap", "products_dir")


def _spec_checks() -> list:
    from quality.expectations import spec_checks  # a bad expectation fails here as in Dagster

    return spec_checks()


@dataclass(frozen=True)
class FlowsuiteConfig(Engine):
    """The engine (connectors/engine.py) as a `flowsuite` connection configures it: the
    settings of the environment, a connection's extras on top. `repr` hides the URLs."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FlowsuiteConfig:
        """connectors.settings: the variables and defaults of the CLI and Dagster."""
        return cls.from_settings(load_settings(env), spec_checks=_spec_checks)

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
        return self.with_values(**values, kafka_config=kafka)


def asset_uri(product: str, asset: str) -> str:
    """`flowsuite://<product>/<asset>`: the Airflow Asset of a product's Dagster asset."""
    if asset not in ASSETS:
        raise ValueError(f"unknown flowsuite asset {asset!r} (one of {', '.join(ASSETS)})")
    return f"flowsuite://{product}/{asset}"


def changes_alias(product: str, asset: str) -> str:
    """The AssetAlias an operator announces changes of `flowsuite://<product>/<asset>` through."""
    return f"flowsuite-changes:{product}/{asset}"


# --- which hour a task was given ----------------------------------------------------------


def task_hour(value: str | datetime, *, truncate_to_hour: bool = False) -> str:
    """'2026-11-26-10' from what a sensor or compact operator was given (after templating).

    The lake's hour parsing truncates ('…T03:30' is hour 03), which hides a wrong
    `data_interval` in a DAG; here a time that is not on the hour is refused with the message
    of a garbage hour, unless `truncate_to_hour` asks for the hour that contains it."""
    text = value if isinstance(value, str) else None
    try:
        if isinstance(value, datetime):
            dt = value.astimezone(UTC) if value.tzinfo else value
        else:
            dt = parse_hour_key(str(value))  # raises the garbage-hour message
            dt = _exact_time(str(value)) or dt
    except ValueError:
        raise ValueError(f"{value!r} is not an hour such as 2026-11-26-10 or 2026-11-26T10:00") from None
    if not truncate_to_hour and (dt.minute, dt.second, dt.microsecond) != (0, 0, 0):
        shown = text if text is not None else dt.isoformat()
        raise ValueError(f"{shown!r} is not an hour such as 2026-11-26-10 or 2026-11-26T10:00 "
                         f"({dt:%M:%S} past the hour; truncate_to_hour=True takes the hour that contains it)")
    return hour_key(dt) if isinstance(value, datetime) else normalize_hour(str(value))


def _exact_time(text: str) -> datetime | None:
    """The time `text` names, minutes and seconds kept (parse_hour_key drops them)."""
    text = text.strip()
    for fmt in ("%Y-%m-%d-%H:%M", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt.astimezone(UTC) if dt.tzinfo else dt  # '+05:30' moves the minutes


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
