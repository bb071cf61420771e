"""OpenTelemetry trace propagation: the caller's context recorded with a push, the attempt's
span made its child (or linked to it) by :func:`pgqueue.stamps.tracing_stamp`.

Everything here costs one module-level test when ``opentelemetry-api`` is not installed, and
one ``get_current_span`` when it is but no span is recording: only a push inside an active
span stores anything (the W3C ``traceparent``, and ``tracestate`` when there is one, in the
task's ``trace_context`` column).
"""

from __future__ import annotations

import importlib.util
from typing import Any

AVAILABLE = importlib.util.find_spec("opentelemetry") is not None
"""Whether ``opentelemetry-api`` is importable (checked once, when pgqueue loads)."""

_SEPARATOR = "\n"  # neither a traceparent nor a tracestate may contain a line break
_propagator: Any = None


def _w3c() -> Any:
    global _propagator
    if _propagator is None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _propagator = TraceContextTextMapPropagator()
    return _propagator


def current_trace_context() -> str | None:
    """The caller's active span as ``traceparent`` (``"\\n" + tracestate`` when it has one),
    or ``None`` when OpenTelemetry is missing or no valid span is current."""
    if not AVAILABLE:
        return None
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    carrier: dict[str, str] = {}
    _w3c().inject(carrier)
    traceparent = carrier.get("traceparent")
    if traceparent is None:
        return None
    tracestate = carrier.get("tracestate")
    return traceparent if not tracestate else f"{traceparent}{_SEPARATOR}{tracestate}"


def extract_context(trace_context: str | None) -> Any:
    """The OpenTelemetry ``Context`` a stored ``trace_context`` describes (``None`` when the
    task has none or OpenTelemetry is missing)."""
    if trace_context is None or not AVAILABLE:
        return None
    traceparent, _, tracestate = trace_context.partition(_SEPARATOR)
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _w3c().extract(carrier)
