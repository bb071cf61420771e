"""The start-up check that a queue's schema is migrated as far as this pgqueue needs."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from pgqueue.errors import SchemaNotMigrated
from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.queries import Queries

_REVISION = re.compile(r"^revision\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)


@cache
def known_revisions() -> tuple[str, ...]:
    """pgqueue's Alembic revision ids, oldest first (read from the shipped revision files,
    so the check needs no Alembic)."""
    versions = resources.files("pgqueue.migrations").joinpath("versions")
    found = []
    for entry in versions.iterdir():
        if entry.name.startswith("pgqueue_") and entry.name.endswith(".py"):
            match = _REVISION.search(entry.read_text(encoding="utf-8"))
            if match:
                found.append(match.group(1))
    return tuple(sorted(found))


def check_schema(queries: Queries) -> Operation[None]:
    """Raise :class:`SchemaNotMigrated` when the tables are missing or ``pgqueue migrate``
    recorded an older revision than the newest this package ships.

    A schema applied from ``pgqueue sql`` or through a host's Alembic history has no pgqueue
    version table; then only the tables' presence is checked.
    """
    schema = queries.schema

    def steps() -> Steps[None]:
        rows = yield Statement(queries["schema_objects"], {})
        tables_exist, versioned = rows[0]
        if not tables_exist:
            raise SchemaNotMigrated(schema, f'relation "{schema}.tasks" does not exist')
        if not versioned:
            return None
        rows = yield Statement(queries["schema_revision"], {})
        applied = rows[0][0] if rows else None
        revisions = known_revisions()
        if revisions and (applied is None or applied in revisions[:-1]):
            raise SchemaNotMigrated(
                schema,
                f"schema {schema!r} is at revision {applied or 'base'} but this version of "
                f"pgqueue needs {revisions[-1]}",
            )
        return None

    # Transactional, so it runs on a pooled connection that goes back to the pool: on the
    # executors' kept ("sticky") connection it made stop() hang right after start().
    return Operation(steps(), transactional=True)
