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
        """Schedule ``fn(*args)`` in a thread (with the caller's context); await the result."""
        future: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()
        self._work.put((loop, future, context, fn, args))
        with self._lock:
            self._unfinished += 1
            if self._unfinished > len(self._threads) < self._max_threads and not self._closed:
                thread = threading.Thread(
                    target=self._worker, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            loop, future, context, fn, args = item
            try:
                result = context.run(fn, *args)
            except (KeyboardInterrupt, SystemExit) as exc:
                error: BaseException | None = ThreadInterrupt(exc)
            except BaseException as exc:  # noqa: BLE001 - carried to the awaiting coroutine
                error = exc
            else:
                error = None
            try:
                if error is None:
                    loop.call_soon_threadsafe(_resolve, future, result, None)
                else:
                    loop.call_soon_threadsafe(_resolve, future, None, error)
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
