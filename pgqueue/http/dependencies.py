"""What the API's routes share: the queue and settings of the app, typed path parameters, the
JSON body parser, the OpenAPI error entries and the kind and task lookups that answer 404."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from pgqueue.async_queue import AsyncQueue
from pgqueue.audit import Actor
from pgqueue.http import service
from pgqueue.http.auth import request_role, require_role
from pgqueue.http.errors import ApiError, ErrorBody
from pgqueue.http.models import (
    TaskOut,
)
from pgqueue.http.settings import HttpSettings
from pgqueue.registry import KindRegistry

MAX_TASK_ID = 2**63 - 1
MAX_LIST_LIMIT = 500
M = TypeVar("M", bound=BaseModel)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error responses a route may give (one shape for all)."""
    described = {
        400: "Bad JSON or fields",
        401: "Missing or wrong token",
        403: "The token's role may not do this",
        404: "No such task or kind",
        409: "Conflict (duplicate key: the existing task's id is in task_id)",
        413: "Request body over the limit",
        422: "Unknown kind named in the body",
        429: "The kind's max_pending cap is reached",
        503: "Database unreachable",
    }
    return {code: {"model": ErrorBody, "description": described[code]} for code in codes}


AUTH_ERRORS = (401, 403)


# Dependencies are coroutines: FastAPI runs plain functions on a thread pool, per request.
async def queue_of(request: Request) -> AsyncQueue:
    queue: AsyncQueue = request.app.state.pgqueue_queue
    return queue


async def settings_of(request: Request) -> HttpSettings:
    settings: HttpSettings = request.app.state.pgqueue_settings
    return settings


async def actor_of(request: Request) -> Actor:
    """Who a request acts as, for the audit log: its token's role (``anonymous`` when the
    service has no tokens), from the client's address."""
    settings: HttpSettings = request.app.state.pgqueue_settings
    role = request_role(request) if settings.auth_enabled else None
    name = role.name.lower() if role is not None else "anonymous"
    address = request.client.host if request.client is not None else None
    return Actor("api", name, detail={"address": address} if address else {})


QueueDep = Annotated[AsyncQueue, Depends(queue_of)]
ActorDep = Annotated[Actor, Depends(actor_of)]
SettingsDep = Annotated[HttpSettings, Depends(settings_of)]
TaskId = Annotated[int, Path(ge=1, le=MAX_TASK_ID, description="Task id.")]
KindPath = Annotated[str, Path(min_length=1, max_length=100, description="Task kind.")]


def json_body(model: type[M], *, optional: bool = False) -> Any:
    """A dependency parsing the raw body as JSON into ``model``, whatever the Content-Type
    (clients of the seed service send bare ``curl -d``); 400 on bad JSON or fields."""

    async def parse(request: Request) -> M:
        raw = await request.body()
        if optional and not raw.strip():
            return model()
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_input=False)) from None

    return Depends(parse)


def body_schema(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON request body of ``model`` (see app.openapi)."""
    REQUEST_MODELS[model.__name__] = model
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}


REQUEST_MODELS: dict[str, type[BaseModel]] = {}


async def known_kind(queue: AsyncQueue, kind: str) -> KindRegistry:
    """A registry holding ``kind`` when this service or the database knows it; 404 otherwise
    (the kind is in the path)."""
    if "\x00" in kind:
        raise ApiError(400, "invalid_request", "kind must not contain NUL characters")
    if kind in queue.registry:
        return queue.registry
    if kind not in {info.kind for info in await queue.list_kinds()}:
        raise ApiError(404, "unknown_kind", f"kind {kind!r} is not known to this service")
    # Known only to the database (its workers run elsewhere): admin calls need no options.
    registry = KindRegistry()
    registry.add(kind, service.ADMIN_KIND_OPTIONS, None)
    return registry


async def task_or_404(queue: AsyncQueue, task_id: int) -> TaskOut:
    info = await queue.get_task(task_id)
    if info is None:
        raise ApiError(404, "task_not_found", "task not found")
    return TaskOut.of(info)


read = [Depends(require_role("read"))]
"""The dependencies of a route any token may call."""
operate = [Depends(require_role("operator"))]
"""The dependencies of a route that changes something: the operator role."""
