"""Bad workflows are refused while they are built or before the push's first statement."""

from __future__ import annotations

import pytest

from pgqueue import (
    InvalidTask,
    InvalidWorkflow,
    KindOptions,
    Task,
    UnknownKind,
    Workflow,
)
from pgqueue.registry import KindRegistry
from pgqueue.store import operations
from pgqueue.store.queries import Queries
from pgqueue.workflow import MAX_WORKFLOW_NODES


def registry(*kinds: str) -> KindRegistry:
    reg = KindRegistry()
    for kind in kinds:
        reg.add(kind, KindOptions(attempt_timeout=5), None)
    return reg


def build(wf: Workflow, *kinds: str) -> operations.WorkflowIds:
    """Build the push and take its first statement: what would reach the database."""
    op = operations.push_workflow(registry(*kinds) if kinds else registry("k"), Queries(), wf)
    statement = next(op.steps)
    assert "INSERT INTO" in statement.sql
    return operations.WorkflowIds("x", {})


def test_a_cycle_through_names_is_refused_naming_its_nodes() -> None:
    wf = Workflow()
    wf.add("a", Task("k"), after=["c"])
    wf.add("b", Task("k"), after=["a"])
    wf.add("c", Task("k"), after=["b"])
    with pytest.raises(InvalidWorkflow, match=r"cycle: .*a.*b.*c"):
        build(wf)


def test_a_node_after_itself_is_a_cycle() -> None:
    with pytest.raises(InvalidWorkflow, match="after itself"):
        Workflow().add("a", Task("k"), after=["a"])


def test_an_unknown_parent_name_is_refused() -> None:
    wf = Workflow()
    wf.add("a", Task("k"), after=["nope"])
    with pytest.raises(InvalidWorkflow, match="unknown parent 'nope'"):
        build(wf)


def test_a_duplicate_name_is_refused() -> None:
    wf = Workflow()
    wf.add("a", Task("k"))
    with pytest.raises(InvalidWorkflow, match="duplicate node name 'a'"):
        wf.add("a", Task("k"))


def test_a_parent_from_another_workflow_is_refused() -> None:
    other = Workflow()
    foreign = other.add("a", Task("k"))
    with pytest.raises(InvalidWorkflow, match="parent 'a' belongs to another workflow"):
        Workflow().add("b", Task("k"), after=[foreign])


def test_an_unregistered_kind_is_refused_before_any_statement() -> None:
    wf = Workflow()
    wf.add("a", Task("k"))
    wf.add("b", Task("missing"), after=["a"])
    with pytest.raises(UnknownKind, match="missing"):
        operations.push_workflow(registry("k"), Queries(), wf)


def test_more_nodes_than_the_cap_are_refused() -> None:
    wf = Workflow()
    for i in range(MAX_WORKFLOW_NODES):
        wf.add(f"n{i}", Task("k"))
    with pytest.raises(InvalidWorkflow, match=f"at most {MAX_WORKFLOW_NODES} nodes"):
        wf.add("one-more", Task("k"))


@pytest.mark.parametrize("when", ["any", "", None, "ALL_ENDED"])
def test_an_unknown_condition_is_refused(when: object) -> None:
    with pytest.raises(InvalidWorkflow, match="when must be 'all_succeeded' or 'all_ended'"):
        Workflow().add("a", Task("k"), when=when)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", None, 3, "x" * 201])
def test_a_bad_node_name_is_refused(name: object) -> None:
    with pytest.raises(InvalidWorkflow, match="node name"):
        Workflow().add(name, Task("k"))  # type: ignore[arg-type]


def test_other_bad_input() -> None:
    wf = Workflow()
    with pytest.raises(InvalidWorkflow, match="expected a Task"):
        wf.add("a", "k")  # type: ignore[arg-type]
    with pytest.raises(InvalidWorkflow, match="external_key"):
        wf.add("a", Task("k", external_key="x"))
    with pytest.raises(InvalidWorkflow, match="listed twice"):
        wf.add("b", Task("k"), after=["a", "a"])
    with pytest.raises(InvalidWorkflow, match="takes nodes or node names"):
        wf.add("b", Task("k"), after=[3])  # type: ignore[list-item]
    with pytest.raises(InvalidWorkflow, match="at least one node"):
        build(Workflow())
    with pytest.raises(InvalidWorkflow, match="expected a Workflow"):
        operations.push_workflow(registry("k"), Queries(), [Task("k")])  # type: ignore[arg-type]
    unserialisable = Workflow()
    unserialisable.add("a", Task("k", payload={1, 2}))
    with pytest.raises(InvalidTask, match="node 'a': payload is not JSON-serialisable"):
        build(unserialisable)


def test_a_valid_workflow_orders_parents_first() -> None:
    wf = Workflow()
    wf.add("late", Task("k"), after=["early"])
    wf.add("early", Task("k"))
    order = [(node.name, parents) for node, parents in wf.ordered()]
    assert order == [("early", []), ("late", [0])]
    build(wf)


def test_a_deep_chain_is_checked_without_recursion() -> None:
    wf = Workflow()
    previous = wf.add("n0", Task("k"))
    for i in range(1, 5000):
        previous = wf.add(f"n{i}", Task("k"), after=[previous])
    assert len(wf.ordered()) == 5000
