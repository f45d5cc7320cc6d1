"""The `inventory` service, in Python: stock per SKU.

- ``GET /inventory/{sku}`` -> ``{"sku", "quantity"}`` (404 for an unknown SKU)
- ``PUT /inventory/{sku}`` ``{"quantity": N}`` -> sets the quantity available
- ``POST /inventory/reservations`` ``{"items": [{"sku", "quantity"}]}`` -> 201,
  or 409 naming the first SKU short of stock; all or nothing
- ``POST /inventory/releases`` ``{"items": [...]}`` -> 204, gives reserved
  stock back (an order that failed after reserving)
- consumes ``orders.cancelled`` (published by the order service): gives the
  cancelled order's stock back, once per order however often the message is
  delivered (a counter per order claims it first; a crash between that claim
  and the give-back would keep the stock taken, the price of not giving it
  back twice)

Built with componentize-py against contract 0.2.0 (``wit/v0.2``, world
``subscriber-service``; ``make plugins``); it uses the host's key-value store
(``wasi:keyvalue``) and nothing else.

The store has atomic increments but no decrement or compare-and-swap, so
each SKU keeps three monotonic counters: ``stock`` (set by PUT), ``taken``
and ``returned``; available = stock - taken + returned. A reservation takes
first and gives back when that overdraws, so two concurrent reservations can
never sell the same unit twice.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics, wasi_keyvalue_store as kv
from wit_world.imports.logging import Level, log
from wit_world.imports.messaging import Message
from wit_world.imports.types import Request, Response
from wit_world.exports.subscriber import Failure_Reject


def respond(status: int, value=None) -> Response:
    body = b"" if value is None else json.dumps(value).encode()
    return Response(status, [("content-type", "application/json")], body)


def error(status: int, message: str, **extra) -> Response:
    return respond(status, {"error": message, **extra})


def counter(bucket: kv.Bucket, key: str) -> int:
    value = bucket.get(key)
    return int(value.decode()) if value is not None else 0


def available(bucket: kv.Bucket, sku: str) -> int:
    return (
        counter(bucket, f"stock:{sku}")
        - counter(bucket, f"taken:{sku}")
        + counter(bucket, f"returned:{sku}")
    )


# Lines in one reservation: a reservation must always finish well within the
# service's time limit, or the host would stop it half-way with stock taken.
MAX_ITEMS = 100


def parse_items(body: bytes):
    """The `items` of a reservation body, or an error response."""
    try:
        items = json.loads(body or b"{}").get("items")
    except (ValueError, AttributeError):
        return None, error(400, "the body must be a JSON object")
    if not isinstance(items, list) or not items:
        return None, error(400, "`items` must be a non-empty list of {sku, quantity}")
    if len(items) > MAX_ITEMS:
        return None, error(400, f"at most {MAX_ITEMS} items per reservation, not {len(items)}")
    parsed = []
    for item in items:
        if not isinstance(item, dict):
            return None, error(400, "each item must be an object {sku, quantity}")
        sku, quantity = item.get("sku"), item.get("quantity")
        if not isinstance(sku, str) or not sku or not isinstance(quantity, int) or quantity < 1:
            return None, error(400, "each item needs a `sku` and a positive integer `quantity`")
        parsed.append((sku, quantity))
    return parsed, None


def reserve(bucket: kv.Bucket, items) -> Response:
    done = []
    for sku, quantity in items:
        if bucket.get(f"stock:{sku}") is None:
            give_back(bucket, done)
            return error(404, f"unknown SKU {sku}", sku=sku)
        atomics.increment(bucket, f"taken:{sku}", quantity)
        done.append((sku, quantity))
        left = available(bucket, sku)
        if left < 0:
            give_back(bucket, done)
            return error(409, f"not enough stock of {sku}", sku=sku,
                         available=max(0, left + quantity), requested=quantity)
    log(Level.INFO, "inventory", f"reserved {len(done)} item(s)")
    return respond(201, {"reserved": [{"sku": s, "quantity": q} for s, q in done]})


def give_back(bucket: kv.Bucket, items) -> None:
    for sku, quantity in items:
        atomics.increment(bucket, f"returned:{sku}", quantity)


class Handler(exports.Handler):
    def handle(self, req: Request) -> Response:
        parts = [p for p in req.path.split("/") if p]
        try:
            bucket = kv.open("inventory")
            if parts == ["inventory", "reservations"] and req.method == "POST":
                items, bad = parse_items(req.body)
                return bad or reserve(bucket, items)
            if parts == ["inventory", "releases"] and req.method == "POST":
                items, bad = parse_items(req.body)
                if bad:
                    return bad
                give_back(bucket, items)
                return respond(204)
            if len(parts) == 2 and parts[0] == "inventory":
                sku = parts[1]
                if req.method == "GET":
                    if bucket.get(f"stock:{sku}") is None:
                        return error(404, f"unknown SKU {sku}")
                    return respond(200, {"sku": sku, "quantity": available(bucket, sku)})
                if req.method == "PUT":
                    try:
                        quantity = json.loads(req.body or b"{}").get("quantity")
                    except (ValueError, AttributeError):
                        return error(400, "the body must be a JSON object")
                    if not isinstance(quantity, int) or quantity < 0:
                        return error(400, "`quantity` must be a non-negative integer")
                    # stock is set so that the available quantity becomes `quantity`.
                    taken = counter(bucket, f"taken:{sku}") - counter(bucket, f"returned:{sku}")
                    bucket.set(f"stock:{sku}", str(quantity + taken).encode())
                    return respond(200, {"sku": sku, "quantity": quantity})
                return error(405, "use GET or PUT")
            return error(404, "no such resource")
        except Err as e:
            return error(500, f"key-value store error: {e.value}")


class Subscriber(exports.Subscriber):
    def handle(self, msg: Message) -> None:
        try:
            order = json.loads(msg.body)
            order_id = int(order["id"])
            items = [(str(i["sku"]), int(i["quantity"])) for i in order["items"]]
        except (ValueError, KeyError, TypeError) as e:
            # Not an order: delivering it again would not help.
            raise Err(Failure_Reject(f"not an order: {e}"))
        bucket = kv.open("inventory")
        if atomics.increment(bucket, f"cancelled:{order_id}", 1) > 1:
            return
        give_back(bucket, items)
        log(Level.INFO, "inventory", f"stock of cancelled order {order_id} given back")
