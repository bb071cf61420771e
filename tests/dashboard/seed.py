"""Rows in any status, written straight into the tasks table (fast, and exact to count)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

# status -> (stored status, claimed with a live lease?, finished?)
_SHAPES = {
    "new": ("new", False, False),
    "must_retry": ("must_retry", False, False),
    "processing": ("must_retry", True, False),
    "no_attempts_left": ("no_attempts_left", False, True),
    "cancelled": ("cancelled", False, True),
    "succeeded": ("succeeded", False, True),
    "blocked": ("blocked", False, False),  # a workflow node waiting for its parents
}

SEED_TASKS = """
INSERT INTO {schema}.tasks
    (kind, payload, external_key, status, attempts_elapsed, attempts_left, max_attempts,
     delayed_till, claim_token, messages, started_at, finished_at)
SELECT %(kind)s,
       CASE WHEN %(payload)s::jsonb IS NULL THEN jsonb_build_object('n', i)
            ELSE %(payload)s::jsonb END,
       CASE WHEN %(key)s::text IS NULL THEN NULL WHEN %(count)s = 1 THEN %(key)s
            ELSE %(key)s || i END,
       %(status)s::{schema}.task_status,
       CASE WHEN %(status)s = 'new' THEN 0 ELSE 3 END,
       CASE WHEN %(status)s IN ('no_attempts_left', 'succeeded', 'cancelled') THEN 0 ELSE 1 END,
       3,
       CASE WHEN %(claimed)s THEN now() + interval '10 minutes' ELSE now() END,
       CASE WHEN %(claimed)s THEN gen_random_uuid() END,
       %(messages)s::text[],
       CASE WHEN %(status)s = 'new' THEN NULL ELSE now() END,
       CASE WHEN %(finished)s THEN now() END
FROM generate_series(1, %(count)s) AS i
RETURNING id
"""


def seed(
    dsn: str,
    schema: str,
    kind: str,
    status: str,
    count: int = 1,
    *,
    payload: Any = None,
    key: str | None = None,
    messages: list[str] | None = None,
) -> list[int]:
    """Insert ``count`` tasks of ``kind`` in ``status`` (a derived one allowed); their ids.

    ``key`` is the key of a single row, else a prefix: the n-th row gets ``key + n``.
    Without ``payload`` the n-th row's payload is ``{"n": n}``.
    """
    stored, claimed, finished = _SHAPES[status]
    params = {
        "kind": kind,
        "payload": None if payload is None else json.dumps(payload),
        "key": key,
        "status": stored,
        "claimed": claimed,
        "finished": finished,
        "messages": messages or [],
        "count": count,
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(SEED_TASKS.replace("{schema}", schema), params).fetchall()
    return [row[0] for row in rows]
