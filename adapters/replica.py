"""Primary/replica executors: writes on the primary, lag-tolerant reads on streaming replicas.

Everything goes to the primary (pushes, claims, results, cancel, retry, pause, LISTEN, the
caller's transactions) except operations marked ``readonly`` (counts for metrics and the
dashboard, task lists, ``get_task(..., replica_ok=True)``). Those go to a replica, in turn,
when its replay lag is within ``max_lag`` seconds (checked at most every ``lag_check_period``);
when no replica answers or all lag too much, the primary serves them. A replica that fails a
read where the primary succeeds is left alone for ``retry_after`` seconds.

Each statement of a read operation is routed on its own, so a replica failing mid-operation
costs a retry of that statement on the primary, never an error.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from pgqueue.store.executor import Operation, Row, Statement, drive_async, drive_sync, single
from pgqueue.store.queries import Queries

T = TypeVar("T")
log = logging.getLogger("pgqueue.replica")

DEFAULT_MAX_LAG = 5.0
DEFAULT_LAG_CHECK_PERIOD = 1.0
DEFAULT_RETRY_AFTER = 10.0
DEFAULT_CONNECT_TIMEOUT = 2.0


@dataclass(slots=True)
class Replica:
    """A replica's executor and what the router knows about it."""

    name: str
    executor: Any
    lag: float | None = None  # seconds, from the last check
    checked_at: float = -math.inf
    down_until: float = -math.inf
    reads: int = 0  # statements it served (for monitoring and tests)


