"""How a sharded queue routes: slots, the slot map, global task ids, which shard is down, and
merging what the shards answer. :mod:`.shards` builds the queues on top of it."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections.abc import Sequence
from typing import TypeVar

from pgqueue.errors import DatabaseUnavailable, InvalidOptions, InvalidTask, PgQueueError
from pgqueue.store.executor import Operation, Statement, Steps
from pgqueue.store.operations import WorkflowIds, WorkflowNode
from pgqueue.store.unavailable import is_unavailable
from pgqueue.task import Task, TaskInfo, validate_external_key, validate_kind_name

T = TypeVar("T")

NUM_SLOTS = 1024
MAX_SHARDS = 1024  # task ids carry the shard in their low 10 bits
KEY_PAGE = 5000


class ShardUnavailable(DatabaseUnavailable):
    """The shard a call needs did not answer or lost the connection (a
    :class:`~pgqueue.errors.DatabaseUnavailable` naming the shard)."""

    def __init__(self, shard: int, cause: BaseException | None = None) -> None:
        reason = f": {cause}" if cause is not None else " (it failed within the last moments)"
        super().__init__(f"shard {shard} is unavailable{reason}")
        self.shard = shard


class WrongShard(PgQueueError, ValueError):
    """``push_*_tx`` got a transaction on another shard than the task's."""


