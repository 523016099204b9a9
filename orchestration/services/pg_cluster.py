"""A throwaway PostgreSQL cluster with `wal_level=logical`, for change data capture.

The machine's server runs `wal_level=replica`, which logical decoding refuses, and changing it
needs a restart of a server others use. This starts a private cluster instead: `initdb` into a
temporary folder and `pg_ctl start` on a free loopback port, both as the `postgres` system user
(through `runuser` when we are root: initdb refuses to run as root), trust authentication on
127.0.0.1 and a Unix socket inside the folder. `stop()` shuts it down and removes the folder.

    with running_cluster() as pg:
        pg.url            # postgresql://postgres@127.0.0.1:PORT/postgres
        pg.restart()      # a fast shutdown and start, same port and data

The binaries are found under /usr/lib/postgresql/<version>/bin (the newest version wins) or
from `pg_config --bindir`; `find_bin_dir()` returns None when there are none, and callers skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from connectors.errors import TerminalError

SERVER_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "fsync": "off",  # a throwaway cluster: durability against power loss is not needed
    "synchronous_commit": "on",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "wal_sender_timeout": "60s",
}


class ClusterError(TerminalError, RuntimeError):
    """The throwaway cluster could not be started (the reason is in the message)."""


def _version_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in path.parent.name.split("."))


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version_key(p), reverse=True)
    for d in candidates:
        if all((d / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return d
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            d = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            return None
        if all((d / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    """One throwaway cluster; `start()` it, `stop()` it (also removes its folder)."""

    bin_dir: Path
    port: int = field(default_factory=free_port)
    root: Path | None = None
    settings: dict[str, str] = field(default_factory=lambda: dict(SERVER_SETTINGS))

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _as_postgres(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)

    def start(self) -> PgCluster:
        """initdb when the folder holds no cluster yet (a given `root` keeps its data across
        stop(remove=False) and start), then pg_ctl start."""
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="flowsuite-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        if not (self.data_dir / "PG_VERSION").exists():
            r = self._as_postgres([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                                   "--auth=trust", "-E", "UTF8", "--no-sync"])
            if r.returncode != 0:
                raise ClusterError(f"initdb failed: {r.stderr.strip()[-400:]}")
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = " ".join([f"-p {self.port}", f"-k {self.root}", "-c listen_addresses=127.0.0.1",
                            *(f"-c {k}={v}" for k, v in self.settings.items())])
        r = self._as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.root / "log"),
                               "-w", "-t", "60", "-o", options, "start"])
        if r.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-600:] if (self.root / "log").exists() else ""
            raise ClusterError(f"pg_ctl start failed: {r.stderr.strip()[-300:]} {log}")

    def stop(self, *, remove: bool = True, mode: str = "fast") -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def restart(self, mode: str = "fast") -> None:
        """Stop (fast: connections are cut) and start again on the same port with the same data."""
        self.stop(remove=False, mode=mode)
        self._pg_ctl_start()


def reachable_by_postgres(path: Path) -> bool:
    """Whether the `postgres` system user can reach `path` (every parent traversable)."""
    if os.geteuid() != 0:
        return True
    r = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], capture_output=True, timeout=30)
    return r.returncode == 0


def kept_cluster_root(home: Path) -> Path:
    """A folder for a cluster whose data outlives one run: under `home` when the postgres user
    can reach it, else a folder in the system temp dir named after `home`."""
    home.mkdir(parents=True, exist_ok=True)
    if reachable_by_postgres(home):
        return home / "cdc-postgres"
    digest = hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"flowsuite-cdc-postgres-{digest}"


@contextlib.contextmanager
def running_cluster(bin_dir: Path | None = None) -> Iterator[PgCluster]:
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise ClusterError("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")
    cluster = PgCluster(bin_dir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main() -> None:  # pragma: no cover - a manual helper: python -m orchestration.services.pg_cluster
    import time

    with running_cluster() as pg:
        print(pg.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":  # pragma: no cover
    main()
