#!/usr/bin/env bash
# Noisy neighbour: the latency of a light service (GET /users/1) alone, and
# while another service is flooded with 64 concurrent CPU-bound requests
# (each spins until its 1 s CPU budget ends), with CPU lanes on (the
# default) and off (`--cpu-lanes 0`, the baseline) in the same run.
#   make host && bench/noisy-neighbour.sh [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/wasmhost
N=${1:-200}
HOSTILE=target/plugins/wasm32-wasip2/release/hostile.wasm
USER_WASM=target/plugins/wasm32-wasip2/release/user.wasm
[ -x "$BIN" ] || { echo "run \`make host\` first" >&2; exit 1; }
if [ ! -f "$HOSTILE" ] || [ ! -f "$USER_WASM" ]; then
  (cd plugins && CARGO_TARGET_DIR=../target/plugins cargo build --release --target wasm32-wasip2 -p hostile -p user)
fi
WORK=$(mktemp -d); PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins"
cp "$USER_WASM" "$WORK/plugins/user@1.0.0.wasm"
cp plugins/user.toml "$WORK/plugins/"
cp "$HOSTILE" "$WORK/plugins/hostile@0.1.0.wasm"
printf '[limits]\nconcurrency = 128\n' > "$WORK/plugins/hostile.toml"
PORT=18383

measure() { # label, extra serve args...
  local label=$1; shift
  rm -rf "$WORK/state"
  "$BIN" serve --plugins "$WORK/plugins" --state "$WORK/state" --listen 127.0.0.1:$PORT \
    --admin-listen 127.0.0.1:0 --cache-dir "$WORK/cache" "$@" 2>"$WORK/log" &
  PID=$!
  until grep -q "ready: every service" "$WORK/log"; do sleep 0.05; done
  curl -s -X POST "http://127.0.0.1:$PORT/users" -d '{"name":"Ada","email":"ada@example.com"}' >/dev/null
  python3 - "$PORT" "$N" "$label" <<'EOF'
import http.client, sys, threading, time
port, n, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def light(count):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for _ in range(count):
        t = time.perf_counter()
        conn.request("GET", "/users/1")
        conn.getresponse().read()
        out.append((time.perf_counter() - t) * 1e3)
    return sorted(out)

stop = False
def spinner():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not stop:
        conn.request("GET", "/hostile/spin")
        conn.getresponse().read()

light(20)
alone = light(n)
threads = [threading.Thread(target=spinner, daemon=True) for _ in range(64)]
for t in threads:
    t.start()
time.sleep(1.5)
loaded = light(n)
stop = True
pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))]
print(f"{label}: GET /users/1 alone p50 {pct(alone, .5):.2f} ms p99 {pct(alone, .99):.2f} ms; "
      f"beside 64 spinning requests p50 {pct(loaded, .5):.2f} ms p99 {pct(loaded, .99):.2f} ms "
      f"(p50 x{pct(loaded, .5) / pct(alone, .5):.1f})")
EOF
  kill $PID; wait $PID 2>/dev/null || true; PID=
}

echo "noisy neighbour, $N light requests per phase, $(nproc) cores"
measure "lanes off (--cpu-lanes 0)" --cpu-lanes 0
measure "lanes on (default)"
