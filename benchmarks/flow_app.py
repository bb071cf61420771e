"""The queue ``benchmarks/flow_control.py`` runs in worker processes (``pgqueue worker``).

Configured from the environment: ``PGQUEUE_DSN``, ``PGQUEUE_SCHEMA`` and ``MODE``:
``unlimited``, ``rate`` (``RateLimit(RATE, per=1)``), ``group`` (``group_concurrency=1``) or
``beside`` (``bench`` unlimited, and a second kind ``limited`` with ``RateLimit(RATE, per=1)`` in
the same processes). The handler does nothing: what is measured is how fast the limits let
attempts start.
"""

from __future__ import annotations

import os
from typing import Any

from pgqueue import KindOptions, LoopOptions, Queue, RateLimit

MODE = os.environ.get("MODE", "unlimited")


def noop(envelope: Any) -> None:
    return None


limits: dict[str, Any] = {}
if MODE == "rate":
    rate = float(os.environ.get("RATE", "1000"))
    limits["rate_limit"] = RateLimit(rate, per=1.0)
elif MODE == "group":
    limits["group_concurrency"] = 1

queue = Queue(os.environ["PGQUEUE_DSN"], schema=os.environ["PGQUEUE_SCHEMA"])
queue.register_kind(
    "bench",
    noop,
    KindOptions(
        attempt_timeout=30,
        worker_count=int(os.environ.get("WORKERS", "50")),
        loop=LoopOptions(poll_period=0.5),
        **limits,
    ),
)
if MODE == "beside":
    queue.register_kind(
        "limited",
        noop,
        KindOptions(
            attempt_timeout=30,
            worker_count=int(os.environ.get("WORKERS", "50")),
            loop=LoopOptions(poll_period=0.5),
            rate_limit=RateLimit(float(os.environ.get("RATE", "500")), per=1.0),
        ),
    )
