"""Render the dashboard's main series from a real run as an SVG chart (docs/operations.md).

A worker runs one kind (4 workers, 20-80 ms attempts, one in ten fails once) while tasks
arrive at about 40/s, with a burst of 1,500 tasks and a 15 s pause of the kind. Every second
the script scrapes the queue's Prometheus metrics and records depth by status, attempts per
second by outcome, queue lag and busy workers; then it draws them.

    python benchmarks/operations_chart.py [--dsn URL] [--seconds 80] [--out FILE.svg]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import threading
import time
import uuid
from html import escape
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgqueue import Decision, KindOptions, LoopOptions, Queue, Task
from pgqueue.metrics import instrument
from pgqueue.store.queries import schema_ddl

KIND = "email"
COLORS = {
    "new": "#4e79a7",
    "must_retry": "#f28e2b",
    "processing": "#59a14f",
    "due": "#76b7b2",
    "succeeded": "#59a14f",
    "retried": "#f28e2b",
    "exhausted": "#e15759",
    "lag": "#e15759",
    "busy": "#4e79a7",
}


def handler(envelope: Any) -> None:
    time.sleep(random.uniform(0.02, 0.08))
    if envelope.attempt == 1 and random.random() < 0.1:
        raise RuntimeError("transient failure")


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }


def record(dsn: str, seconds: int) -> tuple[list[dict[str, float]], list[tuple[float, str]]]:
    schema = f"chart_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(schema))
    rows: list[dict[str, float]] = []
    marks: list[tuple[float, str]] = []
    try:
        queue = Queue(dsn, schema=schema)
        options = KindOptions(
            attempt_timeout=5,
            worker_count=4,
            max_attempts=3,
            loop=LoopOptions(poll_period=0.5),
            failure=lambda envelope, error: Decision.retry_after(2.0),
        )
        queue.register_kind(KIND, handler, options)
        registry = CollectorRegistry()
        metrics = instrument(queue, registry, cache_seconds=0)
        queue.start()
        stop = threading.Event()

        def produce() -> None:
            while not stop.wait(0.25):
                queue.push_tasks([Task(KIND, {"n": i}) for i in range(10)])

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        began = time.monotonic()
        previous: dict[str, float] = {}
        for second in range(seconds):
            if second == 10:
                queue.push_tasks([Task(KIND, {"burst": i}) for i in range(1500)])
                marks.append((second, "burst of 1,500"))
            if second == 45:
                queue.pause_kind(KIND)
                marks.append((second, "paused"))
            if second == 60:
                queue.resume_kind(KIND)
                marks.append((second, "resumed"))
            time.sleep(max(0.0, began + second + 1 - time.monotonic()))
            found = scrape(registry)
            row = {"t": float(second + 1)}
            for status in ("new", "must_retry", "processing", "due"):
                row[status] = found["pgqueue_tasks", (("kind", KIND), ("status", status))]
            row["lag"] = found["pgqueue_oldest_due_seconds", (("kind", KIND),)]
            row["busy"] = found["pgqueue_workers_busy", (("kind", KIND),)]
            for outcome in ("succeeded", "retried", "exhausted"):
                total = found["pgqueue_attempts_total", (("kind", KIND), ("outcome", outcome))]
                row[outcome] = total - previous.get(outcome, 0.0)
                previous[outcome] = total
            rows.append(row)
        stop.set()
        producer.join()
        metrics.close()
        queue.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return rows, marks


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 4, 5 or 8 times a power of ten at or above ``value``."""
    scale = 10 ** math.floor(math.log10(value))
    return next(m * scale for m in (1, 2, 4, 5, 8, 10) if m * scale >= value)


def panel(
    rows: list[dict[str, float]],
    series: list[str],
    title: str,
    top: float,
    marks: list[tuple[float, str]],
    width: float = 860,
    height: float = 170,
    left: float = 60,
) -> str:
    peak = nice_ceiling(max([row[name] for row in rows for name in series] + [1.0]) * 1.05)
    span = rows[-1]["t"]
    out = [f'<text x="{left}" y="{top - 8}" class="title">{escape(title)}</text>']

    def x(t: float) -> float:
        return left + t / span * width

    def y(v: float) -> float:
        return top + height - v / peak * height

    out.append(f'<rect x="{left}" y="{top}" width="{width}" height="{height}" class="frame"/>')
    for i in range(5):
        value = peak * i / 4
        out.append(f'<line x1="{left}" x2="{left + width}" y1="{y(value):.1f}" '
                   f'y2="{y(value):.1f}" class="grid"/>')  # fmt: skip
        out.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" class="tick" '
                   f'text-anchor="end">{value:g}</text>')  # fmt: skip
    for t in range(0, int(span) + 1, 10):
        out.append(f'<text x="{x(t):.1f}" y="{top + height + 14}" class="tick" '
                   f'text-anchor="middle">{t}s</text>')  # fmt: skip
    for t, label in marks:
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + height}" '
                   f'class="mark"/>')  # fmt: skip
        out.append(f'<text x="{x(t) + 3:.1f}" y="{top + 12}" class="marktext">'
                   f"{escape(label)}</text>")  # fmt: skip
    for index, name in enumerate(series):
        points = " ".join(f"{x(row['t']):.1f},{y(row[name]):.1f}" for row in rows)
        color = COLORS[name]
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" '
                   f'stroke-width="1.8"/>')  # fmt: skip
        lx = left + width - 110 * (len(series) - index)
        out.append(f'<rect x="{lx}" y="{top - 20}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 14}" y="{top - 11}" class="tick">{escape(name)}</text>')
    return "\n".join(out)


def render(rows: list[dict[str, float]], marks: list[tuple[float, str]]) -> str:
    panels = [
        (["new", "must_retry", "processing", "due"], "Queue depth by status (pgqueue_tasks)"),
        (
            ["succeeded", "retried", "exhausted"],
            "Attempts per second by outcome (rate of pgqueue_attempts_total)",
        ),
        (["lag"], "Queue lag, seconds (pgqueue_oldest_due_seconds)"),
        (["busy"], "Busy workers of 4 (pgqueue_workers_busy)"),
    ]
    body = "\n".join(
        panel(rows, series, title, 40 + index * 225, marks)
        for index, (series, title) in enumerate(panels)
    )
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="940" height="945" \
viewBox="0 0 940 945" font-family="sans-serif">
<style>
.title {{ font-size: 14px; font-weight: bold; fill: #222; }}
.tick {{ font-size: 11px; fill: #444; }}
.frame {{ fill: #fbfbfb; stroke: #999; }}
.grid {{ stroke: #e3e3e3; }}
.mark {{ stroke: #888; stroke-dasharray: 4 3; }}
.marktext {{ font-size: 11px; fill: #666; }}
</style>
<rect width="100%" height="100%" fill="white"/>
{body}
</svg>
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGQUEUE_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--seconds", type=int, default=80)
    parser.add_argument("--out", type=Path, default=Path("docs/operations-chart.svg"))
    parser.add_argument("--data", type=Path, help="also save (or, if it exists, reuse) the samples")
    args = parser.parse_args()
    if args.data is not None and args.data.exists():
        saved = json.loads(args.data.read_text())
        rows, marks = saved["rows"], [tuple(mark) for mark in saved["marks"]]
    else:
        rows, marks = record(args.dsn, args.seconds)
        if args.data is not None:
            args.data.write_text(json.dumps({"rows": rows, "marks": marks}))
    args.out.write_text(render(rows, marks))
    print(f"wrote {args.out} ({len(rows)} samples)")


if __name__ == "__main__":
    main()
