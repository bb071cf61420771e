"""Apply, revert, print and export pgqueue's schema (Alembic, branch label ``pgqueue``)."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from pgqueue.queries import DEFAULT_SCHEMA, schema_ddl, validate_schema_name

VERSION_TABLE = "pgqueue_alembic_version"
BRANCH = "pgqueue"
SCHEMA_ENV = "PGQUEUE_SCHEMA"


def migration_schema() -> str:
    """The schema a running migration targets: ``pgqueue migrate --schema``, else
    ``$PGQUEUE_SCHEMA``, else ``pgqueue`` (so copied revisions work in a host's alembic)."""
    from alembic import context

    schema = None
    try:
        schema = context.config.attributes.get("pgqueue_schema")
    except Exception:  # noqa: BLE001 - no alembic context
        schema = None
    return validate_schema_name(schema or os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA)


def sqlalchemy_url(dsn: str) -> str:
    """A SQLAlchemy URL using psycopg 3 for a libpq DSN: a URL (``postgresql://…``) or
    ``key=value`` pairs (``host=db dbname=app``)."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    if "://" in dsn:
        return dsn  # already a SQLAlchemy URL
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    url = URL.create("postgresql+psycopg", query=params)
    return url.render_as_string(hide_password=False)


def migrations_dir() -> Path:
    return Path(str(resources.files("pgqueue.migrations")))


def _config(dsn: str, schema: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    config.attributes["pgqueue_schema"] = validate_schema_name(schema)
    return config


def upgrade(dsn: str, schema: str = DEFAULT_SCHEMA, revision: str = "pgqueue@head") -> None:
    """Bring pgqueue's schema in ``dsn`` up to ``revision`` (the latest by default)."""
    from alembic import command

    command.upgrade(_config(dsn, schema), revision)


def downgrade(dsn: str, schema: str = DEFAULT_SCHEMA, revision: str = "pgqueue@base") -> None:
    """Revert pgqueue's schema to ``revision``; at base, drop the version table and the
    schema too when nothing else lives in it."""
    from alembic import command
    from sqlalchemy import create_engine, pool, text

    schema = validate_schema_name(schema)
    command.downgrade(_config(dsn, schema), revision)
    if revision.endswith("base"):
        engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool)
        with engine.begin() as conn:
            conn.execute(text(f'DROP TABLE IF EXISTS "{schema}".{VERSION_TABLE}'))
            left = conn.execute(
                text(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :schema"
                ),
                {"schema": schema},
            ).scalar_one()
            if left == 0:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}"'))
        engine.dispose()


def current(dsn: str, schema: str = DEFAULT_SCHEMA) -> str | None:
    """The applied pgqueue revision, or ``None``."""
    from sqlalchemy import create_engine, pool, text

    engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT to_regclass(:t)"), {"t": f"{schema}.{VERSION_TABLE}"}
            ).scalar_one()
            if exists is None:
                return None
            return conn.execute(
                text(f'SELECT version_num FROM "{schema}".{VERSION_TABLE}')
            ).scalar_one_or_none()
    finally:
        engine.dispose()


def plain_sql(schema: str = DEFAULT_SCHEMA) -> str:
    """The declared schema as plain DDL, for tools other than Alembic."""
    return schema_ddl(schema)


def copy_migrations(into: str | os.PathLike[str]) -> list[Path]:
    """Copy pgqueue's revision files into a host project's Alembic versions directory."""
    target = Path(into)
    if not target.is_dir():
        raise FileNotFoundError(f"{target} is not a directory (an Alembic versions folder)")
    copied = []
    for source in sorted((migrations_dir() / "versions").glob("pgqueue_*.py")):
        destination = target / source.name
        shutil.copyfile(source, destination)
        copied.append(destination)
    return copied


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """For a host's ``context.configure(include_object=...)``: keep autogenerate from
    proposing to drop pgqueue's tables."""
    schema = getattr(obj, "schema", None)
    if type_ == "table" and (schema == DEFAULT_SCHEMA or name == VERSION_TABLE):
        return False
    return not (schema is not None and schema == os.environ.get(SCHEMA_ENV))
