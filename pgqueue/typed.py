"""Typed tasks: a function registered as a kind's handler, pushed with its own arguments.

``@queue.task(kind, options)`` turns ``def send_email(user_id: int, template: str = "welcome")``
into a :class:`QueueTask` (``AsyncQueue``: an :class:`AsyncQueueTask`). Its ``push`` takes the
function's arguments, binds them to the signature, checks them against simple annotations and
stores them as the task's payload: a JSON object keyed by parameter name, holding the arguments
the caller gave (defaults are applied when the task runs). Dataclass and pydantic-model values
are stored as JSON objects and rebuilt from the annotation when the worker runs the function.

A parameter annotated :class:`~pgqueue.Envelope` is not an argument: the worker passes the
attempt's envelope there. Put it first so that type checkers leave it out of ``push``.

This module holds everything both facades share; ``Queue`` and ``AsyncQueue`` only pick the
blocking or the awaitable task class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import time
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from pgqueue.envelope import Envelope
from pgqueue.errors import InvalidOptions, InvalidTask
from pgqueue.options import KindOptions, is_async_callable
from pgqueue.registry import Handler
from pgqueue.task import JSON_ENCODER, Task

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


# -- checking, encoding and decoding values by annotation ----------------------------------------


def _is_pydantic_model(cls: Any) -> bool:
    # Duck-typed so that the core never imports pydantic.
    return isinstance(cls, type) and hasattr(cls, "model_validate") and hasattr(cls, "model_dump")


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


def check_value(value: Any, annotation: Any, where: str) -> str | None:
    """Why ``value`` does not fit ``annotation`` (a message naming ``where``), or None.

    Checks what a JSON payload can carry: ``int``, ``float``, ``str``, ``bool``, ``None``,
    ``list``/``tuple``/``dict`` (and their item types), unions and ``Optional``, ``Literal``,
    enums, dataclasses, pydantic models and other classes (``isinstance``). Annotations it cannot
    check (type variables, callables, ...) accept anything.
    """
    if annotation in (Any, object, inspect.Parameter.empty):
        return None
    if annotation is None or annotation is type(None):
        return None if value is None else _mismatch(where, annotation, value)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if _is_union(origin):
        options = [option for option in args if option is not type(None)]
        if value is not None and len(options) == 1:
            return check_value(value, options[0], where)  # Optional[X]: say what X needs
        for option in args:
            if check_value(value, option, where) is None:
                return None
        return _mismatch(where, annotation, value)
    if origin is typing.Literal:
        return None if value in args else f"argument {where!r} must be one of {list(args)!r}"
    if origin is typing.Annotated:
        return check_value(value, args[0], where)
    if origin is list:
        if not isinstance(value, list):
            return _mismatch(where, annotation, value)
        return (
            _first_error(
                check_value(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)
            )
            if args
            else None
        )
    if origin is tuple:
        if not isinstance(value, tuple):
            return _mismatch(where, annotation, value)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [(item, args[0]) for item in value]
        elif args:
            if len(args) != len(value):
                return f"argument {where!r} must be a tuple of {len(args)} items, got {len(value)}"
            items = list(zip(value, args, strict=True))
        else:
            items = []
        return _first_error(check_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(items))
    if origin is dict:
        if not isinstance(value, dict):
            return _mismatch(where, annotation, value)
        return _check_dict(value, args[1] if len(args) == 2 else Any, where)
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else _mismatch(where, annotation, value)
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else _mismatch(where, annotation, value)
    if annotation is dict:
        return (
            _check_dict(value, Any, where)
            if isinstance(value, dict)
            else _mismatch(where, annotation, value)
        )
    if isinstance(annotation, type):
        return None if isinstance(value, annotation) else _mismatch(where, annotation, value)
    return None


def _check_dict(value: dict[Any, Any], item_annotation: Any, where: str) -> str | None:
    for key, item in value.items():
        if not isinstance(key, str):
            return f"argument {where!r} has the key {key!r}; JSON objects only have string keys"
        error = check_value(item, item_annotation, f"{where}[{key!r}]")
        if error:
            return error
    return None


def _first_error(errors: typing.Iterable[str | None]) -> str | None:
    return next((error for error in errors if error), None)


def _mismatch(where: str, annotation: Any, value: Any) -> str:
    return f"argument {where!r} must be {_type_name(annotation)}, got {type(value).__name__}"


def encode_value(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses and pydantic models become objects, enums
    their values, tuples lists; everything else is left for the JSON encoder to accept or not."""
    if _is_pydantic_model(type(value)):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return encode_value(value.value)
    if isinstance(value, list | tuple):
        return [encode_value(item) for item in value]
    if isinstance(value, dict):
        return {key: encode_value(item) for key, item in value.items()}
    return value


