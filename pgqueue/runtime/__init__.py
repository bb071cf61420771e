"""The worker runtime: everything that runs while a queue is started.

- :mod:`.supervisor` starts, supervises and stops the loops of one queue (``Runtime``);
- :mod:`.producer` runs each kind's claim loop and its attempts (``KindWorker``);
- :mod:`.execution` runs one attempt: hooks, stamps, handler, deadline (``AttemptRunner``);
- :mod:`.completer` writes results in batches (``ResultWriter``);
- :mod:`.notifier` keeps the LISTEN connection and routes wake-ups;
- :mod:`.poller` wakes kinds whose delayed tasks fall due;
- :mod:`.maintenance` renews leases, sweeps retention and pushes periodic slots;
- :mod:`.threads` runs sync handlers on a thread pool;
- :mod:`.context` is what the pieces share, so none of them imports the supervisor.
"""

from pgqueue.runtime.supervisor import Runtime, StopMode

__all__ = ["Runtime", "StopMode"]
