"""FastAPI and Starlette: run an ``AsyncQueue`` with the app, hand it to endpoints, and serve
pgqueue's REST API and dashboard under a prefix of the host app (extra ``fastapi``).

```python
from fastapi import FastAPI
from pgqueue import AsyncQueue
from pgqueue.adapters.fastapi import QueueDependency, lifespan, mount

queue = AsyncQueue(dsn)
app = FastAPI(lifespan=lifespan(queue))        # start() at startup, drain at shutdown
mount(app, queue, "/pgqueue")                  # the API and the dashboard at /pgqueue/

@app.post("/signup")
async def signup(queue: QueueDependency) -> None: ...
```

Shutdown (SIGTERM or SIGINT to uvicorn) waits for the requests in flight, then drains the
workers: the attempts that run finish and their results are written; tasks not yet claimed
stay in the database for the next process. A drain is bounded by the longest attempt timeout
plus the lease margin, after which the rest is handed back (``StopMode.ABORT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from pgqueue.async_queue import AsyncQueue
from pgqueue.http.settings import HttpSettings
from pgqueue.runtime import StopMode

log = logging.getLogger("pgqueue.fastapi")

__all__ = ["QueueDependency", "drain", "get_queue", "lifespan", "mount"]

STATE_QUEUE = "pgqueue_queue"
STATE_MOUNTED = "pgqueue_mounted_apps"

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]


def lifespan(
    queue: AsyncQueue, *, workers: bool = True, drain_seconds: float | None = None
) -> Lifespan:
    """A lifespan for ``FastAPI(lifespan=...)`` or ``Starlette(lifespan=...)``.

    At startup it checks the schema and starts ``queue``'s workers (``workers=False``: a
    producer-only web process, nothing is started and pushes open the pool on first use) and
    puts the queue in ``app.state`` for :func:`get_queue`. At shutdown it closes the pgqueue
    apps mounted with :func:`mount`, then drains and closes the queue (see :func:`drain`).
    To combine it with a lifespan of your own, enter it inside yours:
    ``async with lifespan(queue)(app): yield``.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        setattr(app.state, STATE_QUEUE, queue)
        if workers:
            try:
                await queue.start()
            except BaseException:
                await queue.close()  # a startup that fails (schema not migrated) leaks no pool
                raise
            log.info(
                "pgqueue workers started (kinds: %s)",
                ", ".join(spec.kind for spec in queue.registry.handled()) or "none",
            )
        try:
            yield
        finally:
            await _close_mounted(app)
            await drain(queue, drain_seconds)

    return run


async def drain(queue: AsyncQueue, seconds: float | None = None) -> None:
    """Close ``queue`` draining its in-flight attempts; after ``seconds`` (default: the longest
    attempt timeout plus the lease margin) hand what still runs back to the database."""
    if seconds is None:
        margin = max((spec.options.loop.lease_margin for spec in queue.registry), default=10.0)
        seconds = queue.longest_attempt_timeout() + margin
    log.info("draining pgqueue workers (at most %.0fs)", seconds)
    try:
        await asyncio.wait_for(queue.close(), seconds)
    except TimeoutError:
        log.error("pgqueue drain did not finish in %.0fs; handing the rest back", seconds)
        await queue.close(StopMode.ABORT)
    log.info("pgqueue workers drained")


def get_queue(request: Request) -> AsyncQueue:
    """The dependency: the queue that :func:`lifespan` runs (``Depends(get_queue)``)."""
    queue = getattr(request.app.state, STATE_QUEUE, None)
    if queue is None:
        raise RuntimeError(
            "no pgqueue queue on this app: create it with FastAPI(lifespan=lifespan(queue))"
        )
    return queue  # type: ignore[no-any-return]


QueueDependency = Annotated[AsyncQueue, Depends(get_queue)]
"""``queue: QueueDependency`` in an endpoint's parameters receives the app's queue."""


def mount(
    app: FastAPI | Any,
    queue: AsyncQueue,
    path: str = "/pgqueue",
    settings: HttpSettings | None = None,
) -> FastAPI:
    """Serve pgqueue's REST API and dashboard under ``path`` of ``app``; the mounted app.

    ``settings`` default to the ``PGQUEUE_*`` environment that ``pgqueue serve`` reads, so
    the same ``PGQUEUE_API_TOKEN`` (operator) and ``PGQUEUE_READ_TOKEN`` (read) apply, with
    the same roles. The dashboard's links, assets and redirects stay under ``path``. The
    mounted app does not own the queue: :func:`lifespan` does.
    """
    from pgqueue.http.app import create_app

    if not path.startswith("/") or path.endswith("/"):
        raise ValueError(f"mount path must start with / and not end with one, got {path!r}")
    if settings is None:
        settings = HttpSettings.from_env(schema=queue.schema)
    api = create_app(queue, settings)
    app.mount(path, api, name="pgqueue")
    mounted = getattr(app.state, STATE_MOUNTED, None)
    if mounted is None:
        mounted = []
        setattr(app.state, STATE_MOUNTED, mounted)
    mounted.append(api)
    return api


async def _close_mounted(app: Any) -> None:
    from pgqueue.http import service
    from pgqueue.http.app import close_app

    mounted = getattr(app.state, STATE_MOUNTED, None) or []
    if mounted:
        await service.cancel_pings()
    for api in mounted:
        await asyncio.to_thread(close_app, api)
