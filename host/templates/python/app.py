"""The `{{name}}` service, in Python.

- ``GET /{{name}}?name=ada`` -> ``{"greeting": "hello, ada", "visits": 1}``
  (``visits`` counts every greeting, in the service's key-value store)

Build it with ``wasmhost build`` (componentize-py against ``wit/``);
``wasmhost dev`` rebuilds it and swaps it in on every save. Test it with
``./test.sh`` against the running host.
"""

import json
from urllib.parse import parse_qs

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics, wasi_keyvalue_store as kv
from wit_world.imports.types import Request, Response


def respond(status: int, value) -> Response:
    return Response(status, [("content-type", "application/json")], json.dumps(value).encode())


def error(status: int, message: str) -> Response:
    return respond(status, {"error": message})


def greeting(name: str) -> str:
    return f"hello, {name}"


class Handler(exports.Handler):
    def handle(self, req: Request) -> Response:
        segments = [s for s in req.path.split("/") if s]
        if segments != ["{{name}}"]:
            return error(404, "no such resource")
        if req.method != "GET":
            return error(405, "method not allowed")
        name = parse_qs(req.query).get("name", ["world"])[0]
        try:
            visits = atomics.increment(kv.open("visits"), "count", 1)
        except Err as e:
            return error(500, f"key-value store: {e.value}")
        return respond(200, {"greeting": greeting(name), "visits": visits})
