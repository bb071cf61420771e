"""A bounded pool of daemon threads for sync handlers and hooks.

The standard ``ThreadPoolExecutor`` joins its threads at interpreter exit, so one sync handler
stuck past its deadline would keep a stopped worker process alive forever. Attempts are already
recorded as timed out at their deadline; these threads are daemons so that exit is not blocked.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ThreadInterrupt(Exception):
    """A sync callable raised ``KeyboardInterrupt`` or ``SystemExit``; carried as an error."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


class Job:
    """One submitted callable: it starts at most once, and never after it was cancelled.

    ``returned`` resolves when the callable's thread is done with it (whether or not anybody
    still awaits its result), so a caller can hold a resource until the thread lets go.
    """

    __slots__ = ("_lock", "_state", "returned")

    PENDING, RUNNING, DONE, CANCELLED = 0, 1, 2, 3

    def __init__(self, returned: asyncio.Future[None]) -> None:
        self._lock = threading.Lock()
        self._state = self.PENDING
        self.returned = returned

    def cancel(self) -> bool:
        """Cancel the job unless a thread already took it; true when it will never run."""
        with self._lock:
            if self._state == self.PENDING:
                self._state = self.CANCELLED
            return self._state == self.CANCELLED

    def set_running(self) -> bool:
        """Called by the thread before running it: false when the job was cancelled first."""
        with self._lock:
            if self._state != self.PENDING:
                return False
            self._state = self.RUNNING
            return True

    def set_done(self) -> None:
        with self._lock:
            self._state = self.DONE

    @property
    def running(self) -> bool:
        """True while a thread runs the callable."""
        return self._state == self.RUNNING


class DaemonThreadPool:
    """Runs callables on up to ``max_threads`` daemon threads, resolving asyncio futures."""

    def __init__(self, max_threads: int, name: str = "pgqueue-sync") -> None:
        self._max_threads = max(1, max_threads)
        self._name = name
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._unfinished = 0  # submitted callables that have not returned yet
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Schedule ``fn(*args)`` in a thread (with the caller's context); await the result.

        Cancelling the returned future before a thread took the job means it never runs.
        """
        return self.submit_job(loop, fn, *args)[0]

    def submit_job(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
    ) -> tuple[asyncio.Future[T], Job]:
        """Like :meth:`submit`, also returning the :class:`Job` (to learn whether it runs)."""
        future: asyncio.Future[T] = loop.create_future()
        job = Job(loop.create_future())
        future.add_done_callback(lambda f: job.cancel() if f.cancelled() else None)
        context = contextvars.copy_context()
        self._work.put((loop, future, job, context, fn, args))
        with self._lock:
            self._unfinished += 1
            if self._unfinished > len(self._threads) < self._max_threads and not self._closed:
                thread = threading.Thread(
                    target=self._worker, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future, job

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            loop, future, job, context, fn, args = item
            if future.cancelled():
                # Cancelled on the loop: its done-callback, which cancels the job, may not
                # have run yet (callbacks wait for the loop's next turn), so look at the future.
                job.cancel()
            if not job.set_running():
                # Cancelled before any thread took it: it never starts.
                with self._lock:
                    self._unfinished -= 1
                continue
            try:
                result = context.run(fn, *args)
            except (KeyboardInterrupt, SystemExit) as exc:
                error: BaseException | None = ThreadInterrupt(exc)
            except BaseException as exc:  # noqa: BLE001 - carried to the awaiting coroutine
                error = exc
            else:
                error = None
            job.set_done()
            try:
                if error is None:
                    loop.call_soon_threadsafe(_resolve, future, result, None)
                else:
                    loop.call_soon_threadsafe(_resolve, future, None, error)
                loop.call_soon_threadsafe(_resolve, job.returned, None, None)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for this result any more
            with self._lock:
                self._unfinished -= 1

    def close(self) -> None:
        """Let idle threads end; a thread still running a callable ends when it returns."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._work.put(None)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
