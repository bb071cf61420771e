"""Fault injection with real ``pgqueue worker`` processes and a PostgreSQL cluster the suite owns
(``make chaos``). Every scenario ends with the checks of :class:`tests.chaos.harness.Chaos`."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from pgqueue import KindOptions, Queue, Task
from tests.chaos.cluster import Cluster, PgBouncer
from tests.chaos.harness import Chaos
from tests.conftest import Database
from tests.proxy import TcpProxy

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

TASKS = 400


@pytest.fixture
def chaos(chaos_db: Database, tmp_path: Path) -> Chaos:
    return Chaos(chaos_db, tmp_path, {"WORK": "0.02", "LEASE": "2", "TIMEOUT": "5"})


def draining(chaos: Chaos, done: int) -> None:
    """Wait until the workers finished ``done`` tasks: the fault then hits mid-drain."""
    chaos.wait_until(lambda: chaos.count("status = 'succeeded'") >= done, 60, "the drain")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart_mid_drain(chaos: Chaos, cluster: Cluster, mode: str) -> None:
    chaos.push(TASKS)
    for _ in range(2):
        chaos.start_worker()
    draining(chaos, TASKS // 4)
    cluster.restart(mode)
    recovery = chaos.wait_finished(90)
    chaos.check(f"restart -m {mode}", recovery=recovery)


def test_backends_terminated_repeatedly(chaos: Chaos) -> None:
    chaos.push(TASKS)
    for _ in range(2):
        chaos.start_worker()
    draining(chaos, TASKS // 8)
    with psycopg.connect(chaos.db.dsn, autocommit=True) as admin:
        for _ in range(8):
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            time.sleep(0.5)
    recovery = chaos.wait_finished(90)
    chaos.check("pg_terminate_backend x8", recovery=recovery)


def test_blackholed_network_for_twenty_seconds(chaos: Chaos, cluster: Cluster) -> None:
    proxy = TcpProxy(cluster.port)
    try:
        through = proxy.dsn(chaos.db.dsn)
        chaos.push(TASKS)
        for _ in range(2):
            chaos.start_worker(PGQUEUE_DSN=through)
        draining(chaos, TASKS // 4)
        proxy.blackhole()  # every connection, the LISTEN one included, and new ones
        time.sleep(20)
        proxy.heal()
        recovery = chaos.wait_finished(90)
        # Pushed after the partition: picked up through the (replaced) listeners.
        chaos.push(50)
        recovery = max(recovery, chaos.wait_finished(60))
        chaos.check("blackhole 20 s", recovery=recovery)
    finally:
        proxy.close()


def test_sigkill_mid_drain(chaos: Chaos) -> None:
    chaos.push(TASKS)
    victim = chaos.start_worker()
    chaos.start_worker()
    draining(chaos, TASKS // 4)
    chaos.kill(victim)
    recovery = chaos.wait_finished(90)
    chaos.check("SIGKILL mid-drain", recovery=recovery)


def test_sigterm_past_the_grace_period(chaos: Chaos) -> None:
    # Sync handlers that overrun their 1 s timeout: the drain (bounded by timeout + lease)
    # cannot finish; the worker exits and the tasks it still held come back after the lease.
    chaos.env.update(HANDLER="overrun_sync", TIMEOUT="1", LEASE="1", MAX_ATTEMPTS="5")
    chaos.push(4)
    first = chaos.start_worker(WORKERS="4")
    chaos.wait_until(lambda: chaos.count("claim_token IS NOT NULL") == 4, 30, "claims")
    began = time.monotonic()
    chaos.kill(first, signal.SIGTERM)
    assert first.process.returncode != 0  # the drain did not finish in time
    first.killed_at = time.time()  # its threads died with it
    chaos.start_worker(WORKERS="4")
    recovery = chaos.wait_finished(120)
    chaos.check("SIGTERM past grace", recovery=time.monotonic() - began)
    del recovery


@pytest.mark.parametrize("handler", ["overrun_sync", "overrun_async"])
def test_handlers_overrunning_their_timeout_never_overlap(chaos: Chaos, handler: str) -> None:
    # Each attempt runs 4x its 1 s timeout; three attempts; two processes compete.
    chaos.env.update(HANDLER=handler, TIMEOUT="1", LEASE="1", MAX_ATTEMPTS="3", WORKERS="2")
    chaos.push(3)
    for _ in range(2):
        chaos.start_worker()
    recovery = chaos.wait_finished(90)
    figures = chaos.check(f"{handler} 4x timeout", recovery=recovery, probe=False)
    assert chaos.count("status = 'no_attempts_left'") == 3
    assert figures["tasks"] == 3


def test_handler_ten_times_the_lease_then_sigkill(chaos: Chaos) -> None:
    # Lease 0.5 s, attempts of 5 s (timeout 8 s): the heartbeat keeps the claim; killed, the
    # task runs again elsewhere within about one lease.
    chaos.env.update(HANDLER="long", WORK="5", TIMEOUT="8", LEASE="0.5", WORKERS="1", POLL="0.1")
    (task_id,) = chaos.push(1)
    holder = chaos.start_worker()
    chaos.wait_until(lambda: chaos.count("claim_token IS NOT NULL") == 1, 30, "the claim")
    other = chaos.start_worker()
    time.sleep(3)  # six leases: the other process must not take it
    assert chaos.count("attempts_elapsed = 1 AND claim_token IS NOT NULL") == 1
    chaos.kill(holder)
    killed = time.monotonic()
    chaos.wait_until(lambda: chaos.count("attempts_elapsed = 2") == 1, 30, "the re-run")
    back_after = time.monotonic() - killed
    recovery = chaos.wait_finished(60)
    chaos.check("10x lease + SIGKILL", recovery=back_after + recovery)
    print(f"re-run elsewhere {back_after:.2f}s after SIGKILL (lease 0.5 s)")
    assert back_after < 5
    assert other.process.returncode == 0
    del task_id


def test_pgbouncer_transaction_pooling(chaos: Chaos, cluster: Cluster, tmp_path: Path) -> None:
    database = chaos.db.dsn.rsplit("/", 1)[1]
    bouncer = PgBouncer(cluster, database, tmp_path / "bouncer")
    try:
        # Pool through PgBouncer; the LISTEN connection straight to PostgreSQL (listen_dsn).
        chaos.env.update(FLAVOUR="async", POOL_DSN=bouncer.dsn, POLL="30")
        for _ in range(2):
            chaos.start_worker()
        pushed = time.monotonic()
        pool = ConnectionPool(
            bouncer.dsn,
            min_size=1,
            max_size=2,
            open=True,
            kwargs={"autocommit": True, "prepare_threshold": None},
        )
        with pool, Queue(pool, schema=chaos.db.schema) as producer:
            producer.declare_kind("k", KindOptions(attempt_timeout=1))
            time.sleep(3)  # the workers are listening
            pushed = time.monotonic()
            for i in range(TASKS // 4):
                producer.push_task(Task("k", i))
        recovery = chaos.wait_finished(20)  # far under the 30 s poll: wake-ups work
        assert time.monotonic() - pushed < 25
        chaos.check("PgBouncer transaction pooling", recovery=recovery)
    finally:
        bouncer.stop()


def test_pool_exhaustion_by_host_transactions_and_a_rolled_back_push(
    chaos: Chaos, cluster: Cluster
) -> None:
    chaos.push(TASKS // 2)
    for _ in range(2):
        chaos.start_worker()
    draining(chaos, TASKS // 8)
    # The host application takes nearly every server connection in long transactions.
    hogs: list[psycopg.Connection] = []
    try:
        while True:
            try:
                conn = psycopg.connect(chaos.db.dsn)
            except psycopg.OperationalError:
                break
            conn.execute("SELECT 1")  # a transaction left open
            hogs.append(conn)
        time.sleep(5)  # the workers fail to get connections meanwhile
    finally:
        hogs_count = len(hogs)
        for conn in hogs:
            conn.close()
    with Queue(chaos.db.dsn, schema=chaos.db.schema) as producer:
        producer.declare_kind("k", KindOptions(attempt_timeout=1))
        with psycopg.connect(chaos.db.dsn) as conn:
            producer.push_task_tx(conn, Task("k", "rolled back"))
            conn.rollback()
    recovery = chaos.wait_finished(90)
    chaos.check(f"pool exhaustion ({hogs_count} host connections)", recovery=recovery)
    assert chaos.count("payload = '\"rolled back\"'") == 0


def test_poison_task_cannot_stall_the_kind(chaos: Chaos) -> None:
    chaos.env.update(LEASE="1")
    chaos.push(1, "poison", attempts=2)
    chaos.push(1, "poison-thread", attempts=2)
    chaos.push(TASKS // 2)
    stop = threading.Event()

    def supervise() -> None:
        """What a process manager does: restart a worker that died."""
        while not stop.is_set():
            for worker in chaos.workers:
                if worker.process.poll() is not None and worker.killed_at is None:
                    worker.killed_at = time.time()  # died by the poison: its attempt ended
            alive = [w for w in chaos.workers if w.process.poll() is None]
            for _ in range(2 - len(alive)):
                chaos.start_worker()
            time.sleep(0.2)

    supervisor = threading.Thread(target=supervise)
    supervisor.start()
    try:
        recovery = chaos.wait_finished(120)
    finally:
        stop.set()
        supervisor.join()
    chaos.check("poison task", recovery=recovery)
    assert chaos.count("payload = '\"poison\"' AND status = 'no_attempts_left'") == 1
    assert chaos.count("payload = '\"poison-thread\"' AND status = 'no_attempts_left'") == 1
