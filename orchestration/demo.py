"""`flowsuite land` and `flowsuite demo`: run a product's ingest job through Dagster and say
what happened.

`run_ingest` executes `<P>_ingest` in process against the instance at DAGSTER_HOME (so the run
shows in the UI of `make dev`), or an ephemeral one without it. `run_demo` is what `make demo`
does: start the embedded broker if needed, produce a batch of click events, land them, and
print a summary built from `DEMO_SECTIONS` — a list of functions that other parts (warehouse,
compaction) extend with their own section:

    from orchestration.demo import DEMO_SECTIONS
    DEMO_SECTIONS.append(("warehouse", lambda demo: ["rows in table clicks: 1,234"]))
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestration.settings import Settings

# In-process runs log every step event to the terminal at DEBUG; the CLI prints its own
# summary, and the full event log stays in the run (and the UI).
QUIET_LOGGERS = {"console": {"config": {"log_level": "WARNING"}}}


class IngestError(RuntimeError):
    """The ingest run failed; the message carries Dagster's failure description."""


@dataclass
class IngestOutcome:
    product: str
    run_id: str
    metadata: dict[str, Any]  # the landed materialization's metadata, as plain values
    duration_s: float
    persistent: bool  # recorded in the DAGSTER_HOME instance (visible in the UI)
    checks: dict[str, bool] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


LOCAL_DAGSTER_YAML = """\
# Written by flowsuite for the embedded defaults: local storage under this folder.
# Production uses deploy/dagster.yaml (PostgreSQL storage, queued runs); see docs/deploy.md.
telemetry:
  enabled: false
"""


def ensure_dagster_home(home: str) -> None:
    """A DAGSTER_HOME with a dagster.yaml, so Dagster neither warns nor prints its banner."""
    os.makedirs(home, exist_ok=True)
    config = os.path.join(home, "dagster.yaml")
    if not os.path.exists(config):
        with open(config, "w", encoding="utf-8") as f:
            f.write(LOCAL_DAGSTER_YAML)


def dagster_instance():
    """The instance at DAGSTER_HOME when set (runs show in the UI), else an ephemeral one."""
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if home:
        ensure_dagster_home(home)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def run_ingest(
    product: str,
    partitions: list[int] | None = None,
    max_records: int | None = None,
    instance: Any = None,
) -> IngestOutcome:
    """Execute `<product>_ingest` now (in this process) and return the landed metadata."""
    from orchestration.definitions import defs

    definitions = defs()
    job_name = f"{product}_ingest"
    try:
        job = definitions.resolve_job_def(job_name)
    except Exception:  # noqa: BLE001 - dagster raises a generic error for unknown jobs
        raise IngestError(f"no data product {product!r} (no job {job_name}); see `flowsuite validate`") from None
    config: dict[str, Any] = {}
    if partitions:
        config["partitions"] = partitions
    if max_records is not None:
        config["max_records"] = max_records
    landed_op = f"{product}__landed"
    run_config: dict[str, Any] = {"loggers": QUIET_LOGGERS}
    if config:
        run_config["ops"] = {landed_op: {"config": config}}
    persistent = instance is None and bool(os.environ.get("DAGSTER_HOME"))
    instance = instance or dagster_instance()
    started = time.monotonic()
    result = job.execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False,
        tags={"flowsuite/trigger": "cli"},
    )
    if not result.success:
        failures = [
            _root_cause(e.step_failure_data.error)
            for e in result.all_events
            if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
        ]
        descriptions = [
            e.step_failure_data.user_failure_data.description
            for e in result.all_events
            if e.is_step_failure and e.step_failure_data and e.step_failure_data.user_failure_data
        ]
        message = next((d for d in descriptions if d), None) or (failures[0] if failures else "see the run's logs")
        raise IngestError(f"{job_name} run {result.run_id} failed: {message}")
    mats = result.asset_materializations_for_node(landed_op)
    metadata = {k: _plain(v) for k, v in (mats[-1].metadata if mats else {}).items()}
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    return IngestOutcome(product, result.run_id, metadata, time.monotonic() - started, persistent, checks)


