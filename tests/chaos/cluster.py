"""A PostgreSQL cluster (and a PgBouncer) owned by a test: initdb in a temp dir, a free loopback
port, started, restarted and stopped by the test itself.

The binaries come from the ``pgserver`` wheel (a test dependency), else from Debian's
``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root: as root the cluster runs as the
``postgres`` system user (created when missing, as the ``pgserver`` wheel does).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.proxy import free_port


def postgres_bin() -> Path:
    spec = importlib.util.find_spec("pgserver")  # located, not imported (it warns on import)
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "pginstall" / "bin"
        if (candidate / "pg_ctl").exists():
            return candidate
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    raise RuntimeError("no PostgreSQL binaries: install pgqueue[test] (pgserver) or postgresql")


def _system_user() -> pwd.struct_passwd | None:
    """The user to run servers as: None when not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "-r", "-s", "/bin/sh", "postgres"], check=True)
        return pwd.getpwnam("postgres")


def _open_prefixes(path: Path) -> None:
    """Let another user traverse every directory above ``path`` (and read ``path``)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        parent.chmod(mode | 0o055)


class Cluster:
    """One PostgreSQL server on 127.0.0.1:<free port>, its data in ``root``."""

    def __init__(self, root: Path) -> None:
        self.bin = postgres_bin()
        self.user = _system_user()
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.log = root / "server.log"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.user is not None:
            _open_prefixes(self.bin)
            _open_prefixes(root)
            for path in (root, self.socket_dir):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 120\n"
                "fsync = off\n"  # process crashes only: the OS keeps what was written
                "synchronous_commit = on\n"
                "shared_buffers = 32MB\n"
            )
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return subprocess.run(
            [str(self.bin / tool), *args],
            check=check,
            capture_output=True,
            text=True,
            cwd=self.root,
            **kwargs,
        )

    def _ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", *args)

    def start(self) -> None:
        self._ctl("start")

    def restart(self, mode: str) -> float:
        """``pg_ctl restart -m mode``; returns the seconds it took."""
        began = time.monotonic()
        self._ctl("restart", "-m", mode)
        return time.monotonic() - began

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)

    def database(self, name: str) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of a :class:`Cluster`."""

    def __init__(self, cluster: Cluster, database: str, root: Path) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        ini = root / "pgbouncer.ini"
        users = root / "users.txt"
        users.write_text('"postgres" ""\n')
        ini.write_text(
            "[databases]\n"
            f"{database} = host=127.0.0.1 port={cluster.port} dbname={database}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {root}\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 10\n"
            "max_client_conn = 200\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {root / 'pgbouncer.log'}\n"
        )
        kwargs: dict[str, Any] = {}
        user = cluster.user
        if user is not None:
            _open_prefixes(root)
            for path in (root, ini, users):
                os.chown(path, user.pw_uid, user.pw_gid)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        self.process = subprocess.Popen(
            [binary, str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kwargs,
        )
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
