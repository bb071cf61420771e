"""Workflows: tasks pushed together as a graph, each run once its parents have ended.

A :class:`Workflow` is built in memory and checked before any SQL: node names are unique,
parents exist in the same workflow, the graph has no cycle, the release condition is known and
the workflow holds at most :data:`MAX_WORKFLOW_NODES` nodes. ``queue.push_workflow(wf)`` then
writes every node in one statement, in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pgqueue.errors import InvalidTask
from pgqueue.task import Task

MAX_WORKFLOW_NODES = 10_000
MAX_NODE_NAME_BYTES = 200
RELEASE_CONDITIONS = ("all_succeeded", "all_ended")

When = Literal["all_succeeded", "all_ended"]


class InvalidWorkflow(InvalidTask):
    """A workflow was rejected before any SQL ran (a cycle, an unknown or duplicate name, a
    parent from another workflow, a bad condition, too many nodes); nothing was written."""


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """A node of one :class:`Workflow` (what :meth:`Workflow.add` returns): pass it in another
    node's ``after=``."""

    workflow: Workflow
    name: str
    task: Task
    after: tuple[Node | str, ...]
    when: When

    def __repr__(self) -> str:
        return f"Node({self.name!r}, kind={self.task.kind!r})"


class Workflow:
    """Tasks that run after each other: ``add`` nodes with their parents, then push them all
    at once with ``queue.push_workflow`` (or ``push_workflow_tx`` in your transaction).

    A node becomes due when every parent succeeded (``when="all_succeeded"``, the default) or
    ended in any way (``when="all_ended"``). A parent that ends without success cancels, at
    once and transitively, the dependents that needed its success. A workflow of N members and
    one ``all_ended`` node after all of them is a batch: see :meth:`batch`.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, Node] = {}

    def add(
        self,
        name: str,
        task: Task,
        after: Iterable[Node | str] = (),
        when: When = "all_succeeded",
    ) -> Node:
        """Add a node named ``name`` running ``task`` after the nodes of ``after`` (handles
        returned by ``add`` or node names of this workflow). Raises :class:`InvalidWorkflow`
        for a duplicate or bad name, a parent of another workflow, an unknown condition or a
        workflow over :data:`MAX_WORKFLOW_NODES`."""
        if not isinstance(name, str) or not name:
            raise InvalidWorkflow(f"a node name must be a non-empty string, got {name!r}")
        if len(name.encode("utf-8")) > MAX_NODE_NAME_BYTES:
            raise InvalidWorkflow(
                f"node name {name[:40]!r}... is over {MAX_NODE_NAME_BYTES} bytes of UTF-8"
            )
        if name in self._nodes:
            raise InvalidWorkflow(f"duplicate node name {name!r} in this workflow")
        if not isinstance(task, Task):
            raise InvalidWorkflow(f"node {name!r}: expected a Task, got {type(task).__name__}")
        if task.external_key is not None:
            raise InvalidWorkflow(
                f"node {name!r}: a workflow node cannot carry an external_key (a key that"
                " already exists would leave a hole in the graph)"
            )
        if when not in RELEASE_CONDITIONS:
            raise InvalidWorkflow(
                f"node {name!r}: when must be 'all_succeeded' or 'all_ended', got {when!r}"
            )
        if isinstance(after, (Node, str)):
            after = (after,)
        parents = tuple(after)
        seen: set[str] = set()
        for parent in parents:
            if isinstance(parent, Node):
                if parent.workflow is not self:
                    raise InvalidWorkflow(
                        f"node {name!r}: parent {parent.name!r} belongs to another workflow"
                    )
                parent_name = parent.name
            elif isinstance(parent, str):
                parent_name = parent
            else:
                raise InvalidWorkflow(
                    f"node {name!r}: after= takes nodes or node names, got {parent!r}"
                )
            if parent_name == name:
                raise InvalidWorkflow(f"node {name!r} cannot run after itself (a cycle)")
            if parent_name in seen:
                raise InvalidWorkflow(f"node {name!r}: parent {parent_name!r} is listed twice")
            seen.add(parent_name)
        if len(self._nodes) >= MAX_WORKFLOW_NODES:
            raise InvalidWorkflow(
                f"a workflow holds at most {MAX_WORKFLOW_NODES} nodes; split it or push a"
                " batch of plain tasks"
            )
        node = Node(self, name, task, parents, when)
        self._nodes[name] = node
        return node

    def batch(
        self,
        members: Sequence[tuple[str, Task]],
        callback: tuple[str, Task],
    ) -> Node:
        """Add ``members`` (name, task) and one ``all_ended`` ``callback`` after all of them:
        its envelope's ``outcome_counts`` counts the members per outcome and ``parents`` holds
        their results. Returns the callback's node."""
        added = [self.add(name, task) for name, task in members]
        return self.add(callback[0], callback[1], after=added, when="all_ended")

    @property
    def nodes(self) -> list[Node]:
        """The nodes in the order they were added."""
        return list(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def ordered(self) -> list[tuple[Node, list[int]]]:
        """The nodes with their parents' positions (0-based, in the returned order), parents
        before children. Raises :class:`InvalidWorkflow` for an empty workflow, an unknown
        parent name or a cycle (naming the nodes on it)."""
        if not self._nodes:
            raise InvalidWorkflow("a workflow needs at least one node")
        for node in self._nodes.values():
            for parent in node.after:
                parent_name = parent if isinstance(parent, str) else parent.name
                if parent_name not in self._nodes:
                    raise InvalidWorkflow(
                        f"node {node.name!r}: unknown parent {parent_name!r} (no node of this"
                        " workflow has that name)"
                    )
        order: list[Node] = []
        state: dict[str, int] = {}  # 1: on the current path, 2: placed
        for start in self._nodes.values():
            if state.get(start.name) == 2:
                continue
            # Iterative depth-first search: deep chains must not hit the recursion limit.
            stack: list[tuple[Node, int]] = [(start, 0)]
            state[start.name] = 1
            while stack:
                node, index = stack[-1]
                if index < len(node.after):
                    stack[-1] = (node, index + 1)
                    parent = node.after[index]
                    pnode = self._nodes[parent if isinstance(parent, str) else parent.name]
                    seen = state.get(pnode.name)
                    if seen == 1:
                        path = [n.name for n, _ in stack]
                        cycle = [*path[path.index(pnode.name) :], pnode.name]
                        raise InvalidWorkflow(
                            "the workflow has a cycle: " + " -> ".join(reversed(cycle))
                        )
                    if seen is None:
                        state[pnode.name] = 1
                        stack.append((pnode, 0))
                    continue
                stack.pop()
                state[node.name] = 2
                order.append(node)
        position = {node.name: i for i, node in enumerate(order)}
        return [
            (node, [position[p if isinstance(p, str) else p.name] for p in node.after])
            for node in order
        ]

    def __repr__(self) -> str:
        return f"Workflow({len(self._nodes)} nodes)"
