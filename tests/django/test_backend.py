"""The pgqueue backend of Django's Tasks framework, driven through the example project as a
user drives it: ``manage.py migrate``, ``@task`` functions enqueued in the test process (in
and out of ``transaction.atomic()``), ``manage.py pgqueue_worker`` processes running them, and
``get_result`` reading what they did. Runs on Django 5.2 + django-tasks (Python 3.11) and on
Django 6's django.tasks (Python 3.12, ``make test-django``)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.django.conftest import SCHEMA, Project, Worker

pytestmark = pytest.mark.slow


class Rollback(Exception):
    pass


def wait_done(backend: Any, result_id: str) -> None:
    """Until the task ended (pgqueue's queue.wait: LISTEN, no polling)."""
    backend.queue.wait(int(result_id), timeout=60)


def test_migrate_applies_pgqueue_schema_and_pgqueue_migrate_agrees(project: Project) -> None:
    assert "Applying pgqueue.0001_pgqueue_schema... OK" in project.migrate_output
    assert "Applying pgqueue.0002_pgqueue_trace_context... OK" in project.migrate_output
    assert "Applying pgqueue.0003_pgqueue_blocked_index... OK" in project.migrate_output
    tables = {row[0] for row in project.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", [SCHEMA]
    )}  # fmt: skip
    assert {"tasks", "kinds", "pgqueue_alembic_version"} <= tables
    from pgqueue import migrate

    head = migrate.current(project.dsn, SCHEMA)
    migrate.upgrade(project.dsn, SCHEMA)  # pgqueue migrate keeps working: nothing to do
    assert migrate.current(project.dsn, SCHEMA) == head is not None
    again = project.manage("migrate", "--no-input")
    assert again.returncode == 0 and "No migrations to apply" in again.stdout


def test_check_passes(project: Project) -> None:
    checked = project.manage("check")
    assert checked.returncode == 0, checked.stderr
    from pgqueue.adapters.django.compat import task_backends

    assert list(task_backends["default"].check()) == []


def test_enqueue_in_a_block_that_rolls_back_leaves_no_task(project: Project, backend: Any) -> None:
    from django.db import transaction
    from shop.tasks import add

    from pgqueue.adapters.django.compat import TaskResultDoesNotExist

    with pytest.raises(Rollback), transaction.atomic():
        result = add.enqueue(1, 2)
        assert add.get_result(result.id).status == "READY"  # seen in its own transaction
        raise Rollback
    assert project.task_count(result.id) == 0
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(result.id)


def test_enqueue_in_a_block_that_commits_runs_in_the_worker(
    project: Project, backend: Any, worker: Worker
) -> None:
    from django.db import transaction
    from shop.models import Order
    from shop.tasks import receipt

    with transaction.atomic():
        order = Order.objects.create(total=42)
        result = receipt.enqueue(order.id)
        assert project.task_count(result.id) == 0  # other connections see it at commit only
    assert project.task_count(result.id) == 1
    assert result.status == "READY" and result.enqueued_at is not None
    wait_done(backend, result.id)
    done = receipt.get_result(result.id)
    assert done.status == "SUCCESSFUL"
    assert done.return_value == f"order {order.id}: 42"
    assert done.errors == [] and done.attempts == 1
    assert done.worker_ids[0].endswith(f":{worker.process.pid}")
    assert done.enqueued_at == result.enqueued_at
    assert done.enqueued_at <= done.started_at <= done.finished_at
    assert done.is_finished


def test_refresh_moves_a_result_through_its_states(
    project: Project, backend: Any, worker: Worker
) -> None:
    from shop.tasks import add

    result = add.enqueue(20, 22)  # outside a transaction: committed at once
    assert project.task_count(result.id) == 1
    assert result.status == "READY" and result.started_at is None
    assert result.finished_at is None and not result.is_finished
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018
    wait_done(backend, result.id)
    result.refresh()
    assert result.status == "SUCCESSFUL" and result.return_value == 42
    assert result.started_at is not None and result.finished_at is not None


def test_an_exception_is_a_failed_result_with_the_error(
    project: Project, backend: Any, worker: Worker
) -> None:
    from shop.tasks import fail

    result = fail.enqueue("card declined")
    wait_done(backend, result.id)
    failed = fail.get_result(result.id)
    assert failed.status == "FAILED" and failed.is_finished
    assert failed.attempts == 1 and len(failed.errors) == 1
    error = failed.errors[0]
    assert error.exception_class is ValueError
    assert error.traceback.rstrip().endswith("ValueError: card declined")
    assert "raise ValueError(message)" in error.traceback
    assert failed.finished_at is not None
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018


