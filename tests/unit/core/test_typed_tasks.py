"""Typed tasks without a database: binding, checking, encoding and rebuilding arguments.

A fake queue records what would be pushed, so each test sees exactly what reaches SQL.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

import pytest
from pydantic import BaseModel

import pgqueue.typed
from pgqueue import Envelope, InvalidOptions, InvalidTask, KindOptions, Task
from pgqueue.arguments import check_value
from pgqueue.registry import Handler
from pgqueue.typed import AsyncQueueTaskDecorator, QueueTaskDecorator


class FakeQueue:
    """Records registrations and pushes (the blocking facade's shape)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.pushed: list[tuple[Any, Task, float]] = []

    def register_kind(self, kind: str, handler: Handler, options: KindOptions) -> None:
        self.handlers[kind] = handler

    def push_task(self, task: Task, delay: Any = 0) -> int | None:
        self.pushed.append((None, task, delay))
        return len(self.pushed)

    def push_task_tx(self, tx: Any, task: Task, delay: Any = 0) -> int | None:
        self.pushed.append((tx, task, delay))
        return len(self.pushed)


class FakeAsyncQueue(FakeQueue):
    async def push_task(self, task: Task, delay: Any = 0) -> int | None:  # type: ignore[override]
        return FakeQueue.push_task(self, task, delay)

    async def push_task_tx(self, tx: Any, task: Task, delay: Any = 0) -> int | None:  # type: ignore[override]
        return FakeQueue.push_task_tx(self, tx, task, delay)


OPTIONS = KindOptions(attempt_timeout=5.0, max_attempts=3)


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Route:
    name: str
    stops: list[Point]
    via: Point | None = None


class Invoice(BaseModel):
    number: str
    amount: float


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def envelope_for(kind: str, payload: Any) -> Envelope:
    return pgqueue.typed._stand_in_envelope(kind, OPTIONS, payload)


@pytest.fixture
def fake() -> FakeQueue:
    return FakeQueue()


def test_push_binds_arguments_by_name_and_leaves_defaults_to_the_run(fake: FakeQueue) -> None:
    @QueueTaskDecorator(fake, "mail", OPTIONS)
    def mail(user_id: int, template: str = "welcome", *, urgent: bool = False) -> None: ...

    assert mail.push(42) == 1
    assert mail.push(7, "reset", urgent=True) == 2
    assert [task.payload for _, task, _ in fake.pushed] == [
        {"user_id": 42},
        {"user_id": 7, "template": "reset", "urgent": True},
    ]
    assert all(task.kind == "mail" and task.external_key is None for _, task, _ in fake.pushed)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing a required argument: 'user_id'"),
        ((1,), {"colour": "red"}, "unexpected keyword argument 'colour'"),
        ((1, "a", "b"), {}, "too many positional arguments"),
        (("42",), {}, "argument 'user_id' must be int, got str"),
        ((True,), {}, "argument 'user_id' must be int, got bool"),
        ((1, 2), {}, "argument 'template' must be str, got int"),
        ((1,), {"ratio": "x"}, "argument 'ratio' must be float, got str"),
        ((1,), {"ratio": math.nan}, "argument 'ratio' is not JSON-serialisable"),
        ((1,), {"tags": ["a", 2]}, "argument 'tags[1]' must be str, got int"),
        ((1,), {"tags": ("a",)}, "argument 'tags' must be list[str], got tuple"),
        ((1,), {"extra": {1: "a"}}, "argument 'extra' has the key 1"),
        ((1,), {"extra": {"when": object()}}, "argument 'extra' is not JSON-serialisable"),
        ((1,), {"note": 3}, "argument 'note' must be str, got int"),
    ],
)
def test_bad_arguments_raise_invalid_task_naming_them_and_push_nothing(
    fake: FakeQueue, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    @QueueTaskDecorator(fake, "mail", OPTIONS)
    def mail(
        user_id: int,
        template: str = "welcome",
        *,
        ratio: float = 1.0,
        tags: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        note: Optional[str] = None,  # noqa: UP045 - typing.Optional is understood too
    ) -> None: ...

    with pytest.raises(InvalidTask, match="task 'mail'") as raised:
        mail.push(*args, **kwargs)
    assert message in str(raised.value)
    with pytest.raises(InvalidTask):
        mail.push_tx(object(), *args, **kwargs)
    assert fake.pushed == []


def test_a_float_parameter_takes_an_int_and_optional_takes_none(fake: FakeQueue) -> None:
    @QueueTaskDecorator(fake, "k", OPTIONS)
    def measure(ratio: float, label: str | None) -> None: ...

    measure.push(2, None)
    assert fake.pushed[0][1].payload == {"ratio": 2, "label": None}


def test_dataclasses_models_and_enums_are_encoded_and_rebuilt_by_annotation(
    fake: FakeQueue,
) -> None:
    seen: list[tuple[Any, ...]] = []

    @QueueTaskDecorator(fake, "plan", OPTIONS)
    def plan(route: Route, invoice: Invoice, colour: Colour, points: list[Point]) -> str:
        seen.append((route, invoice, colour, points))
        return "planned"

    route = Route("r1", [Point(1, 2), Point(3, 4)], via=Point(0, 0))
    invoice = Invoice(number="INV-1", amount=9.5)
    plan.push(route, invoice, Colour.BLUE, [Point(5, 6)])
    payload = fake.pushed[0][1].payload
    assert payload == {
        "route": {
            "name": "r1",
            "stops": [{"x": 1, "y": 2}, {"x": 3, "y": 4}],
            "via": {"x": 0, "y": 0},
        },
        "invoice": {"number": "INV-1", "amount": 9.5},
        "colour": "blue",
        "points": [{"x": 5, "y": 6}],
    }
    assert fake.handlers["plan"](envelope_for("plan", payload)) == "planned"
    assert seen == [(route, invoice, Colour.BLUE, [Point(5, 6)])]
    assert isinstance(seen[0][0].stops[0], Point) and isinstance(seen[0][1], Invoice)


def test_a_dict_where_a_dataclass_is_expected_is_refused(fake: FakeQueue) -> None:
    @QueueTaskDecorator(fake, "k", OPTIONS)
    def f(point: Point, invoice: Invoice | None = None) -> None: ...

    with pytest.raises(InvalidTask, match="argument 'point' must be Point, got dict"):
        f.push({"x": 1, "y": 2})
    with pytest.raises(InvalidTask, match="argument 'invoice' must be"):
        f.push(Point(1, 2), invoice={"number": "1", "amount": 1})


def test_the_envelope_parameter_is_not_an_argument_and_receives_the_attempt(
    fake: FakeQueue,
) -> None:
    seen: list[tuple[Envelope, int]] = []

    @QueueTaskDecorator(fake, "k", OPTIONS)
    def f(envelope: Envelope, order_id: int) -> None:
        seen.append((envelope, order_id))

    with pytest.raises(InvalidTask, match="unexpected keyword argument 'envelope'"):
        f.push(envelope=None, order_id=1)  # type: ignore[call-arg]
    f.push(order_id=5)
    payload = fake.pushed[0][1].payload
    assert payload == {"order_id": 5}
    envelope = envelope_for("k", payload)
    fake.handlers["k"](envelope)
    assert seen == [(envelope, 5)]


def test_calling_the_task_runs_the_function_inline_and_pushes_nothing(fake: FakeQueue) -> None:
    @QueueTaskDecorator(fake, "k", OPTIONS)
    def add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        return a + b

    @QueueTaskDecorator(fake, "e", OPTIONS)
    def attempt(envelope: Envelope, label: str) -> str:
        return f"{label}:{envelope.kind}:{envelope.attempt}/{envelope.max_attempts}"

    assert add(2, b=3) == 5
    assert add.__doc__ == "Add two numbers." and add.__name__ == "add"
    assert attempt("x") == "x:e:1/3"
    assert fake.pushed == []


def test_configure_returns_a_copy_with_key_and_delay(fake: FakeQueue) -> None:
    @QueueTaskDecorator(fake, "k", OPTIONS)
    def f(n: int) -> None: ...

    keyed = f.configure(key="n:1", delay=30)
    keyed.push(1)
    f.push(2)
    keyed.push_tx("tx", 3)
    assert [(tx, t.external_key, t.payload, d) for tx, t, d in fake.pushed] == [
        (None, "n:1", {"n": 1}, 30),
        (None, None, {"n": 2}, 0),
        ("tx", "n:1", {"n": 3}, 30),
    ]


def test_priority_and_group_need_task_fields_that_exist(
    fake: FakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    @QueueTaskDecorator(fake, "k", OPTIONS)
    def f(n: int) -> None: ...

    names = {field.name for field in dataclasses.fields(Task)}
    if "priority" not in names:
        with pytest.raises(InvalidTask, match="priority cannot be set"):
            f.configure(priority=5)
    if "group" not in names:
        with pytest.raises(InvalidTask, match="group cannot be set"):
            f.configure(group="u42")

    @dataclass(frozen=True)
    class TaskWithFlowControl:
        kind: str
        payload: Any = None
        external_key: str | None = None
        priority: int = 0
        group: str | None = None

    monkeypatch.setattr(pgqueue.typed, "Task", TaskWithFlowControl)
    f.configure(key="a", priority=5, group="u42").push(1)
    f.configure(key="b").push(2)
    assert [t for _, t, _ in fake.pushed] == [
        TaskWithFlowControl("k", {"n": 1}, "a", priority=5, group="u42"),
        TaskWithFlowControl("k", {"n": 2}, "b"),
    ]


async def test_the_async_flavour_awaits_push_and_runs_async_functions() -> None:
    fake = FakeAsyncQueue()
    seen: list[Point] = []

    @AsyncQueueTaskDecorator(fake, "k", OPTIONS)
    async def f(point: Point) -> int:
        seen.append(point)
        return point.x

    assert await f.push(Point(1, 2)) == 1
    assert await f.configure(key="p").push_tx("tx", point=Point(3, 4)) == 2
    with pytest.raises(InvalidTask, match="argument 'point'"):
        await f.push(point=3)  # type: ignore[arg-type]
    assert [(tx, t.external_key) for tx, t, _ in fake.pushed] == [(None, None), ("tx", "p")]
    assert await fake.handlers["k"](envelope_for("k", fake.pushed[1][1].payload)) == 3
    assert await f(Point(7, 8)) == 7
    assert seen == [Point(3, 4), Point(7, 8)]


def test_var_positional_and_keyword_parameters_round_trip(fake: FakeQueue) -> None:
    seen: list[Any] = []

    @QueueTaskDecorator(fake, "k", OPTIONS)
    def f(first: int, /, *rest: Point, **named: int) -> None:
        seen.append((first, rest, named))

    f.push(1, Point(1, 1), Point(2, 2), a=1, b=2)
    payload = fake.pushed[0][1].payload
    assert payload == {
        "first": 1,
        "rest": [{"x": 1, "y": 1}, {"x": 2, "y": 2}],
        "named": {"a": 1, "b": 2},
    }
    fake.handlers["k"](envelope_for("k", payload))
    assert seen == [(1, (Point(1, 1), Point(2, 2)), {"a": 1, "b": 2})]
    with pytest.raises(InvalidTask, match="argument 'c' must be int"):
        f.push(1, c="x")  # type: ignore[arg-type]


def test_a_payload_that_is_not_an_object_fails_the_attempt_clearly(fake: FakeQueue) -> None:
    @QueueTaskDecorator(fake, "k", OPTIONS)
    def f(n: int) -> None: ...

    with pytest.raises(InvalidTask, match="a JSON object of its arguments, got list"):
        fake.handlers["k"](envelope_for("k", [1]))


def test_decorating_something_that_is_not_callable_is_refused(fake: FakeQueue) -> None:
    with pytest.raises(InvalidOptions, match="decorates a function"):
        QueueTaskDecorator(fake, "k", OPTIONS)(42)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("value", "annotation", "fits"),
    [
        (1, int, True),
        (1.5, int, False),
        ("a", Literal["a", "b"], True),
        ("c", Literal["a", "b"], False),
        ((1, "a"), tuple[int, str], True),
        ((1, 2), tuple[int, str], False),
        ((1, 2, 3), tuple[int, ...], True),
        ({"a": [1]}, dict[str, list[int]], True),
        ({"a": ["x"]}, dict[str, list[int]], False),
        (None, None, True),
        (0, None, False),
        (object(), Any, True),
    ],
)
def test_check_value(value: Any, annotation: Any, fits: bool) -> None:
    assert (check_value(value, annotation, "v") is None) is fits
