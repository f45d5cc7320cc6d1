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

use crate::bus::Bus;
use crate::dispatch::{Delivered, Dispatcher};
use crate::manifest::Subscription;
use crate::messages::{now_ms, Delivery, Settle};
use crate::registry::{group_key, ServiceEntry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

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
async fn settler(bus: Bus, mut outcomes: mpsc::UnboundedReceiver<Outcome>) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        while batch.len() < SETTLE_BATCH {
            match outcomes.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let (rows, done): (Vec<_>, Vec<_>) = batch.into_iter().map(|o| (o.row, o.done)).unzip();
        let written = bus.settle(rows).await;
        for done in done {
            let _ = done.send(());
        }
        if let Err(error) = written {
            // Their leases run out and the messages come back: at least once.
            tracing::error!(deliveries = n, error = %format!("{error:#}"), "cannot record deliveries' outcomes; they will be delivered again");
        }
    }
}

/// Runs the delivery loop until the task is dropped.
pub async fn run(dispatcher: Arc<Dispatcher>) {
    let bus = dispatcher.bus().clone();
    let (settle, outcomes) = mpsc::unbounded_channel();
    let _settler = AbortOnDrop(tokio::spawn(settler(bus.clone(), outcomes)));
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
            let claimed = bus
                .claim(&group, room, lease, sub.ordered_by.is_some())
                .await;
            let deliveries = match claimed {
                Ok(d) => d,
                Err(error) => {
                    tracing::error!(%group, error = format_args!("{error:#}"), "cannot read the message log");
                    continue;
                }
            };
            for delivery in deliveries {
                running.fetch_add(1, Ordering::AcqRel);
                let task = Task {
                    dispatcher: dispatcher.clone(),
                    bus: bus.clone(),
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
    bus: Bus,
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
        // A span per delivery, in the trace of the request that published it.
        let span = tracing::debug_span!(
            "deliver",
            service = self.entry.name.as_str(),
            topic = delivery.topic.as_str(),
            group = group.as_str(),
            attempt = delivery.attempt,
            otel.name = %format_args!("deliver {} to {}", delivery.topic, self.entry.name),
            otel.kind = "consumer",
        );
        crate::traces::continue_from(&span, crate::traces::Pairs(&delivery.headers));
        let outcome = {
            let handled = self.run(&delivery).instrument(span);
            tokio::pin!(handled);
            // Extend the lease while the handler still runs.
            let mut renew = tokio::time::interval(self.lease / 2);
            renew.tick().await;
            loop {
                tokio::select! {
                    outcome = &mut handled => break outcome,
                    _ = renew.tick() => {
                        let until = now_ms().saturating_add(millis(self.lease));
                        let _ = self.bus.extend_lease(&group, seq, until).await;
                    }
                }
            }
        };
        let service = &self.entry.name;
        let attempt = delivery.attempt;
        let (delivered, handled_by) = &outcome;
        let version = handled_by
            .as_ref()
            .map_or_else(String::new, |v| v.version.to_string());
        let next = Next::of(&self.sub, attempt, delivered, version, fastrand::f64());
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
        let settled = next.settle(attempt, self.sub.dead_letter, now_ms());
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
            key: delivery.key.clone(),
        };
        let sticky = self
            .sub
            .sticky
            .as_ref()
            .and_then(|s| s.of(delivery.key.as_deref(), &delivery.headers));
        let (version, stable) =
            match self
                .dispatcher
                .pick_for_message(&self.entry.name, &delivery.headers, sticky)
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
#[derive(Debug, PartialEq)]
enum Next {
    Ack,
    /// Deliver again after this wait.
    Retry(Duration),
    /// Into the dead letters: why, and the version that failed it last.
    Dead(String, String),
}

impl Next {
    /// The subscription's rule for attempt `attempt` of a message whose
    /// handler did `delivered` on `version`; `roll` in `[0, 1)` places the
    /// back-off in its ±20% jitter.
    fn of(
        sub: &Subscription,
        attempt: u32,
        delivered: &Delivered,
        version: String,
        roll: f64,
    ) -> Self {
        match delivered {
            Delivered::Ack => Next::Ack,
            Delivered::Reject(reason) => Next::Dead(format!("rejected: {reason}"), version),
            Delivered::Retry(_) | Delivered::Failed(_) if attempt >= sub.max_deliver => {
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
                Next::Retry(sub.retry_delay(attempt + 1, roll))
            }
        }
    }

    /// The log's record of it at `now` (ms since the epoch): with
    /// `dead-letter = false` a message past its last attempt is dropped.
    fn settle(self, attempt: u32, dead_letter: bool, now: u64) -> Settle {
        match self {
            Next::Ack => Settle::Ack,
            Next::Retry(wait) => Settle::RetryAt(now.saturating_add(millis(wait))),
            Next::Dead(reason, version) if dead_letter => Settle::Dead {
                attempts: attempt,
                reason,
                version,
                at: now,
            },
            Next::Dead(..) => Settle::Ack,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvStore;
    use crate::messages::Outgoing;

    fn subscription(extra: &str) -> Subscription {
        let text = format!("[[subscribe]]\ntopic = \"t\"\n{extra}");
        crate::manifest::Manifest::parse(&text, "s.toml")
            .unwrap()
            .subscribe
            .remove(0)
    }

    /// Drives one message through the log with the delivery loop's own
    /// rules, on a clock the test moves: the handler always fails. Returns
    /// when each attempt was handed out (ms) and the dead letters.
    fn schedule(
        sub: &Subscription,
        roll: f64,
        delivered: impl Fn() -> Delivered,
    ) -> (Vec<u64>, Vec<crate::messages::DeadLetter>) {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        let message = Outgoing {
            id: "m".into(),
            topic: "t".into(),
            headers: Vec::new(),
            body: Vec::new(),
            published_at_ms: 0,
            not_before_ms: 0,
            key: None,
            groups: vec![("s/s".into(), None)],
        };
        kv.commit_request(None, &[message]).unwrap();
        let (mut now, mut handed) = (0u64, Vec::new());
        while let Some(d) = kv.claim("s/s", now, 16, 35_000).unwrap().pop() {
            assert_eq!(d.attempt as usize, handed.len() + 1);
            handed.push(now);
            let next = Next::of(sub, d.attempt, &delivered(), "1.0.0".into(), roll);
            // The handler took 10 ms.
            now += 10;
            let settled = next.settle(d.attempt, sub.dead_letter, now);
            kv.settle(&[("s/s".into(), d.seq, settled.clone())])
                .unwrap();
            let Settle::RetryAt(at) = settled else { break };
            // Not a millisecond early, and ready on time.
            assert!(kv.claim("s/s", at - 1, 16, 35_000).unwrap().is_empty());
            now = at;
        }
        assert!(kv.claim("s/s", now + 86_400_000, 16, 1).unwrap().is_empty());
        (handed, kv.dead_letters("s/s", 10).unwrap())
    }

    #[test]
    fn the_redelivery_schedule_on_virtual_time() {
        let sub = subscription("");
        // No jitter (roll ½): 1 s, 5 s, 30 s, 2 min after each failure, then
        // the fifth attempt is the last and one dead letter is written.
        let (handed, dead) = schedule(&sub, 0.5, || Delivered::Retry(None));
        let gaps: Vec<u64> = handed.windows(2).map(|w| w[1] - w[0] - 10).collect();
        assert_eq!(gaps, [1_000, 5_000, 30_000, 120_000]);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 5);
        assert!(
            dead[0].reason.contains("5 deliveries failed"),
            "{}",
            dead[0].reason
        );
        // The jitter's ends: 0.8× and 1.2× each wait.
        let (low, _) = schedule(&sub, 0.0, || Delivered::Retry(None));
        let (high, _) = schedule(&sub, 1.0, || Delivered::Retry(None));
        let gaps = |h: &[u64]| h.windows(2).map(|w| w[1] - w[0] - 10).collect::<Vec<_>>();
        assert_eq!(gaps(&low), [800, 4_000, 24_000, 96_000]);
        assert_eq!(gaps(&high), [1_200, 6_000, 36_000, 144_000]);
        // A handler's own delay wins; max-deliver and the last wait repeating.
        let sub3 = subscription("max-deliver = 7\nbackoff = [\"2s\", \"3s\"]");
        let (handed, dead) = schedule(&sub3, 0.5, || Delivered::Retry(None));
        assert_eq!(gaps(&handed), [2_000, 3_000, 3_000, 3_000, 3_000, 3_000]);
        assert_eq!(dead[0].attempts, 7);
        let (handed, _) = schedule(&sub, 0.5, || Delivered::Retry(Some(250)));
        assert_eq!(gaps(&handed), [250, 250, 250, 250]);
        // A reject: one attempt, one dead letter; without dead letters, none.
        let (handed, dead) = schedule(&sub, 0.5, || Delivered::Reject("bad".into()));
        assert_eq!((handed.len(), dead.len()), (1, 1));
        assert!(dead[0].reason.contains("rejected: bad"));
        let quiet = subscription("dead-letter = false");
        let (handed, dead) = schedule(&quiet, 0.5, || Delivered::Retry(None));
        assert_eq!((handed.len(), dead.len()), (5, 0));
    }
}
