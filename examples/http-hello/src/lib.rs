//! A standard `wasi:http` component, written with [wstd] (async Rust on
//! WASI 0.2): it exports `wasi:http/incoming-handler` and knows nothing of
//! wasmhost, which detects the world at load and serves it through its
//! routing, releases, sandbox and metrics.
//!
//! - `GET /hello` → a greeting, streamed in three chunks, with a trailer
//! - `POST /hello/echo` → the request body, streamed back as it arrives
//! - `GET /hello/user/{id}` → asks the `user` service at
//!   `http://user.internal/users/{id}` (outbound wasi:http, routed in-process
//!   by the host when the manifest grants `user`) and relays its answer
//!
//! Build: `cargo build --release --target wasm32-wasip2`; it runs unchanged
//! under `wasmtime serve` too (without the `.internal` calls).

use futures_lite::stream;
use http_body_util::StreamBody;
use wstd::http::body::{Body, Bytes, Frame};
use wstd::http::{Client, Error, HeaderMap, HeaderValue, Request, Response};

#[wstd::http_server]
async fn main(req: Request<Body>) -> Result<Response<Body>, Error> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method().as_str(), segments.as_slice()) {
        ("GET", ["hello"]) => greet(),
        ("POST", ["hello", "echo"]) => Ok(Response::new(req.into_body())),
        ("GET", ["hello", "user", id]) => relay_user(id).await,
        _ => text(404, "no such resource\n".into()),
    }
}

/// The greeting in three chunks, then the trailer `x-chunks: 3`.
fn greet() -> Result<Response<Body>, Error> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-chunks", HeaderValue::from_static("3"));
    let chunks =
        ["hello ", "from a ", "wasi:http component\n"].map(|c| Frame::data(Bytes::from(c)));
    let frames = chunks
        .into_iter()
        .chain([Frame::trailers(trailers)])
        .map(Ok::<_, Error>);
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .header("trailer", "x-chunks")
        .body(Body::from_http_body(StreamBody::new(stream::iter(frames))))?)
}

/// The `user` service's answer for `id`, relayed as it streams in.
async fn relay_user(id: &str) -> Result<Response<Body>, Error> {
    let req = Request::get(format!("http://user.internal/users/{id}")).body(Body::empty())?;
    match Client::new().send(req).await {
        Ok(answer) => Ok(Response::builder()
            .status(answer.status())
            .header("content-type", "text/plain")
            .body(answer.into_body())?),
        Err(e) => text(502, format!("user service unreachable: {e:?}\n")),
    }
}

fn text(status: u16, body: String) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Body::from(body))?)
}
