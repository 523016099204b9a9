"""Change data capture from PostgreSQL's write-ahead log (pgoutput), published as CloudEvents.

docs/cdc.md tells the whole story: declaring a source, the guarantees, the type mapping,
TOAST, truncate, REPLICA IDENTITY and WAL retention.
"""

from connectors.sources.cdc.capture import CaptureResult, capture
from connectors.sources.cdc.server import CdcError, SlotInfo
from connectors.sources.cdc.spec import CdcSourceSpec

__all__ = ["CaptureResult", "CdcError", "CdcSourceSpec", "SlotInfo", "capture"]
