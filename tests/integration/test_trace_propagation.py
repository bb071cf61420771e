"""OpenTelemetry across processes: a push inside a span (this process) records the trace
context on the task; the attempt's span in a worker process (``trace_worker``) is that span's
child, or links to it; without a span, or without OpenTelemetry, nothing is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState, use_span

from pgqueue import KindOptions, Queue, Task, tracing
from tests.conftest import Database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tracer() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("shop")


def run_worker(db: Database, parent: str, task_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Process B: works the tasks, returns its attempt spans by task id."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.trace_worker", db.dsn, db.schema, parent,
         *map(str, task_ids)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spans = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {span["attributes"]["pgqueue.task.id"]: span for span in spans}


def stored_context(db: Database, task_id: int) -> str | None:
    value = db.scalar("SELECT trace_context FROM {schema}.tasks WHERE id = %s", (task_id,))
    return None if value is None else str(value)


def test_the_attempt_span_is_the_push_spans_child_in_another_process(
    db: Database, tracer: Any
) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("traced", KindOptions(attempt_timeout=30, max_attempts=1))
        with tracer.start_as_current_span("checkout") as push_span:
            one = queue.push_task(Task("traced", "ok"))
            failing = queue.push_task(Task("traced", "fail"))
            batch = queue.push_tasks([Task("traced", "ok"), Task("traced", "ok")])
        untraced = queue.push_task(Task("traced", "ok"))
    pushed = push_span.get_span_context()
    traceparent = f"00-{pushed.trace_id:032x}-{pushed.span_id:016x}-{pushed.trace_flags:02x}"
    traced_ids = [one, failing, *batch]
    assert all(stored_context(db, task_id) == traceparent for task_id in traced_ids)
    assert stored_context(db, untraced) is None

    spans = run_worker(db, "child", [*traced_ids, untraced])
    assert set(spans) == {*traced_ids, untraced}
    for task_id in traced_ids:
        span = spans[task_id]
        assert span["trace_id"] == pushed.trace_id
        assert span["parent_span_id"] == pushed.span_id
        assert span["kind"] == "CONSUMER" and span["name"] == "process traced"
        assert span["attributes"]["messaging.system"] == "pgqueue"
        assert span["attributes"]["messaging.operation"] == "process"
        assert span["attributes"]["messaging.destination.name"] == "traced"
        assert span["attributes"]["messaging.message.id"] == str(task_id)
        assert span["links"] == []
    assert not spans[failing]["ok"] and spans[one]["ok"]
    assert spans[untraced]["parent_span_id"] is None
    assert spans[untraced]["trace_id"] != pushed.trace_id


def test_with_parent_link_the_attempt_starts_a_trace_linked_to_the_push(
    db: Database, tracer: Any
) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("traced", KindOptions(attempt_timeout=30, max_attempts=1))
        with tracer.start_as_current_span("nightly") as push_span:
            task_id = queue.push_task(Task("traced", "ok"))
    pushed = push_span.get_span_context()
    span = run_worker(db, "link", [task_id])[task_id]
    assert span["parent_span_id"] is None
    assert span["trace_id"] != pushed.trace_id
    assert span["links"] == [[pushed.trace_id, pushed.span_id]]


def test_tracestate_travels_with_the_task(db: Database) -> None:
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "t61rcWkgMzE;x"), ("rojo", "00f067aa0ba902b7")]),
    )
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("traced", KindOptions(attempt_timeout=30, max_attempts=1))
        with use_span(NonRecordingSpan(remote)):
            task_id = queue.push_task(Task("traced", "ok"))
    assert stored_context(db, task_id) == (
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        "\nvendor=t61rcWkgMzE;x,rojo=00f067aa0ba902b7"
    )
    span = run_worker(db, "child", [task_id])[task_id]
    assert span["trace_id"] == remote.trace_id and span["parent_span_id"] == remote.span_id
    assert span["trace_state"] == "vendor=t61rcWkgMzE;x,rojo=00f067aa0ba902b7"


def test_without_opentelemetry_a_push_records_nothing(
    db: Database, tracer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "AVAILABLE", False)
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("traced", KindOptions(attempt_timeout=30, max_attempts=1))
        with tracer.start_as_current_span("checkout"):
            assert tracing.current_trace_context() is None
            task_id = queue.push_task(Task("traced", "ok"))
    assert stored_context(db, task_id) is None
    assert (
        tracing.extract_context("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") is None
    )


def test_tracing_stamp_refuses_an_unknown_parent_mode() -> None:
    from pgqueue.stamps import tracing_stamp

    with pytest.raises(ValueError, match='"child" or "link"'):
        tracing_stamp(parent="sibling")


def test_every_workflow_node_continues_the_trace_it_was_pushed_in(
    db: Database, tracer: Any
) -> None:
    from pgqueue import Workflow

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("traced", KindOptions(attempt_timeout=30, max_attempts=1))
        workflow = Workflow()
        first = workflow.add("first", Task("traced", "ok"))
        workflow.add("second", Task("traced", "ok"), after=[first])
        with tracer.start_as_current_span("order") as push_span:
            ids = queue.push_workflow(workflow)
    pushed = push_span.get_span_context()
    node_ids = [ids["first"], ids["second"]]
    spans = run_worker(db, "child", node_ids)
    for task_id in node_ids:
        assert spans[task_id]["trace_id"] == pushed.trace_id
        assert spans[task_id]["parent_span_id"] == pushed.span_id
