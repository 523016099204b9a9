"""The lake: Parquet files under hive-style hour partitions, on local disk or S3.

Files become visible only when whole. On local disk a file is written under a hidden name
(`.name.tmp-…`, which Spark, DuckDB, pyarrow datasets and Athena all skip), fsynced, then
renamed into place. On S3 a put (or a multipart upload) is atomic and needs no rename, so the
same call is enough; which files are *live* is never decided by listing but by the
metastore, so write-once keys plus commit-after-durable keep the invariants without rename.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from connectors.lake.layout import LakePathError, LakeUrlError
from connectors.settings import Settings


@dataclass(frozen=True)
class S3Options:
    """How an S3 lake is reached. Every field unset (the default) leaves each to the AWS SDK's
    own default chain (AWS_* variables, ~/.aws, instance roles); flowsuite itself takes them
    only from `Settings` (`from_settings`), never from the environment."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Options:
        def reveal(secret) -> str | None:
            return secret.get_secret_value() if secret is not None else None

        return cls(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.aws_region,
            access_key_id=settings.aws_access_key_id,
            secret_access_key=reveal(settings.aws_secret_access_key),
            session_token=reveal(settings.aws_session_token),
        )

    def __repr__(self) -> str:  # never print credentials
        return f"S3Options(endpoint_url={self.endpoint_url!r}, region={self.region!r})"


def _s3_filesystem(opts: S3Options) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        # Bounded retries: a 503 or a dropped connection during a put is retried, then fails the run.
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=5),
        "connect_timeout": 10,
        "request_timeout": 60,
    }
    if opts.region:
        kwargs["region"] = opts.region
    if opts.access_key_id:
        kwargs["access_key"] = opts.access_key_id
        kwargs["secret_key"] = opts.secret_access_key
        if opts.session_token:
            kwargs["session_token"] = opts.session_token
    if opts.endpoint_url:
        parsed = urlparse(opts.endpoint_url)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


class Lake:
    """A lake rooted at a local folder or an `s3://bucket/prefix` URL. Paths are relative."""

    def __init__(self, url: str, s3: S3Options | None = None):
        self.url = url.rstrip("/")
        self.s3 = s3 or S3Options()  # how an s3:// lake is reached (connectors/engine.py builds it from Settings)
        if url.startswith("s3://"):
            parsed = urlparse(url)
            if not parsed.netloc:
                raise LakeUrlError(f"lake URL {url!r} names no bucket (expected s3://bucket/prefix)")
            self.is_s3 = True
            self.fs: pafs.FileSystem = _s3_filesystem(self.s3)
            self.root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        elif "://" in url and not url.startswith("file://"):
            raise LakeUrlError(f"lake URL {url!r}: expected a local path, file:// or s3://bucket/prefix")
        else:
            self.is_s3 = False
            self.fs = pafs.LocalFileSystem()
            self.root = os.path.abspath(url.removeprefix("file://"))
            os.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    # --- paths --------------------------------------------------------------------------

    def full(self, rel: str) -> str:
        rel = rel.strip("/")
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise LakePathError(f"{rel!r} is not a plain relative lake path")
        return f"{self.root}/{rel}"

    def uri(self, rel: str) -> str:
        """What a batch reader opens: a local path or an s3:// URL."""
        return f"s3://{self.full(rel)}" if self.is_s3 else self.full(rel)

    # --- writing ------------------------------------------------------------------------

    def open_parquet_writer(
        self,
        rel: str,
        schema: pa.Schema,
        *,
        use_dictionary: bool | list[str] = True,
        column_encoding: dict[str, str] | None = None,
    ) -> ParquetFileWriter:
        """A writer of one file; `use_dictionary` and `column_encoding` as pyarrow's ParquetWriter
        takes them (compaction sets them per column, landing keeps the defaults)."""
        return ParquetFileWriter(self, rel, schema, use_dictionary=use_dictionary, column_encoding=column_encoding)

    def write_parquet(self, rel: str, table: pa.Table, row_group_rows: int = 131_072) -> int:
        """Write a whole table as one file, atomically; returns its size in bytes."""
        with self.open_parquet_writer(rel, table.schema) as writer:
            writer.write(table, row_group_rows)
        return writer.bytes

    def write_bytes(self, rel: str, data: bytes) -> None:
        final = self.full(rel)
        if self.is_s3:
            with self.fs.open_output_stream(final) as out:
                out.write(data)
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = _tmp_name(final)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(os.path.dirname(final))

    # --- reading ------------------------------------------------------------------------

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.full(rel), filesystem=self.fs, columns=columns)

    def read_tables(self, rels: Iterable[str], columns: list[str] | None = None) -> pa.Table:
        tables = [self.read_table(r, columns) for r in rels]
        return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.full(rel)) as f:
            return f.read()

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.full(rel)).type == pafs.FileType.File

    def size(self, rel: str) -> int:
        return self.fs.get_file_info(self.full(rel)).size

    def list_files(self, rel_dir: str) -> list[str]:
        """Files (not hidden) directly under a relative folder, as relative paths."""
        info = self.fs.get_file_info(pafs.FileSelector(self.full(rel_dir), allow_not_found=True))
        base = self.root + "/"
        return sorted(
            i.path.removeprefix(base)
            for i in info
            if i.type == pafs.FileType.File and not os.path.basename(i.path).startswith(".")
        )

    def list_tree(self, rel_dir: str) -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(self.full(rel_dir), allow_not_found=True, recursive=True))
        base = self.root + "/"
        return sorted(i.path.removeprefix(base) for i in info if i.type == pafs.FileType.File)

    # --- deleting -----------------------------------------------------------------------

    def delete(self, rel: str) -> bool:
        """Delete a file and any half-written temp siblings of it; True if the file existed."""
        full = self.full(rel)
        existed = self.fs.get_file_info(full).type == pafs.FileType.File
        if existed:
            self.fs.delete_file(full)
        if not self.is_s3:
            folder, name = os.path.split(full)
            if os.path.isdir(folder):
                for entry in os.listdir(folder):
                    if entry.startswith(f".{name}.tmp-"):
                        os.unlink(os.path.join(folder, entry))
        return existed

    def delete_many(self, rels: Iterable[str]) -> list[str]:
        """`delete` for many files: the same effect, one folder listing per folder (not one
        per file: deleting an hour's 200 landed files listed its folder 200 times)."""
        gone, folders = [], {}
        for rel in rels:
            full = self.full(rel)
            if self.fs.get_file_info(full).type == pafs.FileType.File:
                self.fs.delete_file(full)
                gone.append(rel)
            folder, name = os.path.split(full)
            folders.setdefault(folder, set()).add(name)
        if not self.is_s3:
            for folder, names in folders.items():
                if not os.path.isdir(folder):
                    continue
                for entry in os.listdir(folder):
                    if entry.startswith(".") and ".tmp-" in entry and entry[1:].rsplit(".tmp-", 1)[0] in names:
                        os.unlink(os.path.join(folder, entry))
        return gone


