"""The example Django project (``example/django_app``) on a database of its own: migrated
with ``manage.py migrate``, set up in the test process to enqueue and read results, and
worked by ``manage.py pgqueue_worker`` processes, as a user runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PROJECT = Path(__file__).resolve().parents[2] / "example" / "django_app"
SCHEMA = "pgqueue"


class Log:
    """A subprocess's output, line by line; a test waits for the line it expects."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        compiled = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next((m for line in self.lines if (m := compiled.search(line))), None)

        with self.cond:
            self.cond.wait_for(lambda: found() is not None or not self.reader.is_alive(), timeout)
            match = found()
        assert match is not None, f"no {pattern!r} in:\n{self.text()}"
        return match

    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)


@dataclass
class Project:
    """The example project on its database: run its manage.py, read the database."""

    dsn: str
    migrate_output: str = ""

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PGQUEUE_DSN": self.dsn,
            "PGQUEUE_SCHEMA": SCHEMA,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "PYTHONWARNINGS": "ignore",
        }

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=180,
        )

    def fetch(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Rows as another connection sees them (committed data only)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def task_count(self, task_id: str | int) -> int:
        return len(self.fetch(f"SELECT 1 FROM {SCHEMA}.tasks WHERE id = %s", [int(task_id)]))


class Worker:
    """A running ``manage.py pgqueue_worker``."""

    def __init__(self, project: Project, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "pgqueue_worker", *args],
            cwd=PROJECT,
            env=project.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log = Log(self.process)
        self.log.wait_for(r"worker started")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.reader.join(timeout=10)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture(scope="session")
def project(server_dsn: str) -> Iterator[Project]:
    """A database of the project's own, migrated by ``manage.py migrate``; Django is set up
    in this process on it."""
    name = f"django_{uuid.uuid4().hex[:12]}"
    _create_database(server_dsn, name)
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = name
    found = Project(make_conninfo(**params))
    migrated = found.manage("migrate", "--no-input")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    found.migrate_output = migrated.stdout
    _setup_django(found)
    try:
        yield found
    finally:
        from django.db import connections

        from pgqueue.adapters.django.compat import task_backends

        task_backends["default"].queue.close()
        connections.close_all()
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _create_database(server_dsn: str, name: str) -> None:
    """CREATE DATABASE, again while another session's CREATE DATABASE holds template1 (two
    test processes on one server)."""
    for attempt in range(50):
        try:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            return
        except psycopg.errors.ObjectInUse:
            if attempt == 49:
                raise
            time.sleep(0.1)


def _setup_django(project: Project) -> None:
    """Django in this process, on the project's settings (read once, at setup)."""
    import django

    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    saved = {k: os.environ.get(k) for k in ("PGQUEUE_DSN", "PGQUEUE_SCHEMA")}
    os.environ.update(PGQUEUE_DSN=project.dsn, PGQUEUE_SCHEMA=SCHEMA)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    try:
        django.setup()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def worker(project: Project) -> Iterator[Worker]:
    """One worker of the ``default`` queue for the session."""
    running = Worker(project, "--queue", "default")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def backend(project: Project) -> Any:
    from pgqueue.adapters.django.compat import task_backends

    return task_backends["default"]
