"""Prometheus metrics of a live queue, the scrape cache, and the shipped Grafana dashboard."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from importlib import resources
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pgqueue import Decision, KindOptions, LoopOptions, Queue, Task
from pgqueue.metrics import OUTCOMES, instrument, serve
from tests.conftest import Database
from tests.helpers import Recorder

FAST = LoopOptions(poll_period=0.2, janitor_period=0.2, lease_margin=2.0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[name, tuple(sorted(labels.items()))]


def run_mixed_tasks(db: Database, registry: CollectorRegistry) -> Queue:
    """A started queue that ran succeeded, retried, exhausted and timed-out attempts."""

    def handler(envelope: Any) -> None:
        if envelope.payload == "fail":
            raise RuntimeError("boom")
        if envelope.payload == "slow":
            threading.Event().wait(0.5)

    queue = Queue(db.dsn, schema=db.schema)
    queue.register_kind(
        "work",
        handler,
        KindOptions(
            attempt_timeout=0.2,
            max_attempts=2,
            loop=FAST,
            failure=lambda envelope, error: Decision.retry_now(),
        ),
    )
    queue.declare_kind("other", KindOptions(attempt_timeout=1.0))
    metrics = instrument(queue, registry, cache_seconds=0)
    recorder = Recorder(queue)
    ids = queue.push_tasks([Task("work", "ok")] * 3 + [Task("work", "fail"), Task("work", "slow")])
    queue.push_task(Task("other", 1))
    queue.push_task(Task("work", "later"), delay=3600)
    queue.start()
    recorder.wait(lambda r: all(r.status_of(i) in ("succeeded", "no_attempts_left") for i in ids))
    queue.metrics = metrics  # type: ignore[attr-defined]
    return queue


def test_live_queue_exposes_every_metric(db: Database) -> None:
    registry = CollectorRegistry()
    queue = run_mixed_tasks(db, registry)
    try:
        db.fetch("UPDATE {schema}.tasks SET delayed_till = now() - interval '42 seconds'"
                 " WHERE kind = 'other'")  # fmt: skip
        found = samples(registry)
        assert value(found, "pgqueue_tasks", kind="work", status="succeeded") == 3
        assert value(found, "pgqueue_tasks", kind="work", status="no_attempts_left") == 2
        assert value(found, "pgqueue_tasks", kind="work", status="new") == 1
        assert value(found, "pgqueue_tasks", kind="work", status="due") == 0
        assert value(found, "pgqueue_tasks", kind="other", status="due") == 1
        assert value(found, "pgqueue_tasks", kind="other", status="processing") == 0
        assert 42 <= value(found, "pgqueue_oldest_due_seconds", kind="other") < 60
        assert value(found, "pgqueue_oldest_due_seconds", kind="work") == 0
        assert value(found, "pgqueue_kind_paused", kind="work") == 0
        assert value(found, "pgqueue_tasks_pushed_total", kind="work") == 6
        assert value(found, "pgqueue_tasks_pushed_total", kind="other") == 1
        assert value(found, "pgqueue_tasks_claimed_total", kind="work") == 7
        assert value(found, "pgqueue_lost_leases_total", kind="work") == 0
        attempts = {o: value(found, "pgqueue_attempts_total", kind="work", outcome=o)
                    for o in OUTCOMES}  # fmt: skip
        assert attempts == {
            "succeeded": 3,
            "retried": 1,
            "exhausted": 1,
            "cancelled": 0,
            "timed_out": 2,
        }
        assert (
            value(found, "pgqueue_attempt_duration_seconds_count", kind="work", outcome="succeeded")
            == 3
        )
        assert value(found, "pgqueue_workers", kind="work") == 10
        assert value(found, "pgqueue_workers_busy", kind="work") == 0
        queue.pause_kind("work")
        assert value(samples(registry), "pgqueue_kind_paused", kind="work") == 1
    finally:
        queue.metrics.close()  # type: ignore[attr-defined]
        queue.close()
    assert not [name for name, _ in samples(registry) if name.startswith("pgqueue_")]


def test_concurrent_scrapes_share_one_query_per_cache_period(db: Database) -> None:
    registry = CollectorRegistry()
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", KindOptions(attempt_timeout=1.0))
        queue.push_tasks([Task("k", i) for i in range(5)])
        metrics = instrument(queue, registry, cache_seconds=3600)
        try:
            barrier = threading.Barrier(50)
            results: list[bytes] = []

            def scrape() -> None:
                barrier.wait()
                results.append(generate_latest(registry))

            threads = [threading.Thread(target=scrape) for _ in range(50)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(results) == 50 and len(set(results)) == 1
            assert metrics.reader.queries_run == 1
            assert b'pgqueue_tasks{kind="k",status="new"} 5.0' in results[0]
        finally:
            metrics.close()


def test_metrics_server_serves_http(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", KindOptions(attempt_timeout=1.0))
        server = serve(queue, 0)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as response:
                body = response.read().decode()
            assert 'pgqueue_tasks{kind="k",status="due"} 0.0' in body
        finally:
            server.close()


def dashboard() -> dict[str, Any]:
    text = resources.files("pgqueue").joinpath("grafana", "pgqueue-dashboard.json").read_text()
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def test_grafana_dashboard_uses_only_exposed_metrics(db: Database) -> None:
    board = dashboard()
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    exprs.append(board["templating"]["list"][1]["query"]["query"])
    used = {name for expr in exprs for name in re.findall(r"\bpgqueue_[a-z_]+", expr)}
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for topic in ("depth", "lag", "throughput", "failure", "duration", "workers"):
        assert topic in titles
    registry = CollectorRegistry()
    queue = run_mixed_tasks(db, registry)
    try:
        exposed = {name for name, _ in samples(registry)}
    finally:
        queue.metrics.close()  # type: ignore[attr-defined]
        queue.close()
    assert used, "the dashboard queries no pgqueue metric"
    assert used <= exposed, f"not exposed: {sorted(used - exposed)}"
    assert {"pgqueue_tasks", "pgqueue_oldest_due_seconds", "pgqueue_workers_busy"} <= used
    assert "pgqueue_attempt_duration_seconds_bucket" in used


def test_instrument_rejects_a_negative_cache_period(db: Database) -> None:
    with Queue(db.dsn, schema=db.schema) as queue, pytest.raises(ValueError):
        instrument(queue, CollectorRegistry(), cache_seconds=-1)


def test_lost_leases_count_the_tasks_claimed_again_after_their_lease_ran_out(db: Database) -> None:
    """One task whose lease ran out (its worker died) and two fresh tasks pushed in a trace:
    the claim takes all three, and one lease was lost. (The counter used to read the claim
    row's last column, which became the trace context when that was added: it counted the
    two traced tasks and missed the lost lease.)"""
    queue = Queue(db.dsn, schema=db.schema)
    queue.register_kind("work", lambda envelope: None, KindOptions(attempt_timeout=5.0, loop=FAST))
    registry = CollectorRegistry()
    instrument(queue, registry, cache_seconds=0)
    recorder = Recorder(queue)
    try:
        orphan, *traced = queue.push_tasks([Task("work", n) for n in range(3)])
        # As a crashed worker leaves it: claimed (an attempt used, a token held), lease over.
        db.fetch(
            "UPDATE {schema}.tasks SET status = 'must_retry', attempts_elapsed = 1,"
            " attempts_left = attempts_left - 1, claim_token = gen_random_uuid(),"
            " delayed_till = now() - interval '1 second' WHERE id = %s",
            (orphan,),
        )
        db.fetch(
            "UPDATE {schema}.tasks SET trace_context ="
            " '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' WHERE id = ANY(%s)",
            (traced,),
        )
        queue.start()
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in (orphan, *traced)))
        found = samples(registry)
        assert value(found, "pgqueue_tasks_claimed_total", kind="work") == 3
        assert value(found, "pgqueue_lost_leases_total", kind="work") == 1
    finally:
        queue.close()
