"""The Dagster face of the error family: one mapping, retries only for transient errors."""

from connectors.flows import InvalidRecordsError
from connectors.kafka import HistoryLostError, KafkaReadError
from orchestration.failures import failure


def test_transient_error_may_be_retried_and_keeps_its_message():
    f = failure(KafkaReadError("clicks: broker at 127.0.0.1:1 did not answer"))
    assert f.description == "clicks: broker at 127.0.0.1:1 did not answer"
    assert f.allow_retries is True
    assert f.metadata["flowsuite/error"].value == "KafkaReadError"


def test_terminal_errors_are_not_retried():
    lost = HistoryLostError("clicks", 0, 5, 10, 20)
    assert failure(lost).allow_retries is False  # a KafkaReadError subclass, terminal all the same
    assert failure(lost).description == str(lost)
    assert failure(InvalidRecordsError("clicks: 3 invalid")).allow_retries is False


def test_an_unset_variable_of_a_source_url_is_not_retried():
    # A configuration error: every retry would meet the same environment.
    from connectors.sources import UnsetVariableError, expand_vars

    try:
        expand_vars("postgresql://u:${SHOP_PG_PASSWORD}@h/db", {}, "the connection URL of source shop_orders")
    except UnsetVariableError as exc:
        f = failure(exc)
    else:
        raise AssertionError("an unset variable without a default must raise")
    assert f.allow_retries is False
    assert f.description == "environment variable SHOP_PG_PASSWORD is not set (needed by the connection URL of source shop_orders)"
    assert f.metadata["flowsuite/error"].value == "UnsetVariableError"


def test_records_unaccounted_is_the_engines_check_and_terminal():
    # consumed = landed + quarantined is checked by the engine before the commit; the landing
    # asset has no second copy: the engine's error is the step's failure, never retried.
    from connectors.flows import RecordsUnaccountedError

    f = failure(RecordsUnaccountedError("clicks[0]: consumed 3 != landed 1 + quarantined 1"))
    assert f.allow_retries is False and f.metadata["flowsuite/error"].value == "RecordsUnaccountedError"
