"""pgqueue: the audit log of operator actions.

Revision ID: pgqueue_0004
Revises: pgqueue_0003
Create Date: 2026-12-06
"""

from alembic import op

from pgqueue.migrate import migration_schema

revision = "pgqueue_0004"
down_revision = "pgqueue_0003"
branch_labels = None
depends_on = None

# Frozen at this revision; later revisions change the schema with their own statements.
UPGRADE = """
CREATE TABLE __schema__.audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    source  text NOT NULL CHECK (source IN ('api', 'dashboard', 'cli', 'python')),
    action  text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    kind    text,
    task_id bigint,
    detail  jsonb NOT NULL DEFAULT '{}'::jsonb,
    rows    bigint NOT NULL DEFAULT 0
);

CREATE INDEX audit_log_at_idx ON __schema__.audit_log (at);
"""

DOWNGRADE = """
DROP TABLE __schema__.audit_log;
"""


def upgrade() -> None:
    op.execute(UPGRADE.replace("__schema__", migration_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("__schema__", migration_schema()))
