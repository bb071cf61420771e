"""Prometheus metrics of a queue (prometheus-client).

``instrument(queue)`` adds to a registry (the default one unless given):

- ``pgqueue_tasks{kind,status}``: tasks per kind and status, read from the database on scrape:
  the stored statuses (``blocked``: workflow nodes waiting for their parents), ``processing``
  (claimed, lease not expired) and ``due`` (waiting and due now). One statement reads every
  kind; its result is cached for ``cache_seconds``, so any number of concurrent scrapes in that
  period cost one query. Open statuses and ``blocked`` are exact (counted through the partial
  indexes); ``succeeded`` and ``cancelled`` are exact while the table has fewer than 100,000
  rows and beyond that PostgreSQL's (kind, status) statistics estimate (refreshed by
  autovacuum's ANALYZE), so a scrape never scans millions of finished rows.
- ``pgqueue_oldest_due_seconds{kind}``: age of the oldest due, unclaimed task (0 when none).
- ``pgqueue_kind_paused{kind}``: 1 while the kind is paused.
- ``pgqueue_attempt_duration_seconds{kind,outcome}`` (histogram) and
  ``pgqueue_attempts_total{kind,outcome}``: attempts of this process by outcome
  (``succeeded``, ``retried``, ``exhausted``, ``cancelled``, ``timed_out``; an attempt ended by
  its timeout counts as ``timed_out`` whatever follows).
- ``pgqueue_tasks_pushed_total{kind}``, ``pgqueue_tasks_claimed_total{kind}``,
  ``pgqueue_lost_leases_total{kind}`` (a task claimed again after its lease expired).
- ``pgqueue_workers{kind}``, ``pgqueue_workers_busy{kind}``: worker slots and running attempts.
- ``pgqueue_throttled_total{kind,reason}``: claims of this process held back by a limit
  (``rate``, ``concurrency``, ``group``, ``limiter``, ``limiter_error``).
- ``pgqueue_kind_limit{kind,limit}``: the limits in force (overrides included) as this process
  last read them: ``rate_per_second``, ``burst``, ``global_concurrency``, ``group_concurrency``,
  ``group_rate_per_second``.
  Their fleet-wide use is ``pgqueue_tasks{status="processing"}`` (running attempts) and
  ``pgqueue_tasks{status="due"}`` (tasks waiting, on a limit or for a worker).

Counters and the histogram are fed by the queue's runtime events (:meth:`Queue.subscribe`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pgqueue.events import AttemptFinished, Event, TasksClaimed, TasksPushed
from pgqueue.store.operations import (
    KindOverview,
    TableHealth,
    read_kind_overview,
    read_table_health,
)

log = logging.getLogger("pgqueue.metrics")

DEFAULT_CACHE_SECONDS = 5.0
HEALTH_SECONDS = 15.0  # the tasks table's statistics are read at most this often
OUTCOMES = ("succeeded", "retried", "exhausted", "cancelled", "timed_out")
_OUTCOME_OF_STATUS = {
    "succeeded": "succeeded",
    "must_retry": "retried",
    "no_attempts_left": "exhausted",
    "cancelled": "cancelled",
}
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
METRICS_HOST_ENV = "PGQUEUE_METRICS_HOST"


class OverviewReader:
    """Reads the kind overview at most once per ``cache_seconds``, on its own connection.

    Concurrent callers wait for the one read in progress and share its result.
    """

    def __init__(self, queue: Any, cache_seconds: float, dsn: str | None = None) -> None:
        self.queue = queue
        self.cache_seconds = cache_seconds
        self.dsn = dsn or _conninfo_of(queue)
        self.queries_run = 0  # statements executed, for tests and the scrape-cost benchmark
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._cached: KindOverview | None = None
        self._health_at: float | None = None
        self._health: TableHealth | None = None
        self._executor: Any = None

    def read(self) -> KindOverview | None:
        with self._lock:
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self.cache_seconds:
                return self._cached
            self._read_at = now
            try:
                self._cached = self._fetch()
            except Exception as exc:  # noqa: BLE001 - a failed scrape must not break the others
                log.warning("reading task counts for metrics failed: %s", exc)
                self._cached = None
            return self._cached

    def _fetch(self) -> KindOverview:
        if self._executor is None:
            from pgqueue.adapters.psycopg import PsycopgExecutor

            self._executor = PsycopgExecutor(self.dsn, max_size=1)
        self.queries_run += 1
        overview: KindOverview = self._executor.run(read_kind_overview(self.queue.queries))
        return overview

    def health(self) -> TableHealth | None:
        """The tasks table's upkeep, read at most once per ``HEALTH_SECONDS`` (the statistics
        views move slowly); ``None`` when it cannot be read."""
        with self._lock:
            now = time.monotonic()
            if self._health_at is not None and now - self._health_at < HEALTH_SECONDS:
                return self._health
            self._health_at = now
            try:
                if self._executor is None:
                    from pgqueue.adapters.psycopg import PsycopgExecutor

                    self._executor = PsycopgExecutor(self.dsn, max_size=1)
                self._health = self._executor.run(read_table_health(self.queue.queries))
            except Exception as exc:  # noqa: BLE001 - a failed scrape must not break the others
                log.warning("reading the tasks table's statistics for metrics failed: %s", exc)
                self._health = None
            return self._health

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.close()
                self._executor = None


def _conninfo_of(queue: Any) -> str:
    conninfo = getattr(queue, "_conninfo", None) or getattr(queue.executor, "conninfo", None)
    if not isinstance(conninfo, str):
        raise TypeError("this queue has no DSN to read metrics with; pass dsn= to instrument()")
    return conninfo


class DatabaseCollector(Collector):
    """``pgqueue_tasks``, ``pgqueue_oldest_due_seconds`` and ``pgqueue_kind_paused``."""

    def __init__(self, reader: OverviewReader) -> None:
        self.reader = reader

    def describe(self) -> Iterable[Any]:
        return []  # read on scrape: nothing to describe without a query

    def collect(self) -> Iterator[GaugeMetricFamily]:
        overview = self.reader.read()
        tasks = GaugeMetricFamily(
            "pgqueue_tasks",
            "Tasks per kind and status (processing and due derived; finished ones may be "
            "estimated in a large table).",
            labels=["kind", "status"],
        )
        lag = GaugeMetricFamily(
            "pgqueue_oldest_due_seconds",
            "Age of the oldest due, unclaimed task of the kind (0 when none is due).",
            labels=["kind"],
        )
        paused = GaugeMetricFamily(
            "pgqueue_kind_paused", "1 while the kind is paused.", labels=["kind"]
        )
        if overview is not None:
            kinds = sorted(overview.kinds | {spec.kind for spec in self.reader.queue.registry})
            for kind in kinds:
                for status, count in overview.counts_of(kind).items():
                    tasks.add_metric([kind, status], count)
                lag.add_metric([kind], overview.oldest_due.get(kind, 0.0))
                paused.add_metric([kind], 1.0 if kind in overview.paused else 0.0)
        yield tasks
        yield lag
        yield paused
        yield from table_gauges(self.reader.health())


def table_gauges(health: TableHealth | None) -> Iterator[GaugeMetricFamily]:
    """The tasks table's dead rows, size and upkeep problems (none when unreadable)."""
    if health is None:
        return
    yield GaugeMetricFamily(
        "pgqueue_table_dead_rows",
        "Dead rows in the tasks table (pg_stat_user_tables.n_dead_tup).",
        value=health.dead_rows,
    )
    yield GaugeMetricFamily(
        "pgqueue_table_live_rows", "Live rows in the tasks table.", value=health.live_rows
    )
    size = GaugeMetricFamily(
        "pgqueue_table_bytes",
        "Size of the tasks table: the heap alone, and with its indexes and TOAST.",
        labels=["part"],
    )
    size.add_metric(["heap"], health.table_bytes)
    size.add_metric(["total"], health.total_bytes)
    yield size
    yield GaugeMetricFamily(
        "pgqueue_table_upkeep_problems",
        "What keeps the tasks table from staying small: autovacuum off on the server or the "
        "table, or dead rows far past autovacuum's trigger (0 when fine; `pgqueue status` and "
        "the dashboard say what to do).",
        value=len(health.problems),
    )


