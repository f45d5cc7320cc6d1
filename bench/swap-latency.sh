#!/usr/bin/env bash
# Measures, with the release binary, the time from renaming a new version into
# the plugins directory to the first response served by that version: once
# with a cold compiled-artifact cache and once with a warm one.
#   make host plugins && bench/swap-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/wasmhost
V2=examples/user@1.1.0.wasm
[ -x "$BIN" ] && [ -f "$V2" ] || { echo "run \`make host plugins\` first" >&2; exit 1; }
WORK=$(mktemp -d); trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins"
cp plugins/user@1.0.0.wasm plugins/user.toml "$WORK/plugins/"
PORT=18181
"$BIN" serve --plugins "$WORK/plugins" --state "$WORK/state" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:0 2>"$WORK/log" &
PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/users"; do sleep 0.05; done

# Renames $1 into place as user@$2.wasm; prints ms until a request pinned to $2 is served by it.
swap() {
  cp "$1" "$WORK/plugins/.tmp" && sync
  local start=$(date +%s%N)
  mv "$WORK/plugins/.tmp" "$WORK/plugins/user@$2.wasm"
  until [ "$(curl -s -o /dev/null -w '%header{x-wasmhost-version}' -H "x-wasmhost-version: $2" "http://127.0.0.1:$PORT/users")" = "$2" ]; do :; done
  echo $(( ($(date +%s%N) - start) / 1000000 ))
}
cold=$(swap "$V2" 1.1.0)
rm "$WORK/plugins/user@1.1.0.wasm"; sleep 1
warm=$(swap "$V2" 1.2.0)   # same bytes, new name: the compiled artifact comes from the cache
printf 'rename -> first response of the new version (%s bytes)\n  cold artifact cache: %s ms\n  warm artifact cache: %s ms\n' "$(wc -c < "$V2")" "$cold" "$warm"
