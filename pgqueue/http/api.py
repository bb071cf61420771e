"""The REST routes: enqueue, read, cancel, retry, pause, kinds, health."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic_core import to_jsonable_python

from pgqueue.audit import Source, acting_as
from pgqueue.errors import UnknownKind
from pgqueue.http import kinds_api, service
from pgqueue.http.dependencies import (
    AUTH_ERRORS,
    MAX_LIST_LIMIT,
    MAX_TASK_ID,
    ActorDep,
    QueueDep,
    SettingsDep,
    TaskId,
    body_schema,
    errors,
    json_body,
    operate,
    read,
    task_or_404,
)
from pgqueue.http.errors import ApiError
from pgqueue.http.models import (
    AuditOut,
    EnqueueBatchRequest,
    EnqueueBatchResponse,
    EnqueueRequest,
    HealthOut,
    RetryTaskRequest,
    TaskOut,
    WorkflowNodeOut,
    WorkflowOut,
)
from pgqueue.store import operations
from pgqueue.task import JSON_ENCODER, Status, Task

router = APIRouter()


@router.post(
    "/enqueue",
    status_code=201,
    response_model=TaskOut,
    dependencies=operate,
    responses=errors(400, *AUTH_ERRORS, 409, 413, 422, 429),
    summary="Enqueue one task",
    openapi_extra=body_schema(EnqueueRequest),
)
async def enqueue(
    request: Request,
    queue: QueueDep,
    settings: SettingsDep,
    actor: ActorDep,
    body: EnqueueRequest = json_body(EnqueueRequest),
) -> Response:
    """Push one task. 201 with the task; 409 when its ``(kind, external_key)`` exists (the
    existing task's id is in ``task_id``); 422 when the kind is unknown to this service."""
    if body.id is not None and body.external_key is not None:
        raise ApiError(400, "invalid_request", "give either id or external_key, not both")
    if body.max_attempts is not None and body.max_retries is not None:
        raise ApiError(400, "invalid_request", "give either max_attempts or max_retries, not both")
    kind = body.kind or settings.default_kind
    key = body.external_key if body.external_key is not None else body.id
    max_attempts = body.max_attempts
    if body.max_retries is not None:
        max_attempts = body.max_retries + 1
    try:
        spec = queue.registry.get(kind)
    except UnknownKind as exc:
        raise ApiError(422, "unknown_kind", str(exc)) from None
    task = Task(kind, body.payload, key)
    coalescer: service.PushCoalescer = request.app.state.pgqueue_coalescer
    with acting_as(actor):
        if coalescer.accepts(task, body.delay, max_attempts):
            task_id, created_at, delayed_till = await coalescer.push(task)
        else:
            pushed = await service.push(queue, [task], body.delay, max_attempts)
            (task_id,), created_at, delayed_till = (
                pushed.ids,
                pushed.created_at,
                pushed.delayed_till,
            )
    if task_id is None:
        assert key is not None
        existing = await service.existing_task_id(queue, kind, key)
        raise ApiError(409, "duplicate_key", "task already exists", task_id=existing)
    attempts = max_attempts if max_attempts is not None else spec.options.max_attempts
    # The hot path: encode the TaskOut fields directly (no response-model round trip).
    created = {
        "id": task_id,
        "kind": kind,
        "payload": body.payload,
        "external_key": key,
        "status": "new",
        "attempts": 0,
        "attempts_left": attempts,
        "max_attempts": attempts,
        "max_retries": attempts - 1,
        "messages": [],
        "delayed_till": to_jsonable_python(delayed_till),
        "created_at": to_jsonable_python(created_at),
        "updated_at": to_jsonable_python(created_at),  # the insert set both to now()
        "started_at": None,
        "finished_at": None,
        "result": None,
        "snoozes": 0,
        "workflow_id": None,
        "node": None,
        "parents": [],
        "children": [],
    }
    return Response(JSON_ENCODER.encode(created), 201, media_type="application/json")


@router.post(
    "/enqueue/batch",
    status_code=201,
    response_model=EnqueueBatchResponse,
    dependencies=operate,
    responses=errors(400, *AUTH_ERRORS, 413, 422, 429),
    summary="Enqueue many tasks in one statement",
    openapi_extra=body_schema(EnqueueBatchRequest),
)
async def enqueue_batch(
    queue: QueueDep,
    settings: SettingsDep,
    actor: ActorDep,
    body: EnqueueBatchRequest = json_body(EnqueueBatchRequest),
) -> Response:
    """Push all tasks in one statement (all or none). ``ids`` is aligned with the input;
    ``null`` marks a task whose ``(kind, external_key)`` exists (or repeats in the batch)."""
    tasks = [Task(item.kind or settings.default_kind, item.payload, item.external_key)
             for item in body.tasks]  # fmt: skip
    for task in tasks:
        try:
            queue.registry.get(task.kind)
        except UnknownKind as exc:
            raise ApiError(422, "unknown_kind", str(exc)) from None
    with acting_as(actor):
        ids = (await service.push(queue, tasks, body.delay)).ids
    created = sum(1 for task_id in ids if task_id is not None)
    result = {"ids": ids, "created": created, "duplicates": len(ids) - created}
    return Response(JSON_ENCODER.encode(result), 201, media_type="application/json")


@router.get(
    "/task",
    response_model=TaskOut,
    dependencies=read,
    responses=errors(400, *AUTH_ERRORS, 404),
    summary="One task by id (the seed's form)",
)
async def get_task_by_query(
    queue: QueueDep,
    id: Annotated[str | None, Query(description="Task id (an integer).")] = None,
) -> TaskOut:
    if id is None or id == "":
        raise ApiError(400, "invalid_request", "missing id parameter")
    try:
        task_id = int(id, 10)
    except ValueError:
        raise ApiError(400, "invalid_request", "id must be an integer") from None
    if not 1 <= task_id <= MAX_TASK_ID:
        raise ApiError(404, "task_not_found", "task not found")
    return await task_or_404(queue, task_id)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskOut,
    dependencies=read,
    responses=errors(400, *AUTH_ERRORS, 404),
    summary="One task by id",
)
async def get_task(task_id: TaskId, queue: QueueDep) -> TaskOut:
    return await task_or_404(queue, task_id)


