//! The delivery loop: hands each group's ready messages to its service,
//! at least once.
//!
//! Every [`POLL`] (or at once when a request stored messages) it claims, for
//! each `[[subscribe]]` of a loaded service, as many ready deliveries as
//! the subscription's `max-in-flight` leaves room for, leased for its
//! `ack-wait`, and runs each on a task of its own:
//! - the version is picked by the release policy like a request's (an
//!   ejected version's share goes to the stable one); a delivery that fails
//!   on a version other than the stable one is handed to the stable version
//!   at once, so a failing canary dead-letters nothing — and the failure
//!   still counts against the canary;
//! - while the handler runs its lease is extended every half `ack-wait`, so
//!   a slow handler is never handed the same message twice;
//! - an ack deletes the delivery; a retry (or a trap, a limit, a timeout)
//!   schedules the next attempt after the back-off (±20%); the last allowed
//!   attempt, or a reject, moves it to the dead letters in one transaction.
//!
//! Invariant: a delivery's state lives only in the message log, so a crash
//! loses nothing: an expired lease makes a message ready again.

use crate::dispatch::{Delivered, Dispatcher};
use crate::kv::KvStore;
use crate::manifest::Subscription;
use crate::messages::{now_ms, Delivery, Settle};
use crate::registry::{group_key, ServiceEntry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the loop looks for ready deliveries without being woken.
pub const POLL: Duration = Duration::from_millis(100);

/// One delivery's outcome for the settler, and who waits for it.
struct Outcome {
    row: (String, u64, Settle),
    done: tokio::sync::oneshot::Sender<()>,
}

/// Outcomes recorded in one transaction at most.
const SETTLE_BATCH: usize = 1024;

/// Records deliveries' outcomes as they come, all that queued up meanwhile
/// in one transaction (group commit: one disk flush for many acks).
async fn settler(kv: KvStore, mut outcomes: mpsc::UnboundedReceiver<Outcome>) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        while batch.len() < SETTLE_BATCH {
            match outcomes.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let kv = kv.clone();
        let n = batch.len();
        let (rows, done): (Vec<_>, Vec<_>) = batch.into_iter().map(|o| (o.row, o.done)).unzip();
        let written = tokio::task::spawn_blocking(move || kv.settle(&rows)).await;
        for done in done {
            let _ = done.send(());
        }
        if !matches!(written, Ok(Ok(()))) {
            // Their leases run out and the messages come back: at least once.
            let error = match written {
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
                Ok(Ok(())) => String::new(),
            };
            tracing::error!(deliveries = n, %error, "cannot record deliveries' outcomes; they will be delivered again");
        }
    }
}

