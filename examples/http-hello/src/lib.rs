//! A standard `wasi:http` component: it exports `wasi:http/incoming-handler`
//! and knows nothing of wasmhost. wasmhost detects the world at load and
//! serves it through its routing, releases, sandbox and metrics.
//!
//! - `GET /hello` → a greeting, streamed in three chunks, with a trailer
//! - `POST /hello/echo` → the request body, streamed back as it arrives
//! - `GET /hello/user/{id}` → asks the `user` service at
//!   `http://user.internal/users/{id}` (outbound wasi:http, routed in-process
//!   by the host when the manifest grants `user`) and relays its answer
//!
//! Build: `cargo build --release --target wasm32-wasip2`; it runs unchanged
//! under `wasmtime serve` too (without the `.internal` calls).

use std::io::Write as _;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let segments: Vec<&str> = path
            .split('?')
            .next()
            .unwrap_or_default()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match (request.method(), segments.as_slice()) {
            (Method::Get, ["hello"]) => greet(out),
            (Method::Post, ["hello", "echo"]) => echo(request, out),
            (Method::Get, ["hello", "user", id]) => relay_user(id, out),
            _ => respond(out, 404, b"no such resource\n"),
        }
    }
}

/// A plain-text response in one piece.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
        .unwrap_or_else(|_| Fields::new());
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let Ok(outgoing) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(mut stream) = outgoing.write() {
        let _ = stream.write_all(body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn greet(out: ResponseOutparam) {
    let headers = Fields::from_list(&[
        ("content-type".into(), b"text/plain".to_vec()),
        ("trailer".into(), b"x-chunks".to_vec()),
    ])
    .unwrap_or_else(|_| Fields::new());
    let resp = OutgoingResponse::new(headers);
    let Ok(body) = resp.body() else { return };
    // The head goes out first; the body follows chunk by chunk.
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(mut stream) = body.write() {
        for chunk in ["hello ", "from a ", "wasi:http component\n"] {
            let _ = stream.write_all(chunk.as_bytes());
            let _ = stream.flush();
        }
    }
    let trailers = Fields::from_list(&[("x-chunks".into(), b"3".to_vec())]).ok();
    let _ = OutgoingBody::finish(body, trailers);
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let Ok(incoming) = request.consume() else {
        return respond(out, 400, b"no body\n");
    };
    let resp = OutgoingResponse::new(Fields::new());
    let Ok(outgoing) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let (Ok(mut input), Ok(mut output)) = (incoming.stream(), outgoing.write()) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match std::io::Read::read(&mut input, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if output.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = output.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn relay_user(id: &str, out: ResponseOutparam) {
    let req = OutgoingRequest::new(Fields::new());
    let ok = req.set_scheme(Some(&Scheme::Http)).is_ok()
        && req.set_authority(Some("user.internal")).is_ok()
        && req
            .set_path_with_query(Some(&format!("/users/{id}")))
            .is_ok();
    if !ok {
        return respond(out, 400, b"bad user id\n");
    }
    let answer = outgoing_handler::handle(req, None)
        .map_err(|e| format!("{e:?}"))
        .and_then(|pending| {
            pending.subscribe().block();
            pending
                .get()
                .ok_or_else(|| "no response".to_string())?
                .map_err(|()| "response taken twice".to_string())?
                .map_err(|e| format!("{e:?}"))
        });
    match answer {
        Ok(resp) => {
            let status = resp.status();
            let mut body = Vec::new();
            if let Ok(incoming) = resp.consume() {
                if let Ok(mut stream) = incoming.stream() {
                    let _ = std::io::Read::read_to_end(&mut stream, &mut body);
                }
            }
            respond(out, status, &body);
        }
        Err(e) => respond(
            out,
            502,
            format!("user service unreachable: {e}\n").as_bytes(),
        ),
    }
}
