"""The seam between pgqueue's logic and a database driver.

pgqueue's operations are written once, sans-I/O: a generator yields :class:`Statement` objects
and receives each one's rows. An executor runs such an operation over its driver, blocking or
awaiting, in a transaction of its own when the operation asks for one (``run``). Running an
operation in the caller's transaction is :mod:`pgqueue.adapters.transactions`, which finds the
driver of whatever connection the caller passes. Adapters for real drivers live in
:mod:`pgqueue.adapters`; the core never imports a driver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement with named (``%(name)s``) parameters."""

    sql: str
    params: Mapping[str, Any]


Steps = Generator[Statement, list[Row], T]


@dataclass(slots=True)
class Operation(Generic[T]):
    """A sans-I/O operation: its steps, whether they need one transaction around them, and
    whether they only read (so a replica that tolerates lag may serve them)."""

    steps: Steps[T]
    transactional: bool = False
    readonly: bool = False


def single(statement: Statement) -> Operation[list[Row]]:
    """An operation of one statement that returns its rows."""

    def steps() -> Steps[list[Row]]:
        return (yield statement)

    return Operation(steps())


def drive_sync(op: Operation[T], fetch: Any) -> T:
    """Run ``op`` with ``fetch(statement) -> rows`` (a blocking callable)."""
    steps = op.steps
    try:
        statement = next(steps)
        while True:
            statement = steps.send(fetch(statement))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def drive_async(op: Operation[T], fetch: Any) -> T:
    """Run ``op`` with ``await fetch(statement) -> rows``."""
    steps = op.steps
    try:
        statement = next(steps)
        while True:
            statement = steps.send(await fetch(statement))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class SyncExecutor(Protocol):
    """Blocking executor: what :class:`pgqueue.Queue` needs from a driver."""

    def run(self, op: Operation[T]) -> T:
        """Run ``op`` on a connection of the executor's own (in a transaction if it asks)."""

    def close(self) -> None: ...


class AsyncExecutor(Protocol):
    """Awaitable executor: what :class:`pgqueue.AsyncQueue` and the worker runtime need."""

    async def open(self) -> None: ...

    async def run(self, op: Operation[T]) -> T: ...

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """A dedicated connection LISTENing on ``channel``; iterate to get payloads."""

    async def close(self) -> None: ...
