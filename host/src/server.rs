//! The HTTP/1.1 listeners (plugin traffic and the admin API), hardened
//! against hostile clients: a cap on open connections, on header count and
//! size (431), a deadline for the request head that also closes idle
//! keep-alive connections, TCP_NODELAY, and a graceful shutdown that lets
//! requests in flight finish.
//!
//! Invariant: a full listener never makes a new client wait behind idle
//! connections. At the cap, the connection idle the longest (no request in
//! flight) is closed to make room; only when every connection is busy does
//! a new client wait. An optional per-peer cap refuses a client that holds
//! too many connections already, so one address cannot take every slot.
//!
//! (The request body is read with its own size and time bounds in
//! [`crate::front`], once the service — and so its body limit — is known.)

use crate::config::HttpLimits;
use anyhow::Result;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// How long a connection must have been idle to be closed for a newcomer.
const MIN_IDLE: Duration = Duration::from_millis(100);

/// One open connection, as the listener sees it.
struct Conn {
    /// Whether it is busy, and since when it is idle.
    usage: Arc<Usage>,
    /// Tells it to close once its current request (if any) is answered.
    evict: Arc<Notify>,
    peer: IpAddr,
}

/// What a connection's requests tell the listener.
struct Usage {
    /// Requests running on it now.
    active: AtomicUsize,
    /// When its last request ended (or it opened), in ms since the listener
    /// started.
    idle_since: AtomicU64,
}

/// The open connections of one listener.
#[derive(Default)]
struct Conns {
    open: Mutex<HashMap<u64, Conn>>,
    next: AtomicU64,
}

impl Conns {
    /// Closes the connection idle the longest (for at least [`MIN_IDLE`]:
    /// a client that just connected is about to send its request); says
    /// whether there was one. `now` is the time since the listener started.
    fn evict_oldest_idle(&self, now: Duration) -> bool {
        let now = now.as_millis() as u64;
        let min_idle = MIN_IDLE.as_millis() as u64;
        let Ok(mut open) = self.open.lock() else {
            return false;
        };
        let oldest = open
            .iter()
            .filter(|(_, c)| c.usage.active.load(Ordering::Acquire) == 0)
            .filter(|(_, c)| c.usage.idle_since.load(Ordering::Acquire) + min_idle <= now)
            .min_by_key(|(_, c)| c.usage.idle_since.load(Ordering::Acquire))
            .map(|(id, _)| *id);
        // Out of the table at once, so the next accept picks another.
        match oldest.and_then(|id| open.remove(&id)) {
            Some(conn) => {
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn held_by(&self, peer: IpAddr) -> usize {
        self.open
            .lock()
            .map_or(0, |open| open.values().filter(|c| c.peer == peer).count())
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits (at most `drain`) for open requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> Result<()> {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let conns = Arc::new(Conns::default());
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warned_full = false;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, never exit.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                warned_full = false;
                permit
            }
            Err(_) => {
                // A client is here and the cap is reached: make room by
                // closing the connection idle the longest; wait only when
                // every connection has a request running.
                let mut evicted = conns.evict_oldest_idle(started.elapsed());
                if !evicted && !warned_full {
                    tracing::warn!(
                        limit = max,
                        "connection limit reached with every connection busy; new clients wait until one closes"
                    );
                    warned_full = true;
                }
                let mut retry = tokio::time::interval(MIN_IDLE / 2);
                retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let waited = loop {
                    tokio::select! {
                        permit = slots.clone().acquire_owned() => match permit {
                            Ok(p) => break Some(p),
                            Err(_) => break None,
                        },
                        () = &mut shutdown => break None,
                        // A connection may have gone idle since: try again.
                        _ = retry.tick(), if !evicted => {
                            evicted = conns.evict_oldest_idle(started.elapsed());
                        }
                    }
                };
                match waited {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        if limits.max_connections_per_peer > 0
            && conns.held_by(peer.ip()) >= limits.max_connections_per_peer
        {
            tracing::debug!(%peer, limit = limits.max_connections_per_peer, "refused: too many connections from this peer");
            drop(tcp);
            continue;
        }
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let id = conns.next.fetch_add(1, Ordering::Relaxed);
        let usage = Arc::new(Usage {
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(started.elapsed().as_millis() as u64),
        });
        let evict = Arc::new(Notify::new());
        let conn = Conn {
            usage: usage.clone(),
            evict: evict.clone(),
            peer: peer.ip(),
        };
        if let Ok(mut open) = conns.open.lock() {
            open.insert(id, conn);
        }
        let tracked = {
            let app = app.clone();
            tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                usage.active.fetch_add(1, Ordering::AcqRel);
                let guard = Busy {
                    usage: usage.clone(),
                    started,
                };
                let call = tower::ServiceExt::oneshot(app.clone(), req);
                async move {
                    let resp = call.await;
                    drop(guard);
                    resp
                }
            })
        };
        let service = TowerToHyperService::new(tracked);
        let conn = builder.serve_connection(TokioIo::new(tcp), service);
        let (conns, mut stop) = (conns.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let mut closing = false;
            let result = loop {
                tokio::select! {
                    result = conn.as_mut() => break result,
                    () = evict.notified(), if !closing => {
                        tracing::debug!(%peer, "closing an idle connection to make room");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ = stop.changed(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            if let Ok(mut open) = conns.open.lock() {
                open.remove(&id);
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back = drained.
    tokio::select! {
        _ = slots.acquire_many(max as u32) => {}
        () = tokio::time::sleep(drain) => {
            tracing::warn!("requests still running after {drain:?}; stopping anyway");
        }
    }
    Ok(())
}

/// Marks a request running on its connection until dropped.
struct Busy {
    usage: Arc<Usage>,
    started: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.usage
            .idle_since
            .store(self.started.elapsed().as_millis() as u64, Ordering::Release);
        self.usage.active.fetch_sub(1, Ordering::AcqRel);
    }
}