def test_priority_orders_the_queue(project: Project, backend: Any, worker: Worker) -> None:
    """Enqueued while only a worker of the other queue runs (which leaves them alone), then one
    worker of "ordered" (worker_count 1) runs them highest priority first."""
    from django.db import transaction
    from shop.models import Event
    from shop.tasks import add, record

    labels = {"low": -40, "default": 0, "high": 90, "top": 100, "bottom": -100}
    with transaction.atomic():
        results = {
            label: record.using(priority=priority).enqueue(label)
            for label, priority in labels.items()
        }
    other_queue = add.enqueue(0, 0)  # the "default" worker runs this one, not theirs
    wait_done(backend, other_queue.id)
    assert {record.get_result(r.id).status for r in results.values()} == {"READY"}
    ordered = Worker(project, "--queue", "ordered")
    try:
        # Wait on the last one first: queue.wait marks its task with a short row update, and a
        # claim running at that instant skips the locked row (SKIP LOCKED) and takes the next
        # priority. Marking the lowest priority can only delay it; marking "low" while the
        # worker claimed once let "bottom" run first (seen on a loaded machine).
        wait_done(backend, results["bottom"].id)
        for result in results.values():
            wait_done(backend, result.id)
    finally:
        assert ordered.stop() == 0
    events = {record.get_result(result.id).return_value: label for label, result in results.items()}
    ran = [events[event_id] for event_id in sorted(events)]
    assert ran == ["top", "high", "default", "low", "bottom"]
    assert sorted(Event.objects.values_list("id", flat=True)) == sorted(events)
    stored = dict(project.fetch(
        f"SELECT id, priority FROM {SCHEMA}.tasks WHERE id = ANY(%s)",
        [[int(r.id) for r in results.values()]],
    ))  # fmt: skip
    assert sorted(stored.values()) == sorted(labels.values())


def test_run_after_delays_the_task(project: Project, backend: Any, worker: Worker) -> None:
    from django.utils import timezone
    from shop.tasks import add

    run_after = timezone.now() + timedelta(seconds=3)
    late = add.using(run_after=run_after).enqueue(2, 3)
    (due,) = project.fetch(f"SELECT delayed_till FROM {SCHEMA}.tasks WHERE id = %s", [int(late.id)])
    # Due at run_after, give or take the moments between Django's clock and the insert.
    assert -timedelta(milliseconds=1) <= due[0] - run_after < timedelta(seconds=2)
    now = add.enqueue(1, 1)
    wait_done(backend, now.id)
    wait_done(backend, late.id)
    done = add.get_result(late.id)
    assert done.status == "SUCCESSFUL" and done.return_value == 5
    assert done.started_at >= due[0]  # not claimed before it was due
    assert done.task.run_after == run_after


def test_takes_context(project: Project, backend: Any, worker: Worker) -> None:
    from shop.tasks import whoami

    result = whoami.enqueue(tag="x")
    wait_done(backend, result.id)
    assert whoami.get_result(result.id).return_value == {
        "id": result.id,
        "attempt": 1,
        "tag": "x",
    }


async def test_async_task_aenqueue_and_aget_result(
    project: Project, backend: Any, worker: Worker
) -> None:
    from asgiref.sync import sync_to_async
    from shop.tasks import double

    result = await double.aenqueue(21)
    assert result.status == "READY" and result.args == [21]
    await sync_to_async(wait_done)(backend, result.id)
    done = await double.aget_result(result.id)
    assert done.status == "SUCCESSFUL" and done.return_value == 42
    await result.arefresh()
    assert result.return_value == 42


def test_get_result_equals_the_enqueued_result(project: Project, backend: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from shop.tasks import add

    # Due in an hour: the default queue's worker, which may still run from an earlier test,
    # must not start it between the enqueue and the read (it did once: RUNNING != READY).
    later = timezone.now() + timedelta(hours=1)
    result = add.using(priority=7, run_after=later).enqueue(1, b=2)
    assert result.args == [1] and result.kwargs == {"b": 2}
    found = backend.get_result(result.id)
    assert found == result
    assert found.task == add.using(priority=7, run_after=later)


def test_missing_and_foreign_results_do_not_exist(project: Project, backend: Any) -> None:
    from pgqueue.adapters.django.compat import TaskResultDoesNotExist

    (plain,) = project.fetch(
        f"INSERT INTO {SCHEMA}.tasks (kind, payload, attempts_left, max_attempts) "
        "VALUES ('not-django', '{\"x\": 1}', 1, 1) RETURNING id"
    )
    for result_id in ("123456789", "abc", "", "-1", str(2**70), str(plain[0])):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result_id)


def count_tasks(project: Project) -> int:
    return int(project.fetch(f"SELECT count(*) FROM {SCHEMA}.tasks")[0][0])


def test_validation_errors_push_nothing(project: Project, backend: Any) -> None:
    from shop.tasks import add, record

    from pgqueue.adapters.django.compat import InvalidTask

    before = count_tasks(project)
    for priority in (101, -101, 1.5):
        with pytest.raises(InvalidTask, match="priority must be a whole number"):
            add.using(priority=priority)  # type: ignore[arg-type]
    with pytest.raises(InvalidTask, match="not valid for backend"):
        add.using(queue_name="nowhere")
    with pytest.raises(InvalidTask, match="aware datetime"):
        add.using(run_after=datetime.now() + timedelta(seconds=5))
    with pytest.raises(TypeError, match="Unsupported type"):
        add.enqueue(datetime.now(), 1)
    with pytest.raises(TypeError, match="Unsupported type"):
        record.enqueue(label=object())
    with pytest.raises(InvalidTask, match="not JSON-serialisable"):
        add.enqueue(math.nan, 1)
    assert count_tasks(project) == before