class WorkerCollector(Collector):
    """``pgqueue_workers`` and ``pgqueue_workers_busy`` of this process."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        total = GaugeMetricFamily(
            "pgqueue_workers", "Worker slots of the kind in this process.", labels=["kind"]
        )
        busy = GaugeMetricFamily(
            "pgqueue_workers_busy", "Attempts of the kind running in this process.", labels=["kind"]
        )
        runtime = getattr(self.queue, "_runtime", None)
        workers = dict(getattr(runtime, "workers", None) or {})
        for spec in self.queue.registry.handled():
            worker = workers.get(spec.kind)
            total.add_metric([spec.kind], float(worker.size if worker is not None else 0))
            busy.add_metric([spec.kind], float(len(worker.inflight) if worker is not None else 0))
        yield total
        yield busy


class FlowCollector(Collector):
    """``pgqueue_throttled_total`` and ``pgqueue_kind_limit`` of this process."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        throttled = CounterMetricFamily(
            "pgqueue_throttled",
            "Claims of this process held back by a limit, by reason.",
            labels=["kind", "reason"],
        )
        limits = GaugeMetricFamily(
            "pgqueue_kind_limit",
            "Fleet-wide limits of the kind in force (operators' overrides included).",
            labels=["kind", "limit"],
        )
        runtime = getattr(self.queue, "_runtime", None)
        workers = dict(getattr(runtime, "workers", None) or {})
        for kind, worker in sorted(workers.items()):
            flow = getattr(worker, "flow", None)
            if flow is None:
                continue
            for reason, count in sorted(flow.throttled.items()):
                throttled.add_metric([kind, reason], float(count))
            current = flow.limits
            if current.rate_limit is not None:
                limits.add_metric([kind, "rate_per_second"], current.rate_limit.per_second)
                limits.add_metric([kind, "burst"], float(current.rate_limit.capacity))
            for name in ("global_concurrency", "group_concurrency"):
                value = getattr(current, name)
                if value is not None:
                    limits.add_metric([kind, name], float(value))
            if current.group_rate_limit is not None:
                limits.add_metric(
                    [kind, "group_rate_per_second"], current.group_rate_limit.per_second
                )
        yield throttled
        yield limits


