#!/usr/bin/env bash
# Save to first answer under `wasmhost dev`: for each language, `wasmhost new
# hello`, `wasmhost dev`, then three edits of the greeting, each timed from
# the write until `curl` (polled every 50 ms) answers the new text; prints
# each time and the build tool's share from dev's own log.
# Usage: bench/dev-loop.sh   (BIN=target/debug/wasmhost, LANGS="python js",
#   EXTRA="--incremental-compile off" to compare without the function cache)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${BIN:-$ROOT/target/release/wasmhost}
export WASMHOST_COMPONENTIZE_PY=${WASMHOST_COMPONENTIZE_PY:-$ROOT/.tools/py/bin/componentize-py}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/templates}
WORK=$(mktemp -d); PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
port=18090
for lang in ${LANGS:-rust python js}; do
  d=$WORK/$lang
  "$W" new hello --lang "$lang" --plugins "$d" >/dev/null
  case $lang in
    rust) f=$d/hello/src/lib.rs; pat='format!("%s, {name}")' ;;
    python) f=$d/hello/app.py; pat='f"%s, {name}"' ;;
    js) f=$d/hello/app.js; pat='`%s, ${name}`' ;;
  esac
  port=$((port + 1))
  # shellcheck disable=SC2086
  "$W" dev ${EXTRA:-} --plugins "$d" --state "$WORK/state-$lang" --listen 127.0.0.1:$port \
    --admin-listen 127.0.0.1:0 >"$WORK/$lang.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do grep -q "ready" "$WORK/$lang.log" && break; sleep 0.5; done
  prev=hello
  for t in 1 2 3; do
    new="hi$t"
    python3 - "$f" "$(printf "$pat" "$prev")" "$(printf "$pat" "$new")" <<'PY'
import sys; p, o, n = sys.argv[1:]; s = open(p).read(); assert o in s, (o, p); open(p, "w").write(s.replace(o, n, 1))
PY
    t0=$(date +%s.%N)
    until curl -s "127.0.0.1:$port/hello?name=x" | grep -q "\"$new, x\""; do sleep 0.05; done
    t1=$(date +%s.%N)
    echo "$lang save $t: $(python3 -c "print(f'{$t1 - $t0:.2f}')") s to the first answer of the new build"
    prev=$new
  done
  grep -E "built .* in" "$WORK/$lang.log" | tail -3 | sed "s/^ */    $lang: /"
  kill -INT "$PID"; wait "$PID" || true; PID=
done