@router.get(
    "/workflows/{workflow_id}",
    response_model=WorkflowOut,
    dependencies=read,
    responses=errors(400, *AUTH_ERRORS, 404),
    summary="A workflow's nodes, with their status, parents and children",
)
async def get_workflow(workflow_id: str, queue: QueueDep) -> WorkflowOut:
    try:
        canonical = operations.check_workflow_id(workflow_id)
    except ValueError as exc:
        raise ApiError(400, "invalid_workflow_id", str(exc)) from None
    reader = getattr(queue, "get_workflow", None)  # a custom queue may have no workflows
    nodes = await reader(canonical) if reader is not None else []
    if not nodes:
        raise ApiError(404, "workflow_not_found", "workflow not found")
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.status] = counts.get(n.status, 0) + 1
    return WorkflowOut(
        id=canonical,
        counts=counts,
        nodes=[
            WorkflowNodeOut(
                id=n.id,
                kind=n.kind,
                node=n.node,
                status=Status(n.status),
                parents=n.parents,
                children=n.children,
                when=n.when,
                created_at=n.created_at,
                started_at=n.started_at,
                finished_at=n.finished_at,
                attempts=n.attempts_elapsed,
                messages=n.messages,
            )
            for n in nodes
        ],
    )


@router.post(
    "/tasks/{task_id}/cancel",
    response_model=TaskOut,
    dependencies=operate,
    responses=errors(400, *AUTH_ERRORS, 404, 409),
    summary="Cancel a waiting or running task",
)
async def cancel_task(task_id: TaskId, queue: QueueDep, actor: ActorDep) -> TaskOut:
    """200 with the cancelled task; 404 when there is no such task; 409 when it already
    finished (succeeded, cancelled or out of attempts)."""
    with acting_as(actor):
        cancelled = await queue.cancel_task(task_id)
    task = await task_or_404(queue, task_id)
    if not cancelled:
        raise ApiError(
            409,
            "not_cancellable",
            f"task {task_id} is {task.status.value} and cannot be cancelled",
            task_id=task_id,
        )
    return task


@router.post(
    "/tasks/{task_id}/retry",
    response_model=TaskOut,
    dependencies=operate,
    responses=errors(400, *AUTH_ERRORS, 404, 409),
    summary="Run a task again now: fresh attempts for an ended one",
    openapi_extra=body_schema(RetryTaskRequest, required=False),
)
async def retry_task(
    task_id: TaskId,
    queue: QueueDep,
    actor: ActorDep,
    body: RetryTaskRequest = json_body(RetryTaskRequest, optional=True),
) -> TaskOut:
    """200 with the task, now due: one that ended (out of attempts, cancelled, succeeded) is
    ``must_retry`` with ``attempts`` fresh attempts, a waiting one keeps its attempts; 404 when
    there is no such task; 409 while it runs."""
    with acting_as(actor):
        retried = await queue.retry_task(task_id, body.attempts)
    task = await task_or_404(queue, task_id)
    if not retried:
        raise ApiError(
            409, "task_running", f"task {task_id} is running and cannot be retried", task_id=task_id
        )
    return task


