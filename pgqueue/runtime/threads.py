"""The thread pool of sync handlers and hooks: a thin layer over the standard
``concurrent.futures.ThreadPoolExecutor``.

What it adds to the standard pool, and why:

- the caller's ``contextvars`` context travels with each call (log context, tracing);
- results arrive as asyncio futures on the runtime's loop;
- a call cancelled on the loop never starts: the standard pool skips a work item cancelled
  before a thread takes it, and this layer also skips one whose asyncio future was cancelled
  while its cancellation was still on its way to the pool (``asyncio.wrap_future`` forwards it
  only on the loop's next turn);
- each call's :class:`Job` says whether a thread runs it and resolves ``returned`` when the
  thread lets go of it, so a timed-out sync attempt keeps its claim and its worker slot until
  its thread returns;
- ``KeyboardInterrupt`` and ``SystemExit`` raised by a handler travel as :class:`ThreadInterrupt`,
  an ordinary error of that attempt, instead of stopping the loop that awaits it.

One guarantee of the standard pool differs from the daemon threads pgqueue used before: the
interpreter joins the pool's threads at exit, so a process whose sync handler never returns
waits for it when it exits. ``pgqueue worker`` therefore ends its process at once when its
drain bound passes with such a thread still running (see :mod:`pgqueue.cli.main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

THREAD_NAME_PREFIX = "pgqueue-sync"  # every pool thread's name starts with it


class ThreadInterrupt(Exception):
    """A sync callable raised ``KeyboardInterrupt`` or ``SystemExit``; carried as an error."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


class Job:
    """One submitted call: it starts at most once, and never after it was cancelled.

    ``returned`` resolves when the call's thread is done with it, or at once when it was
    cancelled before it started (whether or not anybody still awaits its result).
    """

    __slots__ = ("future", "returned")

    def __init__(self, future: Future[Any], returned: asyncio.Future[None]) -> None:
        self.future = future
        self.returned = returned

    def cancel(self) -> bool:
        """Cancel the call unless a thread already took it; true when it will never run."""
        return self.future.cancel()

    @property
    def running(self) -> bool:
        """True while a thread runs the call."""
        return self.future.running()


class SyncThreadPool:
    """Runs sync calls on up to ``max_threads`` threads of a ``ThreadPoolExecutor``."""

    def __init__(self, max_threads: int, name: str = THREAD_NAME_PREFIX) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, max_threads), thread_name_prefix=name
        )

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Schedule ``fn(*args)`` in a thread (with the caller's context); await the result.

        Cancelling the returned future before a thread took the call means it never runs.
        """
        return self.submit_job(loop, fn, *args)[0]

    def submit_job(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any
    ) -> tuple[asyncio.Future[T], Job]:
        """Like :meth:`submit`, also returning the :class:`Job` (to learn whether it runs)."""
        context = contextvars.copy_context()
        waiter: list[asyncio.Future[T]] = []  # the asyncio future, once it exists
        concurrent = self._executor.submit(_call, waiter, context, fn, args)
        future = asyncio.wrap_future(concurrent, loop=loop)
        waiter.append(future)
        returned: asyncio.Future[None] = loop.create_future()
        concurrent.add_done_callback(lambda _: _resolve_soon(loop, returned))
        return future, Job(concurrent, returned)

    def close(self) -> None:
        """Let idle threads end; a thread still running a call ends when it returns."""
        self._executor.shutdown(wait=False, cancel_futures=False)


def _call(
    waiter: list[asyncio.Future[Any]],
    context: contextvars.Context,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    if waiter and waiter[0].cancelled():
        # Cancelled on the loop; the cancellation had not reached the pool's work item yet.
        return None
    try:
        return context.run(fn, *args)
    except (KeyboardInterrupt, SystemExit) as exc:
        raise ThreadInterrupt(exc) from exc


def _resolve_soon(loop: asyncio.AbstractEventLoop, returned: asyncio.Future[None]) -> None:
    def resolve() -> None:
        if not returned.done():
            returned.set_result(None)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this call
        loop.call_soon_threadsafe(resolve)
