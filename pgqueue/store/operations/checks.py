"""Checks shared by the store's operations: ranges, and the error for an unknown kind."""

from __future__ import annotations

from pgqueue.errors import InvalidTask, UnknownKind


def check_int_range(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidTask(f"{name} must be an int from {low} to {high}, got {value!r}")
    return value


def unknown_kind(kind: str) -> UnknownKind:
    return UnknownKind(f"kind {kind!r} is unknown: no process declared it and it has no tasks")
