"""pgqueue: a durable task queue for Python applications that already run on PostgreSQL."""

from pgqueue.async_queue import AsyncQueue
from pgqueue.base import QueueState
from pgqueue.delayer import Delayer, ExpBackoffDelayer, Jitter, JitterDelayer
from pgqueue.envelope import Decision, Envelope, Invoker, Stamp
from pgqueue.errors import (
    AttemptTimeout,
    CapacityExceeded,
    DatabaseUnavailable,
    InvalidOptions,
    InvalidResult,
    InvalidTask,
    MustCancelTask,
    NotInTransaction,
    PgQueueError,
    QueueClosed,
    SchemaNotMigrated,
    Snooze,
    UnknownKind,
    UnknownTask,
    WaitTimeout,
)
from pgqueue.limits import Limiter, LimitOverrides, RateLimit
from pgqueue.options import KindOptions, LoopOptions
from pgqueue.queue import Queue
from pgqueue.runtime import StopMode
from pgqueue.task import KindInfo, Status, Task, TaskInfo, ThroughputPoint
from pgqueue.typed import AsyncQueueTask, QueueTask
from pgqueue.workflow import InvalidWorkflow, Node, Workflow

__version__ = "0.1.0"

__all__ = [
    "AsyncQueue",
    "AsyncQueueTask",
    "AttemptTimeout",
    "CapacityExceeded",
    "DatabaseUnavailable",
    "Decision",
    "Delayer",
    "Envelope",
    "ExpBackoffDelayer",
    "InvalidOptions",
    "InvalidResult",
    "InvalidTask",
    "InvalidWorkflow",
    "Invoker",
    "Jitter",
    "JitterDelayer",
    "KindInfo",
    "KindOptions",
    "LimitOverrides",
    "Limiter",
    "LoopOptions",
    "MustCancelTask",
    "Node",
    "NotInTransaction",
    "PgQueueError",
    "Queue",
    "QueueClosed",
    "QueueState",
    "QueueTask",
    "RateLimit",
    "SchemaNotMigrated",
    "Snooze",
    "Stamp",
    "Status",
    "StopMode",
    "Task",
    "TaskInfo",
    "ThroughputPoint",
    "UnknownKind",
    "UnknownTask",
    "WaitTimeout",
    "Workflow",
]
