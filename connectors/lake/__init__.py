"""The lake: hour layout (keys, folders, file names), the store (local or S3) and readers."""

from __future__ import annotations

from connectors.lake.layout import (
    EPOCH,
    HOUR_DIR,
    QUARANTINE_ROOT,
    SAFE_SEGMENT,
    SUCCESS,
    HourKeyError,
    LakePathError,
    LakeUrlError,
    epoch_hour,
    hour_dir,
    hour_key,
    hour_start,
    landed_file_name,
    normalize_hour,
    parse_hour_key,
    quarantine_dir,
    safe_segment,
)
from connectors.lake.readers import (
    format_rows,
    hours_between,
    live_files_between,
    read_rows,
)
from connectors.lake.store import (
    Lake,
    ParquetFileWriter,
    S3Options,
)

__all__ = [
    "EPOCH",
    "HOUR_DIR",
    "Lake",
    "HourKeyError",
    "LakePathError",
    "LakeUrlError",
    "ParquetFileWriter",
    "QUARANTINE_ROOT",
    "S3Options",
    "SAFE_SEGMENT",
    "SUCCESS",
    "epoch_hour",
    "format_rows",
    "hour_dir",
    "hour_key",
    "hour_start",
    "hours_between",
    "landed_file_name",
    "live_files_between",
    "normalize_hour",
    "parse_hour_key",
    "quarantine_dir",
    "read_rows",
    "safe_segment",
]
