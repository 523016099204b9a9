"""Operators that run the flowsuite engine inside an Airflow task: land, compact, sync, replay.

Each calls `connectors/` directly, as the Dagster assets do, so each keeps the engine's
exactly-once guarantees: work is claimed in the metastore and committed by compare-and-set,
so a retried try redoes only what the failed one left uncommitted (its claims are taken over
at once: an earlier try of the same task instance is dead, `engine.try_is_dead`), and a
doubled task (two DAG runs at once, or Dagster and Airflow) finds the claims held and writes
nothing for them.

Each announces what it changed on the Airflow Asset `flowsuite://<product>/<asset>`, through
an AssetAlias outlet (`flowsuite-changes:<product>/<asset>`): one asset event per hour that
changed (compact: per hour whose generation moved, naming it), none when nothing changed, so
a doubled run does not reschedule the DAGs that consume the asset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from flowsuite_airflow.engine import (
    FlowsuiteConfig,
    asset_uri,
    changes_alias,
    claim_run_id,
    task_hour,
    try_is_dead,
)
from flowsuite_airflow.errors import engine_errors
from flowsuite_airflow.hooks.flowsuite import FlowsuiteHook


class _FlowsuiteOperator(BaseOperator):
    """What the operators share: the product, its configuration, the try's claim owner, and the
    one error mapping (flowsuite_airflow/errors.py): `execute` runs `work` under it, so an
    engine error fails the try without retries when terminal and with them when transient."""

    asset: str = ""  # which flowsuite asset the operator updates
    template_fields: Sequence[str] = ("product",)

    def __init__(self, *, product: str, flowsuite_conn_id: str = FlowsuiteHook.default_conn_name, **kwargs: Any):
        # An alias, not the asset: a plain Asset outlet gets an event on every success,
        # whether or not anything changed; through the alias, events are what `publish` adds.
        kwargs.setdefault("outlets", [AssetAlias(changes_alias(product, self.asset))])
        super().__init__(**kwargs)
        self.product, self.flowsuite_conn_id = product, flowsuite_conn_id

    def execute(self, context: Any) -> Any:
        with engine_errors():
            return self.work(context)

    def work(self, context: Any) -> Any:  # each operator's work (not `run`: BaseOperator has one)
        raise NotImplementedError

    def config(self) -> FlowsuiteConfig:
        return FlowsuiteHook(self.flowsuite_conn_id).get_conn()

    def spec(self, config: FlowsuiteConfig) -> Any:
        """The product's spec; an unknown product (a TerminalError) fails the task without retries."""
        return config.spec(self.product)

    @staticmethod
    def run_id(context: Any) -> str:
        ti = context["ti"]
        return claim_run_id(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number)

    def publish(self, context: Any, changes: list[dict[str, Any]]) -> None:
        """One event of the asset per change (its `extra`); no change, no event."""
        alias = AssetAlias(changes_alias(self.product, self.asset))
        if alias not in self.outlets:  # outlets replaced by the DAG's author: theirs to announce
            return
        asset = Asset(asset_uri(self.product, self.asset))
        for extra in changes:
            context["outlet_events"][alias].add(asset, extra=extra)
        self.log.info("%s: %d asset event(s)%s", asset.uri, len(changes),
                      "" if changes else " (nothing changed)")


