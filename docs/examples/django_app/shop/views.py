"""A small shop: some routes are quick, one is slow, and some fail the way real ones do."""

import json
import math
import random
import time

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

KNOWN_ORDERS = 500  # ids above this are 404s


def work(median_ms: float) -> None:
    """Sleep a log-normal time around `median_ms`, as real handlers vary."""
    time.sleep(random.lognormvariate(math.log(median_ms), 0.5) / 1000)


@require_GET
def health(request):
    return JsonResponse({"status": "ok"})


@csrf_exempt  # a JSON API called by machines, not a form
@require_http_methods(["GET", "POST"])
def orders(request):
    if request.method == "GET":
        work(30)
        return JsonResponse({"results": [{"id": i} for i in range(1, 11)]})
    work(60)
    try:
        body = json.loads(request.body)
        sku = body["sku"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"detail": "Send a JSON body with a 'sku'."}, status=400)
    return JsonResponse({"id": random.randint(1, KNOWN_ORDERS), "sku": sku}, status=201)


@require_GET
def order(request, order_id: int):
    work(15)
    if order_id > KNOWN_ORDERS:
        return JsonResponse({"detail": f"No order {order_id}."}, status=404)
    return JsonResponse({"id": order_id, "status": "shipped"})


@csrf_exempt
@require_POST
def pay(request, order_id: int):
    work(120)
    if order_id % 5 == 0:  # the payment provider is down for these: a 502 from our side
        return JsonResponse({"detail": "Payment provider unavailable."}, status=502)
    return JsonResponse({"id": order_id, "paid": True})


@require_GET
def daily_report(request):
    work(400)
    if random.random() < 0.1:
        raise RuntimeError("report query timed out")  # an unhandled error: Django answers 500
    return JsonResponse({"orders": random.randint(100, 200)})
