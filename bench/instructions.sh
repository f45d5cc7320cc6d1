#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind (repeatable on
# these VMs, which have no hardware counters; wall clock moves ±15%).
#
# Each contestant runs under callgrind: a warm-up of W sequential keep-alive
# requests, then the counters are zeroed (callgrind_control -z), N more
# requests run and the counters are dumped (callgrind_control -d): the dump
# holds exactly those N requests, so the figure is total / N — no start-up,
# no compile, no warm-up in it. The dump is then split by phase with
# callgrind_annotate's inclusive costs (see PHASES below).
#
#   (a) wasmhost, the Rust user service's GET /users/1 (own WIT)
#   (b) wasmhost, the wasi:http example's GET /hello
#   (c) with POLYGLOT=1 (full mode): the Python inventory's GET
#       /inventory/KB-1 and the JavaScript catalog's GET /products/KB-1, N/10
#       requests each; their manifests here lift the CPU-time and timeout
#       limits and ejection, which valgrind's ~50× slowdown would trip
#   (d) native axum doing (a)'s work (bench/harness native-user)
#
# Usage: bench/instructions.sh [quick|full]   (make bench = full)
# BIN_DIR (default target/release) holds wasmhost and native-user.
# KEEP=DIR keeps the callgrind dumps there (for callgrind_annotate by hand).
# USER_WASM=FILE counts another build of the user service (an A/B of a guest);
# HOST_ARGS="…" adds options to every wasmhost run (e.g. --memory-reset full).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-full}
case "$MODE" in
  quick) W=20; N=50 ;;
  full)  W=${W:-200}; N=${N:-1000} ;;
  *) echo "usage: bench/instructions.sh [quick|full]" >&2; exit 2 ;;
esac
BIN_DIR=${BIN_DIR:-target/release}
CACHE_DIR=${CACHE_DIR:-target/bench-cache}
GUESTS=target/plugins/wasm32-wasip2/release
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || {
  echo "valgrind is missing (apt-get install -y valgrind): the instruction counts are skipped" >&2; exit 0; }
for f in "$BIN_DIR/wasmhost" "$BIN_DIR/native-user" "$GUESTS/user.wasm" "$GUESTS/http_hello.wasm"; do
  [ -e "$f" ] || { echo "missing $f: run \`make bench\` (it builds everything)" >&2; exit 1; }
done
WORK=$(mktemp -d); PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$WORK"/cg.* "$KEEP"/ 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins" "$CACHE_DIR"
cp "${USER_WASM:-$GUESTS/user.wasm}" "$WORK/plugins/user@1.0.0.wasm"
cp plugins/user.toml "$WORK/plugins/user.toml" 2>/dev/null || true
cp "$GUESTS/http_hello.wasm" "$WORK/plugins/hello@1.0.0.wasm"
PORT=18721; ADMIN=18722
# The default instance pool reserves terabytes of address space, which
# valgrind cannot map: a small pool, the same for every wasmhost run.
VG=(valgrind --tool=callgrind --smc-check=all-non-file --dump-instr=no --collect-jumps=no)

