"""The arguments of a typed task: binding them to the function's signature, checking them
against simple annotations, and encoding them as the task's JSON payload (dataclasses and
pydantic models as objects), then rebuilding them from the annotations for the handler.

:mod:`pgqueue.typed` builds the task objects of ``@queue.task`` on top of it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from pgqueue.envelope import Envelope
from pgqueue.errors import InvalidOptions, InvalidTask
from pgqueue.options import is_async_callable
from pgqueue.registry import Handler
from pgqueue.task import JSON_ENCODER

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
