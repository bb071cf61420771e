"""Enqueue in the request's own transaction: the task exists only if the order does."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from shop.models import Order
from shop.tasks import receipt


def place_order(request: HttpRequest, total: int) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(total=total)
        result = receipt.enqueue(order.id)
    return JsonResponse({"order": order.id, "result_id": result.id})


def result(request: HttpRequest, result_id: str) -> JsonResponse:
    found = receipt.get_result(result_id)
    body = {"status": str(found.status)}
    if found.is_finished and not found.errors:
        body["value"] = found.return_value
    return JsonResponse(body)
