"""Apply, revert, print and export pgqueue's schema (Alembic, branch label ``pgqueue``)."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from pgqueue.errors import MissingExtra, PgQueueError
from pgqueue.store.queries import DEFAULT_SCHEMA, schema_ddl, validate_schema_name

VERSION_TABLE = "pgqueue_alembic_version"
BRANCH = "pgqueue"
SCHEMA_ENV = "PGQUEUE_SCHEMA"
SCHEMA_MARK = "created by pgqueue"
"""The comment pgqueue puts on a schema it creates: only such a schema is dropped on downgrade."""


class RevisionFilesExist(PgQueueError, FileExistsError):
    """``pgqueue migrations copy`` would overwrite revision files; nothing was copied."""


def create_schema_sql(schema: str) -> str:
    """DDL that creates ``schema`` when it is missing and marks it as pgqueue's."""
    schema = validate_schema_name(schema)
    return f"""
DO $pgqueue$
BEGIN
    IF to_regnamespace('{schema}') IS NULL THEN
        CREATE SCHEMA {schema};
        COMMENT ON SCHEMA {schema} IS '{SCHEMA_MARK}';
    END IF;
END
$pgqueue$;
"""


def drop_schema_sql(schema: str) -> str:
    """DDL that drops ``schema`` only if pgqueue created it and nothing lives in it any more."""
    schema = validate_schema_name(schema)
    return f"""
DO $pgqueue$
BEGIN
    IF obj_description(to_regnamespace('{schema}'), 'pg_namespace') = '{SCHEMA_MARK}'
       AND NOT EXISTS (SELECT FROM pg_class WHERE relnamespace = to_regnamespace('{schema}'))
    THEN
        BEGIN
            DROP SCHEMA {schema};  -- RESTRICT: refuses while any other object lives there
        EXCEPTION WHEN dependent_objects_still_exist THEN
            NULL;
        END;
    END IF;
END
$pgqueue$;
"""


def _require_alembic(feature: str) -> None:
    try:
        import alembic  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(feature, "migrations") from exc


def _probe(dsn: str) -> None:
    """Fail fast, with the server's reason, when ``dsn`` does not connect."""
    from pgqueue.adapters.psycopg import probe

    conninfo = dsn
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://"):
        if dsn.startswith(prefix):
            conninfo = "postgresql://" + dsn[len(prefix) :]
    probe(conninfo)


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
    _require_alembic("pgqueue migrate")
    from alembic import command

    _probe(dsn)
    command.upgrade(_config(dsn, schema), revision)


def downgrade(dsn: str, schema: str = DEFAULT_SCHEMA, revision: str = "pgqueue@base") -> None:
    """Revert pgqueue's schema to ``revision``; at base, drop the version table, and the
    schema too when pgqueue created it and nothing else lives in it."""
    _require_alembic("pgqueue migrate --down")
    from alembic import command
    from sqlalchemy import create_engine, pool, text

    schema = validate_schema_name(schema)
    _probe(dsn)
    command.downgrade(_config(dsn, schema), revision)
    if revision.endswith("base"):
        engine = create_engine(sqlalchemy_url(dsn), poolclass=pool.NullPool)
        with engine.begin() as conn:
            conn.execute(text(f'DROP TABLE IF EXISTS "{schema}".{VERSION_TABLE}'))
            conn.execute(text(drop_schema_sql(schema)))
        engine.dispose()


def current(dsn: str, schema: str = DEFAULT_SCHEMA) -> str | None:
    """The applied pgqueue revision, or ``None``."""
    _require_alembic("pgqueue migrate")
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


def copy_migrations(into: str | os.PathLike[str], *, force: bool = False) -> list[Path]:
    """Copy pgqueue's revision files into a host project's Alembic versions directory.

    Raises :class:`RevisionFilesExist` (copying nothing) when a file of that name is already
    there and differs, unless ``force``; identical files are left as they are.
    """
    target = Path(into)
    if not target.is_dir():
        raise FileNotFoundError(f"{target} is not a directory (an Alembic versions folder)")
    sources = sorted((migrations_dir() / "versions").glob("pgqueue_*.py"))
    differing = [
        target / source.name
        for source in sources
        if (target / source.name).exists()
        and (target / source.name).read_bytes() != source.read_bytes()
    ]
    if differing and not force:
        names = ", ".join(str(path) for path in differing)
        raise RevisionFilesExist(
            f"{names} already exist(s) and differ(s) from this pgqueue's revisions; nothing was "
            "copied. Pass --force to overwrite (after checking your changes to them)"
        )
    copied = []
    for source in sources:
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