def _root_cause(error: Any) -> str:
    """The innermost error of a step failure: Dagster wraps the real one ("Error occurred while
    executing op …"), and the person at the terminal needs what actually went wrong."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip()


def ingest_summary(outcome: IngestOutcome) -> list[str]:
    m = outcome.metadata
    lines = [
        f"{outcome.product}: consumed {m.get('records_consumed', 0):,}, landed {m.get('records_landed', 0):,}, "
        f"quarantined {m.get('records_quarantined', 0):,} in {m.get('files', 0)} file(s), "
        f"{m.get('bytes', 0):,} bytes, {outcome.duration_s:.1f}s (run {outcome.run_id})"
    ]
    for p, r in sorted((m.get("offset_ranges") or {}).items(), key=lambda kv: int(kv[0])):
        lag = (m.get("lag_per_partition") or {}).get(p)
        extra = f"; skipped: {r['skipped']}" if r.get("skipped") else ""
        lines.append(
            f"  partition {p}: offsets {r['start']:,} → {r['end']:,} ({r['records']:,} records, "
            f"{'reached end' if r['reached_eof'] else 'stopped at the cap'}, lag {lag if lag is not None else '?'}){extra}"
        )
    failed = sorted(name for name, ok in outcome.checks.items() if not ok)
    if outcome.checks:
        lines.append(
            f"  checks: {len(outcome.checks) - len(failed)}/{len(outcome.checks)} passed"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
    return lines


# --- demo ----------------------------------------------------------------------------------

DEMO_PRODUCT = "clicks"


@dataclass
class Demo:
    """What a summary section gets: the settings, the product's spec and resources, the run."""

    settings: Settings
    spec: Any
    lake: Any
    metastore: Any
    produced: Any  # connectors.demo_data.ProduceReport
    ingest: IngestOutcome


def _hours_section(demo: Demo) -> list[str]:
    files = demo.metastore.live_files(demo.spec.name)
    by_hour: dict[str, list[int]] = {}
    for f in files:
        rows_files = by_hour.setdefault(f.hour, [0, 0])
        rows_files[0] += f.rows
        rows_files[1] += 1
    lines = [f"{'hour (UTC)':<16} {'rows':>10} {'files':>6}"]
    lines += [f"{h:<16} {r:>10,} {n:>6}" for h, (r, n) in sorted(by_hour.items())]
    total = sum(r for r, _ in by_hour.values())
    lines.append(f"{'total':<16} {total:>10,} {len(files):>6}")
    return lines


def _quarantine_section(demo: Demo) -> list[str]:
    files = demo.metastore.live_files(demo.spec.name, kinds=("quarantine",))
    if not files:
        return ["nothing quarantined"]
    table = demo.lake.read_tables([f.path for f in files], columns=["_error"])
    reasons = Counter(_reason_kind(r) for r in table.column("_error").to_pylist())
    lines = [f"{table.num_rows:,} record(s) in {demo.lake.url}/_quarantine/{demo.spec.name}/, by reason:"]
    lines += [f"  {n:>6,}  {reason}" for reason, n in reasons.most_common(10)]
    return lines


def _reason_kind(error: str | None) -> str:
    """A reason without its record-specific values, so counts group ('… got 'xyz'' → '…')."""
    text = (error or "unknown").split(" got ")[0].split(": '")[0]
    return text if len(text) <= 90 else text[:87] + "..."


def _offsets_section(demo: Demo) -> list[str]:
    states = demo.metastore.committed_offsets(demo.spec.name)
    return [
        f"partition {p}: next offset {s.next_offset:,} ({'at end' if s.at_eof else 'more waiting'})"
        for p, s in sorted(states.items())
    ] or ["none yet"]


def _ui_section(demo: Demo) -> list[str]:
    where = "recorded in DAGSTER_HOME" if demo.ingest.persistent else "ephemeral (set DAGSTER_HOME to keep runs)"
    return [
        f"the run is {where}; `make dev` starts the broker and the Dagster UI at http://127.0.0.1:3000",
        f"(asset {demo.spec.name}/landed, sensor {demo.spec.name}_offsets, job {demo.spec.name}_ingest);",
        "read the lake with DuckDB: SELECT * FROM read_parquet("
        f"'{demo.lake.url}/{demo.spec.name}/*/*/*.parquet', hive_partitioning = true)",
    ]


