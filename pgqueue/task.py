"""Tasks as pushed by applications and as read back from the database."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgqueue.errors import InvalidResult, InvalidTask

if TYPE_CHECKING:
    from pgqueue.limits import LimitOverrides
    from pgqueue.options import KindOptions

MAX_KIND_LENGTH = 100
MAX_EXTERNAL_KEY_LENGTH = 512


class Status(enum.StrEnum):
    """Task status: the stored ones plus the derived ``processing``. ``blocked`` is a workflow
    node whose parents have not all ended: no claim takes it until they have."""

    NEW = "new"
    MUST_RETRY = "must_retry"
    NO_ATTEMPTS_LEFT = "no_attempts_left"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    BLOCKED = "blocked"
    PROCESSING = "processing"  # derived: claimed and the lease has not expired

    @property
    def is_terminal(self) -> bool:
        """True for ``cancelled`` and ``succeeded``: the task will never run again."""
        return self in (Status.CANCELLED, Status.SUCCEEDED)

    def __str__(self) -> str:
        return self.value


STORED_STATUSES: tuple[Status, ...] = (
    Status.NEW,
    Status.MUST_RETRY,
    Status.NO_ATTEMPTS_LEFT,
    Status.CANCELLED,
    Status.SUCCEEDED,
    Status.BLOCKED,
)


MIN_PRIORITY = -100
MAX_PRIORITY = 100
MAX_GROUP_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work to push: a kind, a JSON payload and an optional idempotency key.

    ``group`` is the partition key of the kind's group limits (``None``: in no group);
    ``priority`` (-100 to 100, higher first) orders due tasks of a kind, ``None`` takes the
    kind's ``KindOptions.priority``.
    """

    kind: str
    payload: Any = None
    external_key: str | None = None
    group: str | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One task row as stored, with the derived status (what ``get_task`` returns).

    ``status`` is ``processing`` while a worker holds the task's lease, else ``stored_status``;
    ``messages`` holds the error messages of the latest failed attempts (newest last);
    ``delayed_till`` is when the task is due (or its lease ends, while it is processing);
    ``result`` is what the handler returned, stored with the success (``None`` otherwise);
    ``snoozes`` counts the handler's ``raise Snooze(...)`` (they consume no attempt);
    a workflow node has its ``workflow_id``, its ``node`` name and the ids of its ``parents``
    and ``children`` (a single read, ``get_task``, fills them; lists leave them empty).
    """

    id: int
    kind: str
    payload: Any
    external_key: str | None
    status: Status
    stored_status: Status
    attempts_elapsed: int
    attempts_left: int
    max_attempts: int
    messages: list[str] = field(default_factory=list)
    delayed_till: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    snoozes: int = 0
    workflow_id: str | None = None
    node: str | None = None
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)


COUNTED_STATUSES: tuple[str, ...] = (
    "new",
    "must_retry",
    "no_attempts_left",
    "blocked",
    "processing",
    "due",
    "cancelled",
    "succeeded",
)


@dataclass(frozen=True, slots=True)
class KindInfo:
    """A kind as the database sees it: paused or not, tasks per status, queue lag.

    ``counts`` has every key of :data:`COUNTED_STATUSES`: the stored statuses (a claimed task
    whose lease has not expired counts as ``processing`` instead), and ``due`` (waiting tasks due
    now, a subset of ``new`` + ``must_retry``; ``blocked`` workflow nodes are never due). Open
    statuses and ``blocked`` are exact. Finished ones
    (``succeeded``, ``cancelled``) are exact while the table is small and estimated from
    PostgreSQL's statistics in a large one (``finished_estimated`` is then True).
    ``oldest_due_seconds`` is the age of the oldest due, unclaimed task (None when none is due).
    ``options`` are the kind's options when it is declared or registered in this process;
    ``limit_overrides`` the operators' overrides of its limits (None when it has none).
    """

    kind: str
    paused: bool
    counts: dict[str, int]
    oldest_due_seconds: float | None = None
    paused_at: datetime | None = None
    finished_estimated: bool = False
    options: KindOptions | None = None
    limit_overrides: LimitOverrides | None = None


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    """Outcomes of one kind in one minute (attempts that failed and will be retried count as
    ``failed``; failures with no attempt left as ``exhausted``)."""

    kind: str
    minute: datetime
    succeeded: int
    failed: int
    exhausted: int
    cancelled: int


def validate_kind_name(kind: object) -> str:
    """Return ``kind`` if it is a usable kind name, else raise :class:`InvalidTask`."""
    if not isinstance(kind, str):
        raise InvalidTask(f"task kind must be a string, got {type(kind).__name__}")
    if not kind.strip():
        raise InvalidTask("task kind must not be empty")
    if "\x00" in kind:
        raise InvalidTask("task kind must not contain NUL characters")
    if len(kind) > MAX_KIND_LENGTH:
        raise InvalidTask(
            f"task kind is {len(kind)} characters long; the limit is {MAX_KIND_LENGTH}"
        )
    return kind


# One configured encoder, reused: json.dumps with non-default options builds a new encoder on
# every call. JSONEncoder.encode keeps no state between calls, so sharing it is safe. Without
# the circular-reference bookkeeping a cycle ends in RecursionError, which callers catch.
JSON_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
)


def encode_payload(payload: Any) -> str | None:
    """Serialise a payload to JSON text (``None`` stays SQL NULL); raise on anything else."""
    if payload is None:
        return None
    try:
        text = JSON_ENCODER.encode(payload)
    except RecursionError as exc:
        raise InvalidTask("task payload is not JSON-serialisable: it is circular") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidTask(f"task payload is not JSON-serialisable: {exc}") from exc
    if "\\u0000" in text:
        # PostgreSQL's jsonb cannot store NUL characters.
        raise InvalidTask("task payload contains a NUL character, which PostgreSQL cannot store")
    return text


def encode_result(value: Any, max_bytes: int) -> str | None:
    """A handler's return value as JSON text (``None`` stays SQL NULL); raise
    :class:`InvalidResult` naming the type or the size when it cannot be stored."""
    if value is None:
        return None
    try:
        text = JSON_ENCODER.encode(value)
    except RecursionError as exc:
        raise InvalidResult(
            f"the handler returned a {type(value).__name__} that is circular, not JSON"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidResult(
            f"the handler returned a {type(value).__name__} that is not JSON-serialisable: {exc}"
        ) from exc
    if "\\u0000" in text:
        raise InvalidResult("the handler's result contains a NUL character, which PostgreSQL "
                            "cannot store")  # fmt: skip
    if len(text) * 4 > max_bytes:  # UTF-8 takes at most 4 bytes a character
        size = len(text.encode())
        if size > max_bytes:
            raise InvalidResult(
                f"the handler's result is {size:,} bytes as JSON, over the kind's "
                f"max_result_bytes of {max_bytes:,}"
            )
    return text


def decode_payload(text: str | None) -> Any:
    """A stored payload (read as JSON text, whatever the driver) back to Python."""
    return None if text is None else json.loads(text)


def validate_external_key(key: object) -> str | None:
    """Return the key if it is ``None`` or a string within the size limit."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise InvalidTask(f"external_key must be a string or None, got {type(key).__name__}")
    size = len(key.encode())
    if size > MAX_EXTERNAL_KEY_LENGTH:
        raise InvalidTask(
            f"external_key is {size} bytes long; the limit is {MAX_EXTERNAL_KEY_LENGTH}"
        )
    if "\x00" in key:
        raise InvalidTask("external_key must not contain NUL characters")
    return key


def validate_priority(priority: object, what: str = "priority") -> int:
    """Return ``priority`` if it is an int from -100 to 100, else raise :class:`InvalidTask`."""
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not MIN_PRIORITY <= priority <= MAX_PRIORITY
    ):
        raise InvalidTask(
            f"{what} must be an int from {MIN_PRIORITY} to {MAX_PRIORITY}, got {priority!r}"
        )
    return priority


def validate_group(group: object) -> str | None:
    """Return the group if it is ``None`` or a string within the size limit."""
    if group is None:
        return None
    if not isinstance(group, str):
        raise InvalidTask(f"group must be a string or None, got {type(group).__name__}")
    size = len(group.encode())
    if size > MAX_GROUP_LENGTH:
        raise InvalidTask(f"group is {size} bytes long; the limit is {MAX_GROUP_LENGTH}")
    if "\x00" in group:
        raise InvalidTask("group must not contain NUL characters")
    return group
