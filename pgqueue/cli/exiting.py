"""Ending a worker process whose sync handler outlived its drain.

Sync handlers run on the standard ``ThreadPoolExecutor`` (:mod:`pgqueue.runtime.threads`),
whose threads the interpreter joins at exit. A handler stuck past its deadline would then keep
a stopped worker process alive for as long as it hangs. Its attempt is already recorded (timed
out) or handed back, and its task returns when its lease ends, so the process may go at once.
"""

from __future__ import annotations

import logging
import os
import threading

from pgqueue.runtime.threads import THREAD_NAME_PREFIX

log = logging.getLogger("pgqueue.cli")


def running_handler_threads() -> list[threading.Thread]:
    """The pool threads still alive (each may be running a sync handler)."""
    return [
        t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX) and t.is_alive()
    ]


def exit_now_if_handlers_hang(code: int) -> None:
    """When a sync handler's thread still runs once the drain is over, end the process now
    with ``code`` (logs flushed) instead of waiting for the thread at interpreter exit."""
    busy = [t for t in running_handler_threads() if _busy(t)]
    if not busy:
        return
    log.error(
        "%d sync handler(s) still running past the drain; exiting without waiting for them "
        "(their tasks return when their leases end)",
        len(busy),
    )
    logging.shutdown()
    os._exit(code)


def _busy(thread: threading.Thread) -> bool:
    # An idle pool thread waits on the pool's queue and ends within a moment once the pool is
    # shut down; one still alive after a short join is running a call.
    thread.join(0.2)
    return thread.is_alive()
