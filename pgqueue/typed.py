"""Typed tasks: a function registered as a kind's handler, pushed with its own arguments.

``@queue.task(kind, options)`` turns ``def send_email(user_id: int, template: str = "welcome")``
into a :class:`QueueTask` (``AsyncQueue``: an :class:`AsyncQueueTask`). Its ``push`` takes the
function's arguments, binds them to the signature, checks them against simple annotations and
stores them as the task's payload: a JSON object keyed by parameter name, holding the arguments
the caller gave (defaults are applied when the task runs). Dataclass and pydantic-model values
are stored as JSON objects and rebuilt from the annotation when the worker runs the function.

A parameter annotated :class:`~pgqueue.Envelope` is not an argument: the worker passes the
attempt's envelope there. Put it first so that type checkers leave it out of ``push``.

The arguments' binding, checks and encoding are :mod:`pgqueue.arguments`; this module holds the
task objects both facades share; ``Queue`` and ``AsyncQueue`` only pick the
blocking or the awaitable task class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import time
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from pgqueue.arguments import TaskSignature
from pgqueue.envelope import Envelope
from pgqueue.errors import InvalidOptions, InvalidTask
from pgqueue.options import KindOptions
from pgqueue.registry import Handler
from pgqueue.task import Task

P = ParamSpec("P")
R = TypeVar("R")

Delay = float | int | timedelta

# Task fields a configured push may set only when this version of Task has them.
OPTIONAL_TASK_FIELDS = ("priority", "group")


class SyncPusher(Protocol):
    """What a blocking typed task needs from its queue (``Queue``)."""

    def register_kind(self, kind: str, handler: Handler, options: KindOptions) -> None: ...

    def push_task(self, task: Task, delay: Delay = 0) -> int | None: ...

    def push_task_tx(self, tx: Any, task: Task, delay: Delay = 0) -> int | None: ...


class AsyncPusher(Protocol):
    """What an awaitable typed task needs from its queue (``AsyncQueue``)."""

    def register_kind(self, kind: str, handler: Handler, options: KindOptions) -> None: ...

    async def push_task(self, task: Task, delay: Delay = 0) -> int | None: ...

    async def push_task_tx(self, tx: Any, task: Task, delay: Delay = 0) -> int | None: ...


def _stand_in_envelope(kind: str, options: KindOptions, payload: Any) -> Envelope:
    """The envelope an inline call hands a function that asks for one: a first attempt."""
    timeout = options.attempt_timeout_seconds
    return Envelope(
        id=0,
        kind=kind,
        payload=payload,
        external_key=None,
        attempt=1,
        attempts_left=options.max_attempts - 1,
        max_attempts=options.max_attempts,
        deadline=datetime.now(UTC) + timedelta(seconds=timeout),
        monotonic_deadline=time.monotonic() + timeout,
        messages=[],
    )


@dataclasses.dataclass(frozen=True, slots=True)
class PushSettings:
    """What ``configure`` sets on the tasks a typed task pushes."""

    key: str | None = None
    delay: Delay = 0
    priority: int | None = None
    group: str | None = None

    def task(self, kind: str, payload: dict[str, Any]) -> Task:
        extra = {
            name: getattr(self, name)
            for name in OPTIONAL_TASK_FIELDS
            if getattr(self, name) is not None
        }
        return Task(kind, payload, self.key, **extra)


def _task_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(Task)}


class _TypedTask(Generic[P, R]):
    """What both flavours share: the function, its kind, its settings, inline calls."""

    def __init__(
        self,
        signature: TaskSignature,
        options: KindOptions,
        settings: PushSettings = PushSettings(),
    ) -> None:
        self.signature = signature
        self.options = options
        self.settings = settings
        self.__wrapped__ = signature.fn
        self.__doc__ = signature.fn.__doc__
        self.__name__ = getattr(signature.fn, "__name__", signature.kind)
        self.__qualname__ = getattr(signature.fn, "__qualname__", self.__name__)

    @property
    def kind(self) -> str:
        """The kind this function handles and pushes."""
        return self.signature.kind

    @property
    def fn(self) -> Callable[..., R]:
        """The decorated function itself."""
        return self.signature.fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, now, in this process (for tests); nothing is pushed.

        A function that asks for its envelope receives a stand-in for a first attempt.
        """
        signature = self.signature.resolve()
        if signature.envelope_name is None:
            return self.fn(*args, **kwargs)
        payload = signature.encode(args, kwargs)
        envelope = _stand_in_envelope(self.kind, self.options, payload)
        bound = signature.arguments.bind(*args, **kwargs)
        full = dict(bound.arguments)
        full[signature.envelope_name] = envelope
        call_args: list[Any] = []
        call_kwargs: dict[str, Any] = {}
        for param in signature.full.parameters.values():
            if param.name not in full:
                continue
            value = full[param.name]
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                call_args.append(value)
            elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                call_args.extend(value)
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                call_kwargs.update(value)
            else:
                call_kwargs[param.name] = value
        return self.fn(*call_args, **call_kwargs)

    def _settings_for(
        self, key: str | None, delay: Delay, priority: int | None, group: str | None
    ) -> PushSettings:
        missing = [
            name
            for name, value in (("priority", priority), ("group", group))
            if value is not None and name not in _task_fields()
        ]
        if missing:
            raise InvalidTask(
                f"task {self.kind!r}: {' and '.join(missing)} cannot be set: this version of "
                f"pgqueue.Task has no {' or '.join(missing)} field"
            )
        return PushSettings(key=key, delay=delay, priority=priority, group=group)

    def _task(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Task:
        return self.settings.task(self.kind, self.signature.encode(args, kwargs))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind!r} → {self.__qualname__}>"