# run NAME OUT PATH N COMMAND...: starts COMMAND under callgrind, sends
# W then N GETs of PATH, writes the dump of the N to OUT.
run() {
  local name=$1 out=$2 path=$3 n=$4; shift 4
  "${VG[@]}" --callgrind-out-file="$WORK/cg.$name.%p" "$@" >"$WORK/$name.log" 2>&1 &
  PID=$!
  python3 - "$PORT" "$path" "$W" <<'PY'
import http.client, json, sys, time
port, path, w = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
deadline = time.time() + 600
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", path); r = c.getresponse(); r.read()
        if r.status == 200: break
        if r.status == 404 and path.startswith("/users"):
            c.request("POST", "/users", body=json.dumps({"name": "Ada Lovelace", "email": "ada@example.com"}),
                      headers={"content-type": "application/json"}); r = c.getresponse(); r.read()
        if r.status == 404 and path.startswith("/products"):
            c.request("POST", "/products", body=json.dumps({"sku": "KB-1", "name": "Keyboard", "price_cents": 4999}),
                      headers={"content-type": "application/json"}); r = c.getresponse(); r.read()
        if r.status == 404 and path.startswith("/inventory"):
            c.request("PUT", path, body=json.dumps({"quantity": 10}),
                      headers={"content-type": "application/json"}); r = c.getresponse(); r.read()
    except OSError:
        pass
    if time.time() > deadline: sys.exit(f"no 200 from {path} within 10 minutes")
    time.sleep(0.5)
for _ in range(w):
    c.request("GET", path); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  callgrind_control -z "$PID" >/dev/null 2>&1
  python3 - "$PORT" "$path" "$n" <<'PY'
import http.client, sys
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", path); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
  callgrind_control -d "$PID" >/dev/null 2>&1
  # The dump is written when valgrind next schedules the process.
  local dump=""
  for _ in $(seq 100); do
    dump=$(ls "$WORK"/cg."$name".*.1 2>/dev/null | head -1 || true)
    [ -n "$dump" ] && [ -s "$dump" ] && grep -q '^totals:' "$dump" && break
    sleep 0.2
  done
  [ -n "$dump" ] || { echo "no callgrind dump for $name" >&2; cat "$WORK/$name.log" >&2; exit 1; }
  kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=
  cp "$dump" "$out"
}

WASMHOST=("$BIN_DIR/wasmhost" serve --plugins "$WORK/plugins" --state "$WORK/state" --cache-dir "$CACHE_DIR"
  --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN --drain-delay 0s ${HOST_ARGS:-} --max-instances 4 --memory-ceiling 64MiB)
echo "instructions per request (callgrind; warm-up $W, then $N sequential keep-alive requests counted; binaries from $BIN_DIR)"
[ "$MODE" = quick ] && echo "(quick mode checks that the harness runs: its figures are not measurements)"
run user "$WORK/user.cg" /users/1 "$N" "${WASMHOST[@]}"
run hello "$WORK/hello.cg" /hello "$N" "${WASMHOST[@]}"
ROWS=("user GET (own WIT)=$N:$WORK/user.cg" "wasi:http hello=$N:$WORK/hello.cg")
if [ "$MODE" = full ] && [ -n "${POLYGLOT:-}" ]; then
  mkdir -p "$WORK/poly"
  cp plugins/inventory@*.wasm plugins/catalog@1.0.0.wasm "$WORK/poly/"
  LIFTED='[limits]
memory = "128 MiB"
cpu-time = "10s"
timeout = "60s"
[resilience]
eject = { consecutive = 0 }'
  printf 'private-routes = ["/inventory/reservations", "/inventory/releases"]\n%s\n' "$LIFTED" >"$WORK/poly/inventory.toml"
  printf 'routes = ["/products"]\n%s\n' "$LIFTED" >"$WORK/poly/catalog.toml"
  POLY=("${WASMHOST[@]:0:${#WASMHOST[@]}-4}" --max-instances 2 --memory-ceiling 256MiB); POLY[3]="$WORK/poly"
  # Compiled natively first (cranelift under valgrind would take an hour on
  # a 30 MB interpreter); the measured runs load from the cache.
  echo "compiling the Python and JavaScript services into $CACHE_DIR (natively)"
  "${POLY[@]}" >"$WORK/warm.log" 2>&1 &
  PID=$!
  python3 - "$PORT" <<'PY'
import http.client, sys, time
deadline = time.time() + 900  # ready once the first scan, which waits for compiles, is done
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
        c.request("GET", "/.well-known/wasmhost/ready"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except OSError:
        pass
    if time.time() > deadline: sys.exit("the Python and JavaScript services did not compile within 15 minutes")
    time.sleep(0.5)
PY
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  W0=$W; W=$((W / 10))
  run python "$WORK/python.cg" /inventory/KB-1 $((N / 10)) "${POLY[@]}"
  run js "$WORK/js.cg" /products/KB-1 $((N / 10)) "${POLY[@]}"
  W=$W0
  ROWS+=("Python inventory=$((N / 10)):$WORK/python.cg" "JavaScript catalog=$((N / 10)):$WORK/js.cg")
fi
run native "$WORK/native.cg" /users/1 "$N" "$BIN_DIR/native-user" 127.0.0.1:$PORT
python3 bench/instructions.py "${ROWS[@]}" "native axum=$N:$WORK/native.cg"
