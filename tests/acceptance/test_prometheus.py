"""A real Prometheus server scrapes a real ``pgqueue worker --metrics-port`` process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgqueue import KindOptions, Queue, Task
from tests.acceptance.test_worker_processes import stop
from tests.conftest import Database

pytestmark = pytest.mark.prometheus
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll another process (an HTTP endpoint) until ``check`` returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not up yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "the prometheus binary is missing: apt-get install prometheus (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def start_prometheus(
    binary: str, target_port: int, workdir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: pgqueue\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return process, port


@pytest.fixture
def worker_and_prometheus(
    db: Database, tmp_path: Path, prometheus_binary: str
) -> Iterator[tuple[int, int]]:
    metrics_port = free_port()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgqueue.cli",
            "worker",
            "tests.acceptance.worker_app:queue",
            "--metrics-port",
            str(metrics_port),
        ],
        cwd=ROOT,
        env={**db.env(), "RUN_LOG_DIR": str(tmp_path), "MODE": "count"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    prometheus, prometheus_port = start_prometheus(prometheus_binary, metrics_port, tmp_path)
    try:
        eventually(
            lambda: b"pgqueue_tasks" in get(f"http://127.0.0.1:{metrics_port}/metrics"),
            30,
            "the worker's metrics endpoint",
        )
        eventually(
            lambda: get(f"http://127.0.0.1:{prometheus_port}/-/ready"), 30, "Prometheus ready"
        )
        yield metrics_port, prometheus_port
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        output = stop(worker)
        assert worker.returncode == 0, output


def query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    answer = json.loads(get(url))
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def scalar(port: int, promql: str) -> float | None:
    result = query(port, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_counts_and_rates(
    db: Database, worker_and_prometheus: tuple[int, int]
) -> None:
    _, port = worker_and_prometheus
    # Prometheus holds a sample from before the work, so the rate sees the increase.
    eventually(
        lambda: query(port, 'pgqueue_attempts_total{kind="alpha",outcome="succeeded"}'),
        30,
        "a first scrape of the worker",
    )
    with Queue(db.dsn, schema=db.schema) as producer:
        producer.declare_kind("alpha", KindOptions(attempt_timeout=30))
        for _ in range(5):
            producer.push_tasks([Task("alpha", i) for i in range(100)])
    eventually(
        lambda: db.scalar("SELECT count(*) FROM {schema}.tasks WHERE status = 'succeeded'") == 500,
        60,
        "the worker to drain the tasks",
    )
    eventually(
        lambda: scalar(port, 'pgqueue_tasks{kind="alpha",status="succeeded"}') == 500,
        30,
        "Prometheus to see 500 succeeded tasks",
    )
    assert scalar(port, 'pgqueue_tasks{kind="alpha",status="new"}') == 0
    assert scalar(port, 'pgqueue_tasks{kind="alpha",status="due"}') == 0
    assert scalar(port, 'pgqueue_oldest_due_seconds{kind="alpha"}') == 0
    assert scalar(port, 'pgqueue_workers{kind="alpha"}') == 10
    rate = eventually(
        lambda: scalar(
            port, 'sum(rate(pgqueue_attempts_total{kind="alpha",outcome="succeeded"}[1m]))'
        ),
        30,
        "a non-zero rate of succeeded attempts",
    )
    assert rate > 0
    assert scalar(port, 'max(pgqueue_attempts_total{kind="alpha",outcome="succeeded"})') == 500
