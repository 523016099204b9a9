"""Change data capture from PostgreSQL's write-ahead log (pgoutput), published as CloudEvents.

docs/cdc.md tells the whole story: declaring a source, the guarantees, the type mapping,
TOAST, truncate, REPLICA IDENTITY and WAL retention. The public names load lazily, so the
specs and checks load without the capture machinery.
"""

from importlib import import_module

_PUBLIC = {
    "CaptureOptions": "stream", "CaptureResult": "stream", "capture": "stream", "CdcError": "server", "SlotInfo": "server",
    "CdcSourceSpec": "spec", "SnapshotNeededError": "spec",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(f"connectors.sources.cdc.{_PUBLIC[name]}"), name)
    raise AttributeError(name)
