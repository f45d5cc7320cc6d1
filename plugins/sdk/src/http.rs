//! Helpers on the contract's [`Request`] and [`Response`] records.
//!
//! Invariant: the helpers read the request as the host delivered it (the
//! full path, percent-encoded as sent; the raw query) and decode only what
//! they return, so a handler never sees a value decoded twice.

use crate::{Error, Request, Response, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

const JSON: &str = "application/json";

impl Request {
    /// A request for [`services::call`](crate::services::call).
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// `POST path` with `value` as its JSON body.
    pub fn post_json<T: Serialize + ?Sized>(path: &str, value: &T) -> Result<Self> {
        let mut req = Self::new("POST", path);
        req.body =
            serde_json::to_vec(value).map_err(|e| Error::internal(format!("request body: {e}")))?;
        req.headers
            .push(("content-type".to_string(), JSON.to_string()));
        Ok(req)
    }

    /// The path's segments, without the empty ones a leading or trailing `/`
    /// leaves: `/users/42/` → `["users", "42"]`. Still percent-encoded, so a
    /// `%2F` inside a segment never splits it.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The first value of the query parameter `name`, percent-decoded (`+`
    /// is a space, as in a form); `Some("")` for a bare `?name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The query parameter `name` parsed as `T`: 400 when it is missing or
    /// does not parse.
    pub fn require_param<T: std::str::FromStr>(&self, name: &str) -> Result<T> {
        let raw = self
            .query_param(name)
            .ok_or_else(|| Error::bad_request(format!("missing query parameter `{name}`")))?;
        raw.parse()
            .map_err(|_| Error::bad_request(format!("invalid query parameter `{name}`: `{raw}`")))
    }

    /// The first value of the header `name` (names are lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON: 400 naming what is wrong with it.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }
}

impl Response {
    /// `value` as JSON with `status`.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::bytes(status, JSON, body),
            Err(e) => Self::error(500, &format!("response body: {e}")),
        }
    }

    /// `{"error": message}` with `status`, the shape of the host's errors.
    pub fn error(status: u16, message: &str) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
        }
        let body = serde_json::to_vec(&Body { error: message }).unwrap_or_default();
        Self::bytes(status, JSON, body)
    }

    /// Plain text with `status`.
    pub fn text(status: u16, text: &str) -> Self {
        Self::bytes(
            status,
            "text/plain; charset=utf-8",
            text.as_bytes().to_vec(),
        )
    }

    /// `body` as it is, with its content type.
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body,
        }
    }

    /// No body (204, say).
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The body as JSON (an answer from another service): 502 when it is not
    /// the JSON expected.
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::bad_gateway(format!("invalid JSON in an answer: {e}")))
    }

    /// The `error` message of a JSON error body, empty when there is none.
    pub fn error_message(&self) -> String {
        #[derive(serde::Deserialize)]
        struct Body {
            error: String,
        }
        serde_json::from_slice::<Body>(&self.body)
            .map(|b| b.error)
            .unwrap_or_default()
    }
}
