"""The API's routes about kinds: retrying a kind's exhausted tasks, pause and resume, the
operators' limit overrides, the kinds listing and the throughput history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from pgqueue.async_queue import AsyncQueue
from pgqueue.audit import acting_as
from pgqueue.http import service
from pgqueue.http.dependencies import (
    AUTH_ERRORS,
    ActorDep,
    KindPath,
    QueueDep,
    SettingsDep,
    body_schema,
    errors,
    json_body,
    known_kind,
    operate,
    read,
)
from pgqueue.http.models import (
    KindOptionsOut,
    KindOut,
    LimitsOut,
    LimitsRequest,
    PauseResponse,
    RateLimitOut,
    RetryRequest,
    RetryResponse,
    ThroughputOut,
)
from pgqueue.http.settings import HttpSettings
from pgqueue.limits import RateLimit
from pgqueue.options import worker_count_of
from pgqueue.store.operations import LimitOverrides
from pgqueue.task import KindInfo

router = APIRouter()


@router.post(
    "/kinds/{kind}/retry",
    response_model=RetryResponse,
    dependencies=operate,
    responses=errors(400, *AUTH_ERRORS, 404),
    summary="Give a kind's exhausted tasks fresh attempts",
    openapi_extra=body_schema(RetryRequest, required=False),
)
async def retry_kind(
    kind: KindPath,
    queue: QueueDep,
    actor: ActorDep,
    body: RetryRequest = json_body(RetryRequest, optional=True),
) -> RetryResponse:
    registry = await known_kind(queue, kind)
    with acting_as(actor):
        retried = await service.retry(queue, registry, kind, body.attempts, body.limit)
    return RetryResponse(kind=kind, retried=retried)


@router.post(
    "/kinds/{kind}/pause",
    response_model=PauseResponse,
    dependencies=operate,
    responses=errors(400, *AUTH_ERRORS, 404),
    summary="Pause a kind cluster-wide",
)
async def pause_kind(kind: KindPath, queue: QueueDep, actor: ActorDep) -> PauseResponse:
    """No new attempt of the kind starts in any process; running ones finish; pushes work."""
    await known_kind(queue, kind)
    with acting_as(actor):
        await queue.pause_kind(kind)
    return PauseResponse(kind=kind, paused=True)


@router.post(
    "/kinds/{kind}/resume",
    response_model=PauseResponse,
    dependencies=operate,
    responses=errors(400, *AUTH_ERRORS, 404),
    summary="Resume a paused kind",
)
async def resume_kind(kind: KindPath, queue: QueueDep, actor: ActorDep) -> PauseResponse:
    await known_kind(queue, kind)
    with acting_as(actor):
        await queue.resume_kind(kind)
    return PauseResponse(kind=kind, paused=False)


@router.put(
    "/kinds/{kind}/limits",
    response_model=LimitsOut,
    dependencies=operate,
    responses=errors(400, *AUTH_ERRORS, 404),
    summary="Override a kind's limits fleet-wide",
    openapi_extra=body_schema(LimitsRequest),
)
async def set_kind_limits(
    kind: KindPath,
    queue: QueueDep,
    request: Request,
    actor: ActorDep,
    body: LimitsRequest = json_body(LimitsRequest),
) -> LimitsOut:
    """Every worker obeys within a second until the override is cleared: a field left out
    keeps its override, ``null`` goes back to the code's value. Audited."""
    await known_kind(queue, kind)
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name in ("rate_limit", "group_rate_limit") and value is not None:
            value = RateLimit(value.n, per=value.per, burst=value.burst)
        changes[name] = value
    client = request.client.host if request.client else None
    with acting_as(actor):
        overrides = await queue.set_limits(kind, actor=f"api:{client}", **changes)
    return limits_out(kind, overrides)


def limits_out(kind: str, overrides: LimitOverrides) -> LimitsOut:
    return LimitsOut(
        kind=kind,
        rate_limit=rate_out(overrides.rate_limit),
        global_concurrency=overrides.global_concurrency,
        group_concurrency=overrides.group_concurrency,
        group_rate_limit=rate_out(overrides.group_rate_limit),
        overridden_at=overrides.overridden_at,
    )


def rate_out(rate: RateLimit | None) -> RateLimitOut | None:
    if rate is None:
        return None
    return RateLimitOut(n=float(rate.n), per=float(rate.per), burst=rate.capacity)


@router.get(
    "/kinds",
    response_model=list[KindOut],
    dependencies=read,
    responses=errors(*AUTH_ERRORS),
    summary="Every kind: options, counts per status, pause state, lag",
)
async def list_kinds(queue: QueueDep, settings: SettingsDep) -> list[KindOut]:
    return [kind_out(info, queue, settings) for info in await queue.list_kinds()]


def kind_out(info: KindInfo, queue: AsyncQueue, settings: HttpSettings) -> KindOut:
    options = None
    handled = False
    if info.options is not None:
        try:
            workers: int | None = worker_count_of(info.options)
        except Exception:  # noqa: BLE001 - a live provider that fails is shown as unknown
            workers = None
        options = KindOptionsOut(
            max_attempts=info.options.max_attempts,
            attempt_timeout=info.options.attempt_timeout_seconds,
            worker_count=workers if not callable(info.options.worker_count) else None,
            max_pending=info.options.max_pending,
        )
        handled = settings.run_workers and queue.registry.get(info.kind).handler is not None
    return KindOut(
        kind=info.kind,
        paused=info.paused,
        paused_at=info.paused_at,
        counts=dict(info.counts),
        finished_estimated=info.finished_estimated,
        oldest_due_seconds=info.oldest_due_seconds,
        registered=info.options is not None,
        handled=handled,
        options=options,
        limit_overrides=None
        if info.limit_overrides is None
        else limits_out(info.kind, info.limit_overrides),
    )


@router.get(
    "/throughput",
    response_model=list[ThroughputOut],
    dependencies=read,
    responses=errors(400, *AUTH_ERRORS),
    summary="Outcomes per kind and minute, oldest first",
)
async def throughput(
    queue: QueueDep,
    kind: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    minutes: Annotated[int, Query(ge=1, le=7 * 24 * 60)] = 60,
) -> list[ThroughputOut]:
    points = await queue.throughput(kind=kind, minutes=minutes)
    return [ThroughputOut.model_validate(point, from_attributes=True) for point in points]
