"""The metastore's tables (names and columns are part of the contract batch readers query)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Double, Integer, MetaData, String, Table, Text

metadata = MetaData()

claims = Table(
    "fs_claims",
    metadata,
    Column("product", String(128), primary_key=True),
    Column("resource", String(200), primary_key=True),  # partition/<p>/<start> or hour/<hour>
    Column("owner", String(64), nullable=False),  # one attempt: uuid
    Column("run_id", String(64), nullable=False),
    Column("lease_until", Double, nullable=False),  # epoch seconds
    Column("created_at", Double, nullable=False),
)

files = Table(
    "fs_files",
    metadata,
    Column("path", String(700), primary_key=True),  # relative to the lake root
    Column("product", String(128), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # landed | compacted | quarantine
    Column("hour", String(16), nullable=False, index=True),  # 2026-11-26-10
    Column("state", String(16), nullable=False),  # pending | committed | replaced
    Column("claim", String(200), nullable=False),  # the claim resource that wrote it
    Column("partition", Integer),  # landed/quarantine files: their Kafka partition
    Column("start_offset", BigInteger),
    Column("end_offset", BigInteger),  # exclusive: last offset in the range read + 1
    Column("rows", BigInteger, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("generation", Integer, nullable=False, default=0),
    Column("ranges", Text),  # JSON {partition: [[first, last], ...]} of offsets in the file
    Column("min_offset", BigInteger),
    Column("max_offset", BigInteger),
    Column("run_id", String(64), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("committed_at", Double),
    Column("replaced_at", Double),
)

offsets = Table(
    "fs_offsets",
    metadata,
    Column("product", String(128), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),  # the first offset not yet landed
    Column("at_eof", Boolean, nullable=False, default=False),  # the last run read to the end
    Column("topic", String(249), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("updated_at", Double, nullable=False),
)

hours = Table(
    "fs_hours",
    metadata,
    Column("product", String(128), primary_key=True),
    Column("hour", String(16), primary_key=True),
    Column("state", String(16), nullable=False),  # open | compacted | reopened
    Column("generation", Integer, nullable=False, default=0),
    Column("landed_rows", BigInteger, nullable=False, default=0),
    Column("quarantined_rows", BigInteger, nullable=False, default=0),
    Column("first_landed_at", Double),
    Column("last_landed_at", Double),
    Column("compacted_at", Double),
    Column("compacted_rows", BigInteger),
    Column("reopened_at", Double),
    # Set when a blocking quality check failed on data landed in this hour: compaction (and
    # anything downstream) leaves the hour alone until the owner clears it.
    Column("blocked_reason", Text),
    Column("blocked_at", Double),
)

# Records landed by a quarantine replay carry their original (old) offsets, below what an
# offset-following consumer such as the warehouse sink has passed: each replay is recorded here,
# in the replay's own commit, so such consumers can follow replays by id as a second watermark.
replays = Table(
    "fs_replays",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("product", String(128), nullable=False, index=True),
    Column("path", String(700), nullable=False),  # the replay's landed file
    Column("hour", String(16), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("min_offset", BigInteger, nullable=False),
    Column("max_offset", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("committed_at", Double, nullable=False),
)

landings = Table(
    "fs_landings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("product", String(128), nullable=False, index=True),
    Column("run_id", String(64), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("start_offset", BigInteger, nullable=False),
    Column("end_offset", BigInteger, nullable=False),
    Column("consumed", BigInteger, nullable=False),
    Column("landed", BigInteger, nullable=False),
    Column("quarantined", BigInteger, nullable=False),
    Column("committed_at", Double, nullable=False),
)


# Hours whose `_SUCCESS` marker was written, per generation (compaction writes the row right
# after the marker). An hour is marked when a row has its current generation; batch users may
# query it instead of probing the lake.
markers = Table(
    "fs_markers",
    metadata,
    Column("product", String(128), primary_key=True),
    Column("hour", String(16), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("written_at", Double, nullable=False),
)
