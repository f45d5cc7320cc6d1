//! `wasmhost:plugin/messaging` (contract 0.2.0): publishing, allowed only on
//! the topics a service's manifest grants (`[grants] publish`).
//!
//! Invariant: a publish never reaches the log by itself. It is staged in
//! the request's outbox and stored with the request's outcome — when the
//! guest answered (or, for a delivery, acknowledged) — in the same
//! transaction as the request's held key-value writes; a trap, a limit or a
//! timeout drops it. So a failed attempt publishes nothing and stays
//! untouched for the retry rule.

use super::HostState;
use crate::bindings::v2::wasmhost::plugin::messaging::{Error, Host, PublishOptions};
use crate::messages::{Outgoing, MAX_MESSAGE_BYTES};
use crate::spec::check_topic;

/// Longest message key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// Messages one request may publish.
pub const MAX_PER_REQUEST: usize = 1000;

/// Why a publish was refused (each interface words it its own way).
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// Not granted, or not a topic.
    Denied(String),
    /// Over this many bytes.
    TooLarge(u32),
    /// Over the per-request count.
    Unavailable(String),
}

impl HostState {
    /// Checks a publish against the grants and limits and stages it in the
    /// outbox; returns the message's id.
    pub(crate) fn stage_publish(
        &mut self,
        topic: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        key: Option<String>,
        delay_ms: Option<u32>,
    ) -> Result<String, Refused> {
        let service = &self.id.service;
        if let Err(e) = check_topic(&topic, false) {
            return Err(Refused::Denied(format!("{e:#}")));
        }
        if !self
            .sandbox
            .grants
            .publish
            .iter()
            .any(|p| p.matches(&topic))
        {
            tracing::warn!(%service, version = %self.id.version, %topic, "publish refused: not granted");
            return Err(Refused::Denied(format!(
                "publishing on `{topic}` is not granted to `{service}` (add it to [grants] publish in {service}.toml)"
            )));
        }
        let size = body.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > MAX_MESSAGE_BYTES {
            return Err(Refused::TooLarge(MAX_MESSAGE_BYTES as u32));
        }
        if key.as_ref().is_some_and(|k| k.len() > MAX_KEY_BYTES) {
            return Err(Refused::TooLarge(MAX_KEY_BYTES as u32));
        }
        if self.outbox.len() >= MAX_PER_REQUEST {
            return Err(Refused::Unavailable(format!(
                "at most {MAX_PER_REQUEST} messages per request"
            )));
        }
        let now = crate::messages::now_ms();
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        // Its delivery continues the trace of the request that published it.
        crate::traces::inject(&mut headers);
        self.outbox.push(Outgoing {
            id: id.clone(),
            topic,
            headers,
            body,
            published_at_ms: now,
            not_before_ms: now + u64::from(delay_ms.unwrap_or(0)),
            key,
            groups: Vec::new(),
        });
        Ok(id)
    }
}

impl Host for HostState {
    async fn publish(
        &mut self,
        topic: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        options: PublishOptions,
    ) -> wasmtime::Result<Result<String, Error>> {
        let staged = self.stage_publish(topic, headers, body, options.key, options.delay_ms);
        Ok(staged.map_err(|refused| match refused {
            Refused::Denied(m) => Error::Denied(m),
            Refused::TooLarge(n) => Error::TooLarge(n),
            Refused::Unavailable(m) => Error::Unavailable(m),
        }))
    }
}

impl crate::bindings::v2::wasmhost::plugin::services::Host for HostState {
    async fn call(
        &mut self,
        name: String,
        req: crate::bindings::Request,
    ) -> wasmtime::Result<
        Result<crate::bindings::Response, crate::bindings::v2::wasmhost::plugin::services::Error>,
    > {
        use crate::bindings::v2::wasmhost::plugin::services::Error as V2;
        use crate::bindings::wasmhost::plugin::services::Error as V1;
        let result =
            crate::bindings::wasmhost::plugin::services::Host::call(self, name, req).await?;
        Ok(result.map_err(|e| match e {
            V1::NotFound(m) => V2::NotFound(m),
            V1::Denied(m) => V2::Denied(m),
            V1::Failed(m) => V2::Failed(m),
        }))
    }
}
