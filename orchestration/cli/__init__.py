"""`flowsuite`: the command line of the code location, on click (root group in root.py).

One module per area (broker, offsets, quarantine, quality, warehouse, lake = read/compact,
land, status, demo, validate, produce_demo); root.py composes them and says how to add one.
"""

from __future__ import annotations

from orchestration.cli.common import CliError
from orchestration.cli.root import cli, main

__all__ = ["CliError", "cli", "main"]
