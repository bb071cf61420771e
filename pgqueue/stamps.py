"""Stamps (middleware) that ship with pgqueue."""

from __future__ import annotations

import logging
import time
from typing import Any

from pgqueue.envelope import Envelope, Invoker, Stamp


def logging_stamp(logger: logging.Logger | None = None, level: int = logging.INFO) -> Stamp:
    """Log the start and the end (with duration and error) of every attempt, with the task's
    id, kind and attempt as structured fields."""
    log = logger or logging.getLogger("pgqueue.task")

    def stamp(next_invoker: Invoker) -> Invoker:
        async def invoke(envelope: Envelope) -> Any:
            extra = {
                "task_id": envelope.id,
                "task_kind": envelope.kind,
                "attempt": envelope.attempt,
            }
            log.log(level, "task %s (%s) attempt %d started", envelope.id, envelope.kind,
                    envelope.attempt, extra=extra)  # fmt: skip
            started = time.perf_counter()
            try:
                result = await next_invoker(envelope)
            except BaseException as exc:
                log.log(level, "task %s (%s) attempt %d raised %s after %.3fs", envelope.id,
                        envelope.kind, envelope.attempt, type(exc).__name__,
                        time.perf_counter() - started, extra=extra)  # fmt: skip
                raise
            log.log(level, "task %s (%s) attempt %d finished in %.3fs", envelope.id,
                    envelope.kind, envelope.attempt, time.perf_counter() - started,
                    extra=extra)  # fmt: skip
            return result

        return invoke

    return stamp


def tracing_stamp(
    tracer_name: str = "pgqueue", *, parent: str = "child", tracer_provider: Any = None
) -> Stamp:
    """An OpenTelemetry span per attempt when ``opentelemetry-api`` is installed (a no-op
    stamp otherwise): kind ``CONSUMER``, named ``process <kind>``, with the messaging semantic
    conventions' attributes (``messaging.system`` ``pgqueue``, ``messaging.operation``
    ``process``, ``messaging.destination.name`` the kind, ``messaging.message.id`` the task
    id) and the task's attempt; an error is recorded on it.

    A task pushed inside a span (in any process) continues that trace: with
    ``parent="child"`` the attempt's span is the push span's child; with ``parent="link"`` it
    starts a trace of its own that links to the push span (for long-lived or fan-out tasks
    whose attempts should not lengthen the caller's trace). Install it on a queue
    (``Queue(dsn, stamps=[tracing_stamp()])``) or per kind (``KindOptions(stamps=[...])``).
    ``tracer_provider``: the SDK's provider to use instead of the global one.
    """
    if parent not in ("child", "link"):
        raise ValueError(f'tracing_stamp parent must be "child" or "link", got {parent!r}')
    try:
        from opentelemetry import trace  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return lambda next_invoker: next_invoker

    from opentelemetry.context import Context

    from pgqueue.tracing import extract_context

    tracer = trace.get_tracer(tracer_name, tracer_provider=tracer_provider)
    root = Context()  # a span started in it begins a trace of its own
    as_link = parent == "link"

    def stamp(next_invoker: Invoker) -> Invoker:
        async def invoke(envelope: Envelope) -> Any:
            pushed_in = extract_context(envelope.trace_context)
            context: Any = None
            links: list[Any] = []
            if pushed_in is not None:
                if as_link:
                    span_context = trace.get_current_span(pushed_in).get_span_context()
                    if span_context.is_valid:
                        links.append(trace.Link(span_context))
                    context = root
                else:
                    context = pushed_in
            with tracer.start_as_current_span(
                f"process {envelope.kind}",
                context=context,
                kind=trace.SpanKind.CONSUMER,
                links=links,
                attributes={
                    "messaging.system": "pgqueue",
                    "messaging.operation": "process",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": envelope.kind,
                    "messaging.message.id": str(envelope.id),
                    "pgqueue.task.id": envelope.id,
                    "pgqueue.task.attempt": envelope.attempt,
                },
            ) as span:
                try:
                    return await next_invoker(envelope)
                except BaseException as exc:
                    span.record_exception(exc)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                    raise

        return invoke

    return stamp
