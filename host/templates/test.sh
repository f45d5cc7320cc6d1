#!/bin/sh
# Checks the running `{{name}}` service over HTTP: ./test.sh [BASE_URL]
# (default http://127.0.0.1:8080; `wasmhost dev` or `wasmhost serve` first).
set -eu
base="${1:-http://127.0.0.1:8080}"
body=$(curl -fsS "$base/{{name}}?name=test") || { echo "FAIL: GET $base/{{name}} did not answer 200" >&2; exit 1; }
case "$body" in
  *'"greeting":"hello, test"'* | *'"greeting": "hello, test"'*) echo "ok: $body" ;;
  *) echo "FAIL: expected the greeting \"hello, test\", got: $body" >&2; exit 1 ;;
esac
