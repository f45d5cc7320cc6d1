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

wit_bindgen::generate!({ path: "../../wit/v0.2", world: "service", generate_all });

use exports::wasmhost::plugin::handler::Guest;
use serde::{Deserialize, Serialize};
use wasi::keyvalue::{atomics, store};
use wasi::logging::logging::{log, Level};
use wasmhost::plugin::messaging::{self, PublishOptions};
use wasmhost::plugin::services;
use wasmhost::plugin::types::{Request, Response};

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

impl Guest for Service {
    fn handle(req: Request) -> Response {
        match route(&req) {
            Ok(resp) => resp,
            Err(resp) => resp,
        }
    }
}

export!(Service);

/// Dispatches on method and path; `Err` carries an error response.
fn route(req: &Request) -> Result<Response, Response> {
    let path = req.path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("POST", ["orders"]) => create(&req.body),
        ("GET", ["orders"]) => match query_param(&req.query, "user_id") {
            Some(raw) => list(Some(parse_id(&raw, "user id")?)),
            None => list(None),
        },
        ("GET", ["orders", id]) => get(parse_id(id, "order id")?),
        ("POST", ["orders", id, "cancel"]) => cancel(parse_id(id, "order id")?),
        ("GET", ["order"]) => {
            let id = query_param(&req.query, "id")
                .ok_or_else(|| error(400, "missing query parameter `id`"))?;
            get(parse_id(&id, "order id")?)
        }
        (_, ["orders"] | ["orders", _] | ["orders", _, "cancel"] | ["order"]) => {
            Err(error(405, "method not allowed"))
        }
        _ => Err(error(404, "no such resource")),
    }
}

