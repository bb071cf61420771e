"""Every log line about a task carries its id, kind and attempt; JSON lines on request."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pgqueue import Decision, KindOptions, LoopOptions, Queue, Task
from pgqueue.logcontext import JsonFormatter, TaskContextFilter, TextFormatter, configure_logging
from tests.conftest import Database
from tests.helpers import Recorder


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TaskContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    # A host Alembic project run in this process (the migration tests) applies its logging
    # file, which disables the loggers that existed then: turn pgqueue's back on.
    for name, logger in logging.root.manager.loggerDict.items():
        if name.startswith("pgqueue") and isinstance(logger, logging.Logger):
            logger.disabled = False
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_handler_and_runtime_lines_carry_the_task(db: Database, captured: io.StringIO) -> None:
    app_log = logging.getLogger("app.mail")

    def handler(envelope: Any) -> None:
        app_log.info("sending %s", envelope.payload)
        if envelope.attempt == 1:
            raise RuntimeError("smtp down")

    options = KindOptions(
        attempt_timeout=5,
        loop=LoopOptions(poll_period=0.2),
        failure=lambda envelope, error: Decision.retry_now(),
    )
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("mail", handler, options)
        recorder = Recorder(queue)
        task_id = queue.push_task(Task("mail", "hello"))
        queue.start()
        recorder.wait_status(task_id, "succeeded")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    sent = [line for line in lines if line["message"] == "sending hello"]
    assert [(x["task_id"], x["kind"], x["attempt"]) for x in sent] == [
        (task_id, "mail", 1),
        (task_id, "mail", 2),
    ]
    failed = [line for line in lines if "smtp down" in line["message"]]
    assert failed and all(
        (x["task_id"], x["kind"], x["attempt"]) == (task_id, "mail", 1) for x in failed
    )
    about_the_task = [line for line in lines if str(task_id) in line["message"]]
    assert about_the_task and all(line["task_id"] == task_id for line in about_the_task)


def test_configure_logging_text_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        monkeypatch.setenv("PGQUEUE_LOG_FORMAT", "json")
        configure_logging("debug")
        configure_logging("debug")  # replaces its own handler, never stacks
        ours = [h for h in root.handlers if getattr(h, "_pgqueue", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
        assert root.level == logging.DEBUG
        configure_logging("info", json_lines=False)
        ours = [h for h in root.handlers if getattr(h, "_pgqueue", False)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, TextFormatter)
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hi", None, None)
        record.task_id, record.task_kind, record.attempt = 7, "mail", 2
        assert ours[0].formatter.format(record).endswith("hi [task_id=7 kind=mail attempt=2]")
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_pgqueue", False)]:
            root.removeHandler(handler)
        root.handlers[:] = before[0]
        root.setLevel(before[1])
