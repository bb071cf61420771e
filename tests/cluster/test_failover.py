"""Failover to a promoted replica: real ``pgqueue worker`` processes and a producer on a
multi-host DSN with ``target_session_attrs=read-write``; the primary stops mid-drain and the
streaming replica (``pg_basebackup -R``) is promoted. Pushes and drains continue on the new
primary with no task lost and no two attempts of a task overlapping (the chaos suite's
checks), and the test prints how long recovery took."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgqueue import DatabaseUnavailable, KindOptions, Queue, Task
from pgqueue.store.queries import schema_ddl
from tests.chaos.harness import Chaos
from tests.cluster.conftest import wait_for
from tests.cluster.servers import PostgresServer
from tests.conftest import Database

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

TASKS = 400


@pytest.fixture
def pair(cluster_root: Path) -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A primary and its streaming replica, of this test alone (the promotion ends the pair)."""
    tag = uuid.uuid4().hex[:6]
    primary = PostgresServer(cluster_root, f"fo_primary_{tag}").init_primary()
    replica = PostgresServer(cluster_root, f"fo_replica_{tag}")
    try:
        primary.start()
        replica.init_replica_of(primary)
        replica.start()
        yield primary, replica
    finally:
        replica.ensure_stopped()
        primary.ensure_stopped()


def either(primary: PostgresServer, replica: PostgresServer) -> str:
    """One DSN naming both servers; libpq connects to whichever accepts writes."""
    return (
        f"host=127.0.0.1,127.0.0.1 port={primary.port},{replica.port} user=postgres "
        "dbname=postgres target_session_attrs=read-write connect_timeout=2"
    )


def test_workers_and_pushes_move_to_the_promoted_replica(
    pair: tuple[PostgresServer, PostgresServer], tmp_path: Path
) -> None:
    primary, replica = pair
    schema = f"f_{uuid.uuid4().hex[:10]}"
    primary.execute(schema_ddl(schema))
    wait_for(
        lambda: replica.execute("SELECT to_regclass(%s)", (f"{schema}.tasks",))[0][0] is not None,
        what="the schema to reach the replica",
    )
    db = Database(either(primary, replica), schema)
    chaos = Chaos(db, tmp_path, {"WORK": "0.02", "LEASE": "10", "TIMEOUT": "5"})
    chaos.push(TASKS)
    for _ in range(2):
        chaos.start_worker()
    chaos.wait_until(lambda: chaos.count("status = 'succeeded'") >= TASKS // 4, 60, "the drain")

    # A producer keeps pushing keyed tasks through the failover; a push that fails with
    # DatabaseUnavailable is pushed again with the same key (exact: a duplicate is a no-op).
    pushed: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        with Queue(db.dsn, schema=schema) as producer:
            producer.declare_kind("k", KindOptions(attempt_timeout=1, max_attempts=10))
            n = 0
            while not stop.is_set() and n < 300:
                key = f"during-{n}"
                try:
                    producer.push_task(Task("k", None, key))
                except DatabaseUnavailable:
                    stop.wait(0.2)  # the new primary is not up yet: same key again
                    continue
                except BaseException as exc:  # a driver error fails the test
                    failures.append(exc)
                    return
                pushed.append(key)
                n += 1
                stop.wait(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    chaos.wait_until(lambda: len(pushed) >= 20, 30, "pushes before the failover")
    began = time.monotonic()
    primary.stop("fast")  # a fast stop ships all WAL to the standby before it exits
    replica.promote()
    promoted = time.monotonic() - began
    before = len(pushed)
    chaos.wait_until(lambda: len(pushed) > before + 10, 60, "pushes on the new primary")
    pushes_back = time.monotonic() - began
    done_before = chaos.count("status = 'succeeded'")
    chaos.wait_until(
        lambda: chaos.count("status = 'succeeded'") > done_before + 10,
        60,
        "the new primary's drain",
    )
    drains_back = time.monotonic() - began
    stop.set()
    producer.join(60)
    assert not failures, failures
    recovery = chaos.wait_finished(120)
    keys = {
        row[0]
        for row in db.fetch(
            "SELECT external_key FROM {schema}.tasks WHERE external_key IS NOT NULL"
        )
    }
    assert set(pushed) <= keys  # every acknowledged push is on the new primary
    print(
        f"\nfailover: promoted in {promoted:.2f}s, pushes back after {pushes_back:.2f}s, "
        f"drain back after {drains_back:.2f}s"
    )
    chaos.check("failover to a promoted replica", recovery=max(recovery, drains_back))
