"""The chaos suite runs only when asked for (``-m chaos``, as ``make chaos`` does): it owns a
PostgreSQL cluster and restarts it, so it stays out of the plain suite runs."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue.store.queries import schema_ddl
from tests.chaos.cluster import Cluster
from tests.conftest import Database

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.option.markexpr or ""):
        return
    chaos = [item for item in items if HERE in Path(str(item.fspath)).parents]
    if chaos:
        config.hook.pytest_deselected(items=chaos)
        items[:] = [item for item in items if item not in chaos]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="pgqueue-chaos-") as root:
        cluster = Cluster(Path(root))
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def chaos_dsn(cluster: Cluster) -> str:
    return cluster.database("chaos")


@pytest.fixture
def chaos_db(chaos_dsn: str) -> Iterator[Database]:
    db = Database(chaos_dsn, f"c_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(chaos_dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(db.schema))
    yield db
    try:
        with psycopg.connect(chaos_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {db.schema} CASCADE")
    except psycopg.Error:
        pass
