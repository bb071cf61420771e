"""psycopg executors for servers that may be away (replicas, shards): a call gives up after
``connect_timeout`` seconds instead of the pool's default 30, the pool opens without waiting
(a server down at start delays nothing), and it reconnects on demand once the server is back."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pgqueue.store.executor import Operation

from .psycopg import AsyncPsycopgExecutor, PsycopgExecutor

T = TypeVar("T")


def _pool_settings(max_size: int, connect_timeout: float) -> dict[str, Any]:
    return {
        "min_size": 1,
        "max_size": max_size,
        "open": False,
        "timeout": connect_timeout,
        # Give up on a failed background connect at once: the next call that needs a
        # connection tries again, so a server that comes back is used at once and a server
        # that stays away costs one connect attempt per call, not a retry loop.
        "reconnect_timeout": 0,
        "kwargs": {"autocommit": True, "connect_timeout": max(1, math.ceil(connect_timeout))},
    }


class AsyncFailFastExecutor:
    """Async psycopg executor on a DSN whose calls fail within ``connect_timeout`` when the
    server is away."""

    def __init__(self, dsn: str, *, max_size: int = 8, connect_timeout: float = 2.0) -> None:
        self.dsn = dsn
        self.pool = AsyncConnectionPool(dsn, **_pool_settings(max_size, connect_timeout))
        self.executor = AsyncPsycopgExecutor(self.pool)
        self._opened = False

    async def open(self) -> None:
        if not self._opened:
            await self.pool.open(wait=False)
            self._opened = True

    async def run(self, op: Operation[T]) -> T:
        if not self._opened:
            await self.open()
        return await self.executor.run(op)

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        return self.executor.listen(channel)

    async def close(self) -> None:
        await self.executor.close()
        if self._opened:
            await self.pool.close()
            self._opened = False


class FailFastExecutor:
    """Blocking twin of :class:`AsyncFailFastExecutor` (its workers use that one)."""

    def __init__(self, dsn: str, *, max_size: int = 4, connect_timeout: float = 2.0) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.pool = ConnectionPool(dsn, **_pool_settings(max_size, connect_timeout))
        self.executor = PsycopgExecutor(self.pool)
        self._opened = False

    def run(self, op: Operation[T]) -> T:
        if not self._opened:
            self.pool.open(wait=False)
            self._opened = True
        return self.executor.run(op)

    def async_twin(self, max_size: int) -> AsyncFailFastExecutor:
        return AsyncFailFastExecutor(
            self.dsn, max_size=max_size, connect_timeout=self.connect_timeout
        )

    def close(self) -> None:
        self.executor.close()
        if self._opened:
            self.pool.close()
            self._opened = False
