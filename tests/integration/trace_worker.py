"""A worker process for the trace propagation tests: runs the given tasks of kind ``traced``
with ``tracing_stamp`` on an in-memory exporter, then prints their spans as JSON lines.

``python -m tests.integration.trace_worker DSN SCHEMA child|link TASK_ID...``
"""

from __future__ import annotations

import json
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pgqueue import Envelope, KindOptions, Queue
from pgqueue.stamps import tracing_stamp


def main(dsn: str, schema: str, parent: str, task_ids: list[int]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def handler(envelope: Envelope) -> None:
        if envelope.payload == "fail":
            raise ValueError("traced failure")

    stamp = tracing_stamp(parent=parent, tracer_provider=provider)
    with Queue(dsn, schema=schema, stamps=[stamp]) as queue:
        queue.register_kind("traced", handler, KindOptions(attempt_timeout=30, max_attempts=1))
        queue.start()
        for task_id in task_ids:
            queue.wait(task_id, timeout=60)
    for span in exporter.get_finished_spans():
        context = span.get_span_context()
        print(
            json.dumps(
                {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": context.trace_id,
                    "span_id": context.span_id,
                    "trace_state": context.trace_state.to_header(),
                    "parent_span_id": None if span.parent is None else span.parent.span_id,
                    "parent_trace_id": None if span.parent is None else span.parent.trace_id,
                    "links": [[link.context.trace_id, link.context.span_id] for link in span.links],
                    "attributes": dict(span.attributes or {}),
                    "ok": span.status.is_ok,
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], [int(arg) for arg in sys.argv[4:]])
