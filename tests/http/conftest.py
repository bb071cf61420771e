"""A real ``pgqueue serve`` in a subprocess, on a port it picks, against a test schema."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from pgqueue.store.queries import schema_ddl
from tests.conftest import Database

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.http.serve_app:queue"
OPERATOR_TOKEN = "operator-token-0123456789"
READ_TOKEN = "read-token-0123456789"
START_TIMEOUT = 30.0
_LISTENING = re.compile(r"Uvicorn running on http://([\d.]+):(\d+)")


class Server:
    """A running ``pgqueue serve`` subprocess and a client for it."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, base_url: str) -> None:
        self.process = process
        self.log_path = log_path
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url, timeout=30.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the exit status of a server already told to stop."""
        self.client.close()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not exit within {timeout}s:\n{self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit status."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not exit within {timeout}s:\n{self.log()}") from None


def start_server(
    db: Database,
    log_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    healthy: bool = True,
) -> Server:
    """Start ``pgqueue serve --port 0 …`` and wait until it listens and its /healthz answers."""
    log_path = log_dir / f"serve-{uuid.uuid4().hex[:8]}.log"
    # Only this test's settings: none of the runner's own PGQUEUE_* variables leak in.
    environment = {
        name: value
        for name, value in db.env().items()
        if not name.startswith("PGQUEUE_") or name in ("PGQUEUE_DSN", "PGQUEUE_SCHEMA")
    }
    environment.update(env or {})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue.cli", "serve", "--port", "0", *args],
            cwd=ROOT,
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    base_url = None
    # The server is another process: poll its log, then its health endpoint.
    while base_url is None:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            base_url = f"http://{match.group(1)}:{match.group(2)}"
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"pgqueue serve did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    server = Server(process, log_path, base_url)
    while healthy and server.client.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, f"/healthz never answered 200:\n{server.log()}"
        time.sleep(0.05)
    return server


@pytest.fixture(scope="module")
def module_db(server_dsn: str) -> Iterator[Database]:
    """A schema with pgqueue's tables shared by one test module's server."""
    db = Database(server_dsn, f"h_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(db.schema))
    yield db
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {db.schema} CASCADE")


@pytest.fixture(scope="module")
def server(module_db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``pgqueue serve --app`` without tokens (serve only; no workers)."""
    srv = start_server(module_db, tmp_path_factory.mktemp("serve"), "--app", APP)
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def secured(module_db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``pgqueue serve --app`` with an operator and a read token."""
    srv = start_server(
        module_db,
        tmp_path_factory.mktemp("secured"),
        "--app",
        APP,
        env={"PGQUEUE_API_TOKEN": OPERATOR_TOKEN, "PGQUEUE_READ_TOKEN": READ_TOKEN},
    )
    yield srv
    assert srv.stop() == 0, srv.log()


def count_rows(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM {schema}.tasks"))
