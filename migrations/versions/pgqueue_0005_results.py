"""pgqueue: task results, the snooze count, and the short-lived results of tasks deleted at once.

Revision ID: pgqueue_0005
Revises: pgqueue_0002
Create Date: 2026-12-06
"""

from alembic import op

from pgqueue.migrate import migration_schema

revision = "pgqueue_0005"
down_revision = "pgqueue_0002"
branch_labels = None
depends_on = None

# Frozen at this revision; later revisions change the schema with their own statements.
UPGRADE = """
ALTER TABLE __schema__.tasks ADD COLUMN result jsonb;
ALTER TABLE __schema__.tasks ADD COLUMN snoozes integer NOT NULL DEFAULT 0;

CREATE TABLE __schema__.finished_results (
    id          bigint PRIMARY KEY,
    result      jsonb NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX finished_results_finished_at_idx ON __schema__.finished_results (finished_at);
"""

DOWNGRADE = """
DROP TABLE __schema__.finished_results;
ALTER TABLE __schema__.tasks DROP COLUMN snoozes;
ALTER TABLE __schema__.tasks DROP COLUMN result;
"""


def upgrade() -> None:
    op.execute(UPGRADE.replace("__schema__", migration_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("__schema__", migration_schema()))
