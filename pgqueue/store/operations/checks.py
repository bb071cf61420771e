"""Range checks shared by the store's operations."""

from __future__ import annotations

from pgqueue.errors import InvalidTask


def check_int_range(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidTask(f"{name} must be an int from {low} to {high}, got {value!r}")
    return value