class FlowsuiteLandOperator(_FlowsuiteOperator):
    """Land `product`: everything available from the committed offsets, up to the cap.

    Returns (XCom) consumed / landed / quarantined counts, the hours touched and, per
    partition, the offset range landed, a skip reason (claim held elsewhere) and the try
    whose claim was taken over. Quality checks (Great Expectations) run in Dagster's landed
    asset, not here: a product landed from Airflow alone is not gated.
    """

    asset = "landed"
    template_fields: Sequence[str] = ("product", "partitions", "max_records")

    def __init__(self, *, product: str, partitions: list[int] | None = None, max_records: int | None = None,
                 batch_size: int = 10_000, lease_s: float = 30.0, **kwargs: Any):
        super().__init__(product=product, **kwargs)
        self.partitions, self.max_records = partitions, max_records
        self.batch_size, self.lease_s = batch_size, lease_s

    def work(self, context: Any) -> dict[str, Any]:
        from connectors.flows import LandingOptions, land_run

        config = self.config()
        run_id = self.run_id(context)
        self.log.info("landing %s as %s (try %s)", self.product, run_id, context["ti"].try_number)
        # The engine checks consumed = landed + quarantined before it commits (RecordsUnaccountedError,
        # terminal: the task fails without retries and nothing of the unaccounted range is committed).
        result = land_run(
            self.spec(config), config.run_context(run_id=run_id, is_dead=try_is_dead(run_id), lease_s=self.lease_s),
            LandingOptions(partitions=self.partitions, max_records=self.max_records, batch_size=self.batch_size),
        )
        summary = {
            "product": result.product, "run_id": run_id, "consumed": result.consumed, "landed": result.landed,
            "quarantined": result.quarantined, "accounted": result.accounted, "bytes": result.bytes,
            "hours": result.hours,
            "reopened_hours": result.reopened_hours,
            "partitions": {
                str(p): {"start": pl.start, "end": pl.end, "landed": pl.landed, "skipped": pl.skipped,
                         "took_over_from": pl.took_over_from, "deleted_pending": len(pl.deleted_pending)}
                for p, pl in result.partitions.items()
            },
        }
        for p, pl in result.partitions.items():
            if pl.took_over_from:
                self.log.warning("%s[%d]: took over the claim of %s, deleted %d pending file(s)",
                                 self.product, p, pl.took_over_from, len(pl.deleted_pending))
            if pl.skipped:
                self.log.warning("%s[%d]: %s", self.product, p, pl.skipped)
        self.log.info("%s: consumed %d, landed %d, quarantined %d in %.1fs", self.product, result.consumed,
                      result.landed, result.quarantined, result.duration_s)
        metastore = config.metastore()
        self.publish(context, [
            {"hour": h, "rows": n, "generation": getattr(metastore.hour(self.product, h), "generation", 0),
             "reopened": h in result.reopened_hours}
            for h, n in sorted(result.hours.items()) if n
        ])
        return summary


class FlowsuiteCompactOperator(_FlowsuiteOperator):
    """Compact hours of `product`: `hours` (templated; '2026-11-26-10' strings), or by
    default every closed hour that is due (new, reopened, unmarked or unfinished). A named
    hour that is not on the hour ('…T10:30') fails the task like a garbage hour, unless
    `truncate_to_hour=True` (a templated time inside the hour).

    Its asset events: one per hour compacted to a new generation, `{"hour", "generation",
    "rows", "files"}`; an hour found already whole (a doubled run) announces nothing.

    A due hour that is blocked or being compacted elsewhere is skipped with its reason; an
    hour asked for by name that is blocked fails the task (after the others are done).
    """

    asset = "hourly"
    template_fields: Sequence[str] = ("product", "hours")

    def __init__(self, *, product: str, hours: str | list[str] | None = None, force: bool = False,
                 lease_s: float = 30.0, truncate_to_hour: bool = False, **kwargs: Any):
        super().__init__(product=product, **kwargs)
        self.hours, self.force, self.lease_s = hours, force, lease_s
        self.truncate_to_hour = truncate_to_hour

    def work(self, context: Any) -> dict[str, Any]:
        from connectors.flows import HourBlockedError, compact_hour, hours_due
        from connectors.metastore import ClaimHeldError

        config = self.config()
        spec, metastore = self.spec(config), config.metastore()
        run_id = self.run_id(context)
        run = config.run_context(run_id=run_id, is_dead=try_is_dead(run_id), lease_s=self.lease_s)
        named = self.hours is not None
        if named:
            try:
                wanted = [task_hour(h, truncate_to_hour=self.truncate_to_hour)
                          for h in ([self.hours] if isinstance(self.hours, str) else self.hours)]
            except ValueError as exc:  # a wrong hour stays wrong: no retry
                raise AirflowFailException(str(exc)) from None
            skipped: dict[str, str] = {}
        else:
            due, skip = hours_due(spec, metastore)
            wanted, skipped = [d.hour for d in due], {s.hour: s.reason for s in skip}
        compacted: dict[str, dict[str, Any]] = {}
        blocked: dict[str, str] = {}
        for hour in wanted:
            try:
                r = compact_hour(spec, hour, run, force=self.force)
            except HourBlockedError as exc:
                (blocked if named else skipped)[hour] = str(exc)
                continue
            except ClaimHeldError as exc:
                skipped[hour] = str(exc)
                continue
            self.log.info("%s", r.summary())
            compacted[hour] = {"status": r.status, "generation": r.generation, "rows": r.rows,
                               "files": r.files_after, "marker_written": r.marker_written}
        for hour, reason in sorted(skipped.items()):
            self.log.warning("%s %s skipped: %s", self.product, hour, reason)
        self.publish(context, [{"hour": h, "generation": c["generation"], "rows": c["rows"], "files": c["files"]}
                               for h, c in sorted(compacted.items()) if c["status"] == "compacted"])
        if blocked:
            raise AirflowFailException("; ".join(blocked[h] for h in sorted(blocked)))
        return {"product": self.product, "run_id": run_id, "compacted": compacted, "skipped": skipped}


