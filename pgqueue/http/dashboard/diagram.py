"""Geometry of the status model diagram (SPEC §2) that the overview draws per kind.

The template draws an inline SVG from these shapes: one box per status (stored or derived,
``blocked`` workflow nodes included), one arrow per transition. Counts go on the boxes,
recent outcomes on the arrows.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 760
HEIGHT = 300
BOX_W = 150
BOX_H = 52


@dataclass(frozen=True, slots=True)
class StateBox:
    """A status drawn as a box; ``status`` is the key of its count."""

    status: str
    label: str
    x: int
    y: int
    terminal: bool = False

    @property
    def cx(self) -> int:
        return self.x + BOX_W // 2

    @property
    def cy(self) -> int:
        return self.y + BOX_H // 2


@dataclass(frozen=True, slots=True)
class Transition:
    """An arrow: an SVG path, its event name, and the outcome counter shown on it (if any)."""

    path: str
    event: str
    label_x: int
    label_y: int
    outcome: str | None = None
    anchor: str = "start"


STATES = (
    StateBox("blocked", "blocked", 262, 20),
    StateBox("new", "new", 20, 30),
    StateBox("must_retry", "must_retry", 20, 200),
    StateBox("processing", "processing", 300, 115),
    StateBox("succeeded", "succeeded", 590, 20, terminal=True),
    StateBox("cancelled", "cancelled", 590, 115, terminal=True),
    StateBox("no_attempts_left", "no_attempts_left", 590, 210),
)

TRANSITIONS = (
    # A workflow node is pushed blocked and becomes new when its parents have ended.
    Transition("M 258 46 L 174 50", "released", 216, 40, anchor="middle"),
    Transition("M 170 56 L 296 128", "claim", 205, 78),
    Transition("M 170 226 L 296 154", "claim", 205, 212),
    Transition("M 450 128 L 586 50", "returns", 540, 60, outcome="succeeded", anchor="end"),
    Transition("M 450 141 L 586 141", "cancel", 500, 134, outcome="cancelled"),
    Transition("M 450 154 L 586 232", "exhausted", 530, 224, outcome="exhausted", anchor="end"),
    Transition("M 375 167 C 360 250 260 262 174 236", "fails", 300, 250, outcome="failed"),
    Transition("M 665 262 C 600 300 240 300 100 256", "retry_tasks", 360, 292),
)


def state_counts(counts: dict[str, int]) -> list[tuple[StateBox, int]]:
    """Each box with its count (0 when the kind has no task in that status)."""
    return [(box, counts.get(box.status, 0)) for box in STATES]
