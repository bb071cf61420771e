"""Request and response bodies of the HTTP API (pydantic v2)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pgqueue.bounds import MAX_SECONDS
from pgqueue.task import MAX_EXTERNAL_KEY_LENGTH, MAX_KIND_LENGTH, Status, TaskInfo

MAX_BATCH_TASKS = 10_000
MAX_ATTEMPTS_LIMIT = 1_000_000
MAX_DELAY_SECONDS = 10 * 365 * 86400.0


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; refuse it here with a clear message.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


KindName = Annotated[
    str, Field(min_length=1, max_length=MAX_KIND_LENGTH, pattern=r"\S"), AfterValidator(_no_nul)
]
ExternalKey = Annotated[
    str, Field(min_length=1, max_length=MAX_EXTERNAL_KEY_LENGTH), AfterValidator(_no_nul)
]
DelaySeconds = Annotated[
    float,
    Field(ge=0, le=MAX_DELAY_SECONDS, description="Seconds from now (database clock)."),
]

_STRICT = ConfigDict(extra="forbid", strict=True)


class EnqueueRequest(BaseModel):
    """One task to enqueue. Unknown fields are rejected (400).

    ``id`` and ``max_retries`` are the seed service's spellings: ``id`` is the task's
    ``external_key`` (idempotency key), ``max_retries`` is ``max_attempts - 1``.
    """

    model_config = _STRICT

    kind: KindName | None = Field(None, description="Task kind; the service default if omitted.")
    payload: Any = Field(None, description="Any JSON value.")
    external_key: ExternalKey | None = Field(None, description="Idempotency key within the kind.")
    id: ExternalKey | None = Field(None, description="Seed spelling of external_key.")
    delay: DelaySeconds = 0.0
    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT)] | None = Field(
        None, description="Override of the kind's max_attempts for this task."
    )
    max_retries: Annotated[int, Field(ge=0, le=MAX_ATTEMPTS_LIMIT - 1)] | None = Field(
        None, description="Seed spelling: max_attempts = max_retries + 1."
    )


class BatchItem(BaseModel):
    """One task of a batch."""

    model_config = _STRICT

    kind: KindName | None = None
    payload: Any = None
    external_key: ExternalKey | None = None


class EnqueueBatchRequest(BaseModel):
    """Tasks inserted in one statement; all or none (a bad item rejects the batch)."""

    model_config = _STRICT

    tasks: Annotated[list[BatchItem], Field(min_length=1, max_length=MAX_BATCH_TASKS)]
    delay: DelaySeconds = 0.0


class EnqueueBatchResponse(BaseModel):
    ids: list[int | None] = Field(
        description="New ids aligned with the input; null where the (kind, key) exists."
    )
    created: int
    duplicates: int


class TaskOut(BaseModel):
    """A task as stored. ``attempts`` and ``max_retries`` are the seed's names for
    ``attempts_elapsed`` and ``max_attempts - 1``."""

    id: int
    kind: str
    payload: Any = None
    external_key: str | None = None
    status: Status = Field(description="Derived status (processing while leased).")
    attempts: int
    attempts_left: int
    max_attempts: int
    max_retries: int
    messages: list[str] = []
    delayed_till: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = Field(None, description="What the handler returned, stored with the success.")
    snoozes: int = Field(0, description="Times the handler snoozed the task (no attempt used).")
    workflow_id: str | None = Field(None, description="The workflow of a workflow node.")
    node: str | None = Field(None, description="The node's name in its workflow.")
    parents: list[int] = Field([], description="Ids of the node's parents.")
    children: list[int] = Field([], description="Ids of the node's children.")

    @classmethod
    def of(cls, info: TaskInfo) -> TaskOut:
        return cls(
            id=info.id,
            kind=info.kind,
            payload=info.payload,
            external_key=info.external_key,
            status=info.status,
            attempts=info.attempts_elapsed,
            attempts_left=info.attempts_left,
            max_attempts=info.max_attempts,
            max_retries=max(info.max_attempts - 1, 0),
            messages=list(info.messages),
            delayed_till=info.delayed_till,
            created_at=info.created_at,
            updated_at=info.updated_at,
            started_at=info.started_at,
            finished_at=info.finished_at,
            result=info.result,
            snoozes=info.snoozes,
            workflow_id=info.workflow_id,
            node=info.node,
            parents=list(info.parents),
            children=list(info.children),
        )


class WorkflowNodeOut(BaseModel):
    """One node of a workflow."""

    id: int
    kind: str
    node: str
    status: Status = Field(description="Derived status (processing while leased).")
    parents: list[int]
    children: list[int]
    when: str = Field(description="all_succeeded or all_ended: what releases the node.")
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int
    messages: list[str] = []


class WorkflowOut(BaseModel):
    """A workflow: its nodes in push order and how many are in each status."""

    id: str
    counts: dict[str, int]
    nodes: list[WorkflowNodeOut]


class RetryRequest(BaseModel):
    model_config = _STRICT

    attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT)] = 1
    limit: Annotated[int, Field(ge=1, le=100_000)] = 1000


class RetryTaskRequest(BaseModel):
    model_config = _STRICT

    attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT)] = 1


class RetryResponse(BaseModel):
    kind: str
    retried: int


class PauseResponse(BaseModel):
    kind: str
    paused: bool


class RateLimitIn(BaseModel):
    model_config = _STRICT

    n: Annotated[float, Field(gt=0, le=1e9, description="Attempt starts per period.")]
    per: Annotated[float, Field(gt=0, le=MAX_SECONDS, description="The period, seconds.")] = 1.0
    burst: Annotated[int | None, Field(ge=1, le=1_000_000)] = None


class LimitsRequest(BaseModel):
    """Overrides of a kind's limits; a field left out keeps its override, null clears it."""

    model_config = _STRICT

    rate_limit: RateLimitIn | None = None
    global_concurrency: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None
    group_concurrency: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None
    group_rate_limit: RateLimitIn | None = None


