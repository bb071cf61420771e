"""One fixture chain for the test database.

``PGQUEUE_TEST_DSN`` if set → a testcontainers PostgreSQL when a Docker engine answers → an
embedded PostgreSQL from the ``pgserver`` wheel. Every test gets its own schema (pgqueue's
tables, enum and notification channel are all per schema), dropped afterwards.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from pgqueue.store.queries import schema_ddl


def _docker_answers() -> bool:
    """True when a Docker engine answers (testcontainers can then start PostgreSQL)."""
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server for the whole session."""
    dsn = os.environ.get("PGQUEUE_TEST_DSN")
    if dsn:
        yield dsn
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    from pgqueue.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="pgqueue-test-") as data_dir:
        server, dsn = start_embedded(data_dir, cleanup=True)
        try:
            yield dsn
        finally:
            server.cleanup()


@dataclass
class Database:
    """A test's view of the database: the server DSN and its own pgqueue schema."""

    dsn: str
    schema: str

    def fetch(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(sql.replace("{schema}", self.schema), params)
            return cur.fetchall() if cur.description is not None else []

    def scalar(self, sql: str, params: Any = None) -> Any:
        rows = self.fetch(sql, params)
        return rows[0][0] if rows else None

    def env(self) -> dict[str, str]:
        """Environment for a worker subprocess using this database."""
        return {**os.environ, "PGQUEUE_DSN": self.dsn, "PGQUEUE_SCHEMA": self.schema}


@pytest.fixture
def empty_schema(server_dsn: str) -> Iterator[Database]:
    """A fresh schema name with nothing in it (for migration tests)."""
    db = Database(server_dsn, f"t_{uuid.uuid4().hex[:12]}")
    yield db
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {db.schema} CASCADE")


@pytest.fixture
def db(empty_schema: Database) -> Database:
    """A schema holding pgqueue's tables, private to this test."""
    with psycopg.connect(empty_schema.dsn, autocommit=True) as conn:
        conn.execute(schema_ddl(empty_schema.schema))
    return empty_schema


@pytest.fixture(scope="session")
def pgqueue_dsn(server_dsn: str) -> str:
    """The suite's server for pgqueue's own pytest plugin (``pgqueue_schema``)."""
    return server_dsn
