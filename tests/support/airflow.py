"""Running the real Apache Airflow of `.venv-airflow` from the main test suite.

Airflow 3 does not fit the project's pins, so it lives in an environment of its own
(`make airflow-env`); the tests drive it through subprocesses: `airflow dags test` on the
example DAGs in examples/airflow, with AIRFLOW_HOME in a temporary folder and a SQLite
metadata database migrated once per session and copied for each test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import wait_while_running

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_VENV = ROOT / ".venv-airflow"
AIRFLOW = AIRFLOW_VENV / "bin" / "airflow"
AIRFLOW_PYTHON = AIRFLOW_VENV / "bin" / "python"
DAGS = ROOT / "examples" / "airflow"


def missing_reason() -> str | None:
    if not (AIRFLOW_VENV / ".installed").exists():
        return f"{AIRFLOW_VENV} is missing or unfinished: build it with `make airflow-env` (make test does)"
    return None


def airflow_env(home: Path, flowsuite: dict[str, str]) -> dict[str, str]:
    """The environment of one Airflow: its home and database, the example DAGs, flowsuite's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FLOWSUITE_", "VIRTUAL_ENV"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PATH": f"{AIRFLOW_VENV / 'bin'}:{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        **flowsuite,
    })
    return env


def migrate(home: Path) -> float:
    """`airflow db migrate` into `home`; returns how long it took."""
    home.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.run([str(AIRFLOW), "db", "migrate"], env=airflow_env(home, {}), capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"airflow db migrate failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return time.monotonic() - started


def fresh_home(template: Path, home: Path) -> Path:
    """An Airflow home whose database is a copy of the session's migrated one."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(template / "airflow.db", home / "airflow.db")
    return home


@dataclass
class DagRun:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"airflow dags test did not finish in {timeout}s:\n{self.output()[-4000:]}") from None

    def wait_for(self, text: str, timeout: float) -> None:
        """Until `text` is in the output of `airflow dags test`; fails at once if it ends first."""
        wait_while_running(self.proc, lambda: text in self.output(), timeout,
                           f"{text!r} in the output of airflow dags test", self.log, interval=0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def dags_test(env: dict[str, str], dag_id: str, logical_date: str, log: Path, *args: str) -> DagRun:
    """Start `airflow dags test DAG DATE` in its own process group, output to `log`."""
    out = open(log, "wb")  # the child writes it; closed with the process
    proc = subprocess.Popen([str(AIRFLOW), "dags", "test", dag_id, logical_date, *args], env=env, cwd=str(ROOT),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    return DagRun(proc, log)