class RateLimitOut(BaseModel):
    n: float
    per: float
    burst: int


class LimitsOut(BaseModel):
    """A kind's limits: the operators' overrides, and the code's where this service knows it."""

    kind: str
    rate_limit: RateLimitOut | None = None
    global_concurrency: int | None = None
    group_concurrency: int | None = None
    group_rate_limit: RateLimitOut | None = None
    overridden_at: datetime | None = None


class KindOptionsOut(BaseModel):
    """The options this service knows for a kind (declared or registered here)."""

    max_attempts: int
    attempt_timeout: float
    worker_count: int | None = Field(None, description="null when it is computed live")
    max_pending: int | None = None


class KindOut(BaseModel):
    kind: str
    paused: bool
    paused_at: datetime | None = None
    counts: dict[str, int] = Field(
        description="Tasks per status (processing derived; blocked: workflow nodes waiting"
        " for their parents) plus due: waiting tasks due now."
    )
    finished_estimated: bool = Field(
        description="succeeded/cancelled come from statistics (large table)."
    )
    oldest_due_seconds: float | None = Field(
        None, description="Age of the oldest due, unclaimed task (queue lag)."
    )
    registered: bool = Field(description="This service knows the kind's options.")
    handled: bool = Field(description="This process runs workers for the kind.")
    options: KindOptionsOut | None = None
    limit_overrides: LimitsOut | None = Field(
        None, description="Operators' overrides of the kind's limits (None: none)."
    )


class ThroughputOut(BaseModel):
    kind: str
    minute: datetime
    succeeded: int
    failed: int
    exhausted: int
    cancelled: int


class AuditOut(BaseModel):
    """One recorded operator action: who (``actor``: a token's role, an OS user), through what
    (``source``), what (``action``, ``kind``, ``task_id``, ``detail``), when and how many rows."""

    id: int
    at: datetime
    actor: str
    source: str
    action: str
    kind: str | None = None
    task_id: int | None = None
    detail: dict[str, Any] = {}
    rows: int


class HealthOut(BaseModel):
    status: str


__all__ = [
    "AuditOut",
    "BatchItem",
    "EnqueueBatchRequest",
    "EnqueueBatchResponse",
    "EnqueueRequest",
    "HealthOut",
    "KindOptionsOut",
    "KindOut",
    "PauseResponse",
    "RetryRequest",
    "RetryResponse",
    "TaskOut",
    "ThroughputOut",
]
