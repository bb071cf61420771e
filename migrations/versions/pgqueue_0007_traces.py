"""pgqueue: the OpenTelemetry context a task was pushed in (W3C traceparent and tracestate),
for the attempt's span to continue the trace.

Revision ID: pgqueue_0007
Revises: pgqueue_0006
Create Date: 2026-12-07
"""

from alembic import op

from pgqueue.migrate import migration_schema

revision = "pgqueue_0007"
down_revision = "pgqueue_0006"
branch_labels = None
depends_on = None

# Frozen at this revision; later revisions change the schema with their own statements.
UPGRADE = """
ALTER TABLE __schema__.tasks ADD COLUMN trace_context text;
"""

DOWNGRADE = """
ALTER TABLE __schema__.tasks DROP COLUMN trace_context;
"""


def upgrade() -> None:
    op.execute(UPGRADE.replace("__schema__", migration_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("__schema__", migration_schema()))
