"""Random workflows against a model: which nodes run, how each ends, what its parents left
it, and what retrying every exhausted node then reopens (seeded, so a failure repeats)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from pgqueue import Envelope, KindOptions, MustCancelTask, Queue, Task, Workflow
from pgqueue.testing import drain
from tests.conftest import Database


def random_workflow(rng: random.Random, size: int) -> tuple[Workflow, dict[str, Any]]:
    wf = Workflow()
    spec: dict[str, Any] = {}
    names: list[str] = []
    for i in range(size):
        name = f"n{i}"
        parents = rng.sample(names, rng.randint(0, min(3, len(names)))) if names else []
        behaviour = rng.choices(["ok", "fail", "cancel"], weights=[6, 2, 1])[0]
        when = rng.choice(["all_succeeded", "all_succeeded", "all_ended"])
        wf.add(name, Task("model", behaviour), after=parents, when=when)  # type: ignore[arg-type]
        spec[name] = (parents, behaviour, when)
        names.append(name)
    return wf, spec


def expected_first(spec: dict[str, Any]) -> dict[str, str]:
    status: dict[str, str] = {}
    for name, (parents, behaviour, when) in spec.items():  # parents come first
        if when == "all_succeeded" and any(status[p] != "succeeded" for p in parents):
            status[name] = "cascaded"
            continue
        status[name] = {"ok": "succeeded", "fail": "no_attempts_left", "cancel": "cancelled"}[
            behaviour
        ]
    return status


def expected_after_retry(spec: dict[str, Any], first: dict[str, str]) -> dict[str, str]:
    status: dict[str, str] = {}
    for name, (parents, behaviour, _when) in spec.items():
        before = first[name]
        if before == "no_attempts_left":
            status[name] = "succeeded"  # retried, and failures are off now
        elif before != "cascaded":
            status[name] = before  # ran: left as it is
        elif all(status[p] == "succeeded" for p in parents):
            status[name] = "cancelled" if behaviour == "cancel" else "succeeded"
        else:
            status[name] = "cascaded"
    return status


@pytest.mark.parametrize("seed", range(6))
def test_random_workflows_follow_the_model(db: Database, seed: int) -> None:
    rng = random.Random(seed)
    wf, spec = random_workflow(rng, 40)
    failing = {"on": True}
    runs: Counter[str] = Counter()
    seen_parents: dict[str, dict[str, str]] = {}

    def model(envelope: Envelope) -> str:
        name = str(envelope.node)
        runs[name] += 1
        seen_parents[name] = envelope.parent_statuses
        if envelope.payload == "fail" and failing["on"]:
            raise RuntimeError("fails on purpose")
        if envelope.payload == "cancel":
            raise MustCancelTask("cancels on purpose")
        return name

    with Queue(db.dsn, schema=db.schema) as queue:
        queue.register_kind("model", model, KindOptions(attempt_timeout=10, max_attempts=1))
        ids = queue.push_workflow(wf)

        def statuses() -> dict[str, str]:
            out = {}
            for name, task_id in ids.items():
                info = queue.get_task(task_id)
                assert info is not None
                # Cancelled without an attempt: by a parent (the message names it).
                cascaded = info.status.value == "cancelled" and info.attempts_elapsed == 0
                if cascaded:
                    assert info.messages[-1].startswith("cancelled: parent "), info.messages
                out[name] = "cascaded" if cascaded else info.status.value
            return out

        drain(queue)
        first = expected_first(spec)
        assert statuses() == first
        assert runs == Counter({n: 1 for n, s in first.items() if s != "cascaded"})
        for name, parents_seen in seen_parents.items():
            parents = spec[name][0]
            assert parents_seen == {
                p: ("cancelled" if first[p] == "cascaded" else first[p]) for p in parents
            }, name

        failing["on"] = False
        runs.clear()
        for name, status in first.items():
            if status == "no_attempts_left":
                assert queue.retry_task(ids[name]) is True
        drain(queue)
        second = expected_after_retry(spec, first)
        assert statuses() == second
        rerun = {
            n for n in spec if first[n] == "no_attempts_left"
            or (first[n] == "cascaded" and second[n] != "cascaded")
        }  # fmt: skip
        assert runs == Counter({n: 1 for n in rerun})
        blocked = [n for n, s in statuses().items() if s == "blocked"]
        assert blocked == []
