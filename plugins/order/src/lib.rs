//! The `order` service: orders for users known to the `user` service, priced
//! by the `catalog` service (JavaScript) and reserved in the `inventory`
//! service (Python) — one order crosses three languages through the host.
//!
//! - `POST /orders` `{"user_id", "items": [{"sku", "quantity"}]}` → 201 with
//!   the order, each item's `unit_price_cents` from the catalog (a price the
//!   client sends is ignored) and the `total_cents`; 422 when the user or a
//!   SKU does not exist; 409 when the inventory is short (nothing stays
//!   reserved: the reservation is all or nothing, and released again if the
//!   order cannot be stored)
//! - `GET /orders/{id}` → the order, or 404
//! - `GET /orders?user_id=N` → that user's orders (every order without the filter)
//! - `GET /order?id=N` → the same as `GET /orders/N`
//! - `POST /orders/{id}/cancel` → 200 with the order marked `cancelled`
//!   (and published on `orders.cancelled`: the inventory gives its stock
//!   back); cancelling it again changes nothing; 404 for an unknown order
//!
//! Orders live in the bucket `orders` under `order:{id}`. Every stored order
//! is published on `orders.created` and every cancelled one on
//! `orders.cancelled` (the order as JSON), stored with the request's answer
//! (contract 0.2.0).

use serde::{Deserialize, Serialize};
use wasmhost_guest::prelude::*;

/// One line of a stored order.
#[derive(Serialize, Deserialize, Clone)]
struct Item {
    sku: String,
    name: String,
    quantity: u32,
    unit_price_cents: u64,
}

/// One line as a client sends it; anything else it sends (a price, say) is
/// ignored.
#[derive(Deserialize, Serialize)]
struct NewItem {
    sku: String,
    quantity: u32,
}

/// What the catalog says of a product.
#[derive(Deserialize)]
struct Product {
    name: String,
    price_cents: u64,
}

/// A stored order.
#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    user_id: u64,
    items: Vec<Item>,
    total_cents: u64,
    /// Set once the order is cancelled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cancelled: bool,
}

/// Lines in one order (the inventory's limit per reservation): an order
/// always finishes well within its time limit, never stopped half-way with
/// stock reserved.
const MAX_ITEMS: usize = 100;

/// The body of `POST /orders`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    user_id: u64,
    items: Vec<NewItem>,
}

struct Service;

impl Handler for Service {
    fn handle(req: Request) -> Response {
        respond(route(&req))
    }
}

wasmhost_guest::export!(Service);

/// Dispatches on method and path.
fn route(req: &Request) -> Result {
    match (req.method.as_str(), req.segments().as_slice()) {
        ("POST", ["orders"]) => create(&req.body),
        ("GET", ["orders"]) => match req.query_param("user_id") {
            Some(raw) => list(Some(parse_id(&raw, "user id")?)),
            None => list(None),
        },
        ("GET", ["orders", id]) => get(parse_id(id, "order id")?),
        ("POST", ["orders", id, "cancel"]) => cancel(parse_id(id, "order id")?),
        ("GET", ["order"]) => get(req.require_param("id")?),
        (_, ["orders"] | ["orders", _] | ["orders", _, "cancel"] | ["order"]) => {
            Err(Error::method_not_allowed())
        }
        _ => Err(Error::not_found("no such resource")),
    }
}

fn create(body: &[u8]) -> Result {
    let new: NewOrder = serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("invalid order: {e}")))?;
    if new.items.is_empty() {
        return Err(Error::bad_request(
            "invalid order: `items` must not be empty",
        ));
    }
    if new.items.len() > MAX_ITEMS {
        return Err(Error::bad_request(format!(
            "invalid order: at most {MAX_ITEMS} items per order, not {}",
            new.items.len()
        )));
    }
    for item in &new.items {
        if item.sku.trim().is_empty() {
            return Err(Error::bad_request(
                "invalid order: every item needs a `sku`",
            ));
        }
        if item.quantity == 0 {
            return Err(Error::bad_request(format!(
                "invalid order: quantity of `{}` must be at least 1",
                item.sku
            )));
        }
    }
    ensure_user_exists(new.user_id)?;

    let mut items = Vec::with_capacity(new.items.len());
    let mut total: u64 = 0;
    for item in &new.items {
        let product = price_of(&item.sku)?;
        total = u64::from(item.quantity)
            .checked_mul(product.price_cents)
            .and_then(|line| total.checked_add(line))
            .ok_or_else(|| Error::bad_request("invalid order: total out of range"))?;
        items.push(Item {
            sku: item.sku.clone(),
            name: product.name,
            quantity: item.quantity,
            unit_price_cents: product.price_cents,
        });
    }
    reserve(&new.items)?;
    let stored = store_order(new.user_id, items, total);
    if stored.is_err() {
        // Give the stock back: a failed order leaves nothing reserved.
        release(&new.items);
    }
    let order = stored?;
    announce("orders.created", &order);
    log::info(&format!(
        "order {} placed for user {} ({total} cents)",
        order.id, order.user_id
    ));
    Ok(Response::json(201, &order))
}