class QueueMetrics:
    """The metrics of one queue in one registry; built by :func:`instrument`."""

    def __init__(
        self,
        queue: Any,
        registry: CollectorRegistry,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        dsn: str | None = None,
    ) -> None:
        self.queue = queue
        self.registry = registry
        self.reader = OverviewReader(queue, cache_seconds, dsn)
        self.pushed = Counter(
            "pgqueue_tasks_pushed", "Tasks pushed by this process.", ["kind"], registry=registry
        )
        self.claimed = Counter(
            "pgqueue_tasks_claimed", "Tasks claimed by this process.", ["kind"], registry=registry
        )
        self.lost_leases = Counter(
            "pgqueue_lost_leases",
            "Tasks this process claimed again after an earlier claim's lease expired.",
            ["kind"],
            registry=registry,
        )
        self.attempts = Counter(
            "pgqueue_attempts",
            "Finished attempts of this process by outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "pgqueue_attempt_duration_seconds",
            "How long attempts ran, by outcome.",
            ["kind", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._database = DatabaseCollector(self.reader)
        self._workers = WorkerCollector(queue)
        self._flow = FlowCollector(queue)
        registry.register(self._database)
        registry.register(self._workers)
        registry.register(self._flow)
        for spec in queue.registry:
            self.pushed.labels(spec.kind)
            if spec.handler is not None:
                self.claimed.labels(spec.kind)
                self.lost_leases.labels(spec.kind)
                for outcome in OUTCOMES:
                    self.attempts.labels(spec.kind, outcome)
                    self.duration.labels(spec.kind, outcome)
        self._unsubscribe = queue.subscribe(self.observe)

    def observe(self, event: Event) -> None:
        """Feed one runtime event into the counters (the queue calls this)."""
        if isinstance(event, AttemptFinished):
            outcome = "timed_out" if event.timed_out else _OUTCOME_OF_STATUS[event.status]
            self.attempts.labels(event.kind, outcome).inc()
            self.duration.labels(event.kind, outcome).observe(event.duration)
        elif isinstance(event, TasksClaimed):
            self.claimed.labels(event.kind).inc(len(event.task_ids))
            if event.lost_leases:
                self.lost_leases.labels(event.kind).inc(event.lost_leases)
        elif isinstance(event, TasksPushed):
            for kind, count in event.counts:
                self.pushed.labels(kind).inc(count)

    def close(self) -> None:
        """Stop counting and remove every metric of this queue from the registry."""
        self._unsubscribe()
        for collector in (
            self._database,
            self._workers,
            self._flow,
            self.pushed,
            self.claimed,
            self.lost_leases,
            self.attempts,
            self.duration,
        ):
            self.registry.unregister(collector)
        self.reader.close()


def instrument(
    queue: Any,
    registry: CollectorRegistry | None = None,
    *,
    cache_seconds: float = DEFAULT_CACHE_SECONDS,
    dsn: str | None = None,
) -> QueueMetrics:
    """Expose ``queue``'s metrics in ``registry`` (prometheus-client's default one if None).

    Call it after registering the kinds (their series then start at zero). Database gauges are
    read on a connection of their own, from ``dsn`` or the queue's DSN.
    """
    if cache_seconds < 0:
        raise ValueError(f"cache_seconds must not be negative, got {cache_seconds!r}")
    return QueueMetrics(queue, REGISTRY if registry is None else registry, cache_seconds, dsn)


class MetricsServer:
    """An HTTP server exposing one queue's metrics on ``/metrics``."""

    def __init__(self, queue: Any, port: int, host: str | None = None) -> None:
        from prometheus_client import start_http_server

        self.registry = CollectorRegistry()
        self.metrics = instrument(queue, self.registry)
        self.host = host or os.environ.get(METRICS_HOST_ENV, "127.0.0.1")
        self._server, self._thread = start_http_server(port, self.host, self.registry)
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.metrics.close()


def serve(queue: Any, port: int, host: str | None = None) -> MetricsServer:
    """Serve ``queue``'s metrics on ``http://host:port/metrics`` (host from
    ``$PGQUEUE_METRICS_HOST``, default 127.0.0.1; port 0 picks a free one)."""
    return MetricsServer(queue, port, host)
