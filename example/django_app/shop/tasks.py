"""The example's tasks: plain Django ``@task`` functions, run by pgqueue's workers."""

from typing import Any

try:
    from django.tasks import task  # Django 6
except ImportError:  # Django 5.2
    from django_tasks import task

from shop.models import Event, Order


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def receipt(order_id: int) -> str:
    order = Order.objects.get(id=order_id)
    return f"order {order.id}: {order.total}"


@task(queue_name="ordered")
def record(label: str) -> int:
    return Event.objects.create(label=label).id


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def whoami(context: Any, tag: str) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "tag": tag}


@task
async def double(x: int) -> int:
    return 2 * x
