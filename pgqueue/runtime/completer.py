"""Writing attempt results: finished attempts queue their outcome, and one writer per runtime
applies whatever accumulated while its previous write ran (one ``UPDATE`` for the batch, and
one ``DELETE`` for kinds that keep no finished rows), guarded by the claim tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pgqueue.delayer import Backoff
from pgqueue.events import ResultsWritten
from pgqueue.runtime.context import RuntimeContext
from pgqueue.runtime.execution import Outcome
from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.operations import (
    bare_array,
    float_array,
    int_array,
    settle_steps,
    text_array,
)
from pgqueue.store.queries import Queries
from pgqueue.task import Status

log = logging.getLogger("pgqueue.worker")

MAX_RESULT_BATCH = 5000


@dataclass(slots=True)
class Result:
    """An outcome waiting to be written, with what guards it."""

    task_id: int
    token: str
    kind: str
    outcome: Outcome
    keep_messages: int
    delete: bool
    attempt: int = 0  # the attempt number, for log lines about the task
    workflow: bool = False  # a workflow node: its end settles its children


class ResultWriter:
    """Writes attempt results in batches: whatever accumulated while the last write ran.

    Writes run on their own connection, concurrently with the claim loops. A failed write is
    retried with backoff until it succeeds: the heartbeat keeps the leases of unwritten results
    alive, and a result whose claim was lost meanwhile is not applied (its claim token no longer
    matches), so retrying is always safe. Only while the runtime stops does the writer give up,
    one lease after it was asked to close (the tasks then come back when their leases end).
    """

    def __init__(
        self,
        runtime: RuntimeContext,
        leases: Callable[[], Iterable[float]],
        on_written: Callable[[Sequence[Result]], None],
    ) -> None:
        self.runtime = runtime
        self.leases = leases  # the lease of every kind: how long to keep trying at stop
        self.on_written = on_written  # told of each batch written (retries to schedule)
        self.pending: list[Result] = []
        self.writing: list[Result] = []  # the batch being written (its leases are renewed)
        self.give_up_at: float | None = None
        self.signal = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.closing = False

    def submit(self, result: Result) -> None:
        self.pending.append(result)
        self.idle.clear()
        self.signal.set()

    async def run(self) -> None:
        while True:
            await self.signal.wait()
            self.signal.clear()
            while self.pending:
                batch = self.pending[:MAX_RESULT_BATCH]
                del self.pending[:MAX_RESULT_BATCH]
                await self._write(batch)
            self.idle.set()
            if self.closing:
                return

    async def _write(self, batch: list[Result]) -> None:
        self.writing = batch
        try:
            await self._write_until_done(batch)
        finally:
            self.writing = []

    async def _write_until_done(self, live: list[Result]) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.runtime.max_db_retry_delay)
        while True:
            try:
                applied = await self.runtime.executor.run(
                    record_results(self.runtime.queries, live)
                )
            except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                if self.give_up_at is not None and loop.time() >= self.give_up_at:
                    for lost in live:
                        log.error(
                            "result of task %s not written before stop; the task returns when"
                            " its lease ends",
                            lost.task_id,
                            extra={"task_id": lost.task_id, "task_kind": lost.kind},
                        )
                    return
                delay = backoff.next()
                log.warning("writing %d result(s) failed, retrying in %.2fs: %s",
                            len(live), delay, exc)  # fmt: skip
                await asyncio.sleep(delay)
                continue
            self.on_written(live)
            if self.runtime.events.listeners:
                self.runtime.events.emit(
                    ResultsWritten(
                        tuple(
                            (r.task_id, r.kind, r.outcome.status.value, r.task_id in applied)
                            for r in live
                        )
                    )
                )
            return

    async def close(self) -> None:
        self.give_up_at = asyncio.get_running_loop().time() + max(self.leases(), default=10.0)
        self.closing = True
        self.signal.set()

    def held(self, kind: str) -> list[tuple[int, str]]:
        """Claims of ``kind`` whose results wait to be written."""
        return [(r.task_id, r.token) for r in (*self.writing, *self.pending) if r.kind == kind]


def record_results(queries: Queries, results: Sequence[Result]) -> Operation[set[int]]:
    """Delete finished rows with zero retention and update the rest, both guarded by the claim
    token; returns the ids whose result applied (a task cancelled or re-claimed meanwhile is
    not). Each statement also adds its applied outcomes to the per-minute throughput rollup,
    so the history costs no extra round trip and is exact.

    When the batch holds workflow nodes, the nodes that ended settle their children in the
    same transaction (a batch without any runs exactly the statements it ran before)."""
    deletes = [r for r in results if r.delete]
    nodes = [r for r in results if r.workflow and r.outcome.status is not Status.MUST_RETRY]
    updates = [r for r in results if not r.delete]

    def steps() -> Steps[set[int]]:
        applied: set[int] = set()
        if deletes:
            rows = yield Statement(
                queries["delete_finished_tasks"],
                {
                    "ids": int_array(r.task_id for r in deletes),
                    "tokens": bare_array(r.token for r in deletes),
                    "statuses": bare_array(r.outcome.status.value for r in deletes),
                    "results": results_of(deletes),
                    "finished_channel": queries.finished_channel,
                },
            )
            applied.update(row[0] for row in rows)
        if updates:
            rows = yield Statement(
                queries["record_outcomes"],
                {
                    "ids": int_array(r.task_id for r in updates),
                    "tokens": bare_array(r.token for r in updates),
                    "statuses": bare_array(
                        "snoozed" if r.outcome.snooze else r.outcome.status.value for r in updates
                    ),
                    "delays": float_array(r.outcome.delay for r in updates),
                    "errors": text_array(r.outcome.error for r in updates),
                    "keeps": int_array(r.keep_messages for r in updates),
                    "results": results_of(updates),
                    "finished_channel": queries.finished_channel,
                },
            )
            applied.update(row[0] for row in rows)
        ended = [r.task_id for r in nodes if r.task_id in applied and not r.outcome.snooze]
        if ended:
            yield from settle_steps(queries, ended)
        due_now = retried_at_once(results, applied) if applied else None
        if due_now:
            # Every process handling these kinds claims the retries now, not at its next poll.
            yield Statement(queries["notify_kinds"], {"channel": queries.channel, "kinds": due_now})
        return applied

    return Operation(steps(), transactional=bool(nodes))


def results_of(results: Sequence[Result]) -> str | None:
    """The results as an array literal of JSON texts aligned with ``results``, or ``None`` (SQL
    NULL, which ``unnest`` pads as NULLs) when none has one: handlers that return nothing send
    no array."""
    texts = [r.outcome.result for r in results]
    return text_array(texts) if any(text is not None for text in texts) else None


def retried_at_once(results: Sequence[Result], applied: set[int]) -> list[str]:
    """Kinds with an applied retry that is due at once (``Decision.retry_now()``)."""
    return sorted(
        {
            r.kind
            for r in results
            if r.outcome.status is Status.MUST_RETRY
            and r.outcome.delay <= 0
            and r.task_id in applied
        }
    )
