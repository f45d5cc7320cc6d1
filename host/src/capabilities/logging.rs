//! `wasi:logging/logging`: guest log lines become host log events tagged
//! with the service and version.

use super::HostState;
use crate::bindings::wasi::logging::logging::{Host, Level};

/// Longest message kept from one log call; the rest is cut.
const MAX_MESSAGE: usize = 4096;

impl Host for HostState {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        let service = &*self.id.service;
        let version = &*self.id.version;
        let message = truncate(&message, MAX_MESSAGE);
        let context = truncate(&context, 128);
        let allowed = self.output.take(message.len() + context.len());
        if allowed < message.len() + context.len() {
            return Ok(());
        }
        match level {
            Level::Trace => {
                tracing::trace!(target: "guest", service = %service, version = %version, context = %context, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "guest", service = %service, version = %version, context = %context, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "guest", service = %service, version = %version, context = %context, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "guest", service = %service, version = %version, context = %context, "{message}")
            }
            Level::Error | Level::Critical => {
                tracing::error!(target: "guest", service = %service, version = %version, context = %context, "{message}")
            }
        }
        Ok(())
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