class QueueTask(_TypedTask[P, R]):
    """A function registered on a :class:`~pgqueue.Queue`: call it, or push it as a task."""

    def __init__(
        self,
        queue: SyncPusher,
        signature: TaskSignature,
        options: KindOptions,
        settings: PushSettings = PushSettings(),
    ) -> None:
        super().__init__(signature, options, settings)
        self.queue = queue

    def push(self, *args: P.args, **kwargs: P.kwargs) -> int | None:
        """Push a task that will call the function with these arguments; its id, or ``None``
        when a task with the configured key exists. Bad arguments raise ``InvalidTask``."""
        return self.queue.push_task(self._task(args, kwargs), self.settings.delay)

    def push_tx(self, tx: Any, *args: P.args, **kwargs: P.kwargs) -> int | None:
        """``push`` in the caller's open transaction (never commits or rolls back)."""
        return self.queue.push_task_tx(tx, self._task(args, kwargs), self.settings.delay)

    def configure(
        self,
        *,
        key: str | None = None,
        delay: Delay = 0,
        priority: int | None = None,
        group: str | None = None,
    ) -> QueueTask[P, R]:
        """A copy whose pushes carry this external key, delay, priority and group."""
        settings = self._settings_for(key, delay, priority, group)
        return QueueTask(self.queue, self.signature, self.options, settings)


class AsyncQueueTask(_TypedTask[P, R]):
    """A function registered on an :class:`~pgqueue.AsyncQueue`: call it, or await its push."""

    def __init__(
        self,
        queue: AsyncPusher,
        signature: TaskSignature,
        options: KindOptions,
        settings: PushSettings = PushSettings(),
    ) -> None:
        super().__init__(signature, options, settings)
        self.queue = queue

    async def push(self, *args: P.args, **kwargs: P.kwargs) -> int | None:
        """Push a task that will call the function with these arguments; its id, or ``None``
        when a task with the configured key exists. Bad arguments raise ``InvalidTask``."""
        return await self.queue.push_task(self._task(args, kwargs), self.settings.delay)

    async def push_tx(self, tx: Any, *args: P.args, **kwargs: P.kwargs) -> int | None:
        """``push`` in the caller's open transaction (never commits or rolls back)."""
        return await self.queue.push_task_tx(tx, self._task(args, kwargs), self.settings.delay)

    def configure(
        self,
        *,
        key: str | None = None,
        delay: Delay = 0,
        priority: int | None = None,
        group: str | None = None,
    ) -> AsyncQueueTask[P, R]:
        """A copy whose pushes carry this external key, delay, priority and group."""
        settings = self._settings_for(key, delay, priority, group)
        return AsyncQueueTask(self.queue, self.signature, self.options, settings)


def _register(
    queue: SyncPusher | AsyncPusher, kind: str, options: KindOptions, fn: Any
) -> TaskSignature:
    if not callable(fn):
        raise InvalidOptions(f"@task({kind!r}) decorates a function, got {fn!r}")
    signature = TaskSignature(kind, fn)
    # An annotation may name a class defined later: it is then resolved at the first push or run.
    with contextlib.suppress(InvalidOptions):
        signature.resolve()
    queue.register_kind(kind, signature.handler(), options)
    return signature


class QueueTaskDecorator:
    """What ``Queue.task(kind, options)`` returns: applied to a function, registers it."""

    def __init__(self, queue: SyncPusher, kind: str, options: KindOptions) -> None:
        self.queue, self.kind, self.options = queue, kind, options

    @overload
    def __call__(self, fn: Callable[typing.Concatenate[Envelope, P], R]) -> QueueTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> QueueTask[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> QueueTask[Any, Any]:
        signature = _register(self.queue, self.kind, self.options, fn)
        return QueueTask(self.queue, signature, self.options)


class AsyncQueueTaskDecorator:
    """What ``AsyncQueue.task(kind, options)`` returns: applied to a function, registers it."""

    def __init__(self, queue: AsyncPusher, kind: str, options: KindOptions) -> None:
        self.queue, self.kind, self.options = queue, kind, options

    @overload
    def __call__(
        self, fn: Callable[typing.Concatenate[Envelope, P], R]
    ) -> AsyncQueueTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> AsyncQueueTask[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> AsyncQueueTask[Any, Any]:
        signature = _register(self.queue, self.kind, self.options, fn)
        return AsyncQueueTask(self.queue, signature, self.options)
