"""The kinds a queue knows: registered ones (with a handler) and declared ones (push only)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pgqueue.errors import InvalidOptions, UnknownKind
from pgqueue.options import KindOptions
from pgqueue.task import validate_kind_name

Handler = Callable[..., Any]

HOOK_ARGUMENTS = {
    "before": ("envelope",),
    "after": ("envelope",),
    "success": ("envelope",),
    "failure": ("envelope", "error"),
}


def check_signature(fn: Callable[..., Any], what: str, arguments: tuple[str, ...]) -> None:
    """Raise :class:`InvalidOptions` unless ``fn`` can be called with ``arguments`` positionally.

    A handler that cannot take its envelope would fail every attempt with a ``TypeError`` and
    end its tasks ``no_attempts_left``; registration is where to say so.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return
    try:
        signature.bind(*arguments)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", None) or type(fn).__name__
        shown = signature.replace(return_annotation=inspect.Signature.empty)
        count = "one positional argument" if len(arguments) == 1 else "two positional arguments"
        raise InvalidOptions(
            f"{what} must accept {count} ({' and '.join(arguments)}), but {name}{shown} "
            f"cannot be called that way ({exc}); define it as "
            f"def {name.rsplit('.', 1)[-1]}({', '.join(arguments)}): ..."
        ) from None


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: str
    options: KindOptions
    handler: Handler | None = None


class KindRegistry:
    """Kinds by name; registration is validated once, lookups are plain dict reads."""

    def __init__(self) -> None:
        self._kinds: dict[str, KindSpec] = {}

    def add(self, kind: str, options: KindOptions, handler: Handler | None) -> KindSpec:
        validate_kind_name(kind)
        if not isinstance(options, KindOptions):
            raise InvalidOptions(f"options must be a KindOptions, got {type(options).__name__}")
        options.validate()
        if handler is not None and not callable(handler):
            raise InvalidOptions(f"handler of kind {kind!r} must be callable")
        if handler is not None:
            check_signature(handler, f"handler of kind {kind!r}", ("envelope",))
        for hook_name, arguments in HOOK_ARGUMENTS.items():
            hook = getattr(options, hook_name)
            if hook is not None:
                check_signature(hook, f"{hook_name} hook of kind {kind!r}", arguments)
        existing = self._kinds.get(kind)
        if existing is not None and existing.handler is not None:
            raise InvalidOptions(f"kind {kind!r} is already registered")
        spec = KindSpec(kind, options, handler)
        self._kinds[kind] = spec
        return spec

    def get(self, kind: str) -> KindSpec:
        try:
            return self._kinds[kind]
        except (KeyError, TypeError):
            validate_kind_name(kind)
            raise UnknownKind(
                f"kind {kind!r} is not registered on this queue "
                "(register_kind it, or declare_kind it in a producer-only process)"
            ) from None

    def handled(self) -> list[KindSpec]:
        """Kinds with a handler: the ones this process works on."""
        return [spec for spec in self._kinds.values() if spec.handler is not None]

    def __iter__(self) -> Iterator[KindSpec]:
        return iter(list(self._kinds.values()))

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds
