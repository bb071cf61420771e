"""Screenshots of every dashboard page from a real run: ``make screenshots``.

Starts the service app with live workers on a demo schema (``PGQUEUE_DSN``, else an embedded
PostgreSQL), fills it with tasks in every status and a day of throughput history, then saves
each page as seen by headless Chromium into ``docs/images/dashboard-*.png`` (and a workflow's
graph page into ``docs/images/workflow.png``). ``python -m tests.dashboard.screenshots NAME...``
saves only the named ones (``workflow``, ``overview``, ``tasks``, ...).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import psycopg
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pgqueue import AsyncQueue, Envelope, KindOptions, Queue, Task, Workflow
from pgqueue.store.queries import schema_ddl
from tests.dashboard.conftest import (
    OPERATOR_TOKEN,
    READ_TOKEN,
    UvicornThread,
    build_app,
    start_chromium,
)
from tests.dashboard.seed import seed

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
SCHEMA = "dashboard_demo"
KINDS = ("send-email", "resize-image", "sync-crm")

# A day of outcomes per minute: a daily curve, some noise, failures now and then.
HISTORY = """
INSERT INTO {schema}.throughput (kind, minute, succeeded, failed, exhausted, cancelled)
SELECT k.kind, m.minute,
       greatest(0, round(k.scale * (1.2 + sin(extract(epoch FROM m.minute) / 9000.0))
                         + random() * k.scale * 0.4))::bigint,
       (random() * k.scale * 0.08)::bigint,
       (CASE WHEN random() < 0.05 THEN 1 ELSE 0 END)::bigint,
       (CASE WHEN random() < 0.03 THEN 1 ELSE 0 END)::bigint
FROM (VALUES ('send-email', 40.0), ('resize-image', 14.0), ('sync-crm', 6.0)) AS k(kind, scale),
     generate_series(date_trunc('minute', now()) - interval '1439 minutes',
                     date_trunc('minute', now()) - interval '1 minute',
                     interval '1 minute') AS m(minute)
"""


async def handle(envelope: Envelope) -> None:
    """Work of a demo kind: takes a moment, fails now and then."""
    await asyncio.sleep(random.uniform(0.5, 3.0))
    if random.random() < 0.12:
        raise ConnectionError("upstream did not answer within 5 s")


def register(queue: AsyncQueue) -> None:
    for kind, workers in zip(KINDS, (8, 4, 2), strict=True):
        queue.register_kind(
            kind, handle, KindOptions(attempt_timeout=30.0, worker_count=workers, max_attempts=5)
        )


def prepare(dsn: str) -> tuple[int, int]:
    """The demo schema with tasks in every status; ids of an exhausted and a pending task."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(schema_ddl(SCHEMA))
        conn.execute(HISTORY.replace("{schema}", SCHEMA))
    for kind, n in zip(KINDS, (1, 3, 5), strict=True):
        seed(dsn, SCHEMA, kind, "succeeded", 900 // n)
        seed(dsn, SCHEMA, kind, "cancelled", 12 // n)
        seed(dsn, SCHEMA, kind, "no_attempts_left", 9 // n, key=f"{kind}:broken-",
             messages=["ConnectionError: upstream did not answer within 5 s",
                       "TimeoutError: attempt exceeded 30.0 s",
                       "ValueError: recipient <nobody@example.com> bounced"])  # fmt: skip
        seed(dsn, SCHEMA, kind, "must_retry", 6 // n)
    (exhausted,) = seed(
        dsn, SCHEMA, "send-email", "no_attempts_left", 1, key="welcome:ada",
        payload={"to": "ada@example.com", "template": "welcome", "vars": {"name": "Ada"}},
        messages=["ConnectionError: mail server did not answer",
                  "TimeoutError: attempt exceeded 30.0 s",
                  "SMTPRecipientsRefused: {'ada@example.com': (550, 'mailbox full')}"],
    )  # fmt: skip
    order = {"order_id": 1042, "customer": "grace", "total": "99.50"}
    (pending,) = seed(dsn, SCHEMA, "sync-crm", "new", 1, key="crm:order-1042", payload=order)
    with psycopg.connect(dsn, autocommit=True) as conn:  # due in an hour: still pending when shot
        conn.execute(
            f"UPDATE {SCHEMA}.tasks SET delayed_till = now() + interval '1 hour' WHERE id = %s",
            [pending],
        )
    return exhausted, pending


def keep_pushing(dsn: str, stop: threading.Event) -> None:
    queue = Queue(dsn, schema=SCHEMA)
    for kind in KINDS:
        queue.declare_kind(kind, KindOptions(attempt_timeout=30.0, max_attempts=5))
    try:
        while not stop.wait(0.3):
            kind = random.choice(KINDS)
            queue.push_tasks([Task(kind, {"n": random.randint(1, 10_000)}) for _ in range(4)])
    finally:
        queue.close()


def push_demo_workflow(dsn: str) -> str:
    """An order pipeline: fan-out after the charge, fan-in to the shipment, and a report
    after everything (all_ended); the live workers run it while the page is shot."""
    with Queue(dsn, schema=SCHEMA) as queue:
        for kind in KINDS:
            queue.declare_kind(kind, KindOptions(attempt_timeout=30.0, max_attempts=5))
        wf = Workflow()
        charge = wf.add("charge-card", Task("sync-crm", {"order": 1042}))
        fraud = wf.add("fraud-check", Task("sync-crm", {"order": 1042}))
        items = [
            wf.add(f"resize-photo-{i}", Task("resize-image", {"photo": i}), after=[charge])
            for i in range(1, 5)
        ]
        invoice = wf.add("send-invoice", Task("send-email", {"order": 1042}), after=[charge])
        ship = wf.add("ship", Task("sync-crm", {"order": 1042}), after=[*items, fraud])
        mail = wf.add("mail-tracking", Task("send-email", {"order": 1042}), after=[ship])
        wf.add("daily-report", Task("send-email"), after=[invoice, mail, fraud],
               when="all_ended")  # fmt: skip
        return queue.push_workflow(wf).workflow_id


def shoot(
    driver: Any, url: str, name: str, ready: str | None = None, file: str | None = None
) -> None:
    if ONLY and name not in ONLY:
        return
    driver.get(url)
    if ready:
        WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, ready))
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(700, int(height) + 20), 1400))
    path = IMAGES / (file or f"dashboard-{name}.png")
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    print(f"saved {path.relative_to(IMAGES.parents[1])}")


