//! The baseline: the user service's `GET /users/{id}` as a native axum
//! handler over redb, doing the same work as the Wasm guest (read the
//! stored JSON, parse it, serialize the answer). `native-user ADDR`.

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

#[derive(Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18686".into());
    let dir = std::env::temp_dir().join(format!("wasmhost-native-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = Database::create(dir.join("kv.redb")).context("open redb")?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(TABLE)?;
        let user = User {
            id: 1,
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        };
        table.insert("user\0users\0user:1", serde_json::to_vec(&user)?.as_slice())?;
    }
    txn.commit()?;
    let app = axum::Router::new()
        .route("/users/{id}", axum::routing::get(get_user))
        .with_state(Arc::new(db));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn get_user(State(db): State<Arc<Database>>, Path(id): Path<u64>) -> impl IntoResponse {
    let read = || -> Result<Option<User>> {
        let txn = db.begin_read()?;
        let table = txn.open_table(TABLE)?;
        let key = format!("user\0users\0user:{id}");
        match table.get(key.as_str())? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    };
    match read() {
        Ok(Some(user)) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            serde_json::to_vec(&user).unwrap_or_default(),
        ),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            br#"{"error":"not found"}"#.to_vec(),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "application/json")],
            serde_json::to_vec(&serde_json::json!({ "error": e.to_string() })).unwrap_or_default(),
        ),
    }
}
