//! Publishing messages (`messaging.publish`, contract 0.2.0).
//!
//! Invariant: a message published while handling a request is stored with
//! the request's answer and dropped if the request fails (the host's rule);
//! a refusal comes back as an [`Error`] the caller may answer with or log.

use crate::wasmhost::plugin::messaging::{self, PublishOptions};
use crate::{Error, Result};
use serde::Serialize;

pub use messaging::Message;

/// Publishes `value` as JSON on `topic`, with an optional key (messages of
/// one key keep their order for a subscription ordered by key); returns the
/// message's id. The manifest must grant the topic: `[grants] publish`.
pub fn publish_json<T: Serialize + ?Sized>(
    topic: &str,
    key: Option<&str>,
    value: &T,
) -> Result<String> {
    let body = serde_json::to_vec(value)
        .map_err(|e| Error::internal(format!("message on `{topic}`: {e}")))?;
    let headers = vec![("content-type".to_string(), "application/json".to_string())];
    let options = PublishOptions {
        key: key.map(str::to_string),
        delay_ms: None,
    };
    messaging::publish(topic, &headers, &body, &options).map_err(|e| {
        let (status, detail) = match e {
            messaging::Error::Denied(m) => (500, m),
            messaging::Error::Unavailable(m) => (503, m),
            messaging::Error::TooLarge(limit) => (
                500,
                format!("larger than the host's limit of {limit} bytes"),
            ),
        };
        Error::new(
            status,
            format!("message on `{topic}` not published: {detail}"),
        )
    })
}
