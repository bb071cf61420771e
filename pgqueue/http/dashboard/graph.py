"""A workflow drawn as a graph: the layout of its nodes and edges, rendered as inline SVG.

Nodes go in columns by depth (a node's column is one more than its deepest parent's), in push
order within a column; each edge is a curve from a parent's right side to a child's left side.
Every node is a link to its task page and carries its status as a class (the stylesheet colours
it). Drawn server-side: no script, no CDN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from pgqueue.store.operations import WorkflowNode

NODE_W = 150
NODE_H = 34
COL_GAP = 70
ROW_GAP = 14
MARGIN = 16
MAX_DRAWN_NODES = 400  # larger workflows are listed, not drawn


@dataclass(frozen=True, slots=True)
class Placed:
    node: WorkflowNode
    x: int
    y: int


def layout(nodes: Sequence[WorkflowNode]) -> tuple[list[Placed], int, int]:
    """Positions of ``nodes`` and the drawing's width and height."""
    by_id = {n.id: n for n in nodes}
    depth: dict[int, int] = {}
    for n in sorted(nodes, key=lambda n: n.id):  # parents are pushed before their children
        parents = [depth[p] for p in n.parents if p in depth]
        depth[n.id] = max(parents) + 1 if parents else 0
    columns: dict[int, list[WorkflowNode]] = {}
    for n in nodes:
        columns.setdefault(depth.get(n.id, 0), []).append(n)
    placed: list[Placed] = []
    tallest = max((len(c) for c in columns.values()), default=0)
    for column, members in sorted(columns.items()):
        x = MARGIN + column * (NODE_W + COL_GAP)
        offset = (tallest - len(members)) * (NODE_H + ROW_GAP) // 2
        for row, n in enumerate(members):
            placed.append(Placed(by_id[n.id], x, MARGIN + offset + row * (NODE_H + ROW_GAP)))
    width = 2 * MARGIN + len(columns) * NODE_W + max(len(columns) - 1, 0) * COL_GAP
    height = 2 * MARGIN + tallest * NODE_H + max(tallest - 1, 0) * ROW_GAP
    return placed, width, height


def _label(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_svg(nodes: Sequence[WorkflowNode], root: str) -> Markup:
    """The workflow as an inline ``<svg>``; ``root`` prefixes the task links (a mounted
    dashboard's path)."""
    placed, width, height = layout(nodes)
    at = {p.node.id: p for p in placed}
    parts = [
        f'<svg id="workflow-graph" class="workflow-graph" xmlns="http://www.w3.org/2000/svg"'
        f' width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="workflow graph">',
        '<defs><marker id="wf-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"'
        ' class="wf-arrowhead"/></marker></defs>',
    ]
    for p in placed:
        for child_id in p.node.children:
            c = at.get(child_id)
            if c is None:
                continue
            x1, y1 = p.x + NODE_W, p.y + NODE_H // 2
            x2, y2 = c.x, c.y + NODE_H // 2
            bend = (x2 - x1) // 2
            parts.append(
                f'<path class="wf-edge" data-from="{p.node.id}" data-to="{c.node.id}"'
                f' d="M {x1} {y1} C {x1 + bend} {y1}, {x2 - bend} {y2}, {x2} {y2}"'
                ' marker-end="url(#wf-arrow)"/>'
            )
    for p in placed:
        n = p.node
        href = escape(f"{root}/ui/tasks/{n.id}")
        title = escape(f"{n.node} ({n.kind}): {n.status}, task {n.id}")
        parts.append(
            f'<a href="{href}" class="wf-node status-{escape(n.status)}" data-task-id="{n.id}"'
            f' data-status="{escape(n.status)}"><title>{title}</title>'
            f'<rect x="{p.x}" y="{p.y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{p.x + 8}" y="{p.y + 14}" class="wf-name">{escape(_label(n.node))}</text>'
            f'<text x="{p.x + 8}" y="{p.y + 28}" class="wf-meta">'
            f"{escape(_label(n.status + ' · ' + n.kind, 22))}</text></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
