"""Wake-ups: one LISTEN connection per runtime, checked by a self-ping while silent, and the
dispatch of what it hears (due work, pauses and resumes, due times, cancellations).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from pgqueue.aio import cancel_and_wait
from pgqueue.delayer import Backoff
from pgqueue.runtime.context import RuntimeContext
from pgqueue.runtime.producer import KindWorker
from pgqueue.store import operations

log = logging.getLogger("pgqueue.worker")

LISTEN_CHECK_PERIOD = 2.0  # seconds of listener silence after which it is pinged
LISTEN_ECHO_TIMEOUT = 3.0  # seconds a ping's echo may take before the listener is replaced


class Notifier:
    """Listens on the queue's channel and hands each notification to :meth:`dispatch`;
    reconnects with backoff when the connection is lost or found silent."""

    def __init__(self, runtime: RuntimeContext, workers: Mapping[str, KindWorker]) -> None:
        self.runtime = runtime
        self.workers = workers

    async def run(self) -> None:
        runtime = self.runtime
        backoff = Backoff(runtime.max_db_retry_delay)
        while True:
            try:
                async with runtime.executor.listen(runtime.queries.channel) as payloads:
                    backoff.reset()
                    runtime.listening.set()
                    if runtime.poller is not None:
                        runtime.poller.poll_soon()  # anything pushed while we were not listening
                    await self._consume(payloads)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                runtime.listening.clear()
                delay = backoff.next()
                log.warning("LISTEN connection lost, reconnecting in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)

    async def _consume(self, payloads: Any) -> None:
        """Dispatch notifications; when the listener has been silent for a while, ping it (a
        NOTIFY sent on another connection must come back on it) and raise if the echo is late:
        a socket that went silent without closing (a frozen backend, a dead NAT entry, a
        network partition) is then replaced within seconds instead of never."""
        loop = asyncio.get_running_loop()
        heard = asyncio.Event()
        echo = asyncio.Event()
        expected = ""

        async def consume() -> None:
            async for payload in payloads:
                heard.set()
                if payload.startswith("h:"):
                    if payload == expected:
                        echo.set()
                    continue
                self.dispatch(payload)

        consumer: asyncio.Future[Any] = asyncio.create_task(
            consume(), name="pgqueue-listener-consume"
        )
        sender: asyncio.Task[Any] | None = None
        try:
            while True:
                heard.clear()
                done, _ = await asyncio.wait({consumer}, timeout=LISTEN_CHECK_PERIOD)
                if done:
                    consumer.result()  # raises what ended it
                    raise ConnectionError("the LISTEN connection closed")
                if heard.is_set():
                    continue  # it spoke lately: alive
                expected = f"h:{uuid.uuid4().hex}"
                echo.clear()
                if sender is None or sender.done():
                    sender = asyncio.create_task(self._ping(expected))
                sent_at = loop.time()
                echoed: asyncio.Future[Any] = asyncio.ensure_future(echo.wait())
                try:
                    done, _ = await asyncio.wait(
                        {consumer, echoed},
                        timeout=LISTEN_ECHO_TIMEOUT,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    echoed.cancel()
                if consumer in done:
                    consumer.result()
                    raise ConnectionError("the LISTEN connection closed")
                if not echo.is_set():
                    self.runtime.listener_restarts += 1
                    raise ConnectionError(
                        f"the LISTEN connection is silent: a ping got no echo in"
                        f" {loop.time() - sent_at:.1f}s; replacing it"
                    )
        finally:
            await cancel_and_wait([consumer] if sender is None else [consumer, sender])

    async def _ping(self, payload: str) -> None:
        """Send a listener ping (another connection's NOTIFY); errors are the echo's concern."""
        try:
            await self.runtime.executor.run(operations.ping_listener(self.runtime.queries, payload))
        except Exception as exc:  # noqa: BLE001 - a missing echo replaces the listener
            log.debug("listener ping failed: %s", exc)

    def dispatch(self, payload: str) -> None:
        """Act on one notification of the queue's channel."""
        runtime = self.runtime
        prefix, _, value = payload.partition(":")
        if prefix == "n":
            # A push (or retry) of tasks due since an epoch: below the floor, read from the head.
            due = due_and_kind(value)
            if due is not None:
                runtime.wake(due[1], due_at=due[0])
        elif prefix == "p":
            runtime.wake(value)
        elif prefix == "w":
            runtime.wake(value, from_head=True)  # a wait marked a waiting task of the kind
        elif prefix in ("pause", "resume"):
            worker = self.workers.get(value)
            if worker is not None:
                if prefix == "pause":
                    worker.pause()
                else:
                    worker.resume()
        elif prefix == "d":
            due = due_and_kind(value)
            if due is not None and due[1] in self.workers:
                epoch, kind = due
                # Committed after its due time passed, it may lie below the floor.
                self.workers[kind].floor.due_at(epoch)
                if runtime.poller is not None:
                    runtime.poller.due_at_epoch(epoch, kind)
        elif prefix == "c":
            try:
                task_id = int(value)
            except ValueError:
                return
            for worker in self.workers.values():
                worker.cancel(task_id)


def due_and_kind(value: str) -> tuple[float, str] | None:
    """``<epoch>:<kind>`` (what ``n:`` and ``d:`` notifications carry) parsed; None if the
    epoch is not a number."""
    epoch, _, kind = value.partition(":")
    try:
        return float(epoch), kind
    except ValueError:
        return None
