"""Alembic environment for ``pgqueue migrate``; host projects use their own env.py."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from pgqueue.migrate import create_schema_sql

config = context.config
schema = config.attributes.get("pgqueue_schema", "pgqueue")
connection = config.attributes.get("connection")


def run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        version_table="pgqueue_alembic_version",
        version_table_schema=schema,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        version_table="pgqueue_alembic_version",
        version_table_schema=schema,
    )
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as conn:
        # Processes that migrate at the same moment (workers starting together) take turns:
        # CREATE SCHEMA IF NOT EXISTS and the version table's creation race otherwise.
        lock = text("SELECT pg_advisory_lock(hashtext(:key))")
        conn.execute(lock, {"key": f"pgqueue-migrate:{schema}"})
        conn.commit()
        try:
            conn.execute(text(create_schema_sql(schema)))
            conn.commit()
            run(conn)
            conn.commit()
        finally:
            conn.execute(
                text("SELECT pg_advisory_unlock(hashtext(:key))"),
                {"key": f"pgqueue-migrate:{schema}"},
            )
            conn.commit()
