#!/usr/bin/env bash
# Throughput and latency, every contestant under the same load generator
# (bench/harness loadgen: closed loop, CONNECTIONS keep-alive connections),
# A/B interleaved over ROUNDS rounds; prints the median of each.
#   (a) wasmhost, the Rust user service's GET /users/1 through its own WIT
#   (b) native axum doing the same work (bench/harness native-user)
#   (c) wasmhost serving the wasi:http example component (GET /hello)
#   (d) `wasmtime serve` with the identical component, when `wasmtime` is on PATH
#       (cargo install wasmtime-cli --version 48.0.8 --locked, ~14 min)
#   (e) wasmhost serving the JavaScript catalog's and the Python inventory's GET
#   (f) the user and Python services again with opt-in instance reuse
#       (`requests-per-instance = 100`), on a second wasmhost
# Usage: bench/run.sh [quick|full]   (make bench = full, make bench-quick = quick)
# BIN_DIR (default target/release) holds wasmhost, loadgen and native-user;
# CACHE_DIR (default target/bench-cache) keeps compiled components between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
case "$MODE" in
  quick) ROUNDS=1; SECONDS_EACH=1; CONNECTIONS=${CONNECTIONS:-8} ;;
  full)  ROUNDS=${ROUNDS:-5}; SECONDS_EACH=${SECONDS_EACH:-10}; CONNECTIONS=${CONNECTIONS:-32} ;;
  *) echo "usage: bench/run.sh [quick|full]" >&2; exit 2 ;;
esac
BIN_DIR=${BIN_DIR:-target/release}
CACHE_DIR=${CACHE_DIR:-target/bench-cache}
BIN=$BIN_DIR/wasmhost
LOADGEN=$BIN_DIR/loadgen
NATIVE=$BIN_DIR/native-user
HELLO=examples/hello@1.0.0.wasm
for f in "$BIN" "$LOADGEN" "$NATIVE" plugins/user@1.0.0.wasm plugins/catalog@1.0.0.wasm plugins/inventory@1.0.0.wasm "$HELLO"; do
  [ -e "$f" ] || { echo "missing $f: run \`make bench\` (it builds everything)" >&2; exit 1; }
done
WORK=$(mktemp -d); PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins"
cp plugins/user@1.0.0.wasm plugins/user.toml "$WORK/plugins/"
cp plugins/catalog@1.0.0.wasm plugins/catalog.toml plugins/inventory@1.0.0.wasm plugins/inventory.toml "$WORK/plugins/"
cp "$HELLO" "$WORK/plugins/hello@1.0.0.wasm"
# req METHOD URL [BODY]: succeeds on a 2xx answer (Python, so no curl needed).
req() {
  python3 -c 'import sys, urllib.request as u
r = u.Request(sys.argv[2], data=sys.argv[3].encode() if len(sys.argv) > 3 else None, method=sys.argv[1])
try:
    sys.exit(0 if u.urlopen(r, timeout=5).status < 300 else 1)
except Exception:
    sys.exit(1)' "$@"
}
# wait_for URL [SECONDS]: until URL answers 2xx (default 180 s: a first start compiles the interpreters).
wait_for() {
  local deadline=$(( $(date +%s) + ${2:-180} ))
  until req GET "$1"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "no answer from $1; host log:" >&2; cat "$WORK"/host*.log >&2; exit 1; }
    sleep 0.1
  done
}

