//! Services in other languages: one service with versions in two languages
//! under one gray release.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::collections::BTreeSet;
use wasmhost_test_support::{Host, Plugins, TestHost, CATALOG_V2};

fn pinned(
    host: &Host,
    version: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::blocking::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client
        .request(method, host.url(path))
        .header("x-wasmhost-version", version);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.headers()["x-wasmhost-version"], version);
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

#[test]
fn one_service_in_two_languages_under_one_gray_release() {
    let plugins = Plugins::examples();
    // catalog 1.0.0 is JavaScript; 2.0.0 is the same API in Rust.
    plugins.add(CATALOG_V2, "catalog@2.0.0.wasm").write(
        "catalog.toml",
        "routes = [\"/products\"]\nweights = { \"1.0.0\" = 50, \"2.0.0\" = 50 }\n",
    );
    let host = TestHost::with_plugins(plugins).start();

    // Each version writes a product; both read the same data.
    let (s, made) = pinned(
        &host,
        "1.0.0",
        "POST",
        "/products",
        Some(json!({"sku": "JS-1", "name": "From JS", "price_cents": 100})),
    );
    assert_eq!(s, 201, "{made}");
    let (s, made) = pinned(
        &host,
        "2.0.0",
        "POST",
        "/products",
        Some(json!({"sku": "RS-1", "name": "From Rust", "price_cents": 200})),
    );
    assert_eq!(s, 201, "{made}");
    for version in ["1.0.0", "2.0.0"] {
        let (s, dup) = pinned(
            &host,
            version,
            "POST",
            "/products",
            Some(json!({"sku": "JS-1", "name": "x", "price_cents": 1})),
        );
        assert_eq!(s, 409, "{version}: {dup}");
        let (s, bad) = pinned(
            &host,
            version,
            "POST",
            "/products",
            Some(json!({"sku": "", "name": "x", "price_cents": 1})),
        );
        assert_eq!(s, 400, "{version}: {bad}");
        let (s, missing) = pinned(&host, version, "GET", "/products/NOPE", None);
        assert_eq!(s, 404, "{version}: {missing}");
    }
    let (_, js) = pinned(&host, "1.0.0", "GET", "/products", None);
    let (_, rust) = pinned(&host, "2.0.0", "GET", "/products", None);
    assert_eq!(js, rust);
    assert_eq!(js["products"].as_array().unwrap().len(), 2, "{js}");
    assert_eq!(
        pinned(&host, "1.0.0", "GET", "/products/RS-1", None),
        pinned(&host, "2.0.0", "GET", "/products/RS-1", None)
    );

    // Unpinned traffic is split between the two languages, with one answer.
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let r = host.get("/products");
        r.expect_status(200);
        assert_eq!(r.json(), js);
        seen.insert(r.header("x-wasmhost-version").unwrap().to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["1.0.0", "2.0.0"]);

    // Orders price their items through whichever catalog answers.
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    host.send(
        "PUT",
        "/inventory/RS-1",
        json!({"quantity": 100}).to_string(),
    )
    .expect_status(200);
    for _ in 0..10 {
        let order = host.post_json(
            "/orders",
            json!({"user_id": 1, "items": [{"sku": "RS-1", "quantity": 1}]}),
        );
        order.expect_status(201);
        assert_eq!(order.json()["total_cents"], 200);
    }
}