def decode_value(data: Any, annotation: Any) -> Any:
    """Rebuild a value stored by :func:`encode_value` from its annotation."""
    if annotation in (Any, object, inspect.Parameter.empty) or data is None:
        return data
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if _is_union(origin):
        for option in args:
            if option is type(None):
                continue
            try:
                rebuilt = decode_value(data, option)
            except (TypeError, ValueError, InvalidTask):
                continue
            if check_value(rebuilt, option, "") is None:
                return rebuilt
        return data
    if origin is typing.Annotated:
        return decode_value(data, args[0])
    if origin is list and args and isinstance(data, list):
        return [decode_value(item, args[0]) for item in data]
    if origin is tuple and isinstance(data, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode_value(item, args[0]) for item in data)
        if args:
            return tuple(decode_value(v, a) for v, a in zip(data, args, strict=False))
        return tuple(data)
    if annotation is tuple and isinstance(data, list):
        return tuple(data)
    if origin is dict and len(args) == 2 and isinstance(data, dict):
        return {key: decode_value(item, args[1]) for key, item in data.items()}
    if _is_pydantic_model(annotation):
        return annotation.model_validate(data)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(data, dict):
            raise InvalidTask(f"cannot rebuild {annotation.__name__} from {type(data).__name__}")
        hints = typing.get_type_hints(annotation)
        fields = {f.name for f in dataclasses.fields(annotation) if f.init}
        return annotation(
            **{k: decode_value(v, hints.get(k, Any)) for k, v in data.items() if k in fields}
        )
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation(data)
    return data


# -- the function's signature ----------------------------------------------------------------------


def _is_envelope(annotation: Any) -> bool:
    if annotation is Envelope:
        return True
    if _is_union(typing.get_origin(annotation)):
        return Envelope in typing.get_args(annotation)
    return False


class TaskSignature:
    """A task function's parameters: which are arguments, their annotations, the envelope's.

    Annotations are resolved on first use, so that a function may name classes defined after it.
    """

    def __init__(self, kind: str, fn: Callable[..., Any]) -> None:
        self.kind = kind
        self.fn = fn
        try:
            self.full = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise InvalidOptions(f"task {kind!r}: cannot read the signature of {fn!r}") from exc
        self._resolved = False
        self.hints: dict[str, Any] = {}
        self.envelope_name: str | None = None
        self.arguments = self.full

    def resolve(self) -> TaskSignature:
        """Read the annotations (once); the envelope parameter is left out of ``arguments``."""
        if self._resolved:
            return self
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception as exc:
            raise InvalidOptions(
                f"task {self.kind!r}: cannot resolve the annotations of {self.fn!r} ({exc})"
            ) from exc
        kept = []
        for param in self.full.parameters.values():
            if _is_envelope(hints.get(param.name)):
                self.envelope_name = param.name
            else:
                kept.append(param)
        self.hints = hints
        self.arguments = self.full.replace(parameters=kept)
        self._resolved = True
        return self

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The payload of a call: arguments bound by name, checked and JSON-ready.

        Raises :class:`InvalidTask` naming the argument that is missing, unknown, of the wrong
        type or not JSON-serialisable.
        """
        self.resolve()
        try:
            bound = self.arguments.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidTask(f"task {self.kind!r}: {exc}") from None
        payload: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            error = self._check(name, value)
            if error:
                raise InvalidTask(f"task {self.kind!r}: {error}")
            encoded = encode_value(value)
            try:
                JSON_ENCODER.encode(encoded)
            except (TypeError, ValueError, RecursionError) as exc:
                raise InvalidTask(
                    f"task {self.kind!r}: argument {name!r} is not JSON-serialisable ({exc})"
                ) from None
            payload[name] = encoded
        return payload

    def _check(self, name: str, value: Any) -> str | None:
        param = self.arguments.parameters[name]
        annotation = self.hints.get(name, Any)
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return _first_error(
                check_value(item, annotation, f"{name}[{i}]") for i, item in enumerate(value)
            )
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return _first_error(check_value(item, annotation, key) for key, item in value.items())
        return check_value(value, annotation, name)

    def decode(self, payload: Any, envelope: Envelope | None) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments to call the function with for ``payload``."""
        self.resolve()
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise InvalidTask(
                f"task {self.kind!r}: the payload of a typed task is a JSON object of its "
                f"arguments, got {type(payload).__name__}"
            )
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self.full.parameters.values():
            name = param.name
            if name == self.envelope_name:
                value: Any = envelope
            elif name not in payload:
                continue
            else:
                annotation = self.hints.get(name, Any)
                if param.kind is inspect.Parameter.VAR_POSITIONAL:
                    args.extend(decode_value(item, annotation) for item in payload[name])
                    continue
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    kwargs.update(
                        (key, decode_value(item, annotation)) for key, item in payload[name].items()
                    )
                    continue
                value = decode_value(payload[name], annotation)
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[name] = value
        return args, kwargs

    def handler(self) -> Handler:
        """The kind's handler: rebuilds the arguments from the envelope and calls the function."""
        fn = self.fn

        if is_async_callable(fn):

            async def run_async(envelope: Envelope) -> Any:
                args, kwargs = self.decode(envelope.payload, envelope)
                return await fn(*args, **kwargs)

            return run_async

        def run_sync(envelope: Envelope) -> Any:
            args, kwargs = self.decode(envelope.payload, envelope)
            return fn(*args, **kwargs)

        return run_sync


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
