#!/usr/bin/env bash
# Durable messages on the embedded log: N messages published (1,000 per
# request, stored with the request's answer) and then handled and
# acknowledged by a subscriber that does nothing else (the faulty fixture,
# body `noop`, max-in-flight 64), each delivery in a fresh instance. The
# baseline, in the same run: plain requests to the same component
# (GET /faulty/ok, loadgen, 16 connections), each also a fresh instance.
# Then the same with per-key ordering (ordered-by = "key", 64 keys: at most
# 64 in flight, one per key). Then, when nats-server is installed, the
# latency and the throughput again with the log on NATS JetStream
# (--messaging, a nats-server -js of its own on loopback), and the ratio.
# Usage: bench/messages.sh [quick|full]   (make bench = full, make bench-quick = quick)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
case "$MODE" in
  quick) N=2000; SECONDS_EACH=1 ;;
  full)  N=${N:-20000}; SECONDS_EACH=5 ;;
  *) echo "usage: bench/messages.sh [quick|full]" >&2; exit 2 ;;
esac
BIN_DIR=${BIN_DIR:-target/release}
CACHE_DIR=${CACHE_DIR:-target/bench-cache}
FAULTY=target/plugins/wasm32-wasip2/release/faulty.wasm
for f in "$BIN_DIR/wasmhost" "$BIN_DIR/loadgen" "$FAULTY"; do
  [ -e "$f" ] || { echo "missing $f: run \`make bench\` (it builds everything)" >&2; exit 1; }
done
WORK=$(mktemp -d); PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins" "$CACHE_DIR"
cp "$FAULTY" "$WORK/plugins/faulty@1.0.0.wasm"
cat > "$WORK/plugins/faulty.toml" <<'TOML'
[grants]
publish = ["bench.>", "ordered.>"]
[[subscribe]]
topic = "bench.*"
max-in-flight = 64
[[subscribe]]
topic = "ordered.*"
group = "ordered"
max-in-flight = 64
ordered-by = "key"
TOML
PORT=18711; ADMIN=18712
"$BIN_DIR/wasmhost" serve --plugins "$WORK/plugins" --state "$WORK/state" --cache-dir "$CACHE_DIR" \
  --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN --drain-delay 0s 2>"$WORK/host.log" &
PID=$!
cat > "$WORK/measure.py" <<'PY'
import http.client, json, sys, time
port, admin, token_file, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
label, keyed_too = sys.argv[5], sys.argv[6] == "keyed"
deadline = time.time() + 180
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/.well-known/wasmhost/ready"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except OSError:
        pass
    if time.time() > deadline: sys.exit("the host did not get ready")
    time.sleep(0.1)
token = open(token_file).read().strip()
def backlog():
    a = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    a.request("GET", "/admin/topics", headers={"authorization": f"Bearer {token}"})
    groups = json.loads(a.getresponse().read())["groups"]
    return sum(g["backlog"] + g["in_flight"] for g in groups)
def latency():
    a = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    a.request("GET", "/admin/services/faulty", headers={"authorization": f"Bearer {token}"})
    return json.loads(a.getresponse().read())["versions"][0]["message_latency"]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
# Latency first, unloaded: single messages 10 ms apart.
for _ in range(200):
    c.request("POST", "/faulty/publish-many/bench.one/1", body=b"noop"); r = c.getresponse(); r.read()
    assert r.status == 201, r.status
    time.sleep(0.01)
while backlog() > 0:
    time.sleep(0.05)
lat = latency()
print(f"messages {label}: publish to acknowledgement, one at a time: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms (upper bounds of the histogram's buckets)")
started = time.time()
for _ in range(n // 1000):
    c.request("POST", "/faulty/publish-many/bench.load/1000", body=b"noop"); r = c.getresponse(); r.read()
    assert r.status == 201, r.status
published = time.time()
while backlog() > 0:
    time.sleep(0.05)
done = time.time()
print(f"messages {label}: {n} published in {published - started:.2f} s ({n / (published - started):,.0f}/s, durable when the request answers)")
print(f"messages {label}: {n} published and acknowledged in {done - started:.2f} s: {n / (done - started):,.0f} msg/s end to end")
unordered = done - started
with open(sys.argv[3] + ".rate", "w") as f:
    f.write(f"{n / unordered}")
if not keyed_too:
    sys.exit(0)
keyed = time.time()
for _ in range(n // 1000):
    c.request("POST", "/faulty/publish-keyed/ordered.load/64/1000", body=b"noop"); r = c.getresponse(); r.read()
    assert r.status == 201, r.status
while backlog() > 0:
    time.sleep(0.05)
ordered = time.time() - keyed
print(f"messages {label}: {n} over 64 keys with ordered-by, published and acknowledged in {ordered:.2f} s: {n / ordered:,.0f} msg/s (×{unordered / ordered:.2f} of unordered)")
PY
python3 "$WORK/measure.py" "$PORT" "$ADMIN" "$WORK/state/admin-token" "$N" embedded keyed
RATE=$(cat "$WORK/state/admin-token.rate")
REQS=$("$BIN_DIR/loadgen" "http://127.0.0.1:$PORT/faulty/ok" 16 "$SECONDS_EACH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rps"])')
python3 -c "r, q = $RATE, $REQS; print(f'baseline: {q:,.0f} req/s of GET /faulty/ok (fresh instance each); messages ×{r / q:.2f} of it')"

NATS_SERVER=$(command -v nats-server || true)
[ -n "$NATS_SERVER" ] || { echo "messages nats: skipped: nats-server is not installed (apt-get install -y nats-server)"; exit 0; }
kill "$PID"; wait "$PID" 2>/dev/null || true
NATS_PORT=18713
"$NATS_SERVER" -a 127.0.0.1 -p $NATS_PORT -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; kill "$NATS_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT) 2>/dev/null && break; sleep 0.05; done
"$BIN_DIR/wasmhost" serve --plugins "$WORK/plugins" --state "$WORK/state-nats" --cache-dir "$CACHE_DIR" \
  --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN --drain-delay 0s \
  --messaging nats://127.0.0.1:$NATS_PORT 2>"$WORK/host-nats.log" &
PID=$!
python3 "$WORK/measure.py" "$PORT" "$ADMIN" "$WORK/state-nats/admin-token" "$N" nats unordered
NATS_RATE=$(cat "$WORK/state-nats/admin-token.rate")
python3 -c "e, n = $RATE, $NATS_RATE; print(f'messages: NATS JetStream ×{n / e:.2f} msg/s of the embedded log (one host, end to end)')"
