"""The Iceberg catalog and one table per product, `flowsuite.<product>`.

**Catalog.** pyiceberg's `SqlCatalog`, in the metastore's own database by default (SQLite
locally, PostgreSQL in production), `FLOWSUITE_ICEBERG_CATALOG_URL` to put it elsewhere. Its
tables `iceberg_tables` and `iceberg_namespace_properties` are the layout of Iceberg's JDBC
catalog, so Spark and Trino open the same database as a JDBC catalog named `flowsuite`
(docs/lake.md). A commit is a compare-and-set on the table's metadata location.

**Table.** Location `<lake>/<product>`: the compacted files already live under it
(`dt=…/hour=…/part-g<n>-<k>.parquet`) and the metadata goes beside them, `<lake>/<product>/metadata/`,
on local disk or S3 through pyarrow's file IO with the lake's S3 settings. Schema: the lake
schema of the spec (values, then provenance `_topic, _partition, _offset, _timestamp, _key`),
all columns optional; field ids are kept forever, new spec columns are added by name (never
dropped or retyped). Partitioned by `hour(<event time column>)`. The lake's files carry no
Iceberg field ids, so readers resolve columns through the table's name mapping
(`schema.name-mapping.default`), which is rewritten whenever the schema grows.

pyiceberg's own commit retries are off (`commit.retry.num-retries = 0`): publishing runs its
own loop (`connectors.tables.publish`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import timedelta

import pyarrow as pa
import sqlalchemy
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import assign_fresh_schema_ids
from pyiceberg.table import Table, TableProperties
from pyiceberg.transforms import HourTransform
from sqlalchemy import inspect as sa_inspect

from connectors.formats import lake_schema
from connectors.lake import Lake, S3Options, epoch_hour, hour_start, parse_hour_key
from connectors.spec import DataProductSpec

log = logging.getLogger(__name__)

CATALOG_NAME = "flowsuite"
NAMESPACE = "flowsuite"
HOUR_FIELD = "event_hour"  # the partition field's name


def catalog_url(metastore_url: str, override: str | None = None) -> str:
    """The catalog's database: `override` (Settings.iceberg_catalog_url,
    FLOWSUITE_ICEBERG_CATALOG_URL) or else the metastore's."""
    return override or metastore_url


def table_identifier(product: str) -> str:
    return f"{NAMESPACE}.{product}"


def event_time_column(spec: DataProductSpec) -> str:
    """The column whose hour partitions the table: the one that picked the lake hour."""
    if spec.event_time.source == "field" and spec.event_time.field:
        return spec.event_time.field
    return "ce_time" if spec.event_time.source == "ce_time" else "_timestamp"


