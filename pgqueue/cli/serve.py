"""``pgqueue serve``: the HTTP service (and, optionally, the app's workers) in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgqueue.async_queue import AsyncQueue
from pgqueue.cli.exiting import exit_now_if_handlers_hang
from pgqueue.options import KindOptions
from pgqueue.queue import Queue
from pgqueue.runtime import StopMode

if TYPE_CHECKING:
    from pgqueue.http.settings import HttpSettings

log = logging.getLogger("pgqueue.http")

# Kinds the service declares itself when no app names them: producer-side options only.
DECLARED_KIND_OPTIONS = KindOptions(attempt_timeout=60.0)


def fail(message: str) -> typer.Exit:
    """Print one line on stderr; the caller raises the returned exit (status 2)."""
    typer.echo(f"pgqueue serve: {message}", err=True)
    return typer.Exit(2)


def serve(
    workers: Annotated[
        str | None,
        typer.Option(
            "--workers",
            metavar="MODULE:QUEUE",
            help="Load this app's queue and run its workers in this process too.",
        ),
    ] = None,
    app_target: Annotated[
        str | None,
        typer.Option(
            "--app",
            metavar="MODULE:QUEUE",
            envvar="PGQUEUE_APP",
            help="Load this app's queue for its kinds; serve only (workers run elsewhere).",
        ),
    ] = None,
    dsn: Annotated[str | None, typer.Option(help="PostgreSQL DSN [env: PGQUEUE_DSN]")] = None,
    schema: Annotated[str | None, typer.Option(help="pgqueue schema [env: PGQUEUE_SCHEMA]")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address [env: PGQUEUE_HTTP_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env: PGQUEUE_HTTP_PORT]")] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind", help="Declare a kind to accept (repeatable) [env: PGQUEUE_HTTP_KINDS]"
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Serve the REST API (and the dashboard) until SIGTERM/SIGINT, then drain and exit 0.

    Kinds: with --app or --workers the service accepts the kinds that app's queue registers or
    declares; without one it accepts the default kind and those named with --kind. Any other
    kind in POST /enqueue gets 422.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise fail("the HTTP service needs its extra: pip install 'pgqueue[http]'") from None
    from pgqueue.http.settings import HttpSettings, InvalidSettings

    if workers and app_target and workers != app_target:
        raise fail("--workers and --app name different queues; give one")
    try:
        settings = HttpSettings.from_env(
            dsn=dsn,
            schema=schema,
            host=host,
            port=port,
            app=workers or app_target,
            run_workers=True if workers else None,
            kinds=tuple(kind) if kind else None,
        )
    except InvalidSettings as exc:
        raise fail(str(exc)) from None
    host_queue = _load_host_queue(settings)
    queue = _api_queue(settings, host_queue)
    try:
        run_server(queue, settings, host_queue)
    except OSError as exc:
        raise fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None


def _load_host_queue(settings: HttpSettings) -> Queue | AsyncQueue | None:
    if not settings.app:
        if not settings.dsn:
            raise fail("PGQUEUE_DSN (or --dsn) is required when no --app is given")
        return None
    from pgqueue.cli.loading import load_queue

    try:
        return load_queue(settings.app)
    except (ImportError, AttributeError, typer.BadParameter) as exc:
        raise fail(f"cannot load {settings.app}: {exc}") from None


def _api_queue(settings: HttpSettings, host_queue: Queue | AsyncQueue | None) -> AsyncQueue:
    """The AsyncQueue the routes use: the app's own, or one on the app's (or our) DSN."""
    if isinstance(host_queue, AsyncQueue):
        return host_queue
    if isinstance(host_queue, Queue):
        # A sync app queue: serve through an AsyncQueue on the same database and kinds.
        queue = AsyncQueue(host_queue._conninfo, schema=host_queue.schema)
        queue.registry = host_queue.registry
        return queue
    queue = AsyncQueue(settings.dsn, schema=settings.schema)
    for name in dict.fromkeys((settings.default_kind, *settings.kinds)):
        queue.declare_kind(name, DECLARED_KIND_OPTIONS)
    return queue


def run_server(
    queue: AsyncQueue, settings: HttpSettings, host_queue: Queue | AsyncQueue | None = None
) -> None:
    """Run uvicorn on the app until a signal; then finish requests, drain workers, close."""
    runner_options: dict[str, Any] = {}
    try:
        import uvloop

        runner_options["loop_factory"] = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(**runner_options) as runner:
        runner.run(_serve(queue, settings, host_queue))
    exit_now_if_handlers_hang(1)


async def _serve(
    queue: AsyncQueue, settings: HttpSettings, host_queue: Queue | AsyncQueue | None
) -> None:
    import uvicorn

    from pgqueue.http import service
    from pgqueue.http.app import close_app, create_app

    if settings.run_workers and host_queue is not None and host_queue is not queue:
        # A blocking app queue is served through an AsyncQueue of its own: the dashboard reads
        # the busy/total worker counts from the queue that runs the workers.
        settings = replace(settings, extra={**settings.extra, "dashboard_worker_queue": host_queue})
    app = create_app(queue, settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(1, round(settings.drain_seconds)),
        loop="none",
        lifespan="off",
        server_header=False,
    )
    server = _server(config)
    if not settings.binds_loopback and not settings.auth_enabled:
        log.warning("serving on %s without tokens: anyone who can connect may enqueue and cancel",
                    settings.host)  # fmt: skip
    workers_started = False
    try:
        if settings.run_workers and host_queue is not None:
            await _start_workers(host_queue)
            workers_started = True
        await server.serve()
        if server.bind_failed is not None:
            raise server.bind_failed
    finally:
        # A repeated SIGTERM/SIGINT must not kill the drain that the first one started.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, log.warning, "already stopping: draining workers")
        log.info("HTTP server stopped; draining workers")
        await service.cancel_pings()
        await asyncio.to_thread(close_app, app)
        if workers_started and host_queue is not None:
            await _stop_workers(host_queue)
        if host_queue is not queue:
            await queue.close()
        if host_queue is not None and not workers_started:
            await _close(host_queue)
        log.info("stopped")


async def _start_workers(queue: Queue | AsyncQueue) -> None:
    if isinstance(queue, AsyncQueue):
        await queue.start()
    else:
        await asyncio.to_thread(queue.start)
    log.info("workers started (kinds: %s)", ", ".join(s.kind for s in queue.registry.handled()))


async def _stop_workers(queue: Queue | AsyncQueue) -> None:
    """Drain in-flight attempts, bounded by the longest attempt timeout plus its margin."""
    margin = max((s.options.loop.lease_margin for s in queue.registry), default=10.0)
    bound = queue.longest_attempt_timeout() + margin
    try:
        await asyncio.wait_for(_close(queue), bound)
    except TimeoutError:
        log.error("drain did not finish in %.0fs; handing the rest back", bound)
        if isinstance(queue, AsyncQueue):
            await queue.close(StopMode.ABORT)


async def _close(queue: Queue | AsyncQueue) -> None:
    if isinstance(queue, AsyncQueue):
        await queue.close()
    else:
        await asyncio.to_thread(queue.close)


def _server(config: Any) -> Any:
    """uvicorn's server, but a handled SIGTERM/SIGINT ends in a normal return (exit 0)
    instead of re-raising the signal after the graceful shutdown."""
    import uvicorn

    class Server(uvicorn.Server):
        bind_failed: OSError | None = None

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: Any = None) -> None:
            try:
                await super().startup(sockets=sockets)
            except SystemExit:
                # uvicorn logs a failed bind and exits; serve reports it in one line.
                self.bind_failed = OSError(98, "address unavailable")
                self.should_exit = True

    return Server(config)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``pgqueue`` command."""
    app.command("serve")(serve)
