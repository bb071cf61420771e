"""The kinds a queue knows: registered ones (with a handler) and declared ones (push only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pgqueue.errors import InvalidOptions, UnknownKind
from pgqueue.options import KindOptions
from pgqueue.task import validate_kind_name

Handler = Callable[..., Any]


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
