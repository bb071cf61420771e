"""``python -m example``: start a database if needed, migrate, then take orders and send
receipts until Ctrl-C."""

from __future__ import annotations

import logging
import random
import signal
import threading

import psycopg


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
    log.info("worker started; placing an order every 0.5 s (Ctrl-C to stop)")
    customers = ["ada", "grace", "linus", "barbara", "ken"]
    while not stop.wait(0.5):
        with psycopg.connect(app.DSN) as conn:  # one transaction: the order and its task
            order_id = app.place_order(conn, random.choice(customers), random.randint(5, 500))
        log.info("order %s placed (its send-receipt task pushed in the same transaction)", order_id)
    log.info("stopping: draining in-flight receipts")
    app.queue.close()
    if app.server is not None:
        app.server.cleanup()


if __name__ == "__main__":
    main()
