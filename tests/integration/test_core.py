"""The core queue against a real PostgreSQL: push, claim, results, retries, cancel, retention."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from pgqueue import (
    DatabaseUnavailable,
    ExpBackoffDelayer,
    InvalidTask,
    Jitter,
    JitterDelayer,
    KindOptions,
    LoopOptions,
    MustCancelTask,
    Queue,
    Status,
    StopMode,
    Task,
    UnknownKind,
)
from tests.conftest import Database
from tests.helpers import Recorder, wait_until

FAST = LoopOptions(poll_period=0.2, janitor_period=0.2, lease_margin=2.0)


def make_queue(db: Database, **kwargs: Any) -> Queue:
    return Queue(db.dsn, schema=db.schema, **kwargs)


def opts(**kwargs: Any) -> KindOptions:
    kwargs.setdefault("attempt_timeout", 5.0)
    kwargs.setdefault("loop", FAST)
    kwargs.setdefault("delayer", JitterDelayer(Jitter.ZERO, base=0.05))
    return KindOptions(**kwargs)


def test_push_and_run_sync_and_async_handlers(db: Database) -> None:
    seen: list[tuple[str, Any]] = []

    def sync_handler(envelope: Any) -> None:
        seen.append(("sync", envelope.payload))

    async def async_handler(envelope: Any) -> None:
        seen.append(("async", envelope.payload))

    with make_queue(db) as queue:
        queue.register_kind("s", sync_handler, opts())
        queue.register_kind("a", async_handler, opts())
        recorder = Recorder(queue)
        first = queue.push_task(Task("s", {"n": 1}))
        second = queue.push_task(Task("a", [1, "two"]))
        assert isinstance(first, int) and isinstance(second, int)
        queue.start()
        recorder.wait(lambda r: r.status_of(first) == r.status_of(second) == "succeeded")
        info = queue.get_task(first)
        assert info is not None and info.status is Status.SUCCEEDED
        assert info.attempts_elapsed == 1 and info.finished_at is not None
    assert sorted(seen, key=str) == [("async", [1, "two"]), ("sync", {"n": 1})]


def test_batch_push_returns_ids_aligned_with_duplicates_as_none(db: Database) -> None:
    with make_queue(db) as queue:
        queue.declare_kind("k", opts())
        ids = queue.push_tasks(
            [Task("k", 1, "a"), Task("k", 2, "b"), Task("k", 3, "a"), Task("k", 4), Task("k", 5)]
        )
        assert ids[0] and ids[1] and ids[3] and ids[4]
        assert ids[2] is None
        assert len(set(ids) - {None}) == 4
        assert queue.push_tasks([Task("k", 6, "b")]) == [None]
        assert queue.push_tasks([]) == []
        payloads = db.fetch("SELECT payload FROM {schema}.tasks ORDER BY id")
        assert [p[0] for p in payloads] == [1, 2, 4, 5]


def test_keyless_batch_push_returns_each_tasks_own_id(db: Database) -> None:
    # A batch without keys takes the statement without ON CONFLICT; ids must still be aligned.
    with make_queue(db) as queue:
        queue.declare_kind("a", opts(max_attempts=2))
        queue.declare_kind("b", opts(max_attempts=5))
        tasks = [Task("a" if i % 3 else "b", {"n": i}) for i in range(25)] + [Task("a", None)]
        ids = queue.push_tasks(tasks)
        assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(tasks)
        rows = {
            task_id: (kind, payload, attempts)
            for task_id, kind, payload, attempts in db.fetch(
                "SELECT id, kind, payload, max_attempts FROM {schema}.tasks"
            )
        }
        assert [rows[i] for i in ids] == [
            (t.kind, t.payload, 2 if t.kind == "a" else 5) for t in tasks
        ]
        delayed = queue.push_tasks([Task("a", "later"), Task("b", "later")], delay=3600)
        due = db.fetch(
            "SELECT id FROM {schema}.tasks WHERE delayed_till > now() + interval '59 minutes'"
        )
        assert sorted(delayed) == sorted(row[0] for row in due)  # type: ignore[type-var]


def test_concurrent_pushers_of_one_key_make_one_row(db: Database) -> None:
    queue = make_queue(db)
    queue.declare_kind("k", opts())
    barrier = threading.Barrier(32)
    results: list[int | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def pusher() -> None:
        try:
            with psycopg.connect(db.dsn) as conn:
                barrier.wait(timeout=30)
                task_id = queue.push_task_tx(conn, Task("k", {"x": 1}, external_key="same"))
                conn.commit()
            with lock:
                results.append(task_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pusher) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    queue.close()
    assert not errors
    assert len(results) == 32
    assert len([r for r in results if r is not None]) == 1
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE external_key = 'same'") == 1


def test_push_tx_exists_only_if_transaction_commits(db: Database) -> None:
    ran: list[int] = []
    with make_queue(db) as queue:
        queue.register_kind("k", lambda env: ran.append(env.id), opts())
        recorder = Recorder(queue)
        with psycopg.connect(db.dsn) as conn:
            rolled_back = queue.push_task_tx(conn, Task("k", {"v": "rollback"}))
            assert rolled_back is not None
            conn.rollback()
            committed = queue.push_task_tx(conn, Task("k", {"v": "commit"}))
            conn.commit()
        assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 1
        assert queue.get_task(rolled_back) is None
        queue.start()
        recorder.wait_status(committed, "succeeded")
    assert ran == [committed]


def test_push_tx_accepts_a_cursor_and_does_not_commit(db: Database) -> None:
    with make_queue(db) as queue:
        queue.declare_kind("k", opts())
        with psycopg.connect(db.dsn) as conn:
            with conn.cursor() as cur:
                ids = queue.push_tasks_tx(cur, [Task("k", 1), Task("k", 2)])
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            with psycopg.connect(db.dsn) as other:
                assert other.execute(f"SELECT count(*) FROM {db.schema}.tasks").fetchone() == (0,)
            conn.commit()
        assert db.scalar("SELECT count(*) FROM {schema}.tasks") == len(ids) == 2


def test_failing_handler_exhausts_attempts_and_keeps_last_messages(db: Database) -> None:
    started_at: list[Any] = []

    def always_fails(envelope: Any) -> None:
        started_at.append(envelope.deadline - timedelta(seconds=5))
        raise RuntimeError(f"boom {envelope.attempt}")

    delayer = ExpBackoffDelayer(Jitter.ZERO, base=0.3, factor=2.0, max=10.0)
    with make_queue(db) as queue:
        queue.register_kind(
            "k", always_fails, opts(max_attempts=3, max_task_error_messages=2, delayer=delayer)
        )
        recorder = Recorder(queue)
        task_id = queue.push_task(Task("k"))
        assert task_id is not None
        queue.start()
        recorder.wait_status(task_id, "no_attempts_left")
        info = queue.get_task(task_id)
    assert info is not None
    assert info.status is Status.NO_ATTEMPTS_LEFT
    assert info.attempts_elapsed == 3 and info.attempts_left == 0
    assert info.messages == ["RuntimeError: boom 2", "RuntimeError: boom 3"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(started_at)]
    # Database clock: each retry waited at least what the delayer said (0.3 s, then 0.6 s).
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6, gaps


def test_must_cancel_task_cancels_also_on_last_attempt(db: Database) -> None:
    def handler(envelope: Any) -> None:
        if envelope.payload == "now" or envelope.attempts_left == 0:
            raise MustCancelTask("not needed")
        raise ValueError("try again")

    with make_queue(db) as queue:
        queue.register_kind("k", handler, opts(max_attempts=2))
        recorder = Recorder(queue)
        at_once = queue.push_task(Task("k", "now"))
        on_last = queue.push_task(Task("k", "later"))
        queue.start()
        recorder.wait(lambda r: r.status_of(at_once) == r.status_of(on_last) == "cancelled")
        first, last = queue.get_task(at_once), queue.get_task(on_last)
    assert first is not None and first.status is Status.CANCELLED and first.attempts_elapsed == 1
    assert last is not None and last.status is Status.CANCELLED and last.attempts_elapsed == 2


def test_cancel_pending_task_never_runs(db: Database) -> None:
    ran: list[str] = []
    with make_queue(db) as queue:
        queue.register_kind("k", lambda env: ran.append(env.external_key), opts())
        recorder = Recorder(queue)
        queue.push_task(Task("k", external_key="doomed"))
        assert queue.cancel_task_by_key("k", "doomed") is True
        assert queue.cancel_task_by_key("k", "doomed") is False
        assert queue.cancel_task_by_key("k", "no-such-key") is False
        sentinel = queue.push_task(Task("k", external_key="sentinel"))
        queue.start()
        recorder.wait_status(sentinel, "succeeded")
    assert ran == ["sentinel"]
    assert db.scalar("SELECT status::text FROM {schema}.tasks WHERE external_key='doomed'") == (
        "cancelled"
    )


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_cancel_running_task_ends_cancelled_even_if_handler_returns(
    db: Database, flavour: str
) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()
    release = threading.Event()

    def sync_handler(envelope: Any) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not envelope.cancel_requested and time.monotonic() < deadline:
            release.wait(0.01)
        if envelope.cancel_requested:
            saw_cancel.set()
        release.wait(10)  # then returns normally

    async def async_handler(envelope: Any) -> None:
        import asyncio

        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if envelope.cancel_requested:
                saw_cancel.set()
            raise

    handler = sync_handler if flavour == "sync" else async_handler
    with make_queue(db) as queue:
        queue.register_kind("k", handler, opts(attempt_timeout=20.0))
        recorder = Recorder(queue)
        queue.start()
        queue.wait_listening(10)
        task_id = queue.push_task(Task("k", external_key="running"))
        assert started.wait(10)
        assert queue.cancel_task_by_key("k", "running") is True
        assert saw_cancel.wait(10), "the handler was not told about the cancellation"
        release.set()
        recorder.wait(lambda r: any(f.task_id == task_id for f in r.finished))
        queue.stop()
        info = queue.get_task(task_id)  # type: ignore[arg-type]
    assert info is not None and info.status is Status.CANCELLED
    assert recorder.status_of(task_id) is None  # the late result was not applied


def test_retry_tasks_revives_exhausted_tasks(db: Database) -> None:
    calls: dict[int, int] = {}

    def handler(envelope: Any) -> None:
        calls[envelope.id] = calls.get(envelope.id, 0) + 1
        if calls[envelope.id] == 1:
            raise RuntimeError("first run fails")

    with make_queue(db) as queue:
        queue.register_kind("k", handler, opts(max_attempts=1))
        recorder = Recorder(queue)
        ids = queue.push_tasks([Task("k", i) for i in range(3)])
        queue.start()
        recorder.wait(lambda r: all(r.status_of(i) == "no_attempts_left" for i in ids))
        assert queue.retry_tasks("k", attempts=2, limit=2) == 2
        assert queue.retry_tasks("k", attempts=2, limit=10) == 1
        assert queue.retry_tasks("k", attempts=2, limit=10) == 0
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in ids))
        info = queue.get_task(ids[0])  # type: ignore[arg-type]
    assert info is not None and info.attempts_elapsed == 2 and info.max_attempts == 3


def test_async_handler_timeout_is_cancelled_and_retried(db: Database) -> None:
    import asyncio

    cancelled = threading.Event()

    async def slow(envelope: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with make_queue(db) as queue:
        queue.register_kind(
            "k",
            slow,
            opts(attempt_timeout=0.3, max_attempts=2, delayer=JitterDelayer(Jitter.ZERO, base=30)),
        )
        recorder = Recorder(queue)
        task_id = queue.push_task(Task("k"))
        queue.start()
        recorder.wait_status(task_id, "must_retry")
        info = queue.get_task(task_id)  # type: ignore[arg-type]
    assert cancelled.is_set()
    assert info is not None and info.status is Status.MUST_RETRY
    assert info.messages == ["AttemptTimeout: attempt timed out after 0.3s"]


def test_sync_handler_timeout_is_decided_at_the_deadline_and_written_when_its_thread_returns(
    db: Database,
) -> None:
    release = threading.Event()
    started = threading.Event()

    def stuck(envelope: Any) -> None:
        started.set()
        release.wait(30)

    loop = LoopOptions(poll_period=0.2, lease_margin=1.0)
    with make_queue(db) as queue:
        queue.register_kind("k", stuck, opts(attempt_timeout=0.5, max_attempts=1, loop=loop))
        recorder = Recorder(queue)
        task_id = queue.push_task(Task("k"))
        queue.start()
        assert started.wait(10)
        runtime = queue._runtime
        assert runtime is not None
        wait_until(lambda: runtime.stuck_threads == 1)
        time.sleep(3)  # three leases: the heartbeat keeps the claim while the thread lives
        held = queue.get_task(task_id)  # type: ignore[arg-type]
        assert held is not None and held.status is Status.PROCESSING
        assert recorder.status_of(task_id) is None  # nothing written while it runs
        release.set()
        recorder.wait_status(task_id, "no_attempts_left", timeout=10)
        info = queue.get_task(task_id)  # type: ignore[arg-type]
    assert recorder.claimed == [task_id]
    assert info is not None and info.messages == ["AttemptTimeout: attempt timed out after 0.5s"]


def test_delay_uses_database_clock(db: Database) -> None:
    with make_queue(db) as queue:
        queue.register_kind("k", lambda env: None, opts())
        recorder = Recorder(queue)
        queue.start()
        queue.wait_listening(10)
        task_id = queue.push_task(Task("k"), delay=2)
        recorder.wait_status(task_id, "succeeded", timeout=10)
    waited = db.scalar(
        "SELECT extract(epoch FROM started_at - created_at) FROM {schema}.tasks WHERE id = %s",
        (task_id,),
    )
    assert waited >= 2.0


def test_idle_worker_latency_uses_notify(db: Database) -> None:
    started: dict[int, float] = {}
    pushed: dict[int, float] = {}
    event = threading.Event()

    def handler(envelope: Any) -> None:
        started[envelope.payload] = time.perf_counter()
        event.set()

    # A poll period of a minute: only LISTEN/NOTIFY can explain a quick start.
    slow_poll = LoopOptions(poll_period=60.0, janitor_period=60.0)
    with make_queue(db) as queue:
        queue.register_kind("k", handler, opts(loop=slow_poll, worker_count=4))
        queue.start()
        queue.wait_listening(10)
        for i in range(40):
            event.clear()
            pushed[i] = time.perf_counter()
            queue.push_task(Task("k", i))
            assert event.wait(5)
    latencies = sorted(started[i] - pushed[i] for i in pushed)
    # Without the notification each start would wait for the 60 s poll. The latency figures
    # themselves (p50 of a few ms) are measured by `make bench`, not asserted in a test that a
    # loaded machine could slow down.
    assert latencies[-1] < 5.0, f"slowest push→start {latencies[-1]:.2f} s"
    assert latencies[len(latencies) // 2] < 0.5


def test_retention_keeps_rows_for_ttl_then_sweeps(db: Database) -> None:
    with make_queue(db) as queue:
        queue.register_kind("keep", lambda env: None, opts(terminal_tasks_ttl=1.0))
        queue.register_kind("drop", lambda env: None, opts(terminal_tasks_ttl=0))
        recorder = Recorder(queue)
        kept = queue.push_task(Task("keep"))
        dropped = queue.push_task(Task("drop"))
        queue.start()
        recorder.wait(lambda r: r.status_of(kept) == r.status_of(dropped) == "succeeded")
        assert queue.get_task(dropped) is None  # TTL 0: deleted at completion
        info = queue.get_task(kept)
        assert info is not None and info.status is Status.SUCCEEDED
        recorder.wait(lambda r: r.swept["keep"] >= 1, timeout=10)
        assert queue.get_task(kept) is None
        # Swept every 0.2 s, yet the row stayed until its TTL of 1 s had passed.
        assert recorder.first_sweep_at["keep"] - recorder.written_at[kept] >= 0.9
        finished = info.finished_at
    assert finished is not None


CIRCULAR: dict[str, Any] = {}
CIRCULAR["self"] = CIRCULAR


@pytest.mark.parametrize(
    ("task", "delay", "error"),
    [
        (Task("k", {"x": object()}), 0, InvalidTask),
        (Task("k", CIRCULAR), 0, InvalidTask),
        (Task("k", {"x": float("nan")}), 0, InvalidTask),
        (Task("k", "nul\x00"), 0, InvalidTask),
        (Task("", {}), 0, InvalidTask),
        (Task("x" * 101, {}), 0, InvalidTask),
        (Task("unknown", {}), 0, UnknownKind),
        (Task("k", {}), -1, InvalidTask),
        (Task("k", {}, external_key="k" * 513), 0, InvalidTask),
    ],
)
def test_bad_input_raises_before_any_sql(
    db: Database, task: Task, delay: float, error: type
) -> None:
    with make_queue(db) as queue:
        queue.declare_kind("k", opts())
        with pytest.raises(error):
            queue.push_task(task, delay=delay)
        with pytest.raises(error):
            queue.push_tasks([Task("k", 1), task], delay=delay)
    assert db.scalar("SELECT count(*) FROM {schema}.tasks") == 0


def test_unknown_kind_is_a_value_error_with_a_clear_message(db: Database) -> None:
    with make_queue(db) as queue, pytest.raises(ValueError, match="not registered"):
        queue.push_task(Task("nope"))


def test_stop_abort_hands_tasks_back_at_once(db: Database) -> None:
    started = threading.Event()

    async def long_running(envelope: Any) -> None:
        import asyncio

        started.set()
        await asyncio.sleep(60)

    finished: list[int] = []
    lease = LoopOptions(poll_period=0.2, lease_margin=60.0)
    first = make_queue(db)
    first.register_kind("k", long_running, opts(attempt_timeout=60.0, loop=lease))
    first.start()
    task_id = first.push_task(Task("k"))
    assert started.wait(10)
    began = time.monotonic()
    first.stop(StopMode.ABORT)
    first.close()
    info = Queue(db.dsn, schema=db.schema)
    with info as other:
        other.register_kind("k", lambda env: finished.append(env.attempt), opts(loop=lease))
        recorder = Recorder(other)
        other.start()
        recorder.wait_status(task_id, "succeeded")  # type: ignore[arg-type]
    assert time.monotonic() - began < 10  # the lease was 120 s
    assert finished == [1]  # the aborted attempt was refunded


def test_stop_abort_from_another_thread_turns_a_drain_into_an_abort(db: Database) -> None:
    """A drain waiting on a long attempt: stop(ABORT) from another thread cuts it short (the
    sync facade once held its lock through the drain, so the abort waited for the drain)."""
    started = threading.Event()

    async def long_running(envelope: Any) -> None:
        import asyncio

        started.set()
        await asyncio.sleep(60)

    lease = LoopOptions(poll_period=0.2, lease_margin=60.0)
    queue = make_queue(db)
    queue.register_kind("k", long_running, opts(attempt_timeout=60.0, loop=lease))
    queue.start()
    task_id = queue.push_task(Task("k"))
    assert started.wait(10)
    drainer = threading.Thread(target=queue.stop, daemon=True)
    drainer.start()
    wait_until(lambda: queue.state.value == "stopping")
    queue.stop(StopMode.ABORT)
    drainer.join(10)
    assert not drainer.is_alive(), "the drain did not end with the abort"
    assert queue.state.value == "stopped"
    row = db.fetch(
        "SELECT status::text, claim_token IS NULL, attempts_elapsed FROM {schema}.tasks"
        " WHERE id = %s",
        (task_id,),
    )
    assert row == [("new", True, 0)]  # handed back, its attempt refunded
    queue.close()


def test_stop_then_start_again(db: Database) -> None:
    with make_queue(db) as queue:
        queue.register_kind("k", lambda env: None, opts())
        recorder = Recorder(queue)
        queue.start()
        queue.start()  # idempotent
        first = queue.push_task(Task("k"))
        recorder.wait_status(first, "succeeded")
        queue.stop()
        assert queue.state.value == "stopped"
        second = queue.push_task(Task("k"))  # pushing works while stopped
        assert queue.get_task(second).status is Status.NEW  # type: ignore[union-attr]
        queue.start()
        recorder.wait_status(second, "succeeded")
    assert queue.state.value == "closed"


def test_prefetched_tasks_are_released_on_drain_with_attempts_refunded(db: Database) -> None:
    started = threading.Event()
    release = threading.Event()

    def first_blocks(envelope: Any) -> None:
        started.set()
        release.wait(30)

    with make_queue(db) as queue:
        queue.register_kind(
            "k",
            first_blocks,
            opts(worker_count=1, loop=LoopOptions(poll_period=0.2, prefetch=5)),
        )
        recorder = Recorder(queue)
        ids = queue.push_tasks([Task("k", i) for i in range(6)])
        queue.start()
        assert started.wait(10)
        recorder.wait(lambda r: len(r.claimed) == 6)  # one running, five buffered
        release.set()
        queue.stop()  # drain: the running one finishes, the buffered five go back
        infos = [queue.get_task(i) for i in ids]  # type: ignore[arg-type]
    statuses = sorted(info.status.value for info in infos if info is not None)
    assert statuses == ["new"] * 5 + ["succeeded"]
    assert all(
        i.attempts_elapsed == 0 and i.attempts_left == 10
        for i in infos
        if i and i.status is Status.NEW
    )
    assert db.scalar("SELECT count(*) FROM {schema}.tasks WHERE claim_token IS NOT NULL") == 0


def test_buffered_task_keeps_its_lease_while_it_waits_and_runs_once(db: Database) -> None:
    release = threading.Event()
    ran: list[Any] = []

    def handler(envelope: Any) -> None:
        ran.append(envelope.payload)
        if envelope.payload == "slow":
            release.wait(30)

    # Lease = 1 s. The buffered task waits behind "slow" (which overruns its 1 s timeout and
    # keeps its slot until its thread returns) for several leases: the heartbeat renews its
    # claim, so it is neither handed back nor claimed by anyone else, and runs once.
    loop = LoopOptions(poll_period=0.2, prefetch=1, lease_margin=1.0)
    with make_queue(db) as queue:
        queue.register_kind("k", handler, opts(worker_count=1, attempt_timeout=1.0, loop=loop))
        recorder = Recorder(queue)
        slow = queue.push_task(Task("k", "slow"))
        queue.start()
        recorder.wait(lambda r: slow in r.claimed)
        waiting = queue.push_task(Task("k", "waiting"))
        recorder.wait(lambda r: waiting in r.claimed)
        time.sleep(3)  # three leases
        assert ran == ["slow"]
        release.set()
        recorder.wait(lambda r: r.status_of(waiting) == "succeeded", timeout=20)
        recorder.wait(lambda r: "must_retry" in r.written[slow], timeout=10)  # type: ignore[index]
        info = queue.get_task(waiting)  # type: ignore[arg-type]
    assert recorder.claimed.count(waiting) == 1
    assert ran.count("waiting") == 1
    assert info is not None and info.attempts_elapsed == 1


def test_lost_connections_are_retried_and_nothing_is_lost(db: Database) -> None:
    from psycopg.conninfo import make_conninfo

    dsn = make_conninfo(db.dsn, application_name="pgqueue_chaos")
    done: list[int] = []
    with Queue(dsn, schema=db.schema) as queue:
        queue.register_kind("k", lambda env: done.append(env.payload), opts(worker_count=4))
        recorder = Recorder(queue)
        queue.start()
        queue.wait_listening(10)
        first = queue.push_tasks([Task("k", i) for i in range(50)])
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in first))
        killed = db.scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'pgqueue_chaos'"
        )
        assert killed >= 2  # the listener and pooled connections
        # Pushes and workers recover: the pool replaces broken connections, loops retry.
        second: list[int | None] = []
        deadline = time.monotonic() + 20
        while not second:
            try:
                second = queue.push_tasks([Task("k", i) for i in range(50, 100)])
            except DatabaseUnavailable:  # the connection died while the push was sent
                assert time.monotonic() < deadline
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in second), timeout=30)
    assert sorted(done) == list(range(100))


def test_push_tx_in_sqlalchemy_session_and_connection(db: Database) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from pgqueue.migrate import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(db.dsn))
    with make_queue(db) as queue:
        queue.declare_kind("k", opts())
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            queue.push_task_tx(session, Task("k", "rolled back"))
            session.rollback()
        with Session(engine) as session, session.begin():
            queue.push_task_tx(session, Task("k", "session"))
        with engine.begin() as conn:
            queue.push_tasks_tx(conn, [Task("k", "connection")])
        with pytest.raises(TypeError, match="psycopg"):
            queue.push_task_tx(object(), Task("k"))
    engine.dispose()
    payloads = [r[0] for r in db.fetch("SELECT payload FROM {schema}.tasks ORDER BY id")]
    assert payloads == ["session", "connection"]


async def test_async_push_tx_in_sqlalchemy_async_session(db: Database) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from pgqueue import AsyncQueue
    from pgqueue.migrate import sqlalchemy_url

    engine = create_async_engine(sqlalchemy_url(db.dsn))
    async with AsyncQueue(db.dsn, schema=db.schema) as queue:
        queue.declare_kind("k", opts())
        async with AsyncSession(engine) as session, session.begin():
            await queue.push_task_tx(session, Task("k", "async session"))
        async with AsyncSession(engine) as session:
            await queue.push_task_tx(session, Task("k", "rolled back"))
            await session.rollback()
        async with engine.connect() as conn:
            await queue.push_tasks_tx(conn, [Task("k", "async connection")])
            await conn.commit()
    await engine.dispose()
    payloads = [r[0] for r in db.fetch("SELECT payload FROM {schema}.tasks ORDER BY id")]
    assert payloads == ["async session", "async connection"]


def test_worker_count_provider_resizes_the_pool_live(db: Database) -> None:
    size = {"n": 1}
    running = 0
    peak = 0
    lock = threading.Lock()
    grown = threading.Event()
    first = threading.Event()
    release = threading.Event()

    def handler(envelope: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            first.set()
            if running >= 3:
                grown.set()
        release.wait(30)
        with lock:
            running -= 1

    loop = LoopOptions(poll_period=0.1, prefetch=0)
    with make_queue(db) as queue:
        queue.register_kind("k", handler, opts(worker_count=lambda: size["n"], loop=loop))
        recorder = Recorder(queue)
        ids = queue.push_tasks([Task("k", i) for i in range(6)])
        queue.start()
        assert first.wait(10)
        assert peak == 1 and len(recorder.claimed) == 1  # one worker, no prefetch
        size["n"] = 3  # re-read by the running claim loop
        assert grown.wait(10)
        release.set()
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in ids))
    assert peak == 3


def test_a_crashing_loop_is_restarted(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from pgqueue.runtime.producer import KindWorker

    original = KindWorker._start_buffered
    crashes: list[int] = []

    def crash_once(self: KindWorker, size: int, keep: int = 0) -> None:
        if self.buffer and not crashes:
            crashes.append(1)
            raise RuntimeError("a bug in the claim loop")
        original(self, size, keep)

    monkeypatch.setattr(KindWorker, "_start_buffered", crash_once)
    with make_queue(db) as queue:
        queue.register_kind("k", lambda env: None, opts())
        recorder = Recorder(queue)
        ids = queue.push_tasks([Task("k", i) for i in range(5)])
        queue.start()
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in ids), timeout=20)
    assert crashes == [1]


@pytest.mark.parametrize(("workers", "prefetch", "first_claim"), [(2, 8, 5), (4, 0, 4)])
def test_a_claim_from_an_empty_buffer_asks_for_half_the_capacity_or_the_idle_workers(
    db: Database, workers: int, prefetch: int, first_claim: int
) -> None:
    # Claiming the whole capacity at once would leave every worker waiting for all its rows;
    # half of it lets the first rows start while the next claim runs. Idle workers still get a
    # task each at once.
    release = threading.Event()

    def handler(envelope: Any) -> None:
        release.wait(30)

    loop = LoopOptions(poll_period=0.2, prefetch=prefetch)
    with make_queue(db) as queue:
        queue.register_kind("k", handler, opts(worker_count=workers, loop=loop))
        recorder = Recorder(queue)
        ids = queue.push_tasks([Task("k", i) for i in range(20)])
        queue.start()
        recorder.wait(lambda r: len(r.claimed) >= workers + prefetch)
        release.set()
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in ids))
    assert recorder.claim_batches[0] == first_claim, recorder.claim_batches


def test_prefetch_adapts_to_attempt_length(db: Database) -> None:
    started = threading.Event()
    release = threading.Event()

    def handler(envelope: Any) -> None:
        if envelope.payload == "long":
            started.set()
            release.wait(30)

    with make_queue(db) as queue:
        queue.register_kind("k", handler, opts(worker_count=1))
        recorder = Recorder(queue)
        # Two statements, so "long" is due strictly first (claims go by due time).
        long_ids = [queue.push_task(Task("k", "long")), queue.push_task(Task("k", "after"))]
        queue.start()
        assert started.wait(10)
        # Nothing known about attempt length yet: only the idle worker's task was claimed,
        # the other stays in the table for other processes.
        assert recorder.claimed == [long_ids[0]]
        release.set()
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in long_ids))
        short_ids = queue.push_tasks([Task("k", "short") for _ in range(30)])
        recorder.wait(lambda r: all(r.status_of(i) == "succeeded" for i in short_ids))
    # Short attempts: claims then take tasks ahead of the single worker.
    assert max(recorder.claim_batches) > 1, recorder.claim_batches
