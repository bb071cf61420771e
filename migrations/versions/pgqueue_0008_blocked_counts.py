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
UPGRADE = """
CREATE INDEX tasks_blocked_idx ON __schema__.tasks (kind) WHERE status = 'blocked';
"""

DOWNGRADE = """
DROP INDEX __schema__.tasks_blocked_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE.replace("__schema__", migration_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("__schema__", migration_schema()))
