#!/usr/bin/env bash
# A five-minute tour of wasmhost with curl. Start the host first (`make run`),
# then run this in another terminal:  examples/tour.sh [http://127.0.0.1:8080]
set -euo pipefail
BASE="${1:-http://127.0.0.1:8080}"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
show() { step "$*"; "$@" -sS -w '\n(HTTP %{http_code})\n'; }

curl -sS -o /dev/null "$BASE/users" || { echo "no wasmhost at $BASE: start it with \`make run\`" >&2; exit 1; }

echo "1. Create two users (the user service stores them in the host's key-value store)"
show curl -X POST "$BASE/users" -H 'content-type: application/json' -d '{"name":"Ada Lovelace","email":"ada@example.com"}'
show curl -X POST "$BASE/users" -H 'content-type: application/json' -d '{"name":"Grace Hopper","email":"grace@example.com"}'

echo; echo "2. Read them back: by path, as a list, and through the query-style API"
show curl "$BASE/users/1"
show curl "$BASE/users"
show curl "$BASE/user?id=2"

echo; echo "3. Stock products: the catalog is JavaScript, the inventory Python"
show curl -X POST "$BASE/products" -d '{"sku":"KB-1","name":"Keyboard","price_cents":4999}'
show curl -X POST "$BASE/products" -d '{"sku":"MS-7","name":"Mouse","price_cents":2500}'
show curl -X PUT "$BASE/inventory/KB-1" -d '{"quantity":10}'
show curl -X PUT "$BASE/inventory/MS-7" -d '{"quantity":1}'

echo; echo "4. Place an order (Rust): it checks the user, prices items in the catalog, reserves them in the inventory"
show curl -X POST "$BASE/orders" -H 'content-type: application/json' \
  -d '{"user_id":1,"items":[{"sku":"KB-1","quantity":2},{"sku":"MS-7","quantity":1}]}'
show curl "$BASE/orders?user_id=1"
show curl "$BASE/inventory/KB-1"
# The order service announced the order (orders.created); the Python notify service noted it.
sleep 0.5
show curl "$BASE/notifications?user_id=1"
# Cancel it: orders.cancelled reaches the Python inventory, which gives the stock back.
show curl -X POST "$BASE/orders/1/cancel"
sleep 0.5
show curl "$BASE/inventory/KB-1"

echo; echo "5. Errors are JSON: out of stock, an unknown user, bad JSON, an unknown route"
show curl -X POST "$BASE/orders" -H 'content-type: application/json' -d '{"user_id":1,"items":[{"sku":"MS-7","quantity":1}]}'
show curl -X POST "$BASE/orders" -H 'content-type: application/json' -d '{"user_id":999,"items":[{"sku":"KB-1","quantity":1}]}'
show curl -X POST "$BASE/users" -H 'content-type: application/json' -d '{"name":'
show curl "$BASE/nowhere"

echo; echo "6. Every response says which service and version answered"
step curl -sI "$BASE/users/1"
curl -sSI "$BASE/users/1" | grep -i '^x-wasmhost'

echo; echo "Now stop the host (Ctrl-C), start it again with \`make run\`, and \`curl $BASE/users\`: the data is still there."