/// Marks an order cancelled and announces it once.
fn cancel(id: u64) -> Result {
    let bucket = kv::open("orders")?;
    let Some(mut order) = bucket.get_json::<Order>(&order_key(id))? else {
        return Err(Error::not_found(format!("order {id} does not exist")));
    };
    if !order.cancelled {
        order.cancelled = true;
        bucket.set_json(&order_key(id), &order)?;
        announce("orders.cancelled", &order);
        log::info(&format!("order {id} cancelled"));
    }
    Ok(Response::json(200, &order))
}

/// Publishes `topic` with the order; a refusal is logged, the order stands.
fn announce(topic: &str, order: &Order) {
    if let Err(e) = messages::publish_json(topic, Some(&order.id.to_string()), order) {
        log::warn(&format!("order {} not announced: {}", order.id, e.message));
    }
}

fn store_order(user_id: u64, items: Vec<Item>, total_cents: u64) -> Result<Order> {
    let bucket = kv::open("orders")?;
    let id = bucket.increment("next-id", 1)?;
    let order = Order {
        id,
        user_id,
        items,
        total_cents,
        cancelled: false,
    };
    bucket.set_json(&order_key(id), &order)?;
    Ok(order)
}

/// The catalog's name and price of `sku`.
fn price_of(sku: &str) -> Result<Product> {
    let resp = services::call("catalog", &Request::get(&format!("/products/{sku}")))?;
    match resp.status {
        200 => resp.json_body(),
        404 => Err(Error::unprocessable(format!("unknown SKU {sku}"))),
        other => Err(Error::bad_gateway(format!(
            "catalog service answered {other}"
        ))),
    }
}

/// The body of a reservation or a release.
#[derive(Serialize)]
struct Items<'a> {
    items: &'a [NewItem],
}

/// Reserves every item in the inventory, all or nothing.
fn reserve(items: &[NewItem]) -> Result<()> {
    let req = Request::post_json("/inventory/reservations", &Items { items })?;
    let resp = services::call("inventory", &req)?;
    match resp.status {
        201 => Ok(()),
        409 => Err(Error::conflict(resp.error_message())),
        404 => Err(Error::unprocessable(resp.error_message())),
        other => Err(Error::bad_gateway(format!(
            "inventory service answered {other}"
        ))),
    }
}

/// Gives reserved stock back.
fn release(items: &[NewItem]) {
    let released = Request::post_json("/inventory/releases", &Items { items })
        .and_then(|req| services::call("inventory", &req));
    if let Err(e) = released {
        log::error(&format!("could not release stock: {}", e.message));
    }
}

/// Asks the `user` service, through the host, whether the user exists.
fn ensure_user_exists(user_id: u64) -> Result<()> {
    let mut probe = Request::get(&format!("/users/{user_id}"));
    probe
        .headers
        .push(("accept".to_string(), "application/json".to_string()));
    let resp = services::call("user", &probe)?;
    match resp.status {
        200 => Ok(()),
        404 => Err(Error::unprocessable(format!(
            "user {user_id} does not exist"
        ))),
        other => Err(Error::bad_gateway(format!("user service answered {other}"))),
    }
}

fn get(id: u64) -> Result {
    match kv::open("orders")?.get_bytes(&order_key(id))? {
        Some(bytes) => Ok(Response::bytes(200, "application/json", bytes)),
        None => Err(Error::not_found(format!("order {id} not found"))),
    }
}

fn list(user_id: Option<u64>) -> Result {
    let bucket = kv::open("orders")?;
    let mut orders = Vec::new();
    for key in bucket.keys()?.iter().filter(|k| k.starts_with("order:")) {
        if let Some(order) = bucket.get_json::<Order>(key)? {
            if user_id.is_none_or(|u| u == order.user_id) {
                orders.push(order);
            }
        }
    }
    orders.sort_by_key(|o| o.id);
    Ok(Response::json(200, &orders))
}

fn order_key(id: u64) -> String {
    format!("order:{id}")
}

fn parse_id(raw: &str, what: &str) -> Result<u64> {
    raw.parse()
        .map_err(|_| Error::bad_request(format!("invalid {what} `{raw}`")))
}