def slot_of(kind: str, external_key: str) -> int:
    """The slot of a keyed task: a hash that is the same in every process and release."""
    digest = hashlib.blake2b(
        kind.encode() + b"\x00" + external_key.encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % NUM_SLOTS


def global_task_id(shard: int, local_id: int) -> int:
    return local_id * MAX_SHARDS + shard


def split_task_id(task_id: int) -> tuple[int, int]:
    """A sharded queue's task id → ``(shard, id in that shard's table)``."""
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
        raise InvalidTask(f"task id must be a non-negative int, got {task_id!r}")
    return task_id % MAX_SHARDS, task_id // MAX_SHARDS


class SlotMap:
    """Which shard owns each of the 1024 slots. Every process must use the same map."""

    def __init__(self, assignments: Sequence[int]) -> None:
        owners = list(assignments)
        if len(owners) != NUM_SLOTS:
            raise InvalidOptions(f"a slot map assigns all {NUM_SLOTS} slots, got {len(owners)}")
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in owners):
            raise InvalidOptions("slot owners must be shard indexes (ints >= 0)")
        self.owners = owners
        self.shards = max(owners) + 1
        if self.shards > MAX_SHARDS:
            raise InvalidOptions(f"at most {MAX_SHARDS} shards")

    @classmethod
    def even(cls, shards: int) -> SlotMap:
        """Contiguous, equal slot ranges over ``shards`` shards."""
        if not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
            raise InvalidOptions(f"shards must be an int in 1..{MAX_SHARDS}, got {shards!r}")
        return cls([slot * shards // NUM_SLOTS for slot in range(NUM_SLOTS)])

    def add_shard(self) -> SlotMap:
        """A map with one more shard, which takes an equal share of slots from every shard;
        no other slot moves."""
        new = self.shards
        owners = list(self.owners)
        for shard in range(new):
            slots = [slot for slot, owner in enumerate(owners) if owner == shard]
            for slot in slots[len(slots) - len(slots) // (new + 1) :]:
                owners[slot] = new
        return SlotMap(owners)

    def moved(self, other: SlotMap) -> list[int]:
        """Slots whose owner differs in ``other``."""
        return [s for s in range(NUM_SLOTS) if self.owners[s] != other.owners[s]]

    def to_list(self) -> list[int]:
        return list(self.owners)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self.owners == other.owners

    __hash__ = None  # type: ignore[assignment]


class Routing:
    """Slot map, shard health and the routing decisions, shared by both facades (no I/O)."""

    def __init__(self, shards: int, slot_map: SlotMap | None, retry_after: float) -> None:
        if not 1 <= shards <= MAX_SHARDS:
            raise InvalidOptions(f"a sharded queue needs 1..{MAX_SHARDS} shards, got {shards}")
        self.map = slot_map or SlotMap.even(shards)
        if self.map.shards > shards:
            raise InvalidOptions(
                f"the slot map uses {self.map.shards} shards but {shards} were given"
            )
        self.count = shards
        self.retry_after = retry_after
        self.down_until = [0.0] * shards
        self._keyless = itertools.count()
        self.identities: dict[int, str] = {}

    def shard_for(self, kind: str, external_key: str) -> int:
        validate_kind_name(kind)
        if validate_external_key(external_key) is None:
            raise InvalidTask("shard_for needs an external_key (keyless tasks go to any shard)")
        return self.map.owners[slot_of(kind, external_key)]

    def shard_of(self, task: Task) -> int:
        if not isinstance(task, Task):
            raise InvalidTask(f"expected a Task, got {type(task).__name__}")
        if task.external_key is None:
            return self.keyless_shard()
        return self.shard_for(task.kind, task.external_key)

    def keyless_shard(self) -> int:
        """The shard of the next keyless push (a task, or a whole workflow, whose nodes carry
        no key): the slots taken in turn, so keyless pushes spread as the map does."""
        return self.map.owners[next(self._keyless) % NUM_SLOTS]

    def split(self, tasks: Sequence[Task]) -> dict[int, list[int]]:
        """Positions of ``tasks`` per shard."""
        if isinstance(tasks, Task):
            raise InvalidTask("push_tasks takes a sequence of Task; use push_task for one")
        groups: dict[int, list[int]] = {}
        for position, task in enumerate(tasks):
            groups.setdefault(self.shard_of(task), []).append(position)
        return groups

    def check_up(self, shard: int) -> None:
        if self.down_until[shard] > time.monotonic():
            raise ShardUnavailable(shard)

    def failed(self, shard: int, exc: BaseException) -> BaseException:
        if is_unavailable(exc):
            self.down_until[shard] = time.monotonic() + self.retry_after
            return ShardUnavailable(shard, exc)
        return exc

    def checked_push(
        self, expected: int | None, op: Operation[T], identity_sql: str
    ) -> Operation[tuple[int, T]]:
        """``op`` preceded by a check of the transaction's server: it must be shard
        ``expected`` (any shard when ``None``). Returns the shard and what ``op`` returned."""
        identities = self.identities

        def steps() -> Steps[tuple[int, T]]:
            rows = yield Statement(identity_sql, {})
            here = rows[0][0]
            shard = next((s for s, ident in identities.items() if ident == here), None)
            if shard is None or (expected is not None and shard != expected):
                where = "no shard of this queue" if shard is None else f"shard {shard}"
                if expected is None:  # keyless tasks and workflows: any shard would do
                    raise WrongShard(
                        f"the transaction is on {where} ({here}): push in a transaction on "
                        "one of the queue's shards"
                    )
                raise WrongShard(
                    f"the transaction is on {where} ({here}); the task belongs to shard "
                    f"{expected}: push it in a transaction on queue.shard_for(kind, key)"
                )
            return shard, (yield from op.steps)

        return Operation(steps(), transactional=op.transactional)


def merge_counts(parts: Sequence[dict[tuple[str, str], int]]) -> dict[tuple[str, str], int]:
    merged: dict[tuple[str, str], int] = {}
    for part in parts:
        for key, count in part.items():
            merged[key] = merged.get(key, 0) + count
    return merged


def globalise(shard: int, info: TaskInfo | None) -> TaskInfo | None:
    """A shard's task with global ids (its own, and its workflow parents' and children's, which
    are on the same shard)."""
    if info is None:
        return None
    return dataclasses.replace(
        info,
        id=global_task_id(shard, info.id),
        parents=[global_task_id(shard, i) for i in info.parents],
        children=[global_task_id(shard, i) for i in info.children],
    )


def global_workflow_ids(shard: int, ids: WorkflowIds) -> WorkflowIds:
    """A workflow pushed to ``shard``: its nodes' global ids by name."""
    return WorkflowIds(ids.workflow_id, {n: global_task_id(shard, i) for n, i in ids.items()})


def global_node(shard: int, node: WorkflowNode) -> WorkflowNode:
    return dataclasses.replace(
        node,
        id=global_task_id(shard, node.id),
        parents=[global_task_id(shard, i) for i in node.parents],
        children=[global_task_id(shard, i) for i in node.children],
    )


def global_ids(shard: int, local_ids: list[int | None]) -> list[int | None]:
    return [None if i is None else global_task_id(shard, i) for i in local_ids]


def aligned(
    size: int, groups: dict[int, list[int]], results: dict[int, list[int | None]]
) -> list[int | None]:
    ids: list[int | None] = [None] * size
    for shard, positions in groups.items():
        for position, local in zip(positions, results[shard], strict=True):
            ids[position] = None if local is None else global_task_id(shard, local)
    return ids
