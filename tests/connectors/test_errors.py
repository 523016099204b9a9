"""Every error the engine raises on purpose is one of the family (connectors/errors.py)."""

import importlib
import inspect
import pkgutil

import connectors
from connectors.errors import FlowsuiteError, TerminalError, TransientError, is_transient

# Signals between threads of one component, never seen by a caller: not errors a person acts on.
CONTROL_FLOW = {"Stopped", "StageCancelledError", "_TooLarge", "Detached", "_BelowBroker"}  # signals inside one module, never raised to a user


def _engine_exceptions() -> dict[str, type]:
    found = {}
    for info in pkgutil.walk_packages(connectors.__path__, "connectors."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_engine_exception_is_in_the_family():
    found = _engine_exceptions()
    assert len(found) > 20  # the walk saw the engine
    outside = sorted(q for q, c in found.items()
                     if not issubclass(c, FlowsuiteError) and q.rpartition(".")[2] not in CONTROL_FLOW)
    assert outside == [], f"exception classes outside FlowsuiteError: {outside}"


def test_kinds_follow_what_a_retry_would_do():
    from connectors.kafka.reader import HistoryLostError, KafkaReadError
    from connectors.metastore.db import SchemaLockTimeoutError
    from connectors.warehouse.sink import ConcurrentSyncError, WarehouseSchemaError

    assert is_transient(KafkaReadError("broker away"))
    assert not HistoryLostError.transient  # a KafkaReadError, but the history is gone for good
    assert not is_transient(WarehouseSchemaError("column missing"))
    assert is_transient(ConcurrentSyncError("another sync won"))
    assert not is_transient(ValueError("not ours"))
    assert issubclass(KafkaReadError, RuntimeError)  # `except RuntimeError` callers keep working
    assert is_transient(SchemaLockTimeoutError("another process changes the tables"))
    assert issubclass(SchemaLockTimeoutError, TimeoutError)  # still the built-in it was raised as
    assert not issubclass(TerminalError, TransientError)
    from connectors.gateway.worker import DeadLetterNotAcknowledged

    assert is_transient(DeadLetterNotAcknowledged("the broker did not acknowledge the dead letter"))
