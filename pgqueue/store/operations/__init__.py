"""Every database operation of pgqueue, written once (sans-I/O) and run by any executor.

One module per entity: :mod:`.push` (pushing tasks), :mod:`.tasks` (one task or a list of
them), :mod:`.kinds` (pause, resume, listing), :mod:`.throughput`, :mod:`.retention`,
:mod:`.claims` (the worker runtime's statements), :mod:`.schedules` (periodic slots) and
:mod:`.audit` (the audit log of operator actions).
This package gathers their public names so callers write ``operations.claim_due_tasks``.
"""

from pgqueue.limits import LimitOverrides
from pgqueue.store.operations.audit import (
    MAX_AUDIT_PAGE,
    Action,
    audited,
    audited_entries,
    list_audit_entries,
    record_audit,
)
from pgqueue.store.operations.checks import (
    check_int_range,
    unknown_kind,
)
from pgqueue.store.operations.claims import (
    Claimed,
    claim_due_tasks,
    claim_due_tasks_above,
    database_now,
    extend_leases,
    int_array,
    notify_kinds,
    ping_listener,
    release_claims,
    uuid_array,
)
from pgqueue.store.operations.health import (
    TableHealth,
    read_table_health,
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
)
from pgqueue.store.operations.limits import (
    UNCHANGED,
    LimitedClaim,
    Limits,
    claim_limited_tasks,
    code_limits,
    limits_with_overrides,
    list_limit_changes,
    read_kind_limits,
    set_kind_limits,
)
from pgqueue.store.operations.push import (
    MAX_PAYLOAD_BYTES,
    Pushed,
    delay_seconds,
    push_tasks,
    push_tasks_returning_times,
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
    "MAX_AUDIT_PAGE",
    "MAX_LIST_LIMIT",
    "MAX_PAYLOAD_BYTES",
    "MAX_SWEEP_BATCHES",
    "MAX_TASK_ID",
    "MAX_THROUGHPUT_MINUTES",
    "PAYLOAD_SCAN_ROWS",
    "STATUS_LITERAL",
    "UNCHANGED",
    "Action",
    "Claimed",
    "KindOverview",
    "LimitOverrides",
    "LimitedClaim",
    "Limits",
    "Pushed",
    "TableHealth",
    "audited",
    "audited_entries",
    "cancel_task",
    "cancel_task_by_key",
    "check_int_range",
    "check_task_id",
    "claim_due_tasks",
    "claim_due_tasks_above",
    "claim_limited_tasks",
    "code_limits",
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
    "limits_with_overrides",
    "list_audit_entries",
    "list_kinds",
    "list_limit_changes",
    "list_tasks",
    "mark_task_waited",
    "notify_kinds",
    "pause_kind",
    "ping_listener",
    "push_periodic_task",
    "push_tasks",
    "push_tasks_returning_times",
    "read_kind_limits",
    "read_kind_overview",
    "read_table_health",
    "read_throughput",
    "record_audit",
    "release_claims",
    "require_known_kind",
    "resume_kind",
    "retry_task",
    "retry_tasks",
    "set_kind_limits",
    "sweep_terminal_tasks",
    "task_info",
    "unknown_kind",
    "uuid_array",
]
