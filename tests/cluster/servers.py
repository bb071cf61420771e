"""Throwaway PostgreSQL servers for the cluster suite: initdb, start, stop, streaming replicas.

The binaries are the ones in the ``pgserver`` wheel (a test dependency). Each server binds
127.0.0.1 on a free port, keeps its socket and log in its data directory, and is deleted with
the suite's temporary directory. PostgreSQL refuses to run as root: as root the servers run as
the ``postgres`` system user when there is one, else as ``pgserver`` (the user the wheel itself
creates in that case).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
from pathlib import Path

import psycopg


def bin_dir() -> Path:
    """The PostgreSQL binaries shipped in the ``pgserver`` wheel (found without importing it:
    its import warns about the environment)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the cluster suite needs the pgserver wheel (pip install -e .[test])")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "initdb").exists() or not (path / "pg_basebackup").exists():
        raise RuntimeError(f"initdb/pg_basebackup not found in {path}")
    return path


def system_user() -> str | None:
    """The user servers run as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "pgserver"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "pgserver"], check=True)
    return "pgserver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server in ``root / name``."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.data = root / name
        self.port = free_port()
        self.bin = bin_dir()
        self.user = system_user()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data / "server.log"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def _prepare_dir(self) -> None:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            shutil.chown(self.data.parent, self.user)

    def _configure(self, *lines: str) -> None:
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.data}'",
            "fsync = off",  # throwaway servers: durability is not what this suite tests
            "full_page_writes = off",
            "max_connections = 100",
            "shared_buffers = 32MB",
            *lines,
        ]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n" + "\n".join(settings) + "\n")

    def init_primary(self, *config: str) -> PostgresServer:
        """initdb a primary that accepts replication connections over loopback (trust)."""
        self._prepare_dir()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        self._configure("wal_level = replica", "max_wal_senders = 5", *config)
        return self

    def init_replica_of(self, primary: PostgresServer, *config: str) -> PostgresServer:
        """``pg_basebackup -R`` of ``primary``: a hot standby streaming from it."""
        self._prepare_dir()
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                  "-D", str(self.data), "-R", "-X", "stream", "--no-sync")  # fmt: skip
        self._configure("hot_standby = on", *config)
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60",
                  "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def promote(self) -> None:
        """Promote a standby to primary and wait until it accepts writes."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def ensure_stopped(self) -> None:
        if self.is_running():
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")

    def execute(self, sql: str, params: object = None) -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(sql, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []
