"""``python -m example``: start a database if needed, migrate, then take orders and send
receipts until Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
from typing import Any

import psycopg

from pgqueue import AsyncQueue, Queue


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("example")
    log.info(
        "the example order service: every 0.5 s it inserts an order and pushes its "
        "send-receipt task in the same transaction; 4 workers send the receipts"
    )
    from example import app  # starts the embedded PostgreSQL unless PGQUEUE_DSN is set

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app.queue.start()
    dashboard = start_dashboard(app.DSN, app.queue)
    print(f"dashboard: {dashboard.url}", flush=True)
    log.info("worker started; placing an order every 0.5 s (Ctrl-C to stop)")
    customers = ["ada", "grace", "linus", "barbara", "ken"]
    while not stop.wait(0.5):
        with psycopg.connect(app.DSN) as conn:  # one transaction: the order and its task
            order_id = app.place_order(conn, random.choice(customers), random.randint(5, 500))
        log.info("order %s placed (its send-receipt task pushed in the same transaction)", order_id)
    log.info("stopping: draining in-flight receipts")
    dashboard.stop()
    app.queue.close()
    if app.server is not None:
        app.server.cleanup()


class Dashboard:
    """``pgqueue serve``'s app (REST API and dashboard) on a thread of the example process."""

    def __init__(self, dsn: str, worker_queue: Queue) -> None:
        from pgqueue.http.settings import HttpSettings

        self.settings = HttpSettings.from_env(dsn=dsn)
        self.settings.extra["dashboard_worker_queue"] = worker_queue
        self.worker_queue = worker_queue
        self.server: Any = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/"

    async def _serve(self) -> None:
        import uvicorn

        from pgqueue.http import create_app

        queue = AsyncQueue(self.settings.dsn, schema=self.worker_queue.schema)
        queue.registry = self.worker_queue.registry  # the same kinds and options
        app = create_app(queue, self.settings)
        config = uvicorn.Config(
            app, host=self.settings.host, port=self.settings.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)  # off the main thread: it leaves signals alone
        try:
            await self.server.serve()
        finally:
            await queue.close()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_dashboard(dsn: str, worker_queue: Queue) -> Dashboard:
    dashboard = Dashboard(dsn, worker_queue)
    dashboard.thread.start()
    pause = threading.Event()
    for _ in range(300):  # uvicorn reports readiness as a flag: look at it for up to 30 s
        if dashboard.server is not None and dashboard.server.started:
            return dashboard
        if not dashboard.thread.is_alive():
            break
        pause.wait(0.1)
    raise SystemExit(f"the dashboard did not start on port {dashboard.settings.port}")


if __name__ == "__main__":
    main()
