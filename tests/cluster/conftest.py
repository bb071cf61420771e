"""Servers for the cluster suite (marker ``cluster``; ``make test-cluster``)."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.servers import PostgresServer


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``predicate`` (a condition on another server, which cannot signal us)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def cluster_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pgqueue-cluster-") as root:
        yield Path(root)


@pytest.fixture(scope="module")
def primary_and_replica(cluster_root: Path) -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A primary and a hot standby streaming from it (``pg_basebackup -R``); the standby logs
    every statement it runs."""
    primary = PostgresServer(cluster_root, "primary").init_primary()
    replica = PostgresServer(cluster_root, "replica")
    try:
        primary.start()
        replica.init_replica_of(primary, "log_statement = 'all'")
        replica.start()
        yield primary, replica
    finally:
        replica.ensure_stopped()
        primary.ensure_stopped()


@pytest.fixture(scope="module")
def shard_servers(cluster_root: Path) -> Iterator[list[PostgresServer]]:
    """Three independent PostgreSQL servers (of this module: names differ per module)."""
    tag = uuid.uuid4().hex[:6]
    servers = [PostgresServer(cluster_root, f"shard{i}_{tag}").init_primary() for i in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.ensure_stopped()


async def await_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """``wait_for`` for async tests: the event loop keeps running the queue meanwhile."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)
