//! Log lines through the host (`wasi:logging`): the host tags each one with
//! the service and version and bounds their volume.
//!
//! Invariant: logging never fails a request; a line beyond the service's
//! log budget is dropped by the host, not here.

use crate::wasi::logging::logging::{log, Level};

/// The context the lines of this module carry (the host adds the service).
const CONTEXT: &str = "service";

/// Logs `message` at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, CONTEXT, message);
}

/// Logs `message` at info level.
pub fn info(message: &str) {
    log(Level::Info, CONTEXT, message);
}

/// Logs `message` at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, CONTEXT, message);
}

/// Logs `message` at error level.
pub fn error(message: &str) {
    log(Level::Error, CONTEXT, message);
}
