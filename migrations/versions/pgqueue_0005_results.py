"""pgqueue: task results, the snooze count, waited tasks and the short-lived outcomes of those
deleted at once, and keys unique only while their task is open (key_scope="while_active").

Revision ID: pgqueue_0005
Revises: pgqueue_0004
Create Date: 2026-12-06
"""

from alembic import op

from pgqueue.migrate import migration_schema

revision = "pgqueue_0005"
down_revision = "pgqueue_0004"
branch_labels = None
depends_on = None

# Frozen at this revision; later revisions change the schema with their own statements.
UPGRADE = """
ALTER TABLE __schema__.tasks ADD COLUMN result jsonb;
ALTER TABLE __schema__.tasks ADD COLUMN snoozes integer NOT NULL DEFAULT 0;
ALTER TABLE __schema__.tasks ADD COLUMN key_while_active boolean NOT NULL DEFAULT false;
ALTER TABLE __schema__.tasks ADD COLUMN waited boolean NOT NULL DEFAULT false;

DROP INDEX __schema__.tasks_kind_external_key_idx;
CREATE UNIQUE INDEX tasks_kind_external_key_idx ON __schema__.tasks (kind, external_key)
    WHERE external_key IS NOT NULL AND NOT key_while_active;
CREATE UNIQUE INDEX tasks_kind_open_key_idx ON __schema__.tasks (kind, external_key)
    WHERE external_key IS NOT NULL AND key_while_active
      AND (status IN ('new', 'must_retry')
           OR (status = 'no_attempts_left' AND claim_token IS NOT NULL));

CREATE TABLE __schema__.finished_results (
    id          bigint PRIMARY KEY,
    kind        text NOT NULL,
    status      text NOT NULL,
    result      jsonb,
    finished_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX finished_results_finished_at_idx ON __schema__.finished_results (finished_at);
"""

DOWNGRADE = """
-- One row per key again: ended tasks of while_active kinds whose key a newer task holds lose it.
UPDATE __schema__.tasks AS t SET external_key = NULL
WHERE t.key_while_active AND t.external_key IS NOT NULL
  AND EXISTS (SELECT FROM __schema__.tasks AS n
              WHERE n.kind = t.kind AND n.external_key = t.external_key AND n.id > t.id);
DROP INDEX __schema__.tasks_kind_open_key_idx;
DROP INDEX __schema__.tasks_kind_external_key_idx;
CREATE UNIQUE INDEX tasks_kind_external_key_idx ON __schema__.tasks (kind, external_key)
    WHERE external_key IS NOT NULL;
ALTER TABLE __schema__.tasks DROP COLUMN key_while_active;
ALTER TABLE __schema__.tasks DROP COLUMN waited;
DROP TABLE __schema__.finished_results;
ALTER TABLE __schema__.tasks DROP COLUMN snoozes;
ALTER TABLE __schema__.tasks DROP COLUMN result;
"""


def upgrade() -> None:
    op.execute(UPGRADE.replace("__schema__", migration_schema()))


def downgrade() -> None:
    op.execute(DOWNGRADE.replace("__schema__", migration_schema()))
