"""``pgqueue serve`` as a process: configuration errors, health, workers, signals, races."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import Database
from tests.http.conftest import APP, ROOT, Server, count_rows, start_server

pytestmark = pytest.mark.slow


def run_serve(db: Database, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``pgqueue serve`` expected to fail at start; its exit status and stderr."""
    environment = {k: v for k, v in db.env().items() if not k.startswith("PGQUEUE_HTTP")}
    environment["PGQUEUE_HTTP_PORT"] = "0"
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", "serve", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        timeout=30,
    )
    return done.returncode, done.stderr.decode()


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"PGQUEUE_HTTP_PORT": "http"}, (), "PGQUEUE_HTTP_PORT must be a number"),
        ({"PGQUEUE_HTTP_PORT": "70000"}, (), "PGQUEUE_HTTP_PORT must be 0..65535"),
        ({"PGQUEUE_API_TOKEN": "short"}, (), "PGQUEUE_API_TOKEN must be at least 8"),
        ({"PGQUEUE_MAX_BODY_BYTES": "10"}, (), "PGQUEUE_MAX_BODY_BYTES must be at least"),
        ({"PGQUEUE_SCHEMA": "Bad-Name"}, (), "PGQUEUE_SCHEMA"),
        ({"PGQUEUE_DSN": ""}, (), "PGQUEUE_DSN (or --dsn) is required"),
        ({}, ("--app", "no_such_module:queue"), "cannot load no_such_module:queue"),
        ({}, ("--workers", APP, "--app", "other:queue"), "name different queues"),
        ({"PGQUEUE_HTTP_RUN_WORKERS": "maybe"}, (), "must be true or false"),
    ],
)
def test_bad_configuration_fails_at_start_with_one_line(
    db: Database, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    status, stderr = run_serve(db, *args, env=env)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pgqueue serve: ") and message in lines[0], stderr


def test_port_in_use_fails_with_one_line(server: Server, module_db: Database) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    status, stderr = run_serve(module_db, "--app", APP, "--port", port)
    assert status == 2
    assert stderr.strip().splitlines()[-1].startswith("pgqueue serve: cannot listen on"), stderr


def test_healthz_is_503_when_the_database_is_unreachable(db: Database, tmp_path: Path) -> None:
    dead = Database("postgresql://postgres@127.0.0.1:1/none", db.schema)
    srv = start_server(dead, tmp_path, healthy=False)
    try:
        response = srv.client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
    finally:
        assert srv.stop() == 0


def test_thirty_two_concurrent_enqueues_of_one_key(server: Server, module_db: Database) -> None:
    barrier = threading.Barrier(32)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def push() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            barrier.wait()
            response = client.post("/enqueue", json={"kind": "email", "id": "race-key"})
        with lock:
            results.append(response)

    threads = [threading.Thread(target=push) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = Counter(r.status_code for r in results)
    assert statuses == {201: 1, 409: 31}
    (created,) = [r.json()["id"] for r in results if r.status_code == 201]
    assert {r.json()["task_id"] for r in results if r.status_code == 409} == {created}
    rows = module_db.fetch(
        "SELECT id FROM {schema}.tasks WHERE kind = 'email' AND external_key = 'race-key'"
    )
    assert rows == [(created,)]


def test_workers_run_in_process_and_drain_on_sigterm(db: Database, tmp_path: Path) -> None:
    srv = start_server(db, tmp_path, "--workers", APP)
    quick = srv.client.post("/enqueue", json={"kind": "slow", "payload": {"seconds": 0}})
    slow = srv.client.post("/enqueue", json={"kind": "slow", "payload": {"seconds": 2}})
    assert quick.status_code == slow.status_code == 201
    slow_id = slow.json()["id"]
    # The server is another process: poll until its worker has claimed the slow task.
    deadline = time.monotonic() + 30
    while srv.client.get(f"/tasks/{slow_id}").json()["status"] != "processing":
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    assert srv.stop(signal.SIGTERM) == 0, srv.log()
    statuses = dict(db.fetch("SELECT id, status::text FROM {schema}.tasks"))
    assert statuses[slow_id] == "succeeded", srv.log()
    assert statuses[quick.json()["id"]] == "succeeded"


def test_sigint_also_stops_cleanly(db: Database, tmp_path: Path) -> None:
    srv = start_server(db, tmp_path, "--app", APP)
    assert srv.stop(signal.SIGINT) == 0, srv.log()


def test_second_sigterm_does_not_cut_the_worker_drain(db: Database, tmp_path: Path) -> None:
    srv = start_server(db, tmp_path, "--workers", APP)
    slow = srv.client.post("/enqueue", json={"kind": "slow", "payload": {"seconds": 3}})
    slow_id = slow.json()["id"]
    deadline = time.monotonic() + 30
    while srv.client.get(f"/tasks/{slow_id}").json()["status"] != "processing":
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    srv.process.send_signal(signal.SIGTERM)
    # The server is another process: wait for its log to say the drain began.
    while "draining workers" not in srv.log():
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    srv.process.send_signal(signal.SIGTERM)
    assert srv.wait() == 0, srv.log()
    assert "already stopping" in srv.log()
    status = db.scalar("SELECT status::text FROM {schema}.tasks WHERE id = %s", (slow_id,))
    assert status == "succeeded"


def test_sigterm_during_a_burst_answers_or_refuses_every_request(
    db: Database, tmp_path: Path
) -> None:
    srv = start_server(db, tmp_path, "--workers", APP, env={"PGQUEUE_HTTP_DRAIN_SECONDS": "10"})
    total, clients = 200, 16
    answered = threading.Semaphore(0)
    lock = threading.Lock()
    outcomes: list[tuple[str, object]] = []
    next_index = iter(range(total))

    def client_loop() -> None:
        with httpx.Client(base_url=srv.base_url, timeout=30) as client:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                body = {"kind": "slow", "payload": {"seconds": 0.05}, "id": f"burst-{index}"}
                try:
                    response = client.post("/enqueue", json=body)
                except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    # No response at all (connection refused or closed before any reply).
                    # A response cut off mid-body would raise with this message:
                    assert "complete message body" not in str(exc), exc
                    outcome: tuple[str, object] = ("refused", type(exc).__name__)
                else:
                    outcome = (str(response.status_code), response.json())
                with lock:
                    outcomes.append(outcome)
                answered.release()

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for _ in range(50):
        answered.acquire()
    srv.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    status = srv.wait(timeout=60)
    assert status == 0, srv.log()
    assert len(outcomes) == total
    kinds = Counter(kind for kind, _ in outcomes)
    assert set(kinds) <= {"201", "refused"}, kinds
    assert kinds["201"] >= 50
    created = [body["id"] for kind, body in outcomes if kind == "201"]  # type: ignore[index]
    rows = {row[0] for row in db.fetch("SELECT id FROM {schema}.tasks")}
    assert set(created) <= rows
    assert len(rows) == len(created), "a task was written without its 201 reaching the client"
    assert count_rows(db) == len(created)


def test_the_overview_counts_the_workers_of_a_blocking_app_queue(
    db: Database, tmp_path: Path
) -> None:
    """``--workers`` with a blocking ``Queue``: the service serves through its own AsyncQueue,
    and the overview said "not run here" although the app's workers ran in the process."""
    srv = start_server(db, tmp_path, "--workers", "tests.http.serve_sync_app:queue")
    try:
        task = srv.client.post("/enqueue", json={"kind": "slow", "payload": {"seconds": 2}})
        assert task.status_code == 201, task.text
        task_id = task.json()["id"]
        deadline = time.monotonic() + 30
        # The server is another process: poll until its worker has claimed the task.
        while srv.client.get(f"/tasks/{task_id}").json()["status"] != "processing":
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.05)
        overview = srv.client.get("/ui/overview")
        assert overview.status_code == 200
        assert "not run here" not in overview.text
        assert '<dd class="workers">1 / 3</dd>' in overview.text
    finally:
        assert srv.stop(signal.SIGTERM) == 0, srv.log()
