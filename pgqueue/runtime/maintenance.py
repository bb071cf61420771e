"""Maintenance loops of the runtime: the heartbeat that keeps held claims leased, the retention
sweeper and the periodic schedules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from pgqueue.delayer import Backoff
from pgqueue.events import TerminalTasksSwept
from pgqueue.options import terminal_ttl_of
from pgqueue.periodic import Periodic
from pgqueue.runtime.completer import ResultWriter
from pgqueue.runtime.context import RuntimeContext
from pgqueue.runtime.producer import KindWorker
from pgqueue.store import operations
from pgqueue.task import encode_payload

log = logging.getLogger("pgqueue.worker")

HEARTBEAT_SHARE = 0.25  # beat every quarter of the lease: three beats may fail before it ends


class Heartbeat:
    """Keeps the lease of every claim this process holds alive while it holds it.

    A claim leases its row for the kind's ``lease_margin`` only. Every quarter of that, one
    statement per kind (``extend_leases``) renews the leases of all the kind's claims held here —
    buffered, running (including a sync handler still on its thread past its deadline, up to
    ``max_overrun``), and with a result waiting to be written — guarded by their claim tokens.
    So a long attempt is never re-claimed while it runs, and a dead process's tasks come back
    within about one lease. A running attempt whose claim was not renewed (the task was
    cancelled, or its lease was lost and the task re-claimed) is told to stop.
    """

    def __init__(
        self, runtime: RuntimeContext, workers: Mapping[str, KindWorker], writer: ResultWriter
    ) -> None:
        self.runtime = runtime
        self.workers = workers
        self.writer = writer

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = {kind: loop.time() for kind in self.workers}
        while True:
            now = loop.time()
            for kind, worker in self.workers.items():
                if next_beat[kind] > now:
                    continue
                next_beat[kind] = now + worker.lease * HEARTBEAT_SHARE
                try:
                    await self.beat(worker)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("renewing the leases of %r failed: %s", kind, exc)
            wait = min(next_beat.values(), default=now + 60) - loop.time()
            await asyncio.sleep(max(wait, 0.01))

    async def beat(self, worker: KindWorker) -> None:
        loop = worker.loop
        sent = loop.time()
        claims = worker.held(sent) + self.writer.held(worker.kind)
        if not claims:
            worker.lease_renewed_at = sent
            return
        renewed = await self.runtime.executor.run(
            operations.extend_leases(self.runtime.queries, claims, worker.lease)
        )
        worker.lease_renewed_at = sent
        if len(renewed) < len(claims):
            worker.claims_lost({c for c in claims if c[0] not in renewed})


class Sweeper:
    """Retention: sweeps the kinds whose janitor period is up, asking the database first, in
    one statement, which of them hold expired terminal tasks: an idle process costs one
    statement per period, not one transaction per kind."""

    def __init__(self, runtime: RuntimeContext, workers: Mapping[str, KindWorker]) -> None:
        self.runtime = runtime
        self.workers = workers

    async def run(self) -> None:
        runtime = self.runtime
        loop = asyncio.get_running_loop()
        next_run = {kind: loop.time() for kind in self.workers}
        while not runtime.stopping:
            now = loop.time()
            ready = [kind for kind, at in next_run.items() if at <= now]
            ttls: dict[str, float] = {}
            for kind in ready:
                worker = self.workers[kind]
                next_run[kind] = now + worker.options.loop.janitor_period
                try:
                    ttls[kind] = terminal_ttl_of(worker.options)
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("retention sweep of %r failed: %s", kind, exc)
            if ready:
                try:
                    # Workflow nodes whose last attempt died with its worker: their
                    # dependents would wait for them forever.
                    abandoned = await runtime.executor.run(
                        operations.end_abandoned_nodes(runtime.queries, ready)
                    )
                    if abandoned:
                        log.warning(
                            "%d workflow node(s) lost their last attempt with their worker;"
                            " ended as out of attempts: %s",
                            len(abandoned),
                            abandoned[:20],
                        )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("ending abandoned workflow nodes failed: %s", exc)
            sweepable: list[str] = []
            if ttls:
                try:
                    sweepable = await runtime.executor.run(
                        operations.find_sweepable_kinds(
                            runtime.queries,
                            ttls,
                            ttls.values(),
                            (float(self.workers[k].options.loop.throughput_window) for k in ttls),
                        )
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("retention sweep failed: %s", exc)
            for kind in sweepable:
                worker = self.workers[kind]
                period = worker.options.loop.janitor_period
                try:
                    deleted = await runtime.executor.run(
                        operations.sweep_terminal_tasks(
                            runtime.queries,
                            kind,
                            ttls[kind],
                            period * 0.9,
                            worker.options.loop.sweep_batch_size,
                            worker.options.loop.throughput_window,
                        )
                    )
                    if deleted:
                        log.info("retention deleted %d terminal task(s) of %r", deleted, kind)
                    if deleted is not None and runtime.events.listeners:
                        runtime.events.emit(TerminalTasksSwept(kind, deleted))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                    log.warning("retention sweep of %r failed: %s", kind, exc)
            wait = min(next_run.values(), default=now + 60) - loop.time()
            await runtime.sleep_unless_stopping(max(wait, 0.01))


class PeriodicScheduler:
    """Enqueues each slot of a periodic kind once (across all processes)."""

    def __init__(self, runtime: RuntimeContext, periodic: Periodic) -> None:
        self.runtime = runtime
        self.periodic = periodic

    async def run(self) -> None:
        runtime, periodic = self.runtime, self.periodic
        spec = runtime.registry.get(periodic.kind)
        payload = encode_payload(periodic.payload)
        backoff = Backoff(runtime.max_db_retry_delay)
        while not runtime.stopping:
            try:
                now = await runtime.executor.run(operations.database_now(runtime.queries))
                slot = periodic.schedule.latest_slot(now)
                created = None
                if periodic.creates(slot):  # on shards, only the slot's own shard creates it
                    created = await runtime.executor.run(
                        operations.push_periodic_task(
                            runtime.queries,
                            periodic.kind,
                            slot,
                            payload,
                            periodic.external_key(slot),
                            spec.options.max_attempts,
                            spec.options.priority,
                        )
                    )
                if created is not None:
                    log.info(
                        "periodic task %s of %r enqueued for %s",
                        created,
                        periodic.kind,
                        slot.isoformat(),
                    )
                backoff.reset()
                wait = (periodic.schedule.next_slot(slot) - now).total_seconds()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again shortly
                wait = backoff.next()
                log.warning(
                    "periodic schedule of %r failed, retrying in %.2fs: %s",
                    periodic.kind,
                    wait,
                    exc,
                )
            await runtime.sleep_unless_stopping(max(wait, 0.001))
