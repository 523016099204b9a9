"""A Tansu broker on S3 storage (moto) whose partitions can lose their early offsets, as a real
broker's retention deletes them.

Tansu has no DeleteRecords. On S3 storage each partition is a folder of record batches,
`clusters/<cluster>/topics/<topic>/partitions/<p:010d>/records/<base offset:020d>.batch`, next
to a `watermark.json` (`{"low": null, "high": 100, ...}`). `truncate` stops the broker, deletes
the batches that lie wholly below an offset, writes that partition's `low` and starts the broker
again. Measured here (Tansu 0.6): afterwards `get_watermark_offsets` answers the new low, and a
fetch from 0 silently returns the records from the low watermark on — a reader must compare its
position with the low watermark itself to see the gap.

The broker comes back on a new port: the old one stays in TIME_WAIT for about a minute after the
broker closed its connections, and the launcher refuses a port it cannot bind. Read `bootstrap`
after a truncation.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestration.services.broker import free_port, start_broker, stop_broker
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server


@dataclass
class S3Broker:
    s3: S3Server
    bucket: str
    home: Path
    port: int = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT": self.s3.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION, "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> None:
        self.port = free_port()
        start_broker(self.home, port=self.port, storage=f"s3://{self.bucket}/", env=self.env)

    def stop(self) -> None:
        stop_broker(self.home)

    def _partition_prefix(self, topic: str, partition: int) -> str:
        client = self.s3.boto3()
        suffix = f"/topics/{topic}/partitions/{partition:010d}/watermark.json"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="clusters/"):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(suffix):
                    return obj["Key"].removesuffix("watermark.json")
        raise AssertionError(f"no partition {partition} of {topic!r} in s3://{self.bucket}/")

    def batches(self, topic: str, partition: int) -> list[int]:
        """Base offsets of the partition's stored record batches, ascending."""
        client, prefix = self.s3.boto3(), self._partition_prefix(topic, partition) + "records/"
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
                for o in page.get("Contents", [])]
        return sorted(int(k.rsplit("/", 1)[1].removesuffix(".batch")) for k in keys if k.endswith(".batch"))

    def truncate(self, topic: str, below: Mapping[int, int]) -> dict[int, int]:
        """Per partition, delete the batches that end at or before `below[p]` and make the first
        kept batch's base offset the low watermark; then restart the broker (once). Returns the
        new low watermarks (`below[p]` itself where it is a batch boundary: produce with a
        flush per batch to make it one)."""
        client = self.s3.boto3()
        plans = {}
        for p, limit in below.items():
            prefix = self._partition_prefix(topic, p)
            watermark = json.loads(client.get_object(Bucket=self.bucket, Key=prefix + "watermark.json")["Body"].read())
            bases = self.batches(topic, p)
            ends = [*bases[1:], watermark["high"]]
            doomed = [base for base, end in zip(bases, ends, strict=True) if end is not None and end <= limit]
            kept = [base for base in bases if base not in doomed]
            watermark["low"] = kept[0] if kept else watermark["high"]
            plans[p] = (prefix, doomed, watermark)
        self.stop()  # a running broker would write its own watermarks back
        for prefix, doomed, watermark in plans.values():
            for base in doomed:
                client.delete_object(Bucket=self.bucket, Key=f"{prefix}records/{base:020d}.batch")
            client.put_object(Bucket=self.bucket, Key=prefix + "watermark.json", Body=json.dumps(watermark).encode())
        self.start()
        return {p: watermark["low"] for p, (_, _, watermark) in plans.items()}


@contextlib.contextmanager
def s3_broker(s3: S3Server) -> Iterator[S3Broker]:
    """A Tansu broker storing to a fresh bucket of `s3`, stopped on exit."""
    bucket = f"tansu-{uuid.uuid4().hex[:12]}"
    s3.boto3().create_bucket(Bucket=bucket)
    with tempfile.TemporaryDirectory(prefix="flowsuite-s3-broker-") as home:
        broker = S3Broker(s3, bucket, Path(home))
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
