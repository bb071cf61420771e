"""Every database operation of pgqueue, written once (sans-I/O) and run by any executor.

One module per entity: :mod:`.push` (pushing tasks), :mod:`.tasks` (one task or a list of
them), :mod:`.kinds` (pause, resume, listing), :mod:`.throughput`, :mod:`.retention`,
:mod:`.claims` (the worker runtime's statements) and :mod:`.schedules` (periodic slots).
This package gathers their public names so callers write ``operations.claim_due_tasks``.
"""

from pgqueue.store.operations.checks import (
    check_int_range,
)
from pgqueue.store.operations.claims import (
    claim_due_tasks,
    database_now,
    extend_leases,
    int_array,
    notify_kinds,
    ping_listener,
    release_claims,
    uuid_array,
)
from pgqueue.store.operations.kinds import (
    EXACT_FINISHED_BELOW,
    KindOverview,
    count_tasks_by_status,
    list_kinds,
    pause_kind,
    read_kind_overview,
    require_known_kind,
    resume_kind,
    unknown_kind,
)
from pgqueue.store.operations.push import (
    MAX_PAYLOAD_BYTES,
    delay_seconds,
    push_tasks,
)
from pgqueue.store.operations.retention import (
    MAX_SWEEP_BATCHES,
    find_sweepable_kinds,
    sweep_terminal_tasks,
)
from pgqueue.store.operations.schedules import (
    push_periodic_task,
)
from pgqueue.store.operations.tasks import (
    ANY_PAYLOAD,
    MAX_LIST_LIMIT,
    MAX_TASK_ID,
    PAYLOAD_SCAN_ROWS,
    STATUS_LITERAL,
    cancel_task,
    cancel_task_by_key,
    check_task_id,
    find_pushed_tasks,
    find_task_id_by_key,
    get_finished_results,
    get_task,
    get_tasks,
    list_tasks,
    mark_task_waited,
    retry_task,
    retry_tasks,
    task_info,
)
from pgqueue.store.operations.throughput import (
    MAX_THROUGHPUT_MINUTES,
    read_throughput,
)

__all__ = [
    "ANY_PAYLOAD",
    "EXACT_FINISHED_BELOW",
    "MAX_LIST_LIMIT",
    "MAX_PAYLOAD_BYTES",
    "MAX_SWEEP_BATCHES",
    "MAX_TASK_ID",
    "MAX_THROUGHPUT_MINUTES",
    "PAYLOAD_SCAN_ROWS",
    "STATUS_LITERAL",
    "KindOverview",
    "cancel_task",
    "cancel_task_by_key",
    "check_int_range",
    "check_task_id",
    "claim_due_tasks",
    "count_tasks_by_status",
    "database_now",
    "delay_seconds",
    "extend_leases",
    "find_pushed_tasks",
    "find_sweepable_kinds",
    "find_task_id_by_key",
    "get_finished_results",
    "get_task",
    "get_tasks",
    "int_array",
    "list_kinds",
    "list_tasks",
    "mark_task_waited",
    "notify_kinds",
    "pause_kind",
    "ping_listener",
    "push_periodic_task",
    "push_tasks",
    "read_kind_overview",
    "read_throughput",
    "release_claims",
    "require_known_kind",
    "resume_kind",
    "retry_task",
    "retry_tasks",
    "sweep_terminal_tasks",
    "task_info",
    "unknown_kind",
    "uuid_array",
]