# (title, section) pairs printed in order; other parts append theirs (see the module docstring).
DEMO_SECTIONS: list[tuple[str, Callable[[Demo], list[str] | None]]] = [
    ("landed per hour", _hours_section),
    ("quarantined", _quarantine_section),
    ("committed offsets", _offsets_section),
]


def _flow_section(name: str) -> Callable[[Demo], list[str] | None]:
    """A section of orchestration/demo_flow.py: a legacy table published as CloudEvents, and
    the one engagement count in both planes (imported when the demo runs)."""

    def section(demo: Demo) -> list[str] | None:
        from orchestration import demo_flow

        return getattr(demo_flow, name)(demo)

    return section


DEMO_SECTIONS += [
    ("partners: legacy table → CloudEvents → lake and warehouse", _flow_section("partners_section")),
    ("one count: partner_engagement in the lake and the warehouse", _flow_section("engagement_section")),
]


def _cdc_section(demo: Demo) -> list[str] | None:
    from orchestration.demo_cdc import (
        orders_section,  # change data capture (connectors/sources/cdc)
    )

    return orders_section(demo)


DEMO_SECTIONS.append(("orders: PostgreSQL change data capture → lake and warehouse", _cdc_section))
DEMO_FOOTER: tuple[str, Callable[[Demo], list[str] | None]] = ("next", _ui_section)


def ensure_broker(settings: Settings, say: Callable[[str], None]) -> bool:
    """Start the embedded broker when FLOWSUITE_KAFKA_BOOTSTRAP points at a local port nobody
    answers on; a broker that answers (embedded or real) is used as it is."""
    from orchestration.broker import broker_answers, start_broker

    if broker_answers(settings.kafka_bootstrap, timeout=2.0):
        return False
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise IngestError(f"no Kafka broker answers at {settings.kafka_bootstrap}")
    say(start_broker(settings.home, port=int(port)).message)
    return True


def run_demo(
    settings: Settings,
    events: int = 200_000,
    hours: int = 6,
    invalid_rate: float = 0.01,
    seed: int | None = None,
    say: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> Demo:
    """Broker, produce, land, summarize. Running it again lands only the new batch."""
    from connectors.demo_data import generate_clicks, produce
    from connectors.spec import load_specs
    from orchestration.resources import default_flowsuite_resource

    started = ensure_broker(settings, say)
    specs = {s.name: s for s in load_specs(settings.products_dir)}
    if DEMO_PRODUCT not in specs:
        raise IngestError(f"the demo needs the {DEMO_PRODUCT} data product in {settings.products_dir}")
    spec = specs[DEMO_PRODUCT]
    if started and default_flowsuite_resource().process_config_and_initialize().metastore().committed_offsets(spec.name):
        # The embedded broker keeps topics in memory: a new one starts empty, while the
        # metastore still holds the old broker's offsets (the history-lost alarm, by design).
        raise IngestError(
            f"the embedded broker started empty, but {settings.home} holds committed offsets of "
            f"{spec.name} from the broker that was stopped; start over with `make clean && make demo` "
            f"(or keep the lake and choose with `flowsuite offsets reset {spec.name} ...`)"
        )
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    records = generate_clicks(events, hours, invalid_rate, seed=seed)
    produced = produce(
        settings.kafka_bootstrap, spec.topic, records, partitions=2,
        progress=(lambda n: progress(n, events)) if progress else None,
    )
    say(
        f"produced {produced.produced:,} click events to {spec.topic} over the last {hours} hours "
        f"({produced.invalid:,} invalid; seed {seed})"
    )
    outcome = run_ingest(spec.name)
    flowsuite = default_flowsuite_resource().process_config_and_initialize()  # EnvVar fields resolved outside Dagster
    return Demo(settings, spec, flowsuite.lake(), flowsuite.metastore(), produced, outcome)


def render_demo(demo: Demo) -> list[str]:
    lines = ["", *ingest_summary(demo.ingest)]
    for title, section in [*DEMO_SECTIONS, DEMO_FOOTER]:
        try:
            body = section(demo)
        except Exception as exc:  # noqa: BLE001 - one section failing must not hide the others
            body = [f"(could not build this section: {exc})"]
        if body:
            lines += ["", f"== {title} ==", *body]
    return lines
