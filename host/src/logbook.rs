//! The log book: the most recent log lines that name a service, kept in
//! memory for `wasmhost logs NAME` (`GET /admin/logs?service=NAME`).
//!
//! `main` installs [`layer`] beside the usual stderr output; every event
//! with a `service` field (a guest's own log lines and stdout/stderr, and
//! the host's lines about that service: loads, swaps, failures) is also
//! written here, numbered.
//!
//! Invariant: the book holds at most [`CAPACITY`] lines and never blocks or
//! fails a logging call (a poisoned lock drops the line); sequence numbers
//! only grow, so a reader that asks for lines after the last number it saw
//! never sees one twice and misses only what the book already dropped.

use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept, across every service.
pub const CAPACITY: usize = 4096;

/// One line of the book.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Line {
    /// Its number: every line gets the next one.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// `guest` for the service's own lines, else the host module.
    pub target: String,
    /// The service the line names.
    pub service: String,
    /// The version, when the line names one.
    pub version: Option<String>,
    /// The message, then its other fields as `key=value`.
    pub message: String,
}

#[derive(Default)]
struct Book {
    next: u64,
    lines: VecDeque<Line>,
}

static BOOK: OnceLock<Mutex<Book>> = OnceLock::new();

fn book() -> &'static Mutex<Book> {
    BOOK.get_or_init(Mutex::default)
}

/// Whether [`layer`] was installed (only then does the book fill).
pub fn installed() -> bool {
    BOOK.get().is_some()
}

/// The lines of `service` numbered above `after`, oldest first, at most
/// `limit` (the newest ones when there are more).
pub fn lines(service: &str, after: u64, limit: usize) -> Vec<Line> {
    let Ok(book) = book().lock() else {
        return Vec::new();
    };
    let mut found: Vec<Line> = book
        .lines
        .iter()
        .rev()
        .filter(|l| l.seq > after && l.service == service)
        .take(limit)
        .cloned()
        .collect();
    found.reverse();
    found
}

/// The tracing layer that fills the book.
pub fn layer() -> LogBookLayer {
    let _ = book();
    LogBookLayer
}

/// See [`layer`].
pub struct LogBookLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogBookLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        // Most lines name no service: skip them before visiting a field.
        if event.metadata().fields().field("service").is_none() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(service) = fields.service else {
            return;
        };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut message = fields.message;
        if !fields.rest.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&fields.rest);
        }
        let Ok(mut book) = book().lock() else { return };
        book.next += 1;
        let line = Line {
            seq: book.next,
            at_ms,
            level: event.metadata().level().to_string(),
            target: event.metadata().target().to_string(),
            service,
            version: fields.version,
            message,
        };
        if book.lines.len() == CAPACITY {
            book.lines.pop_front();
        }
        book.lines.push_back(line);
    }
}

/// An event's fields: the service and version apart, the rest as text.
#[derive(Default)]
struct Fields {
    service: Option<String>,
    version: Option<String>,
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "service" => self.service = Some(value),
            "version" => self.version = Some(value),
            "message" => self.message = value,
            name => {
                if !self.rest.is_empty() {
                    self.rest.push(' ');
                }
                let _ = write!(self.rest, "{name}={value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_lines_that_name_a_service_in_order() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "guest", service = %"book-a", version = %"1.0.0", "first");
            tracing::info!("no service: not kept");
            tracing::warn!(service = "book-b", "other service");
            tracing::error!(service = "book-a", limit = "memory", "second");
        });
        let a = lines("book-a", 0, 10);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a[0].message, "first");
        assert_eq!(a[0].version.as_deref(), Some("1.0.0"));
        assert_eq!(a[0].target, "guest");
        assert_eq!(a[1].message, "second limit=memory");
        assert_eq!(a[1].level, "ERROR");
        assert!(
            lines("book-a", a[0].seq, 10).len() == 1,
            "only after the first"
        );
        assert_eq!(
            lines("book-a", 0, 1)[0].message,
            "second limit=memory",
            "the newest when limited"
        );
        assert_eq!(lines("book-b", 0, 10).len(), 1);
    }
}
