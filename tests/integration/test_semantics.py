"""Execution semantics on the durable queue: hooks, decisions, stamps, panic safety."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from pgqueue import (
    Decision,
    Envelope,
    InvalidOptions,
    Jitter,
    JitterDelayer,
    KindOptions,
    LoopOptions,
    MustCancelTask,
    Queue,
    Status,
    Task,
)
from pgqueue.logcontext import TaskContextFilter
from pgqueue.stamps import logging_stamp, tracing_stamp
from tests.conftest import Database
from tests.helpers import Recorder

FAST = LoopOptions(poll_period=0.2, janitor_period=60, lease_margin=4.0)


class Script:
    """Hooks and a handler that record what ran and fail where a scenario says."""

    def __init__(self) -> None:
        self.calls: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def note(self, envelope: Envelope, what: str) -> None:
        with self.lock:
            self.calls.setdefault(envelope.payload["scenario"], []).append(what)

    def act(self, envelope: Envelope, step: str) -> None:
        self.note(envelope, step)
        effect = envelope.payload.get(step)
        if effect == "error":
            raise RuntimeError(f"{step} failed")
        if effect == "cancel":
            raise MustCancelTask(step)

    def before(self, envelope: Envelope) -> None:
        self.act(envelope, "before")

    def handler(self, envelope: Envelope) -> None:
        self.act(envelope, "handler")

    async def after(self, envelope: Envelope) -> None:  # async hooks work too
        self.act(envelope, "after")

    def success(self, envelope: Envelope) -> None:
        self.note(envelope, "success")

    def failure(self, envelope: Envelope, error: BaseException) -> Decision:
        self.note(envelope, "failure")
        return Decision.drop()


SCENARIOS = {
    # scenario: (payload effects, expected calls, expected status)
    "ok": ({}, ["before", "handler", "after", "success"], Status.SUCCEEDED),
    "before_error": ({"before": "error"}, ["before", "failure"], Status.NO_ATTEMPTS_LEFT),
    "before_cancel": ({"before": "cancel"}, ["before", "after"], Status.CANCELLED),
    "handler_error": (
        {"handler": "error"},
        ["before", "handler", "failure"],
        Status.NO_ATTEMPTS_LEFT,
    ),
    "handler_cancel": ({"handler": "cancel"}, ["before", "handler", "after"], Status.CANCELLED),
    "after_error": (
        {"after": "error"},
        ["before", "handler", "after", "success"],
        Status.SUCCEEDED,
    ),
    "after_cancel": ({"after": "cancel"}, ["before", "handler", "after"], Status.CANCELLED),
}


def test_hook_order_for_every_outcome(db: Database) -> None:
    script = Script()
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind(
            "k",
            script.handler,
            KindOptions(
                attempt_timeout=5,
                loop=FAST,
                before=script.before,
                after=script.after,
                success=script.success,
                failure=script.failure,
            ),
        )
        recorder = Recorder(queue)
        ids = {
            name: queue.push_task(Task("k", {"scenario": name, **effects}))
            for name, (effects, _, _) in SCENARIOS.items()
        }
        queue.start()
        recorder.wait(lambda r: all(r.status_of(i) for i in ids.values()))
        for name, (_, expected_calls, expected_status) in SCENARIOS.items():
            info = queue.get_task(ids[name])  # type: ignore[arg-type]
            assert info is not None
            assert (name, info.status) == (name, expected_status)
            assert (name, script.calls[name]) == (name, expected_calls)


@pytest.mark.parametrize(
    ("decision", "status", "due_in"),
    [
        (Decision.default(), Status.MUST_RETRY, 50.0),
        (Decision.retry_now(), Status.MUST_RETRY, 0.0),
        (Decision.retry_after(120), Status.MUST_RETRY, 120.0),
        (Decision.drop(), Status.NO_ATTEMPTS_LEFT, None),
        (Decision.cancel(), Status.CANCELLED, None),
        (None, Status.MUST_RETRY, 50.0),
    ],
)
def test_decisions_end_in_the_right_status_and_due_time(
    db: Database, decision: Decision | None, status: Status, due_in: float | None
) -> None:
    attempts: list[int] = []

    def handler(envelope: Envelope) -> None:
        attempts.append(envelope.attempt)
        raise ValueError("nope")

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind(
            "k",
            handler,
            KindOptions(
                attempt_timeout=5,
                max_attempts=5 if due_in != 0.0 else 2,
                loop=FAST,
                delayer=JitterDelayer(Jitter.ZERO, base=50.0),
                failure=lambda envelope, error: decision,
            ),
        )
        recorder = Recorder(queue)
        task_id = queue.push_task(Task("k"))
        queue.start()
        if due_in == 0.0:
            # retry_now: due at once, so the second (last) attempt follows immediately.
            recorder.wait(lambda r: len(r.written.get(task_id, [])) == 2)  # type: ignore[arg-type]
            assert attempts == [1, 2]
            status = Status.NO_ATTEMPTS_LEFT
        else:
            recorder.wait(lambda r: r.status_of(task_id) is not None)  # type: ignore[arg-type]
        queue.stop()
    row = db.fetch(
        "SELECT status::text, extract(epoch FROM delayed_till - updated_at), messages"
        " FROM {schema}.tasks WHERE id = %s",
        (task_id,),
    )[0]
    assert row[0] == status.value
    assert row[2][-1] == "ValueError: nope"
    if due_in:
        assert abs(float(row[1]) - due_in) < 0.5, row


def test_stamps_nest_queue_then_kind_in_list_order(db: Database) -> None:
    trail: list[str] = []

    def stamp(name: str) -> Any:
        def wrap(next_invoker: Any) -> Any:
            async def invoke(envelope: Envelope) -> Any:
                trail.append(f">{name}")
                try:
                    return await next_invoker(envelope)
                finally:
                    trail.append(f"<{name}")

            return invoke

        return wrap

    with Queue(db.dsn, schema=db.schema, stamps=[stamp("q1"), stamp("q2")]) as queue:
        queue.register_kind(
            "k",
            lambda envelope: trail.append("handler"),
            KindOptions(attempt_timeout=5, loop=FAST, stamps=[stamp("k1"), stamp("k2")]),
        )
        recorder = Recorder(queue)
        task_id = queue.push_task(Task("k"))
        queue.start()
        recorder.wait_status(task_id, "succeeded")  # type: ignore[arg-type]
    assert trail == [">q1", ">q2", ">k1", ">k2", "handler", "<k2", "<k1", "<q2", "<q1"]


def test_hanging_hook_does_not_outlive_the_attempt(db: Database) -> None:
    release = threading.Event()

    def hangs(envelope: Envelope) -> None:
        release.wait(60)

    async def hangs_async(envelope: Envelope, error: BaseException) -> Decision:
        await asyncio.sleep(60)
        return Decision.cancel()

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind(
            "before",
            lambda envelope: None,
            KindOptions(attempt_timeout=0.5, max_attempts=1, loop=FAST, before=hangs),
        )
        queue.register_kind(
            "failure",
            lambda envelope: 1 / 0,
            KindOptions(attempt_timeout=0.5, max_attempts=1, loop=FAST, failure=hangs_async),
        )
        recorder = Recorder(queue)
        hung_before = queue.push_task(Task("before"))
        hung_failure = queue.push_task(Task("failure"))
        began = time.monotonic()
        queue.start()
        recorder.wait(lambda r: r.status_of(hung_failure) == "no_attempts_left", timeout=10)
        elapsed = time.monotonic() - began
        # A sync hook's thread cannot be interrupted: its attempt is decided at the deadline
        # but keeps its claim (no retry may overlap it) until the thread returns.
        assert recorder.status_of(hung_before) is None
        release.set()
        recorder.wait(lambda r: r.status_of(hung_before) == "no_attempts_left", timeout=10)
    # The attempt deadline is 0.5 s; result hooks get at most 0.5 + 0.125 s more.
    assert elapsed < 3.0, elapsed
    info = db.fetch("SELECT messages FROM {schema}.tasks WHERE id = %s", (hung_before,))[0][0]
    assert info[-1] == "AttemptTimeout: hook hangs timed out after 0.5s"


def test_panics_are_recorded_and_never_stop_the_worker(db: Database) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("cannot print me")

    def handler(envelope: Envelope) -> None:
        kind = envelope.payload
        if kind == "unprintable":
            raise Unprintable
        if kind == "keyboard":
            raise KeyboardInterrupt
        if kind == "exit":
            raise SystemExit(3)

    async def async_handler(envelope: Envelope) -> None:
        raise Unprintable

    def bad_stamp(next_invoker: Any) -> Any:
        async def invoke(envelope: Envelope) -> Any:
            if envelope.payload == "stamp":
                raise LookupError("stamp broke")
            return await next_invoker(envelope)

        return invoke

    with Queue(db.dsn, schema=db.schema) as queue:
        options = KindOptions(attempt_timeout=5, max_attempts=1, loop=FAST, stamps=[bad_stamp])
        queue.register_kind("sync", handler, options)
        queue.register_kind("async", async_handler, options)
        recorder = Recorder(queue)
        ids = queue.push_tasks(
            [Task("sync", p) for p in ("unprintable", "keyboard", "exit", "stamp")]
            + [Task("async", "x")]
        )
        queue.start()
        recorder.wait(lambda r: all(r.status_of(i) == "no_attempts_left" for i in ids))  # type: ignore[arg-type]
        after = queue.push_task(Task("sync", "fine"))
        recorder.wait_status(after, "succeeded")  # type: ignore[arg-type]
    messages = [
        db.scalar("SELECT messages[1] FROM {schema}.tasks WHERE id = %s", (i,)) for i in ids
    ]
    assert messages == [
        "Unprintable: <unprintable error>",
        "ThreadInterrupt: KeyboardInterrupt: ",
        "ThreadInterrupt: SystemExit: 3",
        "LookupError: stamp broke",
        "Unprintable: <unprintable error>",
    ]


def test_logging_stamp_and_context_filter_put_the_task_on_every_line(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    handler_log = logging.getLogger("tests.handler")

    def handler(envelope: Envelope) -> None:
        handler_log.info("inside the handler")

    context_filter = TaskContextFilter()
    caplog.handler.addFilter(context_filter)
    caplog.set_level(logging.INFO)
    with Queue(db.dsn, schema=db.schema, stamps=[logging_stamp()]) as queue:
        queue.register_kind("k", handler, KindOptions(attempt_timeout=5, loop=FAST))
        recorder = Recorder(queue)
        task_id = queue.push_task(Task("k"))
        queue.start()
        recorder.wait_status(task_id, "succeeded")  # type: ignore[arg-type]
    caplog.handler.removeFilter(context_filter)
    lines = [r for r in caplog.records if r.name in ("pgqueue.task", "tests.handler")]
    assert [r.getMessage().split(" attempt")[0] for r in lines[:1]] == [f"task {task_id} (k)"]
    assert len(lines) == 3
    assert all((r.task_id, r.task_kind, r.attempt) == (task_id, "k", 1) for r in lines)  # type: ignore[attr-defined]


def test_tracing_stamp_records_a_span_per_attempt(db: Database) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_stamp = tracing_stamp(tracer_provider=provider)  # the global provider untouched

    def handler(envelope: Envelope) -> None:
        if envelope.payload == "fail":
            raise ValueError("traced failure")

    with Queue(db.dsn, schema=db.schema, stamps=[tracer_stamp]) as queue:
        queue.register_kind("k", handler, KindOptions(attempt_timeout=5, max_attempts=1, loop=FAST))
        recorder = Recorder(queue)
        ok = queue.push_task(Task("k", "ok"))
        failed = queue.push_task(Task("k", "fail"))
        queue.start()
        recorder.wait(lambda r: r.status_of(ok) is not None and r.status_of(failed) is not None)
    spans = {span.attributes["pgqueue.task.id"]: span for span in exporter.get_finished_spans()}
    assert set(spans) == {ok, failed}
    assert spans[ok].status.is_ok and not spans[failed].status.is_ok
    assert spans[ok].name == "process k"
    assert spans[ok].kind is trace.SpanKind.CONSUMER


def test_periodic_registration_is_validated(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda e: None, KindOptions(attempt_timeout=10))
        queue.declare_kind("declared", KindOptions(attempt_timeout=1))
        with pytest.raises(InvalidOptions, match="exceeds its interval"):
            queue.add_periodic("k", every=5)
        with pytest.raises(InvalidOptions, match="exceeds its interval"):
            queue.add_periodic("k", cron="* * * * * */5")
        with pytest.raises(InvalidOptions, match="exactly one"):
            queue.add_periodic("k")
        with pytest.raises(InvalidOptions, match="cron"):
            queue.add_periodic("k", cron="not a cron")
        with pytest.raises(InvalidOptions, match="handler"):
            queue.add_periodic("declared", every=60)
        queue.add_periodic("k", cron="*/5 * * * *", payload={"report": "daily"})
        with pytest.raises(InvalidOptions, match="already"):
            queue.add_periodic("k", every=60)


def test_periodic_tasks_take_the_kinds_default_priority(db: Database) -> None:
    from tests.helpers import Recorder

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda e: None, KindOptions(attempt_timeout=10, priority=7))
        queue.add_periodic("k", every=3600)
        recorder = Recorder(queue)
        queue.start()
        recorder.wait(lambda r: len(r.written) == 1)
        [(priority,)] = db.fetch("SELECT priority FROM {schema}.tasks")
        assert priority == 7
