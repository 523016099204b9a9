"""The CLI face of the error family: one mapping (orchestration/cli/root.py `cli_error`) turns an
engine error into one line and an exit code — 1 when terminal, 75 (EX_TEMPFAIL) when a retry may
succeed — and adds the command a user runs about it: the engine's own messages name no flag."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import KafkaException

from connectors.engine import UnknownProductError
from connectors.flows import OffsetsOfAnotherTopicError, RecordsUnaccountedError
from connectors.kafka import HistoryLostError, KafkaReadError
from connectors.metastore import ClaimHeldError
from orchestration.cli import main
from orchestration.cli.root import EXIT_ERROR, EXIT_TRANSIENT, cli_error

REPO = Path(__file__).resolve().parents[2]


def test_terminal_engine_errors_exit_1_with_their_message_on_one_line():
    err = cli_error(RecordsUnaccountedError("clicks[0]: consumed 3 != landed 1 + quarantined 1"))
    assert err is not None and err.exit_code == EXIT_ERROR == 1
    assert err.format_message() == "clicks[0]: consumed 3 != landed 1 + quarantined 1"
    spread = cli_error(UnknownProductError("no data product 'x'\n   in /p (known: clicks)"))
    assert spread.format_message() == "no data product 'x' in /p (known: clicks)"  # whitespace folded


def test_transient_engine_errors_exit_75_so_a_scheduler_can_retry():
    err = cli_error(KafkaReadError("clicks: the broker at 127.0.0.1:1 did not answer"))
    assert err.exit_code == EXIT_TRANSIENT == 75
    assert cli_error(HistoryLostError("clicks", 0, 50, 0, 10)).exit_code == EXIT_ERROR  # terminal subclass
    held = ClaimHeldError("clicks", "partition/0/0", "run-1", 12.0)  # another live run: terminal
    assert cli_error(held).exit_code == EXIT_ERROR


def test_the_cli_adds_the_command_to_run_and_the_engine_does_not():
    lost = HistoryLostError("clicks", 2, 50, 0, 10)
    assert "--" not in str(lost)
    line = cli_error(lost).format_message()
    assert line.startswith(" ".join(str(lost).split()))
    assert "`flowsuite offsets reset <product> --partition 2 --to end`" in line

    moved = OffsetsOfAnotherTopicError("clicks", "clicks.v2", "clicks.v1", [0, 1])
    assert "--" not in str(moved) and "flowsuite" not in str(moved)
    assert "flowsuite offsets reset clicks --partition N --to start" in cli_error(moved).format_message()


def test_a_cdc_source_that_needs_a_new_snapshot_is_terminal_and_the_cli_names_the_reset():
    from connectors.sources.cdc import SnapshotNeededError

    gone = SnapshotNeededError("orders", "orders: replication slot 'o' is gone; reset the source's capture")
    assert not gone.transient and "flowsuite" not in str(gone)
    err = cli_error(gone)
    assert err.exit_code == EXIT_ERROR and "`flowsuite cdc reset orders --yes`" in err.format_message()


def test_no_engine_error_message_names_a_command_or_a_flag():
    """The strings raised in connectors/ speak of products, fields and states, never of
    `flowsuite <command>` or `--flags`: the CLI (cli_hint), Dagster and Airflow add their own."""
    import ast
    import re

    wrong = []
    for path in sorted((REPO / "connectors").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            for const in ast.walk(node.exc):
                if isinstance(const, ast.Constant) and isinstance(const.value, str) and (
                        re.search(r"`flowsuite |flowsuite (?:land|read|offsets|cdc|flow|lake|warehouse|table|quarantine|broker)\b", const.value) or re.search(r"(^|\s)--[a-z]", const.value)):
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno}: {const.value!r}")
    assert wrong == [], "\n".join(wrong)


def test_client_library_errors_are_one_line_and_anything_else_is_a_bug():
    assert cli_error(KafkaException("broker down")).exit_code == EXIT_ERROR
    assert cli_error(OSError("disk full")).exit_code == EXIT_ERROR
    assert cli_error(KeyError("a bug")) is None  # a traceback, not a line that hides it


def test_an_engine_error_from_a_command_is_the_root_groups_one_line(products, capsys):
    # The engine raises UnknownProductError (no CliError in between): the root group prints it.
    assert main(["read", "nope", "--hour", "2026-01-01-00"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"flowsuite: error: no data product 'nope' in {products} (known: clicks)"


def test_the_demo_producer_and_an_ingest_run_are_in_the_family():
    # No hand list: ProduceError and IngestError are FlowsuiteErrors, kinds from what failed.
    from confluent_kafka import KafkaError

    from examples.demo_data import ProduceError
    from orchestration.ingest import IngestError

    timed_out = ProduceError("3 of 10 records to topic 'clicks' were not delivered", [KafkaError(KafkaError._MSG_TIMED_OUT)])
    assert cli_error(timed_out).exit_code == EXIT_TRANSIENT  # the broker may take them later
    assert cli_error(ProduceError("2 of 2 records still queued after flush")).exit_code == EXIT_TRANSIENT
    too_large = ProduceError("1 of 10 records was not delivered", [KafkaError(KafkaError._MSG_TIMED_OUT),
                                                                    KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)])
    assert cli_error(too_large).exit_code == EXIT_ERROR  # the broker refuses that request again
    assert cli_error(IngestError("clicks_ingest run r failed: a blocked hour")).exit_code == EXIT_ERROR
    assert cli_error(IngestError("no Kafka broker answers at 127.0.0.1:1", transient=True)).exit_code == EXIT_TRANSIENT


def test_a_landing_run_that_cannot_reach_the_broker_exits_75(flowsuite_home, monkeypatch, capsys):
    # The run's step failed with a transient engine error (recorded by orchestration/failures.py):
    # `flowsuite land` says so with EX_TEMPFAIL, so a wrapper may retry it.
    monkeypatch.setenv("FLOWSUITE_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(["land", "clicks"]) == EXIT_TRANSIENT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("flowsuite: error: clicks_ingest run ") and "cannot reach the Kafka broker for topic 'clicks'" in err