/// Runs the delivery loop until the task is dropped.
pub async fn run(dispatcher: Arc<Dispatcher>) {
    let kv = dispatcher.kv().clone();
    let (settle, outcomes) = mpsc::unbounded_channel();
    let _settler = AbortOnDrop(tokio::spawn(settler(kv.clone(), outcomes)));
    // Woken when a delivery ends: its slot is free for the next message.
    let freed = Arc::new(tokio::sync::Notify::new());
    let mut in_flight: HashMap<String, Arc<AtomicUsize>> = HashMap::new();
    loop {
        let woken = dispatcher.published().notified();
        let slot = freed.notified();
        let snapshot = dispatcher.snapshot();
        for (service, sub) in snapshot.registry.subscriptions() {
            let Some(entry) = snapshot.registry.service(service) else {
                continue;
            };
            let group = group_key(service, sub.group_name(service));
            let running = in_flight.entry(group.clone()).or_default().clone();
            let room = (sub.max_in_flight as usize).saturating_sub(running.load(Ordering::Acquire));
            if room == 0 {
                continue;
            }
            let lease = ack_wait(entry, sub);
            let claimed = {
                let kv = kv.clone();
                let group = group.clone();
                let lease_ms = millis(lease);
                tokio::task::spawn_blocking(move || kv.claim(&group, now_ms(), room, lease_ms))
                    .await
            };
            let deliveries = match claimed {
                Ok(Ok(d)) => d,
                Ok(Err(error)) => {
                    tracing::error!(%group, error = format_args!("{error:#}"), "cannot read the message log");
                    continue;
                }
                Err(_) => continue,
            };
            for delivery in deliveries {
                running.fetch_add(1, Ordering::AcqRel);
                let task = Task {
                    dispatcher: dispatcher.clone(),
                    kv: kv.clone(),
                    settle: settle.clone(),
                    freed: freed.clone(),
                    entry: entry.clone(),
                    sub: sub.clone(),
                    lease,
                    running: running.clone(),
                };
                tokio::spawn(task.handle(delivery));
            }
        }
        tokio::select! {
            () = woken => {}
            () = slot => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// A subscription's lease: `ack-wait`, or the service's timeout + 5 s.
fn ack_wait(entry: &ServiceEntry, sub: &Subscription) -> Duration {
    sub.ack_wait.unwrap_or_else(|| {
        entry
            .versions
            .last()
            .map_or(crate::config::DEFAULT_TIMEOUT, |v| v.sandbox.limits.timeout)
            + Duration::from_secs(5)
    })
}

/// One delivery on its way.
struct Task {
    dispatcher: Arc<Dispatcher>,
    kv: KvStore,
    settle: mpsc::UnboundedSender<Outcome>,
    freed: Arc<tokio::sync::Notify>,
    entry: ServiceEntry,
    sub: Subscription,
    lease: Duration,
    running: Arc<AtomicUsize>,
}

impl Task {
    async fn handle(self, delivery: Delivery) {
        let group = delivery.group.clone();
        let seq = delivery.seq;
        let outcome = {
            let handled = self.run(&delivery);
            tokio::pin!(handled);
            // Extend the lease while the handler still runs.
            let mut renew = tokio::time::interval(self.lease / 2);
            renew.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut handled => break outcome,
                    _ = renew.tick() => {
                        let until = now_ms().saturating_add(millis(self.lease));
                        let kv = self.kv.clone();
                        let group = group.clone();
                        let _ = tokio::task::spawn_blocking(move || kv.extend_lease(&group, seq, until)).await;
                    }
                }
            }
        };
        let service = &self.entry.name;
        let attempt = delivery.attempt;
        let (max, dead_letter) = (self.sub.max_deliver, self.sub.dead_letter);
        let (delivered, handled_by) = &outcome;
        let version = handled_by
            .as_ref()
            .map_or_else(String::new, |v| v.version.to_string());
        let next = match delivered {
            Delivered::Ack => Next::Ack,
            Delivered::Reject(reason) => Next::Dead(format!("rejected: {reason}"), version),
            Delivered::Retry(_) | Delivered::Failed(_) if attempt >= max => {
                let why = match delivered {
                    Delivered::Failed(e) => e.to_string(),
                    _ => "the handler asked for a retry".to_string(),
                };
                Next::Dead(
                    format!("{attempt} deliveries failed (last: {why})"),
                    version,
                )
            }
            Delivered::Retry(Some(ms)) => Next::Retry(Duration::from_millis(u64::from(*ms))),
            Delivered::Retry(None) | Delivered::Failed(_) => {
                Next::Retry(self.sub.retry_delay(attempt + 1, fastrand::f64()))
            }
        };
        if let (Next::Ack, Some(v)) = (&next, handled_by) {
            let waited = now_ms().saturating_sub(delivery.published_at_ms);
            v.deliveries
                .latency
                .start()
                .finish(200, false, Duration::from_millis(waited));
        }
        match &next {
            Next::Ack => {
                tracing::debug!(%service, %group, id = %delivery.id, attempt, "message handled")
            }
            Next::Retry(wait) => {
                tracing::info!(%service, %group, id = %delivery.id, attempt, retry_in_ms = wait.as_millis() as u64, "message will be delivered again")
            }
            Next::Dead(reason, version) => {
                tracing::warn!(%service, %group, id = %delivery.id, attempt, %version, %reason, "message moved to the dead letters")
            }
        }
        let settled = match next {
            Next::Ack => Settle::Ack,
            Next::Retry(wait) => Settle::RetryAt(now_ms().saturating_add(millis(wait))),
            Next::Dead(reason, version) if dead_letter => Settle::Dead {
                attempts: attempt,
                reason,
                version,
                at: now_ms(),
            },
            Next::Dead(..) => Settle::Ack,
        };
        // Recorded by the settler with every outcome queued meanwhile (a
        // crash before that redelivers it); the slot frees once it is, so
        // leased deliveries never outnumber max-in-flight.
        let (done, recorded) = tokio::sync::oneshot::channel();
        if self
            .settle
            .send(Outcome {
                row: (group, seq, settled),
                done,
            })
            .is_ok()
        {
            let _ = recorded.await;
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }

    /// Runs the handler on the version the release policy picks, and on
    /// the stable version when that one fails; returns the outcome and the
    /// version it came from (none when the service has no version now).
    async fn run(&self, delivery: &Delivery) -> (Delivered, Option<Arc<crate::registry::Version>>) {
        let msg = crate::bindings::v2::wasmhost::plugin::messaging::Message {
            id: delivery.id.clone(),
            topic: delivery.topic.clone(),
            headers: delivery.headers.clone(),
            body: delivery.body.clone(),
            attempt: delivery.attempt,
            published_at_ms: delivery.published_at_ms,
        };
        let (version, stable) = match self
            .dispatcher
            .pick_for_message(&self.entry.name, &delivery.headers)
        {
            Some(picked) => picked,
            None => return (Delivered::Retry(None), None),
        };
        let first = self.dispatcher.deliver(&version, &msg).await;
        let failed = matches!(first, Delivered::Retry(_) | Delivered::Failed(_));
        match stable.filter(|s| {
            failed && s.version != version.version && version.sandbox.resilience.fallback
        }) {
            Some(stable) => {
                tracing::debug!(service = %version.service, from = %version.version, to = %stable.version, "message handed to the stable version");
                version.counters.fell_back(&stable.version);
                let second = self.dispatcher.deliver(&stable, &msg).await;
                (second, Some(stable))
            }
            None => (first, Some(version)),
        }
    }
}

/// What becomes of a delivery.
enum Next {
    Ack,
    Retry(Duration),
    Dead(String, String),
}

/// Aborts a task when dropped (the settler dies with the loop).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `d` in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
