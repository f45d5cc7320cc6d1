//! The example services end to end: the real `wasmhost` binary, the real
//! `user` and `order` components, real HTTP.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use wasmhost_test_support::{Host, Plugins, TestHost};

#[test]
fn users_are_created_listed_and_read() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();

    let ada = host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}));
    ada.expect_status(201);
    assert_eq!(
        ada.json(),
        json!({"id": 1, "name": "Ada", "email": "ada@example.com"})
    );
    assert_eq!(ada.header("content-type"), Some("application/json"));
    assert_eq!(ada.header("x-wasmhost-service"), Some("user"));
    assert_eq!(ada.header("x-wasmhost-version"), Some("1.0.0"));
    host.post_json(
        "/users",
        json!({"name": "Grace", "email": "grace@example.com"}),
    )
    .expect_status(201);

    assert_eq!(
        host.get("/users/2").expect_status(200).json()["name"],
        "Grace"
    );
    assert_eq!(
        host.get("/user?id=1").expect_status(200).json()["email"],
        "ada@example.com"
    );
    let list = host.get("/users").expect_status(200).json();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Ada", "Grace"]);

    let missing = host.get("/users/99");
    missing.expect_status(404);
    assert_eq!(missing.json()["error"], "user 99 not found");
}

#[test]
fn bad_input_gets_a_json_400() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();

    for (body, needle) in [
        ("{not json", "invalid user"),
        (r#"{"name": "Ada"}"#, "missing field `email`"),
        (
            r#"{"name": "", "email": "a@b.c"}"#,
            "`name` must not be empty",
        ),
        (r#"{"name": "Ada", "email": "nope"}"#, "`email`"),
    ] {
        let r = host.send("POST", "/users", body);
        r.expect_status(400);
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(needle),
            "body {body}: expected an error containing {needle:?}, got {error:?}"
        );
    }
    host.get("/users/abc").expect_status(400);
    host.get("/user").expect_status(400);
    let bad_order = host.send("POST", "/orders", r#"{"user_id": 1}"#);
    bad_order.expect_status(400);
    assert!(bad_order.json()["error"]
        .as_str()
        .unwrap()
        .contains("missing field `items`"));
    host.post_json("/orders", json!({"user_id": 1, "items": []}))
        .expect_status(400);
    host.send("DELETE", "/users/1", "").expect_status(405);
}

/// Stocks the catalog (JavaScript) and the inventory (Python).
fn available(host: &Host, sku: &str) -> u64 {
    host.get(&format!("/inventory/{sku}"))
        .expect_status(200)
        .json()["quantity"]
        .as_u64()
        .unwrap()
}

#[test]
fn an_order_crosses_three_languages() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    host.post_json(
        "/users",
        json!({"name": "Grace", "email": "grace@example.com"}),
    )
    .expect_status(201);
    host.stock("KB-1", "Keyboard", 4999, 10);
    host.stock("MS-7", "Mouse", 2500, 1);
    assert_eq!(
        host.get("/products/KB-1").header("x-wasmhost-service"),
        Some("catalog")
    );
    assert_eq!(
        host.get("/products").json()["products"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Prices come from the catalog; a price the client sends is ignored.
    let order = host.post_json(
        "/orders",
        json!({"user_id": 1, "items": [
            {"sku": "KB-1", "quantity": 2, "unit_price_cents": 1},
            {"sku": "MS-7", "quantity": 1}
        ]}),
    );
    order.expect_status(201);
    let order = order.json();
    assert_eq!(order["id"], 1);
    assert_eq!(order["total_cents"], 2 * 4999 + 2500, "{order}");
    assert_eq!(order["items"][0]["unit_price_cents"], 4999);
    assert_eq!(order["items"][0]["name"], "Keyboard");
    assert_eq!(available(&host, "KB-1"), 8);
    assert_eq!(available(&host, "MS-7"), 0);
    assert_eq!(host.get("/orders/1").expect_status(200).json(), order);
    assert_eq!(host.get("/order?id=1").expect_status(200).json(), order);

    // Not enough stock: 409, and nothing of the order stays reserved.
    let short = host.post_json(
        "/orders",
        json!({"user_id": 2, "items": [
            {"sku": "KB-1", "quantity": 3},
            {"sku": "MS-7", "quantity": 1}
        ]}),
    );
    short.expect_status(409);
    assert!(
        short.json()["error"].as_str().unwrap().contains("MS-7"),
        "{}",
        short.json()
    );
    assert_eq!(available(&host, "KB-1"), 8);
    // An unknown SKU or user: 422, nothing reserved or stored.
    let unknown = host.post_json(
        "/orders",
        json!({"user_id": 2, "items": [{"sku": "KB-1", "quantity": 1}, {"sku": "NOPE", "quantity": 1}]}),
    );
    unknown.expect_status(422);
    assert_eq!(unknown.json()["error"], "unknown SKU NOPE");
    let nobody = host.post_json(
        "/orders",
        json!({"user_id": 7, "items": [{"sku": "KB-1", "quantity": 1}]}),
    );
    nobody.expect_status(422);
    assert_eq!(nobody.json()["error"], "user 7 does not exist");
    assert_eq!(available(&host, "KB-1"), 8);

    host.post_json(
        "/orders",
        json!({"user_id": 2, "items": [{"sku": "KB-1", "quantity": 3}]}),
    )
    .expect_status(201);
    let for_grace = host.get("/orders?user_id=2").expect_status(200).json();
    assert_eq!(for_grace.as_array().unwrap().len(), 1);
    assert_eq!(for_grace[0]["total_cents"], 3 * 4999);
    assert_eq!(host.get("/orders").json().as_array().unwrap().len(), 2);
    assert_eq!(available(&host, "KB-1"), 5);
    host.get("/orders/42").expect_status(404);
    host.wait_for_log(
        &[
            "order 1 placed for user 1",
            "service=order",
            "version=1.0.0",
        ],
        std::time::Duration::from_secs(5),
    );
    host.wait_for_log(
        &["reserved 2 item(s)", "service=inventory"],
        std::time::Duration::from_secs(5),
    );
    host.wait_for_log(
        &["product KB-1 created", "service=catalog"],
        std::time::Duration::from_secs(5),
    );
}

#[test]
fn data_survives_a_restart() {
    let mut host = TestHost::examples().start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    host.stock("A", "Anvil", 5, 3);
    host.post_json(
        "/orders",
        json!({"user_id": 1, "items": [{"sku": "A", "quantity": 1}]}),
    )
    .expect_status(201);
    let log = host.restart();
    assert!(
        log.contains("shutting down"),
        "no shutdown line in log:\n{log}"
    );

    assert_eq!(
        host.get("/users/1").expect_status(200).json()["name"],
        "Ada"
    );
    assert_eq!(
        host.get("/orders/1").expect_status(200).json()["total_cents"],
        5
    );
    assert_eq!(available(&host, "A"), 2);
    assert_eq!(host.get("/products/A").json()["name"], "Anvil");
    // Ids continue where they stopped.
    let next = host.post_json(
        "/users",
        json!({"name": "Grace", "email": "grace@example.com"}),
    );
    assert_eq!(next.expect_status(201).json()["id"], 2);
}

#[test]
fn unknown_routes_get_a_json_404() {
    let plugins = Plugins::examples();
    let host = TestHost::with_plugins(plugins).start();
    for path in ["/", "/nothing", "/usersx", "/users-and-more/1"] {
        let r = host.get(path);
        r.expect_status(404);
        assert_eq!(r.json()["error"], format!("no service serves `{path}`"));
    }
}

/// The inventory's reservations and releases are private: an outside
/// client cannot mint stock with `POST /inventory/releases` (the 404 of a
/// path no one owns), while the order service still reserves through
/// `services.call`, and the public inventory routes still answer.
#[test]
fn private_routes_are_reachable_only_from_other_services() {
    let host = TestHost::examples().start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    host.stock("KB-1", "Keyboard", 4999, 10);
    for path in [
        "/inventory/releases",
        "/inventory/reservations",
        "/inventory/releases/x",
    ] {
        let r = host.send(
            "POST",
            path,
            json!({"items": [{"sku": "KB-1", "quantity": 1000}]}).to_string(),
        );
        r.expect_status(404);
        assert_eq!(r.header("x-wasmhost-service"), None, "{path}");
        assert!(
            r.json()["error"].as_str().unwrap().contains("no service"),
            "{path}"
        );
    }
    assert_eq!(available(&host, "KB-1"), 10);
    host.post_json(
        "/orders",
        json!({"user_id": 1, "items": [{"sku": "KB-1", "quantity": 2}]}),
    )
    .expect_status(201);
    assert_eq!(available(&host, "KB-1"), 8);
    let view = host
        .admin("GET", "/admin/services/inventory", None, None)
        .json();
    assert_eq!(
        view["private_routes"],
        json!(["/inventory/reservations", "/inventory/releases"])
    );
}

/// `private = true` hides the whole service from outside.
#[test]
fn a_private_service_is_not_reachable_from_outside() {
    let host = TestHost::examples()
        .with(|p| {
            let text = std::fs::read_to_string(p.path().join("catalog.toml")).unwrap();
            p.write("catalog.toml", format!("private = true\n{text}"));
        })
        .start();
    host.get("/products").expect_status(404);
    host.post_json(
        "/products",
        json!({"sku": "KB-1", "name": "Keyboard", "price_cents": 1}),
    )
    .expect_status(404);
}

/// Clients that hang up right after sending an order do not leak stock:
/// every order runs to its end (recorded, or its reservation released), so
/// the stock taken is exactly what the orders that exist hold.
#[test]
fn orders_whose_clients_hang_up_leak_no_stock() {
    use std::io::Write;
    let host = TestHost::examples().start();
    host.post_json("/users", json!({"name": "Ada", "email": "ada@example.com"}))
        .expect_status(201);
    host.stock("KB-1", "Keyboard", 4999, 1000);
    let body = json!({"user_id": 1, "items": [{"sku": "KB-1", "quantity": 2}]}).to_string();
    let request = format!(
        "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let mut tcp = std::net::TcpStream::connect(host.addr()).unwrap();
            tcp.write_all(request.as_bytes()).unwrap();
            tcp
        })
        .collect();
    let seen = |host: &TestHost| {
        let order: wasmhost::views::ServiceView = host.view("/admin/services/order");
        let finished: u64 = order.versions.iter().map(|v| v.metrics.requests).sum();
        (finished, order.running as u64)
    };
    // Hang up as soon as the host has every order in hand, before the
    // answers (an order takes three service calls).
    wasmhost_test_support::wait_until(
        "every order dispatched",
        std::time::Duration::from_secs(30),
        || {
            let (finished, running) = seen(&host);
            (finished + running >= 40).then_some(())
        },
    );
    drop(clients);
    // Every one of the 40 orders ran to its end, its client gone.
    wasmhost_test_support::wait_until(
        "every order finished",
        std::time::Duration::from_secs(60),
        || (seen(&host) == (40, 0)).then_some(()),
    );
    let orders = host.get("/orders").json().as_array().unwrap().len() as u64;
    assert_eq!(
        available(&host, "KB-1"),
        1000 - 2 * orders,
        "{orders} orders"
    );
    // An order of more lines than one reservation may hold is refused whole.
    let lines: Vec<_> = (0..101)
        .map(|_| json!({"sku": "KB-1", "quantity": 1}))
        .collect();
    let r = host.post_json("/orders", json!({"user_id": 1, "items": lines}));
    r.expect_status(400);
    assert_eq!(available(&host, "KB-1"), 1000 - 2 * orders);
}