@router.get(
    "/tasks",
    response_model=list[TaskOut],
    dependencies=read,
    responses=errors(400, *AUTH_ERRORS),
    summary="A page of tasks, newest first",
)
async def list_tasks(
    queue: QueueDep,
    settings: SettingsDep,
    response: Response,
    kind: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    status: Annotated[Status | None, Query(description="Stored status or processing.")] = None,
    key_prefix: Annotated[
        str | None, Query(min_length=1, max_length=512, description="external_key prefix.")
    ] = None,
    payload: Annotated[
        str | None,
        Query(
            max_length=4096,
            description='JSON the payload must contain, e.g. {"user_id": 42} (searches the '
            "10,000 newest tasks matching the other filters).",
        ),
    ] = None,
    cursor: Annotated[
        int | None,
        Query(ge=1, le=MAX_TASK_ID, description="The X-Next-Cursor of the previous page."),
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIST_LIMIT)] = None,
) -> list[TaskOut]:
    """The seed's array of tasks, newest first. When more may follow, the ``X-Next-Cursor``
    header holds the cursor of the next page (and ``Link`` its URL); pages stay stable while
    tasks are pushed, since new tasks get higher ids."""
    contains: Any = None
    if payload is not None:
        try:
            contains = json.loads(payload)
        except ValueError:
            raise ApiError(400, "invalid_request", "payload must be JSON") from None
    for name, value in (("kind", kind), ("key_prefix", key_prefix)):
        if value is not None and "\x00" in value:
            raise ApiError(400, "invalid_request", f"{name} must not contain NUL characters")
    page_size = limit or settings.list_limit
    tasks = await queue.list_tasks(
        kind=kind,
        status=status,
        key_prefix=key_prefix,
        payload_contains=contains,
        before_id=cursor,
        limit=page_size,
    )
    if len(tasks) == page_size:
        next_cursor = tasks[-1].id
        response.headers["X-Next-Cursor"] = str(next_cursor)
        params = {"kind": kind, "status": status, "key_prefix": key_prefix, "payload": payload,
                  "limit": page_size, "cursor": next_cursor}  # fmt: skip
        query = urlencode({k: str(v) for k, v in params.items() if v is not None})
        response.headers["Link"] = f'</tasks?{query}>; rel="next"'
    return [TaskOut.of(info) for info in tasks]


@router.get(
    "/audit",
    response_model=list[AuditOut],
    dependencies=read,
    responses=errors(400, *AUTH_ERRORS),
    summary="A page of the audit log of operator actions, newest first",
)
async def audit_log(
    queue: QueueDep,
    response: Response,
    kind: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    source: Annotated[Source | None, Query(description="Where the action came from.")] = None,
    action: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    cursor: Annotated[
        int | None,
        Query(ge=1, le=2**63 - 1, description="The X-Next-Cursor of the previous page."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=operations.MAX_AUDIT_PAGE)] = 50,
) -> list[AuditOut]:
    """Cancels, retries, bulk actions, pauses, resumes and enqueues through the service, with
    who made them and how many rows they changed. ``X-Next-Cursor`` (and ``Link``) as for
    ``GET /tasks``."""
    for name, value in (("kind", kind), ("action", action)):
        if value is not None and "\x00" in value:
            raise ApiError(400, "invalid_request", f"{name} must not contain NUL characters")
    entries = await queue.audit_log(
        limit=limit, before_id=cursor, kind=kind, source=source, action=action
    )
    if len(entries) == limit:
        next_cursor = entries[-1].id
        response.headers["X-Next-Cursor"] = str(next_cursor)
        params = {"kind": kind, "source": source, "action": action, "limit": limit,
                  "cursor": next_cursor}  # fmt: skip
        query = urlencode({k: str(v) for k, v in params.items() if v is not None})
        response.headers["Link"] = f'</audit?{query}>; rel="next"'
    return [AuditOut.model_validate(entry, from_attributes=True) for entry in entries]


@router.get(
    "/healthz",
    response_model=HealthOut,
    responses=errors(503),
    summary="Liveness: the service answers and the database is reachable",
)
async def healthz(queue: QueueDep, response: Response) -> Any:
    problem = await service.database_reachable(queue)
    if problem is not None:
        return JSONResponse({"error": problem, "code": "unavailable"}, status_code=503)
    return HealthOut(status="ok")


@router.get(
    "/metrics",
    dependencies=read,
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **errors(*AUTH_ERRORS),
    },
    summary="Prometheus metrics (text exposition format)",
)
async def metrics(request: Request) -> PlainTextResponse:
    registry = request.app.state.pgqueue_metrics_registry
    # Collectors may read the database on scrape: keep that off the event loop.
    body = await asyncio.to_thread(generate_latest, registry)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


router.include_router(kinds_api.router)
