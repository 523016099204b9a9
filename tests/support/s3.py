"""A local S3 for the tests: moto's ThreadedMotoServer on a free port, and an independent reader.

The server speaks the real S3 protocol over HTTP, so pyarrow's S3FileSystem (the lake) and
boto3 talk to it exactly as they talk to AWS. The readers here never use `connectors.lake`:
they build their own pyarrow S3 filesystem (or local one) from the lake URL, list the keys and
read the hive layout as a batch job (Athena, Spark, DuckDB) would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from connectors.lake import Lake, S3Options

REGION = "us-east-1"
ACCESS_KEY = "flowsuite-test"
SECRET_KEY = "flowsuite-test-secret"


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    server: object  # the ThreadedMotoServer

    @property
    def options(self) -> S3Options:
        return S3Options(endpoint_url=self.endpoint, region=REGION, access_key_id=ACCESS_KEY,
                         secret_access_key=SECRET_KEY)

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The settings (connectors/settings.py) a process reaches this server with: a face
        (the CLI, the Dagster resource, `env_lake` below) reads them, the engine never does."""
        return {
            "FLOWSUITE_S3_ENDPOINT": endpoint or self.endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def boto3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


def start_s3_server(bucket: str = "flowsuite-test") -> S3Server:
    from moto.server import ThreadedMotoServer

    from orchestration.services.broker import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(f"http://127.0.0.1:{port}", bucket, server)
    s3.boto3().create_bucket(Bucket=bucket)
    return s3


def _fs_and_root(lake_url: str, endpoint: str | None) -> tuple[pafs.FileSystem, str]:
    if lake_url.startswith("s3://"):
        parsed = urlparse(lake_url)
        endpoint = endpoint or os.environ["FLOWSUITE_S3_ENDPOINT"]
        fs = pafs.S3FileSystem(
            endpoint_override=urlparse(endpoint).netloc, scheme="http", region=REGION,
            access_key=ACCESS_KEY, secret_key=SECRET_KEY,
        )
        return fs, f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(lake_url)


def read_lake(lake_url: str, rel: str, endpoint: str | None = None) -> pa.Table:
    """Every visible Parquet file under `<lake>/<rel>` (hive layout), as a batch reader sees it."""
    fs, root = _fs_and_root(lake_url, endpoint)
    base = f"{root}/{rel}"
    if fs.get_file_info(base).type == pafs.FileType.NotFound and not list_lake_files(lake_url, rel, endpoint):
        return pa.table({})
    return ds.dataset(base, filesystem=fs, format="parquet", partitioning="hive").to_table()


def list_lake_files(lake_url: str, rel: str = "", endpoint: str | None = None) -> set[str]:
    """Every object / file under `<lake>/<rel>`, relative to the lake root (hidden ones too)."""
    fs, root = _fs_and_root(lake_url, endpoint)
    base = f"{root}/{rel}".rstrip("/")
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
    return {i.path.removeprefix(root + "/") for i in infos if i.type == pafs.FileType.File}


def env_lake(url: str) -> Lake:
    """The lake at `url` with the S3 options of this process's settings, as a face builds it
    (connectors/engine.py): for tests and their subprocesses given an s3:// URL by the fixtures."""
    from connectors.settings import load_settings

    return Lake(url, S3Options.from_settings(load_settings()))
