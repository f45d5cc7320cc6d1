#!/usr/bin/env bash
# Fails when any dependency turns on wasmtime's `component-model-async`
# feature: it makes every component call slower, also for components that
# use none of it (wasmtime#11209), and cargo's feature unification would
# switch it on silently for the whole build. Prints who asked for it.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree --workspace --edges features --invert wasmtime --prefix depth)
if grep -q 'wasmtime feature "component-model-async"' <<<"$tree"; then
    echo "error: a dependency turns on wasmtime's component-model-async feature (wasmtime#11209: every call gets slower)." >&2
    echo "The feature and who enables it (cargo tree --workspace -e features -i wasmtime):" >&2
    grep -A3 'wasmtime feature "component-model-async"' <<<"$tree" | head -40 >&2
    exit 1
fi
echo "==> wasmtime's component-model-async feature is off ($(grep -o 'wasmtime feature "[^"]*"' <<<"$tree" | sort -u | wc -l) features on, none of them it)"
