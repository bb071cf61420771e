"""pgqueue: workflows. Tasks pushed together as a graph carry their workflow's id, their node
name, their parents and children, what they wait for and what their parents left them; a node
whose parents have not all ended is stored as ``blocked`` (claims never take it).

Revision ID: pgqueue_0006
Revises: pgqueue_0005
Create Date: 2026-12-07
"""

from alembic import op

from pgqueue.migrate import migration_schema

revision = "pgqueue_0006"
down_revision = "pgqueue_0005"
branch_labels = None
depends_on = None

# Frozen at this revision; later revisions change the schema with their own statements.
# The new enum value is only added here (a value added in a transaction cannot be used in it).
UPGRADE = """
ALTER TYPE __schema__.task_status ADD VALUE IF NOT EXISTS 'blocked';

ALTER TABLE __schema__.tasks ADD COLUMN workflow_id uuid;
ALTER TABLE __schema__.tasks ADD COLUMN node text CHECK (octet_length(node) <= 200);
ALTER TABLE __schema__.tasks ADD COLUMN parents bigint[];
ALTER TABLE __schema__.tasks ADD COLUMN children bigint[];
ALTER TABLE __schema__.tasks ADD COLUMN release_when text
    CHECK (release_when IN ('all_succeeded', 'all_ended'));
ALTER TABLE __schema__.tasks ADD COLUMN parents_pending integer;
ALTER TABLE __schema__.tasks ADD COLUMN parents_failed integer;
ALTER TABLE __schema__.tasks ADD COLUMN parent_results jsonb;
ALTER TABLE __schema__.tasks ADD COLUMN cancelled_by bigint;

CREATE INDEX tasks_workflow_idx ON __schema__.tasks (workflow_id) WHERE workflow_id IS NOT NULL;
"""

# An enum value cannot be dropped: the type is rebuilt without it, and the indexes and
# statistics that name the status are rebuilt with it (as revision 0005 left them).
DOWNGRADE = """
UPDATE __schema__.tasks SET status = 'cancelled', finished_at = now() WHERE status = 'blocked';
DROP INDEX __schema__.tasks_workflow_idx;
ALTER TABLE __schema__.tasks DROP COLUMN workflow_id, DROP COLUMN node, DROP COLUMN parents,
    DROP COLUMN children, DROP COLUMN release_when, DROP COLUMN parents_pending,
    DROP COLUMN parents_failed, DROP COLUMN parent_results, DROP COLUMN cancelled_by;

DROP INDEX __schema__.tasks_kind_open_key_idx;
DROP INDEX __schema__.tasks_open_idx;
DROP INDEX __schema__.tasks_open_priority_idx;
DROP INDEX __schema__.tasks_broken_idx;
DROP INDEX __schema__.tasks_terminal_idx;
DROP STATISTICS __schema__.tasks_kind_status_stats;
ALTER TABLE __schema__.tasks ALTER COLUMN status DROP DEFAULT;
ALTER TYPE __schema__.task_status RENAME TO task_status_0006;
CREATE TYPE __schema__.task_status AS ENUM (
    'new', 'must_retry', 'no_attempts_left', 'cancelled', 'succeeded'
);
ALTER TABLE __schema__.tasks ALTER COLUMN status TYPE __schema__.task_status
    USING status::text::__schema__.task_status;
ALTER TABLE __schema__.tasks ALTER COLUMN status SET DEFAULT 'new';
DROP TYPE __schema__.task_status_0006;

CREATE UNIQUE INDEX tasks_kind_open_key_idx ON __schema__.tasks (kind, external_key)
    WHERE external_key IS NOT NULL AND key_while_active
      AND (status IN ('new', 'must_retry')
           OR (status = 'no_attempts_left' AND claim_token IS NOT NULL));
CREATE INDEX tasks_open_idx ON __schema__.tasks (kind, delayed_till)
    WHERE status IN ('new', 'must_retry');
CREATE INDEX tasks_open_priority_idx ON __schema__.tasks (kind, priority DESC, delayed_till)
    WHERE status IN ('new', 'must_retry') AND priority <> 0;
CREATE INDEX tasks_broken_idx ON __schema__.tasks (kind, updated_at)
    WHERE status = 'no_attempts_left';
CREATE INDEX tasks_terminal_idx ON __schema__.tasks (kind, finished_at)
    WHERE status IN ('cancelled', 'succeeded');
CREATE STATISTICS __schema__.tasks_kind_status_stats (mcv) ON kind, status
    FROM __schema__.tasks;
"""


def upgrade() -> None:
    op.execute(UPGRADE.replace("__schema__", migration_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("__schema__", migration_schema()))
