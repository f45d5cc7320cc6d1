"""The `notify` service, in Python: one notification per order.

It consumes ``orders.created`` (published by the ``order`` service when it
stores an order) and keeps one notification per order, idempotent by the
order's id: a message delivered twice (at least once means it can be) is
noted once.

- ``GET /notifications?user_id=N`` -> ``{"notifications": [{"order_id",
  "user_id", "total_cents", "text"}]}`` for that user, oldest first
- ``GET /notifications`` -> every notification

Built with componentize-py against contract 0.2.0 (``wit/v0.2``, world
``subscriber-service``); it uses the key-value store and nothing else.
"""

import json
from urllib.parse import parse_qs

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import wasi_keyvalue_store as kv
from wit_world.imports.logging import Level, log
from wit_world.imports.messaging import Message
from wit_world.imports.types import Request, Response
from wit_world.exports.subscriber import Failure_Reject


def respond(status: int, value=None) -> Response:
    body = b"" if value is None else json.dumps(value).encode()
    return Response(status, [("content-type", "application/json")], body)


def bucket() -> kv.Bucket:
    return kv.open("notifications")


def notifications(user_id=None):
    store = bucket()
    out, cursor = [], None
    while True:
        page = store.list_keys(cursor)
        for key in page.keys:
            value = store.get(key)
            if value is None:
                continue
            note = json.loads(value)
            if user_id is None or note["user_id"] == user_id:
                out.append(note)
        if page.cursor is None:
            break
        cursor = page.cursor
    out.sort(key=lambda n: n["order_id"])
    return out


class Handler(exports.Handler):
    def handle(self, req: Request) -> Response:
        if req.method != "GET" or req.path.rstrip("/") != "/notifications":
            return respond(404, {"error": "no such resource"})
        query = parse_qs(req.query)
        user_id = None
        if "user_id" in query:
            try:
                user_id = int(query["user_id"][0])
            except ValueError:
                return respond(400, {"error": "`user_id` must be a whole number"})
        return respond(200, {"notifications": notifications(user_id)})


class Subscriber(exports.Subscriber):
    def handle(self, msg: Message) -> None:
        try:
            order = json.loads(msg.body)
            order_id, user_id = int(order["id"]), int(order["user_id"])
        except (ValueError, KeyError, TypeError) as e:
            # Not an order: delivering it again would not help.
            raise Err(Failure_Reject(f"not an order: {e}"))
        total = int(order.get("total_cents", 0))
        note = {
            "order_id": order_id,
            "user_id": user_id,
            "total_cents": total,
            "text": f"Your order {order_id} is confirmed ({total / 100:.2f}).",
        }
        # One key per order: a second delivery overwrites the same note.
        bucket().set(f"order:{order_id:012d}", json.dumps(note).encode())
        log(Level.INFO, "notify", f"order {order_id} noted for user {user_id} (attempt {msg.attempt})")
