"""pgqueue's schema for Django's ``manage.py migrate``: each pgqueue backend of ``TASKS`` on
the database being migrated gets its schema brought to pgqueue's head revision (Alembic, as
``pgqueue migrate`` does; both keep working side by side)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from pgqueue import migrate


def pgqueue_schemas(database: str) -> list[str]:
    """The schemas of the pgqueue backends in ``TASKS`` that live on ``database``."""
    from .backend import PgQueueBackend

    schemas: list[str] = []
    for config in getattr(settings, "TASKS", {}).values():
        try:
            backend_class = import_string(config.get("BACKEND", ""))
        except ImportError:
            continue
        if not (isinstance(backend_class, type) and issubclass(backend_class, PgQueueBackend)):
            continue
        options = config.get("OPTIONS", {}) or {}
        schema = options.get("SCHEMA", "pgqueue")
        if options.get("DATABASE", "default") == database and schema not in schemas:
            schemas.append(schema)
    return schemas


def apply(apps: Any, schema_editor: Any) -> None:
    """Upgrade every pgqueue schema on the migrated database to the head revision."""
    from .backend import connection_dsn

    alias = schema_editor.connection.alias
    for schema in pgqueue_schemas(alias):
        migrate.upgrade(connection_dsn(alias), schema)


def revert(apps: Any, schema_editor: Any) -> None:
    """``manage.py migrate pgqueue zero``: drop pgqueue's tables (and tasks) on the database."""
    from .backend import connection_dsn

    alias = schema_editor.connection.alias
    for schema in pgqueue_schemas(alias):
        migrate.downgrade(connection_dsn(alias), schema)
