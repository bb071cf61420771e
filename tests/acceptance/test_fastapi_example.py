"""``uvicorn example.fastapi_app.main:app`` as a user runs it: the app starts with its
workers, a request pushes in its own transaction, SIGTERM drains with nothing lost."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Database
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
READ_TOKEN = "read-token-0123456789"
OPERATOR_TOKEN = "operator-token-0123456789"
_LISTENING = re.compile(r"Uvicorn running on (http://[\d.]+:\d+)")


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

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
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


@pytest.fixture
def uvicorn(db: Database) -> Iterator[tuple[subprocess.Popen[str], Log]]:
    env = {k: v for k, v in db.env().items() if not k.startswith("PGQUEUE_HTTP")}
    env.update(
        EXAMPLE_APP_SCHEMA=db.schema,
        EXAMPLE_MAIL_SECONDS="1.0",
        PGQUEUE_API_TOKEN=OPERATOR_TOKEN,
        PGQUEUE_READ_TOKEN=READ_TOKEN,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "example.fastapi_app.main:app", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, Log(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_the_example_pushes_in_its_transaction_and_drains_on_sigterm(
    uvicorn: tuple[subprocess.Popen[str], Log], db: Database
) -> None:
    process, log = uvicorn
    base_url = log.wait_for(_LISTENING.pattern).group(1)
    log.wait_for("Application startup complete")
    assert "pgqueue workers started (kinds: send-welcome)" in log.text()
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        users = []
        for n in range(6):
            response = client.post("/signups", json={"name": f"u{n}", "email": f"u{n}@x.org"})
            assert response.status_code == 201, response.text
            users.append(response.json())
        # An unknown inviter fails the request's transaction: no user, no mail task.
        refused = client.post(
            "/signups", json={"name": "z", "email": "z@x.org", "invited_by": 10**9}
        )
        assert refused.status_code == 404
        first = users[0]["welcome_task"]

        # The server is another process: poll its API until a mail is being sent.
        def sending() -> bool:
            task = client.get(f"/pgqueue/tasks/{first}", headers=read).json()
            return bool(task["status"] == "processing")

        wait_until(sending)
    process.send_signal(signal.SIGTERM)
    # uvicorn ends a graceful shutdown by re-raising the signal: killed by SIGTERM, or 0.
    assert process.wait(60) in (0, -signal.SIGTERM), log.text()
    log.wait_for("Application shutdown complete")
    assert "pgqueue workers drained" in log.text()

    tasks = dict(
        (task_id, (status, claim_token))
        for task_id, status, claim_token in db.fetch(
            "SELECT id, status::text, claim_token FROM {schema}.tasks"
        )
    )
    assert sorted(tasks) == sorted(user["welcome_task"] for user in users)
    # The mail being sent at SIGTERM was finished and recorded by the drain.
    assert tasks[first][0] == "succeeded"
    welcomed = dict(db.fetch("SELECT id, welcome_attempt FROM {schema}.signups"))
    assert sorted(welcomed) == sorted(user["id"] for user in users)
    for user in users:
        status, claim_token = tasks[user["welcome_task"]]
        if status == "succeeded":
            assert welcomed[user["id"]] == 1
        else:  # not started: handed back, due for the next process, its attempt unused
            assert (status, claim_token, welcomed[user["id"]]) == ("new", None, None), log.text()
