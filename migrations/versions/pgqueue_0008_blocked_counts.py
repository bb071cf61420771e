"""pgqueue: an index of blocked workflow nodes by kind, so the kinds overview (the dashboard,
``pgqueue status``, the ``pgqueue_tasks`` gauge) counts them without reading the table.

Revision ID: pgqueue_0008
Revises: pgqueue_0007
Create Date: 2026-12-07
"""

from alembic import op

from pgqueue.migrate import migration_schema

revision = "pgqueue_0008"
down_revision = "pgqueue_0007"
branch_labels = None
depends_on = None

# Frozen at this revision; later revisions change the schema with their own statements.
# The index names the enum value 'blocked', which revision 0006 added, and a value added in a
# transaction cannot be used in it: the revisions before this one are committed first and the
# index is built in a transaction of its own. Not CONCURRENTLY: that build waits for every
# older snapshot, among them those of processes waiting for the migration lock. To build it
# without blocking writes on a large table, run this before migrating (IF NOT EXISTS then
# keeps it): CREATE INDEX CONCURRENTLY tasks_blocked_idx ON <schema>.tasks (kind)
# WHERE status = 'blocked'
UPGRADE = """
CREATE INDEX IF NOT EXISTS tasks_blocked_idx ON __schema__.tasks (kind) WHERE status = 'blocked';
"""

DOWNGRADE = """
DROP INDEX __schema__.tasks_blocked_idx;
"""


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(UPGRADE.replace("__schema__", migration_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("__schema__", migration_schema()))