class ParquetFileWriter:
    """Streams row groups into one Parquet file that appears only when closed successfully."""

    def __init__(
        self,
        lake: Lake,
        rel: str,
        schema: pa.Schema,
        *,
        use_dictionary: bool | list[str] = True,
        column_encoding: dict[str, str] | None = None,
    ):
        self.lake, self.rel, self.schema = lake, rel, schema
        self.final = lake.full(rel)
        self.rows = 0
        self.bytes = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0  # Arrow bytes of _pending
        self._largest_group = 0  # Arrow bytes of the largest row group written so far
        if lake.is_s3:
            # Built in memory and put in one go on close: an exception or a kill before then
            # publishes nothing (pyarrow's S3 stream would complete a partial upload on close).
            self._target = self.final
            self._sink = pa.BufferOutputStream()
        else:
            os.makedirs(os.path.dirname(self.final), exist_ok=True)
            self._target = _tmp_name(self.final)
            self._sink = pa.OSFile(self._target, "wb")
        self._writer = pq.ParquetWriter(
            self._sink,
            schema,
            compression="zstd",
            compression_level=1,
            use_dictionary=use_dictionary,
            column_encoding=column_encoding,
            write_statistics=True,
        )

    def write(self, table: pa.Table, row_group_rows: int = 131_072) -> None:
        """Buffer rows and write full row groups, so groups hold ≥ row_group_rows when there are that many."""
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self._pending_rows >= row_group_rows:
            self._flush(row_group_rows)

    @property
    def held_bytes(self) -> int:
        """Memory this open file holds: the Arrow bytes waiting for their row group, plus the
        size of its largest written row group (the Parquet writer keeps its column buffers,
        ~0.75x of that, until it is closed; counted whole, to err high)."""
        return self._pending_bytes + self._largest_group

    def _flush(self, row_group_rows: int) -> None:
        if not self._pending:
            return
        combined = pa.concat_tables(self._pending).cast(self.schema)
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        self._largest_group = max(self._largest_group, combined.nbytes)
        self._writer.write_table(combined, row_group_size=max(row_group_rows, combined.num_rows))

    def close(self) -> int:
        self._flush(1)
        self._writer.close()
        if self.lake.is_s3:
            data = self._sink.getvalue()
            with self.lake.fs.open_output_stream(self.final) as out:
                out.write(data)
            self.bytes = data.size
        else:
            self._sink.close()
            fd = os.open(self._target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.bytes = os.path.getsize(self._target)
            os.replace(self._target, self.final)
            _fsync_dir(os.path.dirname(self.final))
        return self.bytes

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - best effort while unwinding
            pass
        if self.lake.is_s3:
            return  # nothing was sent
        try:
            self._sink.close()
        finally:
            if os.path.exists(self._target):
                os.unlink(self._target)

    def __enter__(self) -> ParquetFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _tmp_name(final: str) -> str:
    folder, name = os.path.split(final)
    return os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
