"""Runs in .venv-duckdb-iceberg (DuckDB 1.5.5 + its iceberg and avro extensions from pip), not
in the project's venv: reads an Iceberg table through DuckDB's `iceberg_scan` and writes what it
read as Parquet for the test to compare.

    python duckdb_iceberg_reader.py <metadata.json> <out.parquet> [<snapshot id>]
"""

import importlib
import json
import os
import sys

import duckdb


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"allow_unsigned_extensions": "true", "autoinstall_known_extensions": "false"})
    for name in ("avro", "iceberg"):  # iceberg needs avro; both from their pip packages, never downloaded
        module = importlib.import_module(f"duckdb_extension_{name}")
        path = os.path.join(os.path.dirname(module.__file__), "extensions", f"v{duckdb.__version__}", f"{name}.duckdb_extension")
        con.execute(f"LOAD '{path}'")
    return con


def main() -> None:
    metadata, out = sys.argv[1], sys.argv[2]
    con = connect()
    at = f", snapshot_from_id => {int(sys.argv[3])}" if len(sys.argv) > 3 else ""
    con.execute(f"COPY (SELECT _partition, _offset, event_id, event_time FROM iceberg_scan(?{at})) TO '{out}' (FORMAT parquet)", [metadata])
    snapshots = con.execute("SELECT snapshot_id FROM iceberg_snapshots(?) ORDER BY sequence_number", [metadata]).fetchall()
    print(json.dumps({"duckdb": duckdb.__version__, "snapshots": [s[0] for s in snapshots]}))


if __name__ == "__main__":
    main()
