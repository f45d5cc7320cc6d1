//! The `catalog` service, version 2.0.0, in Rust: the same API and the same
//! data as the JavaScript catalog 1.0.0 (`plugins/catalog-js`), so the two
//! can serve side by side in a gray release.
//!
//! - `GET /products` → `{"products": [{sku, name, price_cents}, …]}`
//! - `GET /products/{sku}` → `{sku, name, price_cents}`, or 404
//! - `POST /products` `{sku, name, price_cents}` → 201, 409 if the SKU exists
//!
//! Products live in the bucket `products`, one JSON value per SKU.

use serde::{Deserialize, Serialize};
use wasmhost_guest::prelude::*;

/// A product, stored as the JavaScript version stores it.
#[derive(Serialize, Deserialize)]
struct Product {
    sku: String,
    name: String,
    price_cents: u64,
}

/// The body of `POST /products`, checked field by field for the same
/// messages as the JavaScript version.
#[derive(Deserialize)]
struct NewProduct {
    sku: Option<serde_json::Value>,
    name: Option<serde_json::Value>,
    price_cents: Option<serde_json::Value>,
}

/// The list of `GET /products`.
#[derive(Serialize)]
struct Products {
    products: Vec<Product>,
}

struct Catalog;

impl Handler for Catalog {
    fn handle(req: Request) -> Response {
        respond(route(&req))
    }
}

wasmhost_guest::export!(Catalog);

fn route(req: &Request) -> Result {
    let bucket = kv::open("products")?;
    match (req.method.as_str(), req.segments().as_slice()) {
        ("GET", ["products"]) => {
            let mut products = Vec::new();
            for key in bucket.keys()? {
                products.extend(bucket.get_json::<Product>(&key)?);
            }
            Ok(Response::json(200, &Products { products }))
        }
        ("POST", ["products"]) => create(&bucket, req),
        ("GET", ["products", sku]) => match bucket.get_json::<Product>(sku)? {
            Some(p) => Ok(Response::json(200, &p)),
            None => Err(Error::not_found(format!("product {sku} not found"))),
        },
        (_, ["products"]) => Err(Error::new(405, "use GET or POST")),
        _ => Err(Error::not_found("no such resource")),
    }
}

fn create(bucket: &Bucket, req: &Request) -> Result {
    let new: NewProduct = req
        .json()
        .map_err(|_| Error::bad_request("the body must be JSON"))?;
    let sku = new
        .sku
        .as_ref()
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if sku.is_empty()
        || sku.len() > 64
        || !sku.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::bad_request(
            "`sku` must be 1-64 letters, digits or `-`",
        ));
    }
    let name = new
        .name
        .as_ref()
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(Error::bad_request("`name` must be a non-empty string"));
    }
    let price_cents = new
        .price_cents
        .as_ref()
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::bad_request("`price_cents` must be a non-negative integer"))?;
    if bucket.get_json::<Product>(sku)?.is_some() {
        return Err(Error::conflict(format!("product {sku} already exists")));
    }
    let created = Product {
        sku: sku.to_string(),
        name: name.to_string(),
        price_cents,
    };
    bucket.set_json(sku, &created)?;
    log::info(&format!("product {sku} created"));
    Ok(Response::json(201, &created))
}
