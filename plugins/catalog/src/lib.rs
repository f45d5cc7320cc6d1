//! The `catalog` service, version 2.0.0, in Rust: the same API and the same
//! data as the JavaScript catalog 1.0.0 (`plugins/catalog-js`), so the two
//! can serve side by side in a gray release.
//!
//! - `GET /products` → `{"products": [{sku, name, price_cents}, …]}`
//! - `GET /products/{sku}` → `{sku, name, price_cents}`, or 404
//! - `POST /products` `{sku, name, price_cents}` → 201, 409 if the SKU exists
//!
//! Products live in the bucket `products`, one JSON value per SKU.

wit_bindgen::generate!({ path: "../../wit", world: "service", generate_all });

use exports::wasmhost::plugin::handler::Guest;
use serde::{Deserialize, Serialize};
use wasi::keyvalue::store;
use wasi::logging::logging::{log, Level};
use wasmhost::plugin::types::{Request, Response};

/// A product, stored as the JavaScript version stores it.
#[derive(Serialize, Deserialize)]
struct Product {
    sku: String,
    name: String,
    price_cents: u64,
}

struct Catalog;

impl Guest for Catalog {
    fn handle(req: Request) -> Response {
        route(&req).unwrap_or_else(|resp| resp)
    }
}

export!(Catalog);

fn route(req: &Request) -> Result<Response, Response> {
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let bucket = store::open("products").map_err(kv_error)?;
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["products"]) => {
            let mut products = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor).map_err(kv_error)?;
                for key in &page.keys {
                    if let Some(p) = product(&bucket, key)? {
                        products.push(p);
                    }
                }
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Ok(json(200, &serde_json::json!({ "products": products })))
        }
        ("POST", ["products"]) => create(&bucket, &req.body),
        ("GET", ["products", sku]) => match product(&bucket, sku)? {
            Some(p) => Ok(json(200, &p)),
            None => Err(error(404, &format!("product {sku} not found"))),
        },
        (_, ["products"]) => Err(error(405, "use GET or POST")),
        _ => Err(error(404, "no such resource")),
    }
}

fn create(bucket: &store::Bucket, body: &[u8]) -> Result<Response, Response> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| error(400, "the body must be JSON"))?;
    let sku = value["sku"].as_str().unwrap_or_default();
    if sku.is_empty()
        || sku.len() > 64
        || !sku.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(error(400, "`sku` must be 1-64 letters, digits or `-`"));
    }
    let name = value["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(error(400, "`name` must be a non-empty string"));
    }
    let price_cents = value["price_cents"]
        .as_u64()
        .ok_or_else(|| error(400, "`price_cents` must be a non-negative integer"))?;
    if product(bucket, sku)?.is_some() {
        return Err(error(409, &format!("product {sku} already exists")));
    }
    let created = Product {
        sku: sku.to_string(),
        name: name.to_string(),
        price_cents,
    };
    let bytes = serde_json::to_vec(&created).map_err(|e| error(500, &e.to_string()))?;
    bucket.set(sku, &bytes).map_err(kv_error)?;
    log(Level::Info, "catalog", &format!("product {sku} created"));
    Ok(json(201, &created))
}

fn product(bucket: &store::Bucket, sku: &str) -> Result<Option<Product>, Response> {
    match bucket.get(sku).map_err(kv_error)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| error(500, &format!("stored product {sku} is invalid: {e}"))),
        None => Ok(None),
    }
}

fn json(status: u16, value: &impl Serialize) -> Response {
    Response {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(value).unwrap_or_default(),
    }
}

fn error(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

fn kv_error(e: store::Error) -> Response {
    error(500, &format!("key-value store error: {e:?}"))
}
