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


def tracing_stamp(tracer_name: str = "pgqueue") -> Stamp:
    """An OpenTelemetry span per attempt when ``opentelemetry-api`` is installed (a no-op
    stamp otherwise). The span carries the task's id, kind, attempt and outcome."""
    try:
        from opentelemetry import trace  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return lambda next_invoker: next_invoker

    tracer = trace.get_tracer(tracer_name)

    def stamp(next_invoker: Invoker) -> Invoker:
        async def invoke(envelope: Envelope) -> Any:
            with tracer.start_as_current_span(
                f"pgqueue.task {envelope.kind}",
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "pgqueue",
                    "messaging.operation": "process",
                    "messaging.destination.name": envelope.kind,
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
