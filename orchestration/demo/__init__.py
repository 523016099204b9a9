"""`flowsuite demo` (what `make demo` runs): start the embedded broker if needed, produce a
batch of click events, land them through the `<P>_ingest` job, and print a summary made of the
sections listed in `SECTIONS`, in order. A new section is a function taking the `Demo` and one
line in `SECTIONS`; nothing registers itself on import.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from connectors.settings import Settings
from orchestration.demo import cdc, federation, flow, formats, gateway, sections, table
from orchestration.demo.sections import Demo
from orchestration.ingest import (
    LOCAL_DAGSTER_YAML,
    QUIET_LOGGERS,
    IngestError,
    IngestOutcome,
    dagster_instance,
    ensure_dagster_home,
    ingest_summary,
    run_ingest,
)

__all__ = [
    "DEMO_PRODUCT", "LOCAL_DAGSTER_YAML", "QUIET_LOGGERS", "SECTIONS", "Demo", "IngestError", "IngestOutcome",
    "dagster_instance", "ensure_broker", "ensure_dagster_home", "ingest_summary", "render_demo", "run_demo",
    "run_ingest",
]

DEMO_PRODUCT = "clicks"

Section = Callable[[Demo], "list[str] | None"]

# (title, section) pairs printed in this order; the footer comes last.
SECTIONS: list[tuple[str, Section]] = [
    ("landed per hour", sections.hours_section),
    ("quarantined", sections.quarantine_section),
    ("committed offsets", sections.offsets_section),
    ("partners: legacy table → CloudEvents → lake and warehouse", flow.partners_section),
    ("one count: partner_engagement in the lake and the warehouse", flow.engagement_section),
    ("clicks_avro: Avro in three schema versions → lake", formats.avro_section),
    ("orders: PostgreSQL change data capture → lake and warehouse", cdc.orders_section),
    ("world wide flow: partner p-001 subscribes to its clicks", gateway.gateway_section),
    ("federation: p-001's own flowsuite lands its clicks, pushed by ads, exactly once", federation.federation_section),
    ("hourly compaction of closed hours", sections.compaction_section),
    ("warehouse", sections.warehouse_section),
    ("iceberg: the sealed hours as the table flowsuite.clicks", table.iceberg_section),
]
FOOTER: tuple[str, Section] = ("next", sections.ui_section)


def ensure_broker(settings: Settings, say: Callable[[str], None]) -> bool:
    """Start the embedded broker when FLOWSUITE_KAFKA_BOOTSTRAP points at a local port nobody
    answers on; a broker that answers (embedded or real) is used as it is."""
    from orchestration.services.broker import broker_answers, start_broker

    if broker_answers(settings.kafka_bootstrap, timeout=2.0):
        return False
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise IngestError(f"no Kafka broker answers at {settings.kafka_bootstrap}", transient=True)
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
    from examples.demo_data import generate_clicks, produce
    from orchestration.resources import default_flowsuite_resource
    from quality.expectations import load_checked_specs

    started = ensure_broker(settings, say)
    specs = {s.name: s for s in load_checked_specs(settings.products_dir)}
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
    for title, section in [*SECTIONS, FOOTER]:
        try:
            body = section(demo)
        except Exception as exc:  # noqa: BLE001 - one section failing must not hide the others
            body = [f"(could not build this section: {exc})"]
        if body:
            lines += ["", f"== {title} ==", *body]
    return lines