def _sqlalchemy_url(url: str) -> str:
    """pyiceberg's SqlCatalog takes any SQLAlchemy URL; psycopg 3 is the driver installed. On
    SQLite a writer waits up to 60 s for the lock (as the metastore does), not the default 5 s."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite") and "timeout=" not in url:
        return url + ("&" if "?" in url else "?") + "timeout=60"
    return url


class IcebergTables:
    """The catalog of one deployment and the tables of its products (build once per run)."""

    def __init__(self, url: str, lake: Lake, s3: S3Options | None = None, read_only: bool = False):
        self.url = _sqlalchemy_url(url)
        self.lake = lake
        self.read_only = read_only  # creates nothing: no catalog tables, no namespace (status)
        self._s3 = (s3 or lake.s3) if lake.is_s3 else None  # the lake's own options by default
        self._catalog: SqlCatalog | None = None

    def __repr__(self) -> str:  # the URL may hold a password: never print it
        return f"IcebergTables(lake={self.lake.url!r})"

    # --- the catalog --------------------------------------------------------------------

    def io_properties(self) -> dict[str, str]:
        """pyarrow's file IO with the lake's S3 settings (catalog properties: never persisted)."""
        props = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
        if self._s3 is not None:
            for key, value in (
                ("s3.endpoint", self._s3.endpoint_url),
                ("s3.region", self._s3.region or "us-east-1"),
                ("s3.access-key-id", self._s3.access_key_id),
                ("s3.secret-access-key", self._s3.secret_access_key),
                ("s3.session-token", self._s3.session_token),
            ):
                if value:
                    props[key] = value
        return props

    @property
    def catalog(self) -> SqlCatalog:
        if self._catalog is None:
            for attempt in range(5):
                try:
                    self._catalog = SqlCatalog(
                        CATALOG_NAME, uri=self.url, warehouse=self.lake_uri(""), pool_pre_ping="true",
                        init_catalog_tables=str(not self.read_only).lower(), **self.io_properties(),
                    )
                    break
                except sqlalchemy.exc.DatabaseError as exc:
                    # Two processes opening a fresh catalog both CREATE its tables: the loser is
                    # told "already exists" (SQLite) or a unique violation (PostgreSQL's pg_type);
                    # the next attempt finds them made.
                    text = str(exc).lower()
                    if attempt == 4 or ("already exists" not in text and "unique" not in text):
                        raise
                    time.sleep(0.1 * (attempt + 1))
            if not self.read_only:
                try:
                    self._catalog.create_namespace(NAMESPACE)
                except NamespaceAlreadyExistsError:
                    pass
                except sqlalchemy.exc.IntegrityError:
                    # Two processes creating the namespace at once: both saw it missing, the
                    # loser's INSERT hits the unique key. It exists now, which is all we need.
                    if not self._catalog.namespace_exists(NAMESPACE):
                        raise
        return self._catalog

    def dispose(self) -> None:
        if self._catalog is not None:
            self._catalog.engine.dispose()
            self._catalog = None

    # --- paths --------------------------------------------------------------------------

    def lake_uri(self, rel: str) -> str:
        """A lake path as the table records it: `s3://bucket/…` or `file:///…`."""
        if not rel:
            return f"s3://{self.lake.root}" if self.lake.is_s3 else f"file://{self.lake.root}"
        return self.lake.uri(rel) if self.lake.is_s3 else f"file://{self.lake.full(rel)}"

    def lake_rel(self, uri: str) -> str | None:
        """The lake-relative path of a file the table names (None: not under the lake)."""
        root = self.lake_uri("") + "/"
        return uri[len(root):] if uri.startswith(root) else None

    # --- tables -------------------------------------------------------------------------

    def load(self, product: str) -> Table:
        return self.catalog.load_table(table_identifier(product))

    def exists(self, product: str) -> bool:
        if self.read_only and not sa_inspect(self.catalog.engine).has_table("iceberg_tables"):
            return False
        return self.catalog.table_exists(table_identifier(product))

    def ensure_table(self, spec: DataProductSpec, retain: timedelta | None = None) -> Table:
        """The product's table, created on first use, its schema grown to the spec's."""
        wanted = lake_schema(spec)
        try:
            table = self.load(spec.name)
        except NoSuchTableError:
            table = self._create(spec, wanted, retain)
        return self._evolve(table, wanted)

    def _create(self, spec: DataProductSpec, wanted: pa.Schema, retain: timedelta | None) -> Table:
        schema = assign_fresh_schema_ids(self.catalog._convert_schema_if_needed(_all_optional(wanted)))
        source = schema.find_field(event_time_column(spec))
        partition_spec = PartitionSpec(PartitionField(source_id=source.field_id, field_id=1000, transform=HourTransform(), name=HOUR_FIELD))
        properties = {
            TableProperties.COMMIT_NUM_RETRIES: "0",  # our own loop guards the commits (publish.py)
            TableProperties.DEFAULT_NAME_MAPPING: schema.name_mapping.model_dump_json(),
            TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true",
            TableProperties.METADATA_PREVIOUS_VERSIONS_MAX: "100",
            "flowsuite.product": spec.name,
            "flowsuite.topic": spec.topic,
        }
        if retain is not None:  # what other engines' expire_snapshots should keep, too
            properties[TableProperties.MAX_SNAPSHOT_AGE_MS] = str(int(retain.total_seconds() * 1000))
        try:
            return self.catalog.create_table(
                table_identifier(spec.name), schema=schema, location=self.lake_uri(spec.name),
                partition_spec=partition_spec, properties=properties,
            )
        except TableAlreadyExistsError:  # another process created it first
            return self.load(spec.name)

    def _evolve(self, table: Table, wanted: pa.Schema, attempts: int = 5) -> Table:
        """New spec columns become new (optional) Iceberg columns, by name, ids kept."""
        for _ in range(attempts):
            have = {f.name for f in table.schema().fields}
            if all(f.name in have for f in wanted):
                return table
            try:
                with table.transaction() as tx:
                    with tx.update_schema() as update:
                        update.union_by_name(_all_optional(pa.schema([f for f in wanted if f.name not in have])))
                    tx.set_properties(**{TableProperties.DEFAULT_NAME_MAPPING: tx.table_metadata.schema().name_mapping.model_dump_json()})
                return table
            except CommitFailedException:
                table = self.load(table.name()[-1])
        raise CommitFailedException(f"{table.name()}: the schema kept changing under {attempts} attempts")

    # --- what a snapshot holds ----------------------------------------------------------

    def hour_files(self, table: Table, hour: str, snapshot_id: int | None = None) -> list[DataFile]:
        """The data files of one hour partition in a snapshot (default: the current one)."""
        snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id else table.current_snapshot()
        if snapshot is None:
            return []
        want = epoch_hour(parse_hour_key(hour))
        out = []
        for manifest in snapshot.manifests(table.io):
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                if entry.data_file.partition[0] == want:
                    out.append(entry.data_file)
        return out

    def referenced_paths(self, table: Table) -> set[str]:
        """Every data file some retained snapshot still reads."""
        seen_manifests: set[str] = set()
        paths: set[str] = set()
        for snapshot in table.snapshots():
            for manifest in snapshot.manifests(table.io):
                if manifest.manifest_path in seen_manifests:
                    continue
                seen_manifests.add(manifest.manifest_path)
                paths.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True))
        return paths

    def scan(self, product: str, *, snapshot_id: int | None = None, hours: Iterable[str] | None = None,
             columns: tuple[str, ...] = ("*",), table: Table | None = None) -> pa.Table:
        """Rows through pyiceberg's scan, at a snapshot, optionally one range of hours."""
        table = table or self.load(product)
        row_filter = AlwaysTrue()
        if hours:
            hs = sorted(epoch_hour(parse_hour_key(h)) for h in hours)
            col = table.spec().fields[0].source_id
            name = table.schema().find_column_name(col)
            row_filter = And(
                GreaterThanOrEqual(name, hour_start(hs[0]).isoformat()),
                LessThan(name, hour_start(hs[-1] + 1).isoformat()),
            )
        return table.scan(row_filter=row_filter, snapshot_id=snapshot_id, selected_fields=columns).to_arrow()


def _all_optional(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_nullable(True) for f in schema])
