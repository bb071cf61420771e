"""Shard routing without a database: slots, slot maps, global task ids."""

from __future__ import annotations

from collections import Counter

import pytest

from pgqueue import InvalidOptions, InvalidTask, Task
from pgqueue.adapters.shard_routing import Routing
from pgqueue.adapters.shards import (
    MAX_SHARDS,
    NUM_SLOTS,
    SlotMap,
    global_task_id,
    slot_of,
    split_task_id,
)


def test_slots_are_stable_across_processes_and_releases() -> None:
    # Fixed values: changing the hash would move every key to another shard.
    assert slot_of("a", "b") == 675
    assert slot_of("send-email", "welcome:42") == 486
    assert [slot_of("k", f"key-{n}") for n in range(3)] == [999, 34, 316]
    assert slot_of("k", "") != slot_of("", "k")  # kind and key are separated


def test_an_even_map_gives_each_shard_an_equal_contiguous_range() -> None:
    owners = SlotMap.even(3).to_list()
    assert Counter(owners) == {0: 342, 1: 341, 2: 341}
    assert owners == sorted(owners)
    with pytest.raises(InvalidOptions):
        SlotMap.even(0)
    with pytest.raises(InvalidOptions):
        SlotMap([0] * (NUM_SLOTS - 1))


def test_adding_a_shard_moves_only_the_slots_it_takes() -> None:
    old = SlotMap.even(3)
    new = old.add_shard()
    moved = old.moved(new)
    assert new.shards == 4
    assert all(new.owners[s] == 3 for s in moved)  # every moved slot went to the new shard
    assert len(moved) == Counter(new.owners)[3]
    assert 240 <= len(moved) <= 270  # about a quarter of the slots
    assert all(240 <= n <= 350 for n in Counter(new.owners).values())


def test_keyed_tasks_follow_the_map_and_keyless_ones_spread_evenly() -> None:
    routing = Routing(3, None, 1.0)
    shard = routing.shard_for("k", "order:7")
    assert routing.shard_of(Task("k", external_key="order:7")) == shard
    assert SlotMap.even(3).owners[slot_of("k", "order:7")] == shard
    keyless = Counter(routing.shard_of(Task("k")) for _ in range(3 * NUM_SLOTS))
    assert keyless == {0: 3 * 342, 1: 3 * 341, 2: 3 * 341}
    with pytest.raises(InvalidTask, match="external_key"):
        routing.shard_for("k", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptions, match="uses 4 shards"):
        Routing(3, SlotMap.even(4), 1.0)


def test_global_task_ids_carry_their_shard() -> None:
    assert split_task_id(global_task_id(2, 12345)) == (2, 12345)
    assert split_task_id(global_task_id(MAX_SHARDS - 1, 1)) == (MAX_SHARDS - 1, 1)
    with pytest.raises(InvalidTask):
        split_task_id(-1)
