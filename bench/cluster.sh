#!/usr/bin/env bash
# Key-value on the cluster's Redis beside the embedded redb store, and
# replicas behind haproxy, in one run on this machine:
#  1. the user service on one host, its data in STATE/kv.redb, then on one
#     host with --cluster (a redis-server of its own on loopback, with its
#     usual durable setting: appendonly, fsync every second): req/s and
#     p50/p99 of GET /users/1 (a key-value get) and POST /users (an
#     increment and a set), 16 connections each (bench/harness loadgen);
#  2. GET /users/1 through haproxy (round robin) to 1 replica, then to 3
#     replicas on the same Redis: req/s and p99, and the ratio.
# Without redis-server (or haproxy, for 2) it says what it skipped.
# Usage: bench/cluster.sh [quick|full]   (make bench = full, make bench-quick = quick)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
case "$MODE" in
  quick) SECONDS_EACH=1 ;;
  full)  SECONDS_EACH=${SECONDS_EACH:-5} ;;
  *) echo "usage: bench/cluster.sh [quick|full]" >&2; exit 2 ;;
esac
BIN_DIR=${BIN_DIR:-target/release}
CACHE_DIR=${CACHE_DIR:-target/bench-cache}
USER_WASM=plugins/user@$(sed -n 's/^version = "\(.*\)"/\1/p' plugins/user/Cargo.toml | head -n1).wasm
for f in "$BIN_DIR/wasmhost" "$BIN_DIR/loadgen" "$USER_WASM"; do
  [ -e "$f" ] || { echo "missing $f: run \`make bench\` (it builds everything)" >&2; exit 1; }
done
REDIS_SERVER=$(command -v redis-server || true)
[ -n "$REDIS_SERVER" ] || { echo "cluster: skipped: redis-server is not installed (apt-get install -y redis-server)"; exit 0; }

WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/plugins" "$CACHE_DIR"
cp "$USER_WASM" "$WORK/plugins/user@1.0.0.wasm"
cp plugins/user.toml "$WORK/plugins/user.toml"
REDIS_PORT=18741
"$REDIS_SERVER" --port $REDIS_PORT --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec --dir "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
REDIS=redis://127.0.0.1:$REDIS_PORT

ready() { # PORT: wait until the host on PORT is ready
  for _ in $(seq 1 1800); do
    curl -fs "http://127.0.0.1:$1/.well-known/wasmhost/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "the host on port $1 did not get ready" >&2; exit 1
}
host() { # NAME PORT [serve options…]: start a host, wait until ready
  local name=$1 port=$2; shift 2
  "$BIN_DIR/wasmhost" serve --plugins "$WORK/plugins" --state "$WORK/$name" --cache-dir "$CACHE_DIR" \
    --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 100)) --drain-delay 0s "$@" 2>"$WORK/$name.log" &
  PIDS+=($!)
  ready "$port"
}
stop_hosts() { # everything but redis
  for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=("${PIDS[0]}")
}
load() { # URL [BODY]: one loadgen run, its JSON line
  if [ $# -gt 1 ]; then LOADGEN_BODY=$2 "$BIN_DIR/loadgen" "$1" 16 "$SECONDS_EACH"
  else "$BIN_DIR/loadgen" "$1" 16 "$SECONDS_EACH"; fi
}
BODY='{"name":"bench","email":"bench@example.com"}'
measure() { # LABEL PORT: GET and POST figures of the host on PORT
  curl -fs -X POST -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$2/users" >/dev/null
  echo "$1 get $(load "http://127.0.0.1:$2/users/1")" >> "$WORK/kv.txt"
  echo "$1 set $(load "http://127.0.0.1:$2/users" "$BODY")" >> "$WORK/kv.txt"
}

host embedded 18751
measure redb 18751
stop_hosts
host clustered 18752 --cluster "$REDIS"
measure redis 18752
stop_hosts
python3 - "$WORK/kv.txt" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    store, op, data = line.split(" ", 2)
    rows[(store, op)] = json.loads(data)
for op, what in (("get", "GET /users/1 (a get)"), ("set", "POST /users (increment + set)")):
    a, b = rows[("redb", op)], rows[("redis", op)]
    for store, r in (("redb ", a), ("redis", b)):
        print(f"kv {op} {store}: {r['rps']:8,.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  — {what}")
    print(f"kv {op}: redis ×{b['rps'] / a['rps']:.2f} req/s of redb, p99 ×{b['p99_ms'] / max(a['p99_ms'], 0.001):.2f}")
PY

HAPROXY=$(command -v haproxy || true)
[ -n "$HAPROXY" ] || { echo "replicas: skipped: haproxy is not installed (apt-get install -y haproxy)"; exit 0; }
proxy() { # PORT BACKEND-PORTS…: haproxy on PORT, round robin over the ports
  local port=$1; shift
  { printf 'global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n'
    printf 'frontend fe\n  bind 127.0.0.1:%s\n  default_backend be\nbackend be\n  balance roundrobin\n  http-reuse always\n' "$port"
    for p in "$@"; do printf '  server r%s 127.0.0.1:%s\n' "$p" "$p"; done; } > "$WORK/haproxy-$port.cfg"
  "$HAPROXY" -db -f "$WORK/haproxy-$port.cfg" >"$WORK/haproxy-$port.log" 2>&1 &
  PIDS+=($!)
  ready "$port"
}
host r1 18761 --cluster "$REDIS"
proxy 18771 18761
ONE=$(load "http://127.0.0.1:18771/users/1")
host r2 18762 --cluster "$REDIS"
host r3 18763 --cluster "$REDIS"
proxy 18772 18761 18762 18763
THREE=$(load "http://127.0.0.1:18772/users/1")
python3 - "$ONE" "$THREE" <<'PY'
import json, sys
one, three = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for n, r in ((1, one), (3, three)):
    print(f"replicas: {n} behind haproxy: {r['rps']:8,.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  — GET /users/1, 16 connections")
print(f"replicas: 3 ×{three['rps'] / one['rps']:.2f} req/s of 1 (one machine: the replicas share its cores)")
PY
