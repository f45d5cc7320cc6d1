//! Guest stdout and stderr: each line becomes a host log event tagged with
//! the service, version and stream.
//!
//! Output is bounded per request (the service's `log-bytes` limit, shared by
//! both streams and `wasi:logging`); past that it is dropped, one warning
//! says so, and the guest never sees an error (a failing `println!` would
//! panic the guest).

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// The output sink of one request, shared by its stdout and stderr.
#[derive(Clone)]
pub struct GuestOutput {
    shared: Arc<Shared>,
}

struct Shared {
    service: Arc<str>,
    version: Arc<str>,
    budget: usize,
    remaining: AtomicUsize,
    truncated: AtomicBool,
}

impl Shared {
    /// Takes up to `n` bytes from the budget; returns how many were granted.
    fn take(&self, n: usize) -> usize {
        let before = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(r.saturating_sub(n))
            })
            .unwrap_or(0);
        let allowed = before.min(n);
        if allowed < n && !self.truncated.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                service = %self.service,
                version = %self.version,
                limit = self.budget,
                "guest log limit (log-bytes) reached; further output of this request is dropped"
            );
        }
        allowed
    }
}

impl GuestOutput {
    /// A sink for `service`@`version` that keeps at most `budget` bytes.
    pub fn new(service: Arc<str>, version: Arc<str>, budget: usize) -> Self {
        let shared = Shared {
            service,
            version,
            budget,
            remaining: AtomicUsize::new(budget),
            truncated: AtomicBool::new(false),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Takes up to `n` bytes from the budget (for `wasi:logging`); returns
    /// how many may be written.
    pub fn take(&self, n: usize) -> usize {
        self.shared.take(n)
    }

    /// Restores the whole budget, for the next request of a reused instance.
    pub fn reset(&self) {
        self.shared
            .remaining
            .store(self.shared.budget, Ordering::Relaxed);
        self.shared.truncated.store(false, Ordering::Relaxed);
    }

    /// The WASI stream for `stream`.
    pub fn stream(&self, stream: Stream) -> GuestStream {
        GuestStream {
            shared: self.shared.clone(),
            stream,
        }
    }
}

/// What WASI hands out for `get-stdout` / `get-stderr`.
pub struct GuestStream {
    shared: Arc<Shared>,
    stream: Stream,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

impl GuestStream {
    fn writer(&self) -> LineWriter {
        LineWriter {
            shared: self.shared.clone(),
            stream: self.stream,
            line: Vec::new(),
        }
    }
}

/// Splits written bytes into lines and logs each one.
struct LineWriter {
    shared: Arc<Shared>,
    stream: Stream,
    line: Vec<u8>,
}

impl LineWriter {
    fn accept(&mut self, mut bytes: &[u8]) {
        let allowed = self.shared.take(bytes.len());
        bytes = &bytes[..allowed];
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            self.line.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        let (service, version) = (&*self.shared.service, &*self.shared.version);
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "guest", service = %service, version = %version, stream = %"stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "guest", service = %service, version = %version, stream = %"stderr", "{text}")
            }
        }
        self.line.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().emit();
        Poll::Ready(Ok(()))
    }
}