class ReplicaRouter:
    """Which replica serves the next read (no I/O: the executors ask and report back)."""

    def __init__(
        self, replicas: list[Replica], max_lag: float, lag_check_period: float, retry_after: float
    ) -> None:
        for name, value in (
            ("max_lag", max_lag),
            ("lag_check_period", lag_check_period),
            ("retry_after", retry_after),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        self.replicas = replicas
        self.max_lag = float(max_lag)
        self.lag_check_period = float(lag_check_period)
        self.retry_after = float(retry_after)
        self._next = 0
        self.lag_statement = Statement(Queries()["replica_lag"], {})

    def candidates(self, now: float) -> list[Replica]:
        """Replicas not known to be down, starting with the next in turn."""
        count = len(self.replicas)
        if not count:
            return []
        start, self._next = self._next, (self._next + 1) % count
        ordered = self.replicas[start:] + self.replicas[:start]
        return [r for r in ordered if r.down_until <= now]

    def needs_lag_check(self, replica: Replica, now: float) -> bool:
        return now - replica.checked_at >= self.lag_check_period

    def record_lag(self, replica: Replica, rows: list[Row], now: float) -> None:
        in_recovery, lag = rows[0]
        # A server that is not in recovery was promoted (or misconfigured): it no longer
        # follows the primary, so its data may diverge; never read from it.
        replica.lag = float(lag) if in_recovery else math.inf
        replica.checked_at = now

    def usable(self, replica: Replica) -> bool:
        return replica.lag is not None and replica.lag <= self.max_lag

    def mark_down(self, replica: Replica, now: float, error: BaseException) -> None:
        replica.down_until = now + self.retry_after
        replica.checked_at = -math.inf
        log.warning(
            "replica %s failed a read (%s); reading from the primary for %.0fs",
            replica.name,
            error,
            self.retry_after,
        )


def _name(target: Any, index: int) -> str:
    if isinstance(target, str):
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(target)
        return f"replica{index}({params.get('host', '')}:{params.get('port', '5432')})"
    return f"replica{index}"


class AsyncReplicaExecutor:
    """Async executor over a primary and replicas: DSNs or async executors (psycopg, asyncpg,
    SQLAlchemy). ``AsyncQueue(AsyncReplicaExecutor(primary, [replica, ...]))``."""

    def __init__(
        self,
        primary: Any,
        replicas: Sequence[Any],
        *,
        max_lag: float = DEFAULT_MAX_LAG,
        lag_check_period: float = DEFAULT_LAG_CHECK_PERIOD,
        retry_after: float = DEFAULT_RETRY_AFTER,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_size: int = 8,
    ) -> None:
        if isinstance(replicas, (str, bytes)):
            raise TypeError("replicas must be a sequence of DSNs or executors")
        self.primary = _async_executor(primary, max_size, connect_timeout, replica=False)
        self.router = ReplicaRouter(
            [
                Replica(_name(t, i), _async_executor(t, max_size, connect_timeout, replica=True))
                for i, t in enumerate(replicas)
            ],
            max_lag,
            lag_check_period,
            retry_after,
        )

    async def open(self) -> None:
        await self.primary.open()
        for replica in self.router.replicas:
            try:
                await replica.executor.open()
            except Exception as exc:  # noqa: BLE001 - a replica down at start is read around
                self.router.mark_down(replica, time.monotonic(), exc)

    async def run(self, op: Operation[T]) -> T:
        if not op.readonly or not self.router.replicas:
            return await self.primary.run(op)  # type: ignore[no-any-return]
        return await drive_async(op, self._read)

    async def _read(self, statement: Statement) -> list[Row]:
        router = self.router
        now = time.monotonic()
        failed: list[tuple[Replica, BaseException]] = []
        for replica in router.candidates(now):
            try:
                if router.needs_lag_check(replica, now):
                    rows = await replica.executor.run(single(router.lag_statement))
                    router.record_lag(replica, rows, now)
                if not router.usable(replica):
                    continue
                rows = await replica.executor.run(single(statement))
            except Exception as exc:  # noqa: BLE001 - the primary serves the read instead
                failed.append((replica, exc))
                continue
            replica.reads += 1
            return rows  # type: ignore[no-any-return]
        rows = await self.primary.run(single(statement))
        for replica, error in failed:  # the primary could: the replica was at fault
            router.mark_down(replica, now, error)
        return rows  # type: ignore[no-any-return]

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return self.primary.listen(channel)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.primary.close()
        for replica in self.router.replicas:
            await replica.executor.close()


def _async_executor(target: Any, max_size: int, connect_timeout: float, *, replica: bool) -> Any:
    if not isinstance(target, str):
        from pgqueue.async_queue import async_executor_for

        return async_executor_for(target, max_size)
    if replica:
        from .failfast import AsyncFailFastExecutor

        return AsyncFailFastExecutor(target, max_size=max_size, connect_timeout=connect_timeout)
    from .psycopg import AsyncPsycopgExecutor

    return AsyncPsycopgExecutor(target, max_size=max_size)


class ReplicaExecutor:
    """Blocking executor over a primary and replicas given as DSNs (psycopg):
    ``Queue(ReplicaExecutor(primary_dsn, [replica_dsn, ...]))``. The queue's workers use the
    async twin on the same servers."""

    def __init__(
        self,
        primary: str,
        replicas: Sequence[str],
        *,
        max_lag: float = DEFAULT_MAX_LAG,
        lag_check_period: float = DEFAULT_LAG_CHECK_PERIOD,
        retry_after: float = DEFAULT_RETRY_AFTER,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_size: int = 4,
    ) -> None:
        from .failfast import FailFastExecutor
        from .psycopg import PsycopgExecutor

        if not isinstance(primary, str) or isinstance(replicas, (str, bytes)):
            raise TypeError("ReplicaExecutor takes a primary DSN and a sequence of replica DSNs")
        if not all(isinstance(r, str) for r in replicas):
            raise TypeError(
                "ReplicaExecutor takes replica DSNs (AsyncReplicaExecutor also takes executors)"
            )
        self._targets = (primary, list(replicas))
        self._settings = {
            "max_lag": max_lag,
            "lag_check_period": lag_check_period,
            "retry_after": retry_after,
            "connect_timeout": connect_timeout,
        }
        self.primary = PsycopgExecutor(primary, max_size=max_size)
        self.router = ReplicaRouter(
            [
                Replica(
                    _name(dsn, i),
                    FailFastExecutor(dsn, max_size=max_size, connect_timeout=connect_timeout),
                )
                for i, dsn in enumerate(replicas)
            ],
            max_lag,
            lag_check_period,
            retry_after,
        )

    def run(self, op: Operation[T]) -> T:
        if not op.readonly or not self.router.replicas:
            return self.primary.run(op)
        return drive_sync(op, self._read)

    def _read(self, statement: Statement) -> list[Row]:
        router = self.router
        now = time.monotonic()
        failed: list[tuple[Replica, BaseException]] = []
        for replica in router.candidates(now):
            try:
                if router.needs_lag_check(replica, now):
                    router.record_lag(
                        replica, replica.executor.run(single(router.lag_statement)), now
                    )
                if not router.usable(replica):
                    continue
                rows: list[Row] = replica.executor.run(single(statement))
            except Exception as exc:  # noqa: BLE001 - the primary serves the read instead
                failed.append((replica, exc))
                continue
            replica.reads += 1
            return rows
        rows = self.primary.run(single(statement))
        for replica, error in failed:
            router.mark_down(replica, now, error)
        return rows

    def async_twin(self, max_size: int) -> AsyncReplicaExecutor:
        """The worker runtime's executor: the same servers and settings, async."""
        primary, replicas = self._targets
        return AsyncReplicaExecutor(primary, replicas, max_size=max_size, **self._settings)

    def close(self) -> None:
        for replica in self.router.replicas:
            replica.executor.close()
        self.primary.close()
