"""The tasks table's upkeep: whether vacuum keeps it small, and what to do when it does not.

A queue turns rows over fast: every finished attempt leaves a dead row version behind, and
claims walk past dead index entries until vacuum removes them. A server with autovacuum off, or
a table whose dead rows are far past the point where autovacuum should have started, grows
without bound and slows every claim; :attr:`TableHealth.problems` says so, with the remedy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.queries import Queries

FAR_PAST_THRESHOLD = (
    10  # dead rows this many times autovacuum's trigger point: it is falling behind
)
MIN_DEAD_ROWS = 100_000  # below this many dead rows, a late vacuum costs little
MIN_CHANGES = 1000  # rows changed since the last ANALYZE before pgqueue runs one itself


@dataclass(frozen=True, slots=True)
class TableHealth:
    """Dead and live rows, size and vacuum state of the tasks table (from ``pg_stat``)."""

    schema: str
    dead_rows: int
    live_rows: int
    table_bytes: int  # the heap alone
    total_bytes: int  # with its indexes and TOAST
    server_autovacuum: bool  # the server's ``autovacuum`` setting
    table_autovacuum: bool  # the table's ``autovacuum_enabled`` (on unless set off)
    vacuum_trigger: float  # dead rows at which autovacuum starts on this table
    last_vacuum: datetime | None  # the latest vacuum, automatic or manual

    @property
    def problems(self) -> list[str]:
        """What keeps the table from staying small, each with what to do; empty when fine."""
        table = f"{self.schema}.tasks"
        found = []
        if not self.server_autovacuum:
            found.append(
                "autovacuum is off on this server: the dead rows finished tasks leave behind are "
                f"never removed, so {table} grows without bound and claims slow down. Turn it on "
                "(autovacuum = on in postgresql.conf, then reload), or run "
                f"VACUUM {table} every few minutes."
            )
        elif not self.table_autovacuum:
            found.append(
                f"autovacuum is disabled for {table} (autovacuum_enabled = false): its dead rows "
                f"are never removed. Run ALTER TABLE {table} RESET (autovacuum_enabled)."
            )
        far_past = max(FAR_PAST_THRESHOLD * self.vacuum_trigger, MIN_DEAD_ROWS)
        if self.server_autovacuum and self.table_autovacuum and self.dead_rows > far_past:
            found.append(
                f"{table} holds {self.dead_rows:,} dead rows, "
                f"{self.dead_rows / max(self.vacuum_trigger, 1):.0f} times the point where "
                "autovacuum starts on it: vacuum is not keeping up, or a long transaction "
                "elsewhere keeps it from removing them (look for old xact_start in "
                "pg_stat_activity; set idle_in_transaction_session_timeout)."
            )
        return found


def read_table_health(queries: Queries) -> Operation[TableHealth]:
    """The upkeep of the tasks table (one read of the statistics views)."""

    def steps() -> Steps[TableHealth]:
        rows = yield Statement(queries["read_table_health"], {})
        dead, live, table_bytes, total_bytes, server_on, table_on, trigger, last = rows[0]
        return TableHealth(
            schema=queries.schema,
            dead_rows=int(dead),
            live_rows=int(live),
            table_bytes=int(table_bytes),
            total_bytes=int(total_bytes),
            server_autovacuum=bool(server_on),
            table_autovacuum=bool(table_on),
            vacuum_trigger=float(trigger),
            last_vacuum=last,
        )

    return Operation(steps(), readonly=True)


def refresh_statistics(queries: Queries, min_changes: int = MIN_CHANGES) -> Operation[str | None]:
    """ANALYZE the tasks table when its statistics are missing (a new table; autovacuum's first
    visit can be a minute away), taken on an eighth of its pages or fewer (vacuum emptied and
    truncated it, then it grew) or stale where autovacuum does not serve it; returns why it
    ran, or None. One process of a fleet runs it: the check takes a transaction advisory lock,
    and the ANALYZE runs in that transaction, so the lock is held until it is done."""

    def steps() -> Steps[str | None]:
        rows = yield Statement(queries["tasks_need_statistics"], {"min_changes": min_changes})
        if not rows:
            return None
        yield Statement(queries["analyze_tasks"], {})
        return str(rows[0][0])

    return Operation(steps(), transactional=True)