mkdir -p "$CACHE_DIR"
echo "starting wasmhost (the first run compiles the Python and JavaScript services, ~40 s; later runs reuse $CACHE_DIR)"
"$BIN" serve --plugins "$WORK/plugins" --state "$WORK/state" --cache-dir "$CACHE_DIR" --listen 127.0.0.1:18701 --admin-listen 127.0.0.1:0 >/dev/null 2>"$WORK/host.log" &
PIDS+=($!)
"$NATIVE" 127.0.0.1:18702 >/dev/null 2>&1 &
PIDS+=($!)
wait_for http://127.0.0.1:18702/users/1
# Ready: every service compiled (each serves as soon as it has, so /users
# answers long before the interpreters on a cold cache).
wait_for http://127.0.0.1:18701/.well-known/wasmhost/ready
req POST http://127.0.0.1:18701/users '{"name":"Ada Lovelace","email":"ada@example.com"}'
wait_for http://127.0.0.1:18701/users/1
req POST http://127.0.0.1:18701/products '{"sku":"KB-1","name":"Keyboard","price_cents":4999}'
req PUT http://127.0.0.1:18701/inventory/KB-1 '{"quantity":10}'
wait_for http://127.0.0.1:18701/products/KB-1
wait_for http://127.0.0.1:18701/inventory/KB-1
NAMES=("wasmhost user (own WIT)" "native axum" "wasmhost wasi:http hello")
URLS=(http://127.0.0.1:18701/users/1 http://127.0.0.1:18702/users/1 http://127.0.0.1:18701/hello)
if command -v wasmtime >/dev/null; then
  wasmtime serve -S cli --addr 127.0.0.1:18703 "$HELLO" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_for http://127.0.0.1:18703/hello
  NAMES+=("wasmtime serve hello"); URLS+=(http://127.0.0.1:18703/hello)
else
  echo "(wasmtime CLI not found: the \`wasmtime serve\` row is skipped; cargo install wasmtime-cli --version 48.0.8 --locked)"
fi
NAMES+=("wasmhost JavaScript catalog" "wasmhost Python inventory")
URLS+=(http://127.0.0.1:18701/products/KB-1 http://127.0.0.1:18701/inventory/KB-1)

# The same services with instance reuse, which trades isolation for speed.
mkdir -p "$WORK/reuse"
cp plugins/user@1.0.0.wasm plugins/inventory@1.0.0.wasm "$WORK/reuse/"
for s in user inventory; do
  { cat "plugins/$s.toml"; grep -q '^\[limits\]' "plugins/$s.toml" || echo '[limits]'; echo 'requests-per-instance = 100'; } > "$WORK/reuse/$s.toml"
done
"$BIN" serve --plugins "$WORK/reuse" --state "$WORK/state-reuse" --cache-dir "$CACHE_DIR" --listen 127.0.0.1:18704 --admin-listen 127.0.0.1:0 >/dev/null 2>"$WORK/host-reuse.log" &
PIDS+=($!)
wait_for http://127.0.0.1:18704/.well-known/wasmhost/ready
req POST http://127.0.0.1:18704/users '{"name":"Ada Lovelace","email":"ada@example.com"}'
req PUT http://127.0.0.1:18704/inventory/KB-1 '{"quantity":10}'
wait_for http://127.0.0.1:18704/users/1
wait_for http://127.0.0.1:18704/inventory/KB-1
NAMES+=("wasmhost user, reuse 100" "wasmhost Python, reuse 100")
URLS+=(http://127.0.0.1:18704/users/1 http://127.0.0.1:18704/inventory/KB-1)

echo "$MODE: $ROUNDS round(s) x ${SECONDS_EACH}s per contestant, $CONNECTIONS connections, load generator on the same machine ($(nproc) cores), binaries from $BIN_DIR"
[ "$MODE" = quick ] && echo "(quick mode checks that the harness runs: its figures are not measurements)"
for round in $(seq "$ROUNDS"); do
  for i in "${!URLS[@]}"; do
    "$LOADGEN" "${URLS[$i]}" "$CONNECTIONS" "$SECONDS_EACH" > "$WORK/r$round-$i.json"
  done
done
python3 - "$WORK" "$ROUNDS" "${NAMES[@]}" <<'PY'
import json, statistics, sys
work, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = []
for i, name in enumerate(names):
    runs = [json.load(open(f"{work}/r{r}-{i}.json")) for r in range(1, rounds + 1)]
    rows.append((name, statistics.median(x["rps"] for x in runs),
                 statistics.median(x["p50_ms"] for x in runs),
                 statistics.median(x["p99_ms"] for x in runs),
                 sum(x["errors"] for x in runs)))
native = rows[1][1]
serve = next((r[1] for r in rows if r[0].startswith("wasmtime serve")), None)
print(f"{'contestant':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'/axum':>7} {'/serve':>7}")
for name, rps, p50, p99, errors in rows:
    vs_serve = f"{rps / serve:7.2f}" if serve else "      -"
    print(f"{name:28} {rps:9.0f} {p50:8.2f} {p99:8.2f} {errors:7d} {rps / native:7.2f} {vs_serve}")
PY
