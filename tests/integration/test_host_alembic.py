"""pgqueue's revisions inside a host project's Alembic history: the two heads, autogenerate
with the documented ``env.py`` lines, and a downgrade that removes the schema pgqueue made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import pgqueue.migrate as migrate
from tests.conftest import Database

# The lines docs/migrations.md tells a host project to put in its env.py.
ENV_PY_CONFIGURE = """
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_schemas=True,  # compare every schema, pgqueue's too...
            include_object=include_object,  # ...but leave pgqueue's tables alone
            version_table=VERSION_TABLE,
            include_name=only_this_test,  # the test server holds other tests' schemas too
        )
"""


def host_project(db: Database, tmp_path: Path, *, with_helper: bool = True) -> tuple[Any, str]:
    """An ``alembic init`` project with one revision of its own and pgqueue's copied in."""
    from alembic import command
    from alembic.config import Config

    project = tmp_path / "alembic"
    config = Config(str(tmp_path / "alembic.ini"))
    command.init(config, str(project))
    config.set_main_option("script_location", str(project))
    config.set_main_option("sqlalchemy.url", migrate.sqlalchemy_url(db.dsn).replace("%", "%%"))
    host_table = f"{db.schema}_host"
    (project / "versions" / "host_0001.py").write_text(
        f"""
from alembic import op
revision = "host_0001"
down_revision = None
branch_labels = ("host",)
depends_on = None
def upgrade():
    op.execute("CREATE TABLE {host_table} (id int PRIMARY KEY)")
def downgrade():
    op.execute("DROP TABLE {host_table}")
"""
    )
    migrate.copy_migrations(project / "versions")
    env_py = (project / "env.py").read_text()
    env_py = env_py.replace(
        "target_metadata = None",
        "import sqlalchemy as sa\n"
        "from pgqueue.migrate import include_object\n"
        f"VERSION_TABLE = {db.schema + '_versions'!r}\n"
        "target_metadata = sa.MetaData()\n"
        f"sa.Table({host_table!r}, target_metadata,"
        " sa.Column('id', sa.Integer, primary_key=True))\n"
        "def only_this_test(name, type_, parents):\n"
        f"    if type_ == 'schema': return name in (None, {db.schema!r})\n"
        "    if type_ == 'table' and parents.get('schema_name') is None:\n"
        f"        return name == {host_table!r}\n"
        "    return True\n",
    )
    online = env_py.index("        context.configure(\n            connection=connection")
    end = env_py.index("        )\n", online) + len("        )\n")
    configure = (
        ENV_PY_CONFIGURE
        if with_helper
        else ENV_PY_CONFIGURE.replace("include_object=include_object", "include_object=None")
    )
    (project / "env.py").write_text(env_py[:online] + configure.lstrip("\n") + env_py[end:])
    return config, host_table


@pytest.fixture
def host(empty_schema: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setenv("PGQUEUE_SCHEMA", empty_schema.schema)
    yield empty_schema  # type: ignore[misc]
    empty_schema.fetch(
        f"DROP TABLE IF EXISTS {empty_schema.schema}_host, {empty_schema.schema}_versions"
    )


def schema_exists(db: Database) -> bool:
    return bool(db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (db.schema,)))


def test_autogenerate_needs_a_head_and_the_helper_keeps_pgqueue_tables(
    host: Database, tmp_path: Path
) -> None:
    from alembic import command
    from alembic.util import CommandError

    config, _ = host_project(host, tmp_path)
    command.upgrade(config, "heads")
    with pytest.raises(CommandError, match="Multiple heads"):
        command.revision(config, message="change", autogenerate=True)
    script = command.revision(config, message="change", autogenerate=True, head="host@head")
    text = Path(script.path).read_text()  # type: ignore[union-attr]
    assert "drop_table" not in text and "pass" in text


def test_without_the_helper_autogenerate_would_drop_pgqueue_tables(
    host: Database, tmp_path: Path
) -> None:
    from alembic import command

    config, _ = host_project(host, tmp_path, with_helper=False)
    command.upgrade(config, "heads")
    script = command.revision(config, message="change", autogenerate=True, head="host@head")
    text = Path(script.path).read_text()  # type: ignore[union-attr]
    assert "op.drop_table('tasks', schema=" in text


def test_downgrading_pgqueues_branch_drops_the_schema_it_created(
    host: Database, tmp_path: Path
) -> None:
    from alembic import command

    config, host_table = host_project(host, tmp_path)
    command.upgrade(config, "heads")
    assert schema_exists(host)
    command.downgrade(config, "pgqueue@base")
    assert not schema_exists(host)
    assert host.scalar(f"SELECT count(*) FROM {host_table}") == 0  # the host's part stays


@pytest.mark.parametrize("occupant", [None, "CREATE TABLE {schema}.mine (id int)"])
def test_downgrade_keeps_a_schema_pgqueue_did_not_create(
    host: Database, tmp_path: Path, occupant: str | None
) -> None:
    from alembic import command

    host.fetch("CREATE SCHEMA {schema}")
    if occupant:
        host.fetch(occupant)
    config, _ = host_project(host, tmp_path)
    command.upgrade(config, "heads")
    command.downgrade(config, "pgqueue@base")
    assert schema_exists(host)
    assert host.scalar("SELECT to_regclass('{schema}.tasks')") is None
    if occupant:
        assert host.scalar("SELECT count(*) FROM {schema}.mine") == 0


def test_pgqueue_migrate_down_keeps_a_schema_holding_other_objects(host: Database) -> None:
    migrate.upgrade(host.dsn, host.schema)
    host.fetch("CREATE TABLE {schema}.mine (id int)")
    migrate.downgrade(host.dsn, host.schema)
    assert schema_exists(host)
    assert host.scalar("SELECT to_regclass('{schema}.tasks')") is None
