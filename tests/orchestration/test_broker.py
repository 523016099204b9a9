"""The embedded broker launcher and the CLI around it, against the real Tansu binary."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil
import pytest
import yaml

from connectors.settings import REPO_ROOT
from orchestration.cli import main
from orchestration.services.broker import (
    BrokerError,
    broker_answers,
    broker_status,
    free_port,
    port_in_use,
    start_broker,
    stop_broker,
)


@pytest.fixture
def port() -> int:
    return free_port()


def test_start_status_stop_is_idempotent(flowsuite_home, port):
    assert not broker_status(flowsuite_home).running
    started = start_broker(flowsuite_home, port=port)
    try:
        assert started.running and started.port == port
        assert broker_answers(f"127.0.0.1:{port}")
        assert (flowsuite_home / "broker" / "broker.pid").read_text().strip() == str(started.pid)
        assert (flowsuite_home / "broker" / "broker.log").exists()

        again = start_broker(flowsuite_home, port=port)
        assert again.pid == started.pid
        assert again.message == f"broker already running on port {port} (pid {started.pid})"
        assert broker_status(flowsuite_home).pid == started.pid
    finally:
        stopped = stop_broker(flowsuite_home)
    assert not stopped.running and "stopped" in stopped.message
    assert (
        not psutil.pid_exists(started.pid)
        or psutil.Process(started.pid).status() == psutil.STATUS_ZOMBIE
    )
    assert not port_in_use(port)
    assert not (flowsuite_home / "broker" / "broker.pid").exists()
    assert stop_broker(flowsuite_home).message.startswith("broker already stopped")


def test_port_taken_by_something_else_is_a_clear_error(flowsuite_home, port):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(BrokerError, match=f"port {port} is already in use"):
            start_broker(flowsuite_home, port=port)
    assert not broker_status(flowsuite_home).running


def test_broker_that_exits_early_reports_its_log(flowsuite_home, port):
    with pytest.raises(
        BrokerError, match=r"did not start: it exited with code \d+; log .*UnsupportedStorageUrl"
    ):
        start_broker(flowsuite_home, port=port, storage="bogus://nowhere/")
    assert not (flowsuite_home / "broker" / "broker.pid").exists()


@pytest.mark.parametrize("whose", ["dead", "not_tansu"])
def test_stale_pid_file_is_cleaned_up(flowsuite_home, whose):
    if whose == "dead":
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        pid = child.pid
    else:
        pid = os.getpid()  # alive, but not a broker: must never be signalled
    pid_file = flowsuite_home / "broker" / "broker.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{pid}\n")
    status = broker_status(flowsuite_home)
    assert not status.running and "stale pid file" in status.message
    assert not pid_file.exists()
    assert stop_broker(flowsuite_home).message.startswith("broker already stopped")


# --- CLI -----------------------------------------------------------------------------------


def test_cli_broker_lifecycle(flowsuite_home, port, capsys):
    try:
        assert main(["broker", "start", "--port", str(port)]) == 0
        assert f"broker started on port {port}" in capsys.readouterr().out
        assert main(["broker", "start", "--port", str(port)]) == 0
        assert f"already running on port {port}" in capsys.readouterr().out
        assert main(["broker", "status"]) == 0
        assert f"running on port {port}" in capsys.readouterr().out
    finally:
        assert main(["broker", "stop"]) == 0
    assert "broker stopped" in capsys.readouterr().out
    assert main(["broker", "status"]) == 3
    assert main(["broker", "stop"]) == 0
    assert "already stopped" in capsys.readouterr().out


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_port_taken_is_one_line_without_traceback(flowsuite_home, port):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = run_cli("broker", "start", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"flowsuite: error: port {port} is already in use by another process; "
        "stop it or choose another port with --port"
    ]


def test_cli_validate_shipped_products(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK clicks: topic clicks")


def test_cli_validate_reports_every_problem(tmp_path):
    clicks = yaml.safe_load((REPO_ROOT / "dataproducts" / "clicks.yaml").read_text())
    (tmp_path / "clicks.yaml").write_text(yaml.safe_dump(clicks | {"owner": "nobody"}))
    (tmp_path / "views.yaml").write_text("name: views\ntopic: [unclosed\n")
    result = run_cli("validate", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"{tmp_path / 'clicks.yaml'} at owner: owner 'nobody' must be")
    assert lines[1].startswith(f"{tmp_path / 'views.yaml'} at line 3, column 1: is not valid YAML")
    assert lines[-1] == f"2 problem(s) in {tmp_path}"
    assert result.stdout == ""


def test_cli_produce_demo_without_broker_fails_cleanly():
    result = run_cli(
        "produce-demo",
        "--events",
        "10",
        env={"FLOWSUITE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("flowsuite: error: no Kafka broker answers at 127.0.0.1:")
    assert "Traceback" not in result.stderr
