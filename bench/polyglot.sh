#!/usr/bin/env bash
# Per-language figures with the release binary: component size, host start
# with a cold and a warm artifact cache (to the first response, and to
# ready: every service compiled), and the latency of one GET to each
# example service (Rust user, Python inventory, JavaScript catalog, Rust
# wasi:http hello), measured by curl over REQUESTS sequential requests.
#   make plugins host && bench/polyglot.sh [REQUESTS]
# BIN=path/to/wasmhost measures another build (START_ONLY=1: start-up only).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/wasmhost}
N=${1:-300}
for f in plugins/user@1.0.0.wasm plugins/inventory@1.0.0.wasm plugins/catalog@1.0.0.wasm examples/hello@1.0.0.wasm; do
  [ -f "$f" ] || { echo "missing $f: run \`make plugins host\` first" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "run \`make host\` first" >&2; exit 1; }
WORK=$(mktemp -d); PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null && wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins"
cp plugins/*.wasm plugins/*.toml examples/hello@1.0.0.wasm "$WORK/plugins/"
PORT=18585
URL=http://127.0.0.1:$PORT
start() {
  local t0=$(date +%s%N)
  "$BIN" serve --plugins "$WORK/plugins" --state "$WORK/state" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:0 >/dev/null 2>"$WORK/log" &
  PID=$!
  alive() { kill -0 $PID 2>/dev/null || { echo "the host exited:" >&2; cat "$WORK/log" >&2; exit 1; }; }
  until curl -sf -o /dev/null "$URL/users"; do alive; sleep 0.02; done
  FIRST=$(( ($(date +%s%N) - t0) / 1000000 ))
  until curl -sf -o /dev/null "$URL/.well-known/wasmhost/ready"; do alive; sleep 0.02; done
  READY=$(( ($(date +%s%N) - t0) / 1000000 ))
}
start; cold="first response ${FIRST} ms, ready ${READY} ms"; kill $PID; wait $PID 2>/dev/null || true
start; warm="first response ${FIRST} ms, ready ${READY} ms"
echo "host start, $(ls "$WORK"/plugins/*.wasm | wc -l) services ($(( $(cat "$WORK"/plugins/*.wasm | wc -c) / 1000000 )) MB of components), $(nproc) cores:"
echo "  cold cache: $cold"
echo "  warm cache: $warm"
[ -n "${START_ONLY:-}" ] && exit 0
curl -s -o /dev/null -X POST "$URL/users" -d '{"name":"Ada","email":"ada@example.com"}'
curl -s -o /dev/null -X POST "$URL/products" -d '{"sku":"KB-1","name":"Keyboard","price_cents":4999}'
curl -s -o /dev/null -X PUT "$URL/inventory/KB-1" -d '{"quantity":10}'
printf '%-34s %-22s %10s %9s %9s\n' "GET" "language" "size" "p50 ms" "p99 ms"
row() {
  local path=$1 lang=$2 file=$3
  for i in $(seq "$N"); do curl -s -o /dev/null -w '%{time_total}\n' "$URL$path"; done | sort -n \
    | awk -v p="$path" -v l="$lang" -v s="$(( $(wc -c < "$file") / 1024 )) KiB" \
      '{ a[NR] = $1 * 1000 } END { printf "%-34s %-22s %10s %9.2f %9.2f\n", p, l, s, a[int(NR*0.5)], a[int(NR*0.99)] }'
}
row /users/1 "Rust (WIT)" plugins/user@1.0.0.wasm
row /products/KB-1 "JavaScript (WIT)" plugins/catalog@1.0.0.wasm
row /inventory/KB-1 "Python (WIT)" plugins/inventory@1.0.0.wasm
row /hello "Rust (wasi:http)" examples/hello@1.0.0.wasm
