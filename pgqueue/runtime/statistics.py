"""Keeps the planner's statistics of the tasks table from going missing or stale.

Statements on pooled connections are prepared, and a prepared statement keeps its plan until the
statistics of the tables it reads change. A new queue's first plans are made on a table that is
nearly empty, where a sequential scan is the cheapest read: with tasks arriving by the thousand
a second, those plans scan the whole table in every claim (for every claimed row, before the
claim's update was driven by its due rows: half a second a claim at 5,000 tasks/s) until
autovacuum's first ANALYZE, up to a minute away, or never where autovacuum is off. A drained
queue's table comes back to that state every autovacuum cycle: vacuum empties and truncates it
and records no rows and no pages, and the plans made next are a new table's. So each process
checks every second and, when the statistics are missing, no longer describe the table's size
(it grew eightfold since), or are stale where autovacuum does not serve the table, one process
of the fleet runs ANALYZE; the plans are then made again from what the table holds.
"""

from __future__ import annotations

import asyncio
import logging

from pgqueue.runtime.context import RuntimeContext
from pgqueue.store import operations

log = logging.getLogger("pgqueue.worker")

CHECK_PERIOD = 1.0  # seconds between checks (one read of the statistics views)


class StatisticsKeeper:
    """The loop: ``refresh_statistics`` every :data:`CHECK_PERIOD` seconds."""

    def __init__(self, runtime: RuntimeContext, period: float = CHECK_PERIOD) -> None:
        self.runtime = runtime
        self.period = period
        self.analyzed = 0  # ANALYZE runs by this process

    async def run(self) -> None:
        runtime = self.runtime
        # Not at once: plans made on the table as it is now are fine; the statistics matter
        # once it has grown past what the first plans were made on.
        await runtime.sleep_unless_stopping(self.period)
        while not runtime.stopping:
            try:
                why = await runtime.executor.run(operations.refresh_statistics(runtime.queries))
                if why is not None:
                    self.analyzed += 1
                    log.info("analyzed %s.tasks (%s)", runtime.queries.schema, why)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged and retried: no loop dies
                log.warning("refreshing the tasks table's statistics failed: %s", exc)
            await runtime.sleep_unless_stopping(self.period)
