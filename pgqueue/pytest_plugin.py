"""pytest plugin of pgqueue (registered under the ``pytest11`` entry point as ``pgqueue``).

Fixtures:

- ``pgqueue_dsn`` (session): the PostgreSQL server tests use: ``--pgqueue-dsn``, else the
  ``pgqueue_dsn`` ini option, else ``$PGQUEUE_TEST_DSN``, else an embedded PostgreSQL when the
  ``embedded`` extra is installed; otherwise the tests using it are skipped, saying why.
  Override it in your ``conftest.py`` to use a server of your own.
- ``pgqueue_schema``: a schema of its own for each test, migrated to pgqueue's latest revision
  and dropped afterwards (:class:`TestSchema`).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

DSN_ENV = "PGQUEUE_TEST_DSN"


@dataclass(frozen=True)
class TestSchema:
    """A migrated pgqueue schema private to one test.

    ``dsn`` connects with ``search_path`` set to the schema (then ``public``), so tables your
    test creates through it live in the schema and go with it; ``server_dsn`` is the plain one.
    Build the queue with ``Queue(schema.dsn, schema=schema.name)``.
    """

    __test__ = False  # not a test class, despite its name

    server_dsn: str
    name: str
    dsn: str


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("pgqueue")
    group.addoption(
        "--pgqueue-dsn",
        dest="pgqueue_dsn",
        default=None,
        help=f"PostgreSQL DSN for the pgqueue_schema fixture (default: ${DSN_ENV})",
    )
    parser.addini("pgqueue_dsn", "PostgreSQL DSN for the pgqueue_schema fixture", default="")


@pytest.fixture(scope="session")
def pgqueue_dsn(request: Any) -> Iterator[str]:
    """The PostgreSQL server the ``pgqueue_schema`` fixture creates schemas in."""
    dsn = (
        request.config.getoption("pgqueue_dsn")
        or request.config.getini("pgqueue_dsn")
        or os.environ.get(DSN_ENV)
    )
    if dsn:
        yield dsn
        return
    if importlib.util.find_spec("pgserver") is None:  # importing it warns; start_embedded won't
        pytest.skip(
            f"pgqueue_schema needs a PostgreSQL: set ${DSN_ENV} or --pgqueue-dsn, "
            "or install pgqueue[embedded]"
        )
    from pgqueue.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="pgqueue-test-") as data_dir:
        server, embedded_dsn = start_embedded(data_dir, cleanup=True)
        try:
            yield embedded_dsn
        finally:
            server.cleanup()


@pytest.fixture
def pgqueue_schema(pgqueue_dsn: str) -> Iterator[TestSchema]:
    """A schema migrated to pgqueue's latest revision, private to this test."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from pgqueue import migrate

    name = f"pgq_test_{uuid.uuid4().hex[:12]}"
    scoped = make_conninfo(pgqueue_dsn, options=f"-c search_path={name},public")
    migrate.upgrade(pgqueue_dsn, name)
    try:
        yield TestSchema(pgqueue_dsn, name, scoped)
    finally:
        with psycopg.connect(pgqueue_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