class FlowsuiteSyncOperator(_FlowsuiteOperator):
    """Bring `product`'s warehouse table up to the lake's committed offsets (UPSERT).

    Exactly once through the sink's own offsets, advanced in the same warehouse transaction
    as the rows (compare-and-set): a retried or doubled sync applies each window once."""

    asset = "warehouse"

    def __init__(self, *, product: str, warehouse_url: str | None = None, **kwargs: Any):
        super().__init__(product=product, **kwargs)
        self.warehouse_url = warehouse_url

    def work(self, context: Any) -> dict[str, Any]:
        from connectors.warehouse import sync

        config = self.config()
        r = sync(self.spec(config), lake=config.lake(), metastore=config.metastore(),
                 url=self.warehouse_url or config.warehouse_url)
        if r.blocked_hours:
            self.log.warning("%s: blocked hours stop the sync: %s", self.product, ", ".join(r.blocked_hours))
        self.log.info("%s → %s: %d rows read in %d batch(es), table holds %s rows", self.product, r.table,
                      r.rows_read, r.batches, r.table_rows)
        offsets = {str(p): n for p, n in (r.offsets_after or {}).items()}
        self.publish(context, [{"rows_read": r.rows_read, "table_rows": r.table_rows, "offsets": offsets}]
                     if r.rows_read else [])
        return {"product": self.product, "table": r.table, "rows_read": r.rows_read, "batches": r.batches,
                "table_rows": r.table_rows, "blocked_hours": list(r.blocked_hours or []),
                "offsets_after": {str(p): n for p, n in (r.offsets_after or {}).items()}}


class FlowsuiteReplayQuarantineOperator(_FlowsuiteOperator):
    """Land the quarantined records of `product` that pass under the current spec.

    Exactly once: each quarantine file is replayed under a claim and swapped by
    compare-and-set, so a second replay finds nothing left to land. Updates the landed asset."""

    asset = "landed"

    def __init__(self, *, product: str, dry_run: bool = False, **kwargs: Any):
        super().__init__(product=product, **kwargs)
        self.dry_run = dry_run

    def work(self, context: Any) -> dict[str, Any]:
        from connectors.flows import replay_quarantine

        config = self.config()
        r = replay_quarantine(self.spec(config), lake=config.lake(), metastore=config.metastore(),
                              run_id=self.run_id(context), dry_run=self.dry_run)
        self.log.info("%s: %d record(s) replayed, %d still quarantined%s", self.product, r.replayed,
                      r.still_quarantined, " (dry run)" if self.dry_run else "")
        if not self.dry_run:
            metastore = config.metastore()
            self.publish(context, [
                {"hour": h, "rows": n, "generation": getattr(metastore.hour(self.product, h), "generation", 0),
                 "reopened": h in r.reopened_hours}
                for h, n in sorted(r.hours.items()) if n
            ])
        return {"product": self.product, "replayed": r.replayed, "still_quarantined": r.still_quarantined,
                "hours": r.hours, "reopened_hours": r.reopened_hours, "dry_run": self.dry_run}
