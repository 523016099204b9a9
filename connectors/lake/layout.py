"""Where things are in the lake: hour keys, hive-style hour folders, file names, safe segments."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from connectors.errors import TerminalError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_DIR = re.compile(r"dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})")
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*\Z")  # \Z: "$" would accept a trailing newline
QUARANTINE_ROOT = "_quarantine"
SUCCESS = "_SUCCESS"


class LakePathError(TerminalError, ValueError):
    """A path segment would escape the lake or is not a plain name."""


class HourKeyError(TerminalError, ValueError):
    """Not an hour (a garbage key), or a range of hours whose end comes before its start."""


class LakeUrlError(TerminalError, ValueError):
    """A lake URL flowsuite cannot open (expected a local path, file:// or s3://bucket/prefix)."""


def hour_start(epoch_hour: int) -> datetime:
    return EPOCH + timedelta(hours=int(epoch_hour))


def epoch_hour(ts: datetime) -> int:
    return int((ts.astimezone(UTC) - EPOCH).total_seconds() // 3600)


def hour_key(epoch_hour_or_dt: int | datetime) -> str:
    """'2026-11-26-10': the hour's name in the metastore and as a Dagster-style key."""
    dt = epoch_hour_or_dt if isinstance(epoch_hour_or_dt, datetime) else hour_start(epoch_hour_or_dt)
    return dt.astimezone(UTC).strftime("%Y-%m-%d-%H")


def parse_hour_key(key: str) -> datetime:
    """Accepts '2026-11-26-10', '2026-11-26-10:00' (Dagster hourly keys) and ISO forms."""
    text = key.strip()
    for fmt in ("%Y-%m-%d-%H", "%Y-%m-%d-%H:%M", "%Y-%m-%dT%H", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise HourKeyError(f"{key!r} is not an hour such as 2026-11-26-10 or 2026-11-26T10:00") from None
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(minute=0, second=0, microsecond=0)


def hour_dir(product: str, hour: int | datetime | str) -> str:
    """`<product>/dt=YYYY-MM-DD/hour=HH` (relative to the lake root)."""
    dt = parse_hour_key(hour) if isinstance(hour, str) else hour if isinstance(hour, datetime) else hour_start(hour)
    return f"{safe_segment(product)}/dt={dt:%Y-%m-%d}/hour={dt:%H}"


def quarantine_dir(product: str, hour: int | datetime | str) -> str:
    return f"{QUARANTINE_ROOT}/{hour_dir(product, hour)}"


def landed_file_name(topic: str, partition: int, start_offset: int) -> str:
    """`<topic>+<partition>+<start>.parquet`, as Kafka Connect names them: a retry from the
    same start replaces rather than adds."""
    return f"{safe_segment(topic)}+{int(partition)}+{int(start_offset)}.parquet"


def safe_segment(value: str) -> str:
    """A single path segment: no separators, no '..', no leading dot (hidden) or '_'."""
    if not isinstance(value, str) or not SAFE_SEGMENT.match(value) or ".." in value:
        raise LakePathError(f"{value!r} is not a safe path segment (letters, digits, . _ = + -; no '..')")
    return value


def normalize_hour(hour: str | datetime) -> str:
    """'2026-11-26-10' from any accepted hour form (Dagster keys '2026-11-26-10:00' included)."""
    return hour_key(parse_hour_key(hour) if isinstance(hour, str) else hour)