def main() -> None:
    server = None
    dsn = os.environ.get("PGQUEUE_DSN")
    scratch = tempfile.mkdtemp(prefix="pgqueue-shots-")
    if not dsn:
        from pgqueue.embedded import start_embedded

        server, dsn = start_embedded(os.path.join(scratch, "pg"), cleanup=True)
    exhausted, pending = prepare(dsn)
    IMAGES.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    pusher = threading.Thread(target=keep_pushing, args=(dsn, stop), daemon=True)
    driver = start_chromium(os.path.join(scratch, "chromium"))
    try:
        with UvicornThread(lambda: build_app(dsn, SCHEMA, register), start_workers=True) as web:
            workflow_id = push_demo_workflow(dsn)
            pusher.start()
            stop.wait(6)  # let the workers pick up some of the pushed tasks
            base = web.url
            driver.get(f"{base}/ui/kinds?token={OPERATOR_TOKEN}")
            shoot(driver, f"{base}/", "overview", "svg.model")
            shoot(driver, f"{base}/ui/throughput", "throughput", '#charts[data-drawn="60"]')
            shoot(
                driver,
                f"{base}/ui/throughput?minutes=1440",
                "throughput-day",
                '#charts[data-drawn="1440"]',
            )
            shoot(driver, f"{base}/ui/workflows/{workflow_id}", "workflow", "#workflow-graph",
                  file="workflow.png")  # fmt: skip
            shoot(driver, f"{base}/ui/tasks?kind=send-email", "tasks")
            shoot(driver, f"{base}/ui/tasks/{exhausted}", "task")
            shoot(driver, f"{base}/ui/bulk?action=retry&kind=send-email", "bulk")
            shoot(driver, f"{base}/ui/kinds", "kinds")
            shoot(driver, f"{base}/ui/enqueue", "enqueue")
            driver.delete_all_cookies()
            driver.get(f"{base}/ui/kinds?token={READ_TOKEN}")
            shoot(driver, f"{base}/ui/tasks/{pending}", "task-read-only")
            driver.delete_all_cookies()
            shoot(driver, f"{base}/ui/login", "login")
    finally:
        stop.set()
        driver.quit()
        if pusher.is_alive():
            pusher.join(10)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        if server is not None:
            server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


ONLY = set(sys.argv[1:])

if __name__ == "__main__":
    main()