def test_task_definitions_the_backend_refuses(project: Project) -> None:
    from pgqueue.adapters.django.compat import InvalidTask

    try:
        from django.tasks import task
    except ImportError:
        from django_tasks import task

    def local() -> None: ...

    with pytest.raises(InvalidTask, match="module level"):
        task(local)

    with pytest.raises(InvalidTask, match="first argument of 'context'"):
        task(takes_context=True)(_no_context)


def _no_context(x: int) -> None: ...


def test_worker_refuses_unknown_queue_and_other_backends(project: Project) -> None:
    refused = project.manage("pgqueue_worker", "--queue", "nowhere")
    assert refused.returncode != 0 and "not among the QUEUES" in refused.stderr
    missing = project.manage("pgqueue_worker", "--backend", "other")
    assert missing.returncode != 0 and "no task backend 'other'" in missing.stderr


def test_view_enqueues_in_the_request_transaction(
    project: Project, backend: Any, worker: Worker
) -> None:
    from django.test import Client

    client = Client()
    placed = client.get("/orders/7").json()
    wait_done(backend, placed["result_id"])
    shown = client.get(f"/results/{placed['result_id']}").json()
    assert shown == {"status": "SUCCESSFUL", "value": f"order {placed['order']}: 7"}


def test_dashboard_served_beside_django_in_one_asgi_app(project: Project, worker: Worker) -> None:
    """``uvicorn project.asgi:app``: Django's views and pgqueue's API and dashboard under
    /pgqueue, one process."""
    import subprocess
    import sys

    import httpx

    from tests.django.conftest import PROJECT, Log

    env = {**project.env(), "PGQUEUE_READ_TOKEN": "read-token-0123456789"}
    env.pop("PGQUEUE_API_TOKEN", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "project.asgi:app", "--port", "0"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    log = Log(server)
    try:
        url = log.wait_for(r"Uvicorn running on (http://[\d.]+:\d+)").group(1)
        with httpx.Client(base_url=url, timeout=30) as client:
            placed = client.get("/orders/9").json()
            read = {"Authorization": "Bearer read-token-0123456789"}
            task = client.get(f"/pgqueue/tasks/{placed['result_id']}", headers=read)
            assert task.status_code == 200, task.text
            assert task.json()["kind"] == "django.default"
            assert client.get(f"/pgqueue/tasks/{placed['result_id']}").status_code == 401
            page = client.get("/pgqueue/", follow_redirects=True)
            assert page.status_code == 200 and "pgqueue" in page.text
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.reader.join(timeout=10)
        assert server.stdout is not None
        server.stdout.close()


def test_pgqueue_worker_command_runs_a_django_project(project: Project, backend: Any) -> None:
    """``pgqueue worker pgqueue.adapters.django.cli:queue`` works the backend's queues too."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from shop.tasks import add

    from tests.django.conftest import PROJECT, Log

    result = add.enqueue(4, 5)
    pgqueue_command = Path(sys.executable).with_name("pgqueue")
    env = {**project.env(), "PYTHONPATH": os.pathsep.join([str(PROJECT), *sys.path])}
    process = subprocess.Popen(
        [str(pgqueue_command), "worker", "pgqueue.adapters.django.cli:queue"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    log = Log(process)
    try:
        log.wait_for("worker started")
        wait_done(backend, result.id)
        assert add.get_result(result.id).return_value == 9
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.text()
        log.reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def test_an_enqueue_inside_a_span_records_its_trace_context(project: Project) -> None:
    from django.db import transaction
    from opentelemetry.sdk.trace import TracerProvider
    from shop.tasks import add

    tracer = TracerProvider().get_tracer("shop")
    with tracer.start_as_current_span("checkout") as span, transaction.atomic():
        result = add.enqueue(1, 2)
    pushed = span.get_span_context()
    ((stored,),) = project.fetch(
        f"SELECT trace_context FROM {SCHEMA}.tasks WHERE id = %s", [int(result.id)]
    )
    assert stored == f"00-{pushed.trace_id:032x}-{pushed.span_id:016x}-{pushed.trace_flags:02x}"


def test_bad_options_are_refused_at_start_up(project: Project) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from pgqueue.adapters.django import PgQueueBackend

    for options, message in (
        ({"TRACING": "sideways"}, "TRACING"),
        ({"SCHMA": "x"}, "unknown keys"),
        ({"QUEUE_OPTIONS": {"elsewhere": {}}}, "not among its QUEUES"),
        ({"KIND_OPTIONS": {"max_attempts": 0}}, "queue 'default'"),
        ({"KIND_OPTIONS": {"retries": 3}}, "unknown KindOptions fields"),
    ):
        with pytest.raises(ImproperlyConfigured, match=message):
            PgQueueBackend("x", {"QUEUES": ["default"], "OPTIONS": options})
    traced = PgQueueBackend("x", {"OPTIONS": {"TRACING": "link"}})
    assert traced.queue.stamps  # the workers' attempts get spans
