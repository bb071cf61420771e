"""``python -m example``: start a database if needed, migrate, then take orders and send
receipts until Ctrl-C."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from pathlib import Path

import psycopg

import pgqueue.migrate


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("example")
    server = None
    dsn = os.environ.get("PGQUEUE_DSN")
    if not dsn:
        from pgqueue.embedded import start_embedded

        data_dir = Path(__file__).resolve().parent.parent / ".pgdata"
        server, dsn = start_embedded(data_dir)
        os.environ["PGQUEUE_DSN"] = dsn
        log.info("no PGQUEUE_DSN set: started an embedded PostgreSQL in %s", data_dir)
    pgqueue.migrate.upgrade(dsn)
    from example import app

    app.DSN = dsn
    app.queue = app.build_queue(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(app.ORDERS_DDL)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app.queue.start()
    log.info("worker started; placing an order every 0.5 s (Ctrl-C to stop)")
    customers = ["ada", "grace", "linus", "barbara", "ken"]
    while not stop.wait(0.5):
        with psycopg.connect(dsn) as conn:  # one transaction: the order and its task
            order_id = app.place_order(conn, random.choice(customers), random.randint(5, 500))
        log.info("order %s placed", order_id)
    log.info("stopping: draining in-flight receipts")
    app.queue.close()
    if server is not None:
        server.cleanup()


if __name__ == "__main__":
    main()
