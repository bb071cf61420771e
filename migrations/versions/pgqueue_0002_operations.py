"""pgqueue: pausing kinds, the per-minute throughput rollup and (kind, status) statistics.

Revision ID: pgqueue_0002
Revises: pgqueue_0001
Create Date: 2026-12-01
"""

from alembic import op

from pgqueue.migrate import migration_schema

revision = "pgqueue_0002"
down_revision = "pgqueue_0001"
branch_labels = None
depends_on = None

# Frozen at this revision; later revisions change the schema with their own statements.
UPGRADE = """
ALTER TABLE __schema__.kinds ADD COLUMN paused_at timestamptz;

CREATE TABLE __schema__.throughput (
    kind      text NOT NULL,
    minute    timestamptz NOT NULL,
    succeeded bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    exhausted bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, minute)
);

CREATE STATISTICS __schema__.tasks_kind_status_stats (mcv) ON kind, status
    FROM __schema__.tasks;
"""

DOWNGRADE = """
DROP STATISTICS __schema__.tasks_kind_status_stats;
DROP TABLE __schema__.throughput;
ALTER TABLE __schema__.kinds DROP COLUMN paused_at;
"""


def upgrade() -> None:
    op.execute(UPGRADE.replace("__schema__", migration_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("__schema__", migration_schema()))
