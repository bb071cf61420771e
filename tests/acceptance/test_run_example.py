"""``make run``'s example on a fresh embedded PostgreSQL: the example speaks first, the server
stays quiet, and ``pgqueue worker example.app:queue`` works without ``PGQUEUE_DSN``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def example_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGQUEUE_DSN", "PGQUEUE_SCHEMA")}
    env["EXAMPLE_DATA_DIR"] = str(data_dir)
    return env


class Lines:
    """Collects a subprocess's stderr lines; lets a test wait for one that matches."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.process = process
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> int:
        """Index of the first line containing ``text``."""
        with self.cond:

            def found() -> bool:
                return any(text in line for line in self.lines) or self.process.poll() is not None

            assert self.cond.wait_for(found, timeout), f"no {text!r} in: {self.lines}"
            for index, line in enumerate(self.lines):
                if text in line:
                    return index
            raise AssertionError(f"process ended without {text!r}: {self.lines}")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory the embedded server's own user can reach (run as root, pgserver
    switches to a ``pgserver`` user, which pytest's private tmp_path would lock out)."""
    with tempfile.TemporaryDirectory(prefix="pgqueue-example-") as path:
        yield Path(path) / "pgdata"


@pytest.fixture
def run() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_the_example_speaks_first_and_the_server_stays_quiet(
    data_dir: Path, run: list[subprocess.Popen[str]]
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "example"],
        cwd=ROOT, env=example_env(data_dir), stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines = Lines(process)
    run.append(process)
    placed = lines.wait_for("order 1 placed", timeout=60)
    before = lines.lines[:placed]
    assert "the example order service" in before[0]
    assert all(" example: " in line for line in before), before  # no server output at all
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, lines.lines[-6:]
    assert any("stopping: draining" in line for line in lines.lines)


def test_pgqueue_worker_runs_the_example_without_pgqueue_dsn(
    data_dir: Path, run: list[subprocess.Popen[str]]
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "worker", "example.app:queue"],
        cwd=ROOT, env=example_env(data_dir), stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines = Lines(process)
    run.append(process)
    lines.wait_for("worker started (kinds: send-receipt)", timeout=60)
    assert any("starting the embedded PostgreSQL" in line for line in lines.lines)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, lines.lines[-6:]