fn create(body: &[u8]) -> Result<Response, Response> {
    let new: NewOrder =
        serde_json::from_slice(body).map_err(|e| error(400, &format!("invalid order: {e}")))?;
    if new.items.is_empty() {
        return Err(error(400, "invalid order: `items` must not be empty"));
    }
    if new.items.len() > MAX_ITEMS {
        return Err(error(
            400,
            &format!(
                "invalid order: at most {MAX_ITEMS} items per order, not {}",
                new.items.len()
            ),
        ));
    }
    for item in &new.items {
        if item.sku.trim().is_empty() {
            return Err(error(400, "invalid order: every item needs a `sku`"));
        }
        if item.quantity == 0 {
            return Err(error(
                400,
                &format!(
                    "invalid order: quantity of `{}` must be at least 1",
                    item.sku
                ),
            ));
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
            .ok_or_else(|| error(400, "invalid order: total out of range"))?;
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
    log(
        Level::Info,
        "order",
        &format!(
            "order {} placed for user {} ({total} cents)",
            order.id, order.user_id
        ),
    );
    Ok(json(201, &order))
}

/// Marks an order cancelled and announces it once.
fn cancel(id: u64) -> Result<Response, Response> {
    let bucket = bucket()?;
    let Some(bytes) = bucket.get(&order_key(id)).map_err(kv_error)? else {
        return Err(error(404, &format!("order {id} does not exist")));
    };
    let mut order: Order =
        serde_json::from_slice(&bytes).map_err(|e| error(500, &e.to_string()))?;
    if !order.cancelled {
        order.cancelled = true;
        let bytes = serde_json::to_vec(&order).map_err(|e| error(500, &e.to_string()))?;
        bucket.set(&order_key(id), &bytes).map_err(kv_error)?;
        announce("orders.cancelled", &order);
        log(Level::Info, "order", &format!("order {id} cancelled"));
    }
    Ok(json(200, &order))
}

/// Publishes `topic` with the order; a refusal is logged, the order stands.
fn announce(topic: &str, order: &Order) {
    let body = serde_json::to_vec(order).unwrap_or_default();
    let options = PublishOptions {
        key: Some(order.id.to_string()),
        delay_ms: None,
    };
    if let Err(e) = messaging::publish(topic, &json_headers(), &body, &options) {
        log(
            Level::Warn,
            "order",
            &format!("order {} not announced: {e:?}", order.id),
        );
    }
}

fn store_order(user_id: u64, items: Vec<Item>, total_cents: u64) -> Result<Order, Response> {
    let bucket = bucket()?;
    let id = atomics::increment(&bucket, "next-id", 1).map_err(kv_error)?;
    let order = Order {
        id,
        user_id,
        items,
        total_cents,
        cancelled: false,
    };
    let bytes = serde_json::to_vec(&order).map_err(|e| error(500, &e.to_string()))?;
    bucket.set(&order_key(id), &bytes).map_err(kv_error)?;
    Ok(order)
}

/// Asks `service` through the host; any failure to get an answer is a 502.
fn call(service: &str, method: &str, path: &str, body: Vec<u8>) -> Result<Response, Response> {
    let req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: String::new(),
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body,
    };
    services::call(service, &req).map_err(|e| {
        let detail = match e {
            services::Error::NotFound(m)
            | services::Error::Denied(m)
            | services::Error::Failed(m) => m,
        };
        error(502, &format!("{service} service unavailable: {detail}"))
    })
}

/// The catalog's name and price of `sku`.
fn price_of(sku: &str) -> Result<Product, Response> {
    let resp = call("catalog", "GET", &format!("/products/{sku}"), Vec::new())?;
    match resp.status {
        200 => serde_json::from_slice(&resp.body)
            .map_err(|e| error(502, &format!("catalog answered an invalid product: {e}"))),
        404 => Err(error(422, &format!("unknown SKU {sku}"))),
        other => Err(error(502, &format!("catalog service answered {other}"))),
    }
}

/// Reserves every item in the inventory, all or nothing.
fn reserve(items: &[NewItem]) -> Result<(), Response> {
    let body = serde_json::to_vec(&serde_json::json!({ "items": items }))
        .map_err(|e| error(500, &e.to_string()))?;
    let resp = call("inventory", "POST", "/inventory/reservations", body)?;
    let reason = || {
        serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    match resp.status {
        201 => Ok(()),
        409 => Err(error(409, &reason())),
        404 => Err(error(422, &reason())),
        other => Err(error(502, &format!("inventory service answered {other}"))),
    }
}

/// Gives reserved stock back.
fn release(items: &[NewItem]) {
    let body = serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap_or_default();
    if let Err(e) = call("inventory", "POST", "/inventory/releases", body) {
        log(
            Level::Error,
            "order",
            &format!(
                "could not release stock: {}",
                String::from_utf8_lossy(&e.body)
            ),
        );
    }
}

/// Asks the `user` service, through the host, whether the user exists.
fn ensure_user_exists(user_id: u64) -> Result<(), Response> {
    let probe = Request {
        method: "GET".to_string(),
        path: format!("/users/{user_id}"),
        query: String::new(),
        headers: vec![("accept".to_string(), "application/json".to_string())],
        body: Vec::new(),
    };
    match services::call("user", &probe) {
        Ok(resp) if resp.status == 200 => Ok(()),
        Ok(resp) if resp.status == 404 => {
            Err(error(422, &format!("user {user_id} does not exist")))
        }
        Ok(resp) => Err(error(
            502,
            &format!("user service answered {}", resp.status),
        )),
        Err(e) => {
            let detail = match e {
                services::Error::NotFound(m)
                | services::Error::Denied(m)
                | services::Error::Failed(m) => m,
            };
            Err(error(502, &format!("user service unavailable: {detail}")))
        }
    }
}

fn get(id: u64) -> Result<Response, Response> {
    match bucket()?.get(&order_key(id)).map_err(kv_error)? {
        Some(bytes) => Ok(Response {
            status: 200,
            headers: json_headers(),
            body: bytes,
        }),
        None => Err(error(404, &format!("order {id} not found"))),
    }
}

fn list(user_id: Option<u64>) -> Result<Response, Response> {
    let bucket = bucket()?;
    let mut orders = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor).map_err(kv_error)?;
        for key in page.keys.iter().filter(|k| k.starts_with("order:")) {
            if let Some(bytes) = bucket.get(key).map_err(kv_error)? {
                let order: Order =
                    serde_json::from_slice(&bytes).map_err(|e| error(500, &e.to_string()))?;
                if user_id.is_none_or(|u| u == order.user_id) {
                    orders.push(order);
                }
            }
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    orders.sort_by_key(|o| o.id);
    Ok(json(200, &orders))
}

fn bucket() -> Result<store::Bucket, Response> {
    store::open("orders").map_err(kv_error)
}

fn order_key(id: u64) -> String {
    format!("order:{id}")
}

fn parse_id(raw: &str, what: &str) -> Result<u64, Response> {
    raw.parse()
        .map_err(|_| error(400, &format!("invalid {what} `{raw}`")))
}

/// The first value of `name` in a raw query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn kv_error(e: store::Error) -> Response {
    let detail = match e {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied".to_string(),
        store::Error::Other(msg) => msg,
    };
    error(500, &format!("key-value store: {detail}"))
}

fn json_headers() -> Vec<(String, String)> {
    vec![("content-type".to_string(), "application/json".to_string())]
}

fn json<T: Serialize>(status: u16, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response {
        status,
        headers: json_headers(),
        body,
    }
}

fn error(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}
