//! The message log on NATS JetStream (`--messaging nats://…`): what a
//! cluster's replicas share so that each message is handled once across
//! them, with the embedded log's max-deliver, back-off and dead letters.
//!
//! Invariant: a message for group `G` is one JetStream message on subject
//! `wh.msg.<G>` of the stream `WASMHOST_MESSAGES` (work-queue retention: it
//! is gone once acknowledged or terminated, never before). `G`'s one
//! durable pull consumer `wh_<G>` is shared by every replica, so JetStream
//! leases each message to one of them at a time and hands it out again
//! after its ack-wait when that replica dies. A dead letter is published to
//! `wh.dead.<G>` of `WASMHOST_DEAD` (kept 14 days) before the original is
//! terminated: a crash between the two leaves a duplicate dead letter,
//! never a lost message. `<G>` is the group key with every byte outside
//! `[A-Za-z0-9-]` written `_XX`.

use crate::messages::{now_ms, DeadLetter, Delivery, GroupStats, Outgoing, Settle};
use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The stream of messages waiting for their group.
pub const MESSAGES: &str = "WASMHOST_MESSAGES";
/// The stream of dead letters.
pub const DEAD: &str = "WASMHOST_DEAD";
/// How long a message or a dead letter is kept at most.
pub const RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// What travels with a message besides its body, as one JSON header.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    topic: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    published_at_ms: u64,
    #[serde(default)]
    not_before_ms: u64,
    #[serde(default)]
    key: Option<String>,
}

/// Why a dead letter is one, as a second JSON header.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dead {
    attempts: u32,
    reason: String,
    version: String,
    at_ms: u64,
}

const META: &str = "Wh-Meta";
const DEAD_HEADER: &str = "Wh-Dead";

/// The subject token (and consumer name part) of a group key.
pub fn token(group: &str) -> String {
    let mut out = String::with_capacity(group.len());
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

fn message_subject(group: &str) -> String {
    format!("wh.msg.{}", token(group))
}

fn dead_subject(group: &str) -> String {
    format!("wh.dead.{}", token(group))
}

/// Without its credentials, for logs and errors.
pub fn redacted(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((scheme_and_user, host)) => {
            let scheme = scheme_and_user.split("://").next().unwrap_or("nats");
            format!("{scheme}://…@{host}")
        }
        None => url.to_string(),
    }
}

/// Makes the two streams where they are missing (a server that lost its
/// store gets them back).
async fn streams(js: &jetstream::Context, url: &str) -> Result<(stream::Stream, stream::Stream)> {
    let messages = js
        .get_or_create_stream(stream::Config {
            name: MESSAGES.into(),
            subjects: vec!["wh.msg.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            max_age: RETENTION,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .with_context(|| {
            format!("cannot make the stream {MESSAGES} on {url} (is JetStream on? nats-server -js)")
        })?;
    let dead = js
        .get_or_create_stream(stream::Config {
            name: DEAD.into(),
            subjects: vec!["wh.dead.>".into()],
            max_age: RETENTION,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot make the stream {DEAD} on {url}"))?;
    Ok((messages, dead))
}

/// Each group's consumer, with the (ack-wait, one-at-a-time) it was made with.
type Consumers = HashMap<String, (jetstream::consumer::PullConsumer, Duration, bool)>;

struct Connected {
    js: jetstream::Context,
    messages: stream::Stream,
    dead: stream::Stream,
}

/// The message log of a cluster, on one NATS server or cluster.
#[derive(Clone)]
pub struct NatsLog {
    url: String,
    connected: Arc<tokio::sync::OnceCell<Connected>>,
    /// Deliveries this replica holds now, by (group, stream sequence):
    /// what their outcome acknowledges.
    held: Arc<Mutex<HashMap<(String, u64), jetstream::Message>>>,
    /// Consumers made this run, with the (ack-wait, one-at-a-time) they
    /// were made with.
    consumers: Arc<tokio::sync::Mutex<Consumers>>,
}

impl NatsLog {
    /// A log on `url` (`nats://HOST:PORT`); connects on first use.
    pub fn new(url: &str) -> Result<Self> {
        if !url.starts_with("nats://") && !url.starts_with("tls://") {
            bail!(
                "`{}` is not a NATS URL: expected nats://HOST:PORT",
                redacted(url)
            );
        }
        Ok(Self {
            url: url.to_string(),
            connected: Arc::default(),
            held: Arc::default(),
            consumers: Arc::default(),
        })
    }

    /// The server's URL without credentials.
    pub fn redacted(&self) -> String {
        redacted(&self.url)
    }

    /// Connects (once) and makes the two streams if they are missing.
    async fn connected(&self) -> Result<&Connected> {
        self.connected
            .get_or_try_init(|| async {
                let url = self.redacted();
                let events_url = url.clone();
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .event_callback(move |event| {
                        let url = events_url.clone();
                        async move {
                            match event {
                                async_nats::Event::Disconnected => {
                                    tracing::warn!(%url, "the message broker is unreachable; deliveries wait")
                                }
                                async_nats::Event::Connected => {
                                    tracing::info!(%url, "the message broker answers")
                                }
                                other => tracing::debug!(%url, event = %other, "message broker event"),
                            }
                        }
                    })
                    .connect(&self.url)
                    .await
                    .with_context(|| format!("the NATS at {url} does not answer"))?;
                let js = jetstream::new(client);
                let (messages, dead) = streams(&js, &url).await?;
                Ok::<_, anyhow::Error>(Connected { js, messages, dead })
            })
            .await
    }

    /// Connects now: a replica that cannot reach its broker does not start.
    pub async fn check(&self) -> Result<()> {
        self.connected().await.map(|_| ())
    }

    /// Publishes each message to every group it is for, and waits until
    /// JetStream has stored each.
    pub async fn publish(&self, messages: &[Outgoing]) -> Result<()> {
        let c = self.connected().await?;
        // Refused at once while the broker is away, rather than queued
        // and stored after the request was told it failed.
        if c.js.client().connection_state() != async_nats::connection::State::Connected {
            bail!("the message broker at {} is unreachable", self.redacted());
        }
        if let Some(m) = messages
            .iter()
            .find(|m| m.body.len() > crate::messages::MAX_MESSAGE_BYTES)
        {
            bail!(
                "message {} is larger than {} bytes",
                m.id,
                crate::messages::MAX_MESSAGE_BYTES
            );
        }
        if self.publish_once(c, messages).await.is_ok() {
            return Ok(());
        }
        // A server that lost its store has no stream to take them: make it
        // again and publish once more (what was stored is not stored twice:
        // the message ids are JetStream's dedup keys).
        streams(&c.js, &self.redacted()).await?;
        self.consumers.lock().await.clear();
        self.publish_once(c, messages).await
    }

    async fn publish_once(&self, c: &Connected, messages: &[Outgoing]) -> Result<()> {
        let mut acks = Vec::new();
        for m in messages {
            let meta = Meta {
                id: m.id.clone(),
                topic: m.topic.clone(),
                headers: m.headers.clone(),
                published_at_ms: m.published_at_ms,
                not_before_ms: m.not_before_ms,
                key: m.key.clone(),
            };
            let meta = serde_json::to_string(&meta)?;
            for (group, _) in &m.groups {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(META, meta.as_str());
                // A publish retried after a lost answer is stored once.
                headers.insert("Nats-Msg-Id", format!("{}:{group}", m.id).as_str());
                let ack = c
                    .js
                    .publish_with_headers(message_subject(group), headers, m.body.clone().into())
                    .await
                    .context("cannot publish to JetStream")?;
                acks.push(ack);
            }
        }
        for ack in acks {
            ack.await.context("JetStream did not store a message")?;
        }
        Ok(())
    }

    /// The group's consumer, made (or brought up to date) on first use.
    async fn consumer(
        &self,
        group: &str,
        lease: Duration,
        one_at_a_time: bool,
    ) -> Result<jetstream::consumer::PullConsumer> {
        let mut consumers = self.consumers.lock().await;
        if let Some((consumer, l, o)) = consumers.get(group) {
            if *l == lease && *o == one_at_a_time {
                return Ok(consumer.clone());
            }
        }
        let c = self.connected().await?;
        let name = format!("wh_{}", token(group));
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: message_subject(group),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: lease,
            // The delivery loop counts attempts and dead-letters; JetStream
            // must never drop a message on its own.
            max_deliver: -1,
            max_ack_pending: if one_at_a_time { 1 } else { 10_000 },
            ..Default::default()
        };
        // Made, or (when it exists) brought up to the settings given; once
        // more after making the streams, for a server that lost its store.
        let consumer = match c.messages.create_consumer(config.clone()).await {
            Ok(consumer) => consumer,
            Err(_) => {
                streams(&c.js, &self.redacted()).await?;
                c.messages
                    .create_consumer(config)
                    .await
                    .with_context(|| format!("cannot make the consumer {name}"))?
            }
        };
        consumers.insert(group.to_string(), (consumer.clone(), lease, one_at_a_time));
        Ok(consumer)
    }

    /// Leases up to `max` of `group`'s ready messages for `lease`.
    /// `one_at_a_time` (a subscription ordered by key) lets JetStream hand
    /// out one message of the group at a time across every replica.
    pub async fn claim(
        &self,
        group: &str,
        max: usize,
        lease: Duration,
        one_at_a_time: bool,
    ) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let c = self.connected().await?;
        if c.js.client().connection_state() != async_nats::connection::State::Connected {
            // Said once, by the connection's events; deliveries wait.
            return Ok(Vec::new());
        }
        let consumer = self.consumer(group, lease, one_at_a_time).await?;
        let mut batch = match consumer.fetch().max_messages(max).messages().await {
            Ok(batch) => batch,
            Err(error) => {
                // Made again next time (the server may have lost it).
                self.consumers.lock().await.remove(group);
                return Err(anyhow::anyhow!("cannot fetch from JetStream: {error}"));
            }
        };
        let mut out = Vec::new();
        let now = now_ms();
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(m) => m,
                Err(error) => {
                    tracing::debug!(%group, %error, "fetch ended");
                    break;
                }
            };
            let Some((seq, delivered)) = message
                .info()
                .ok()
                .map(|i| (i.stream_sequence, i.delivered.max(1) as u32))
            else {
                continue;
            };
            let meta = message
                .headers
                .as_ref()
                .and_then(|h| h.get(META))
                .and_then(|v| serde_json::from_str::<Meta>(v.as_str()).ok());
            let Some(meta) = meta else {
                // Not ours: never handed to a service, never redelivered.
                tracing::warn!(%group, seq, "a message without wasmhost's header is dropped");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            };
            if meta.not_before_ms > now {
                let wait = Duration::from_millis(meta.not_before_ms - now);
                let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
                continue;
            }
            // A delayed message was handed out once early and put back.
            let deferred = meta.not_before_ms > meta.published_at_ms && delivered > 1;
            let attempt = delivered - u32::from(deferred);
            out.push(Delivery {
                group: group.to_string(),
                seq,
                id: meta.id,
                topic: meta.topic,
                headers: meta.headers,
                body: message.payload.to_vec(),
                published_at_ms: meta.published_at_ms,
                key: meta.key,
                attempt,
            });
            if let Ok(mut held) = self.held.lock() {
                held.insert((group.to_string(), seq), message);
            }
        }
        Ok(out)
    }

    fn take(&self, group: &str, seq: u64) -> Option<jetstream::Message> {
        self.held
            .lock()
            .ok()
            .and_then(|mut h| h.remove(&(group.to_string(), seq)))
    }

    /// Records deliveries' outcomes: an ack, a retry after its back-off, or
    /// a dead letter (stored, then the message terminated).
    pub async fn settle(&self, outcomes: &[(String, u64, Settle)]) -> Result<()> {
        let mut failed = None;
        for (group, seq, outcome) in outcomes {
            let Some(message) = self.take(group, *seq) else {
                continue;
            };
            let done = match outcome {
                Settle::Ack => message.ack().await.map_err(|e| anyhow::anyhow!("{e}")),
                Settle::RetryAt(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    message
                        .ack_with(AckKind::Nak(Some(wait)))
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))
                }
                Settle::Dead {
                    attempts,
                    reason,
                    version,
                    at,
                } => {
                    let dead = Dead {
                        attempts: *attempts,
                        reason: reason.clone(),
                        version: version.clone(),
                        at_ms: *at,
                    };
                    self.bury(group, &message, &dead).await
                }
            };
            if let Err(error) = done {
                failed = Some(error);
            }
        }
        match failed {
            Some(error) => Err(error.context("cannot record a delivery's outcome in JetStream")),
            None => Ok(()),
        }
    }

    async fn bury(&self, group: &str, message: &jetstream::Message, dead: &Dead) -> Result<()> {
        let c = self.connected().await?;
        let mut headers = async_nats::HeaderMap::new();
        if let Some(meta) = message.headers.as_ref().and_then(|h| h.get(META)) {
            headers.insert(META, meta.as_str());
        }
        headers.insert(DEAD_HEADER, serde_json::to_string(dead)?.as_str());
        c.js.publish_with_headers(dead_subject(group), headers, message.payload.clone())
            .await
            .context("cannot publish a dead letter")?
            .await
            .context("JetStream did not store a dead letter")?;
        message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Tells JetStream the handler of `seq` still runs: its ack-wait starts
    /// again.
    pub async fn extend_lease(&self, group: &str, seq: u64) -> Result<()> {
        let held = self.held.lock().ok().and_then(|h| {
            h.get(&(group.to_string(), seq))
                .map(|m| (m.context.clone(), m.reply.clone()))
        });
        if let Some((context, Some(reply))) = held {
            context
                .client()
                .publish(reply, AckKind::Progress.into())
                .await
                .context("cannot extend a lease")?;
        }
        Ok(())
    }

    /// Up to `limit` of `group`'s dead letters, oldest first.
    pub async fn dead_letters(&self, group: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .raw_dead(group, limit)
            .await?
            .into_iter()
            .map(|(letter, _)| letter)
            .collect())
    }

    async fn raw_dead(
        &self,
        group: &str,
        limit: usize,
    ) -> Result<Vec<(DeadLetter, jetstream::message::StreamMessage)>> {
        let c = self.connected().await?;
        let subject = dead_subject(group);
        let mut out = Vec::new();
        let mut from = 1;
        while out.len() < limit {
            let raw = match c
                .dead
                .get_first_raw_message_by_subject(&subject, from)
                .await
            {
                Ok(raw) => raw,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(anyhow::anyhow!("cannot read the dead letters: {e}")),
            };
            from = raw.sequence + 1;
            let meta = raw
                .headers
                .get(META)
                .and_then(|v| serde_json::from_str::<Meta>(v.as_str()).ok());
            let dead = raw
                .headers
                .get(DEAD_HEADER)
                .and_then(|v| serde_json::from_str::<Dead>(v.as_str()).ok());
            let (Some(meta), Some(dead)) = (meta, dead) else {
                continue;
            };
            out.push((
                DeadLetter {
                    seq: raw.sequence,
                    id: meta.id,
                    topic: meta.topic,
                    attempts: dead.attempts,
                    reason: dead.reason,
                    version: dead.version,
                    at_ms: dead.at_ms,
                },
                raw,
            ));
        }
        Ok(out)
    }

    /// Hands `group`'s dead letters (those named, or all) to it again as
    /// new messages; returns how many.
    pub async fn replay(&self, group: &str, seqs: Option<&[u64]>) -> Result<u64> {
        let c = self.connected().await?;
        let letters = self.raw_dead(group, usize::MAX).await?;
        let mut replayed = 0;
        for (letter, raw) in letters {
            if seqs.is_some_and(|s| !s.contains(&letter.seq)) {
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            if let Some(meta) = raw.headers.get(META) {
                let mut meta: Meta = serde_json::from_str(meta.as_str())?;
                meta.not_before_ms = 0;
                headers.insert(META, serde_json::to_string(&meta)?.as_str());
            }
            c.js.publish_with_headers(message_subject(group), headers, raw.payload.clone())
                .await
                .context("cannot publish a replayed message")?
                .await
                .context("JetStream did not store a replayed message")?;
            c.dead
                .delete_message(letter.seq)
                .await
                .map_err(|e| anyhow::anyhow!("cannot remove a replayed dead letter: {e}"))?;
            replayed += 1;
        }
        Ok(replayed)
    }

    /// Drops `group`'s dead letters; returns how many.
    pub async fn purge(&self, group: &str) -> Result<u64> {
        let c = self.connected().await?;
        let purged = c
            .dead
            .purge()
            .filter(dead_subject(group))
            .await
            .map_err(|e| anyhow::anyhow!("cannot purge the dead letters: {e}"))?;
        Ok(purged.purged)
    }

    /// `group`'s counts as JetStream keeps them: waiting (never handed
    /// out), leased or waiting for a redelivery, redelivered, dead.
    pub async fn group_stats(&self, group: &str, now: u64) -> Result<GroupStats> {
        let c = self.connected().await?;
        let name = format!("wh_{}", token(group));
        let mut stats = GroupStats::default();
        if let Ok(info) = c.messages.consumer_info(&name).await {
            stats.backlog = info.num_pending;
            stats.in_flight = info.num_ack_pending as u64;
            stats.redelivering = info.num_redelivered as u64;
        }
        let subject = dead_subject(group);
        let mut subjects = c
            .dead
            .info_with_subjects(&subject)
            .await
            .map_err(|e| anyhow::anyhow!("cannot count the dead letters: {e}"))?;
        while let Some(Ok((s, n))) = subjects.next().await {
            if s == subject {
                stats.dead_letters = n as u64;
            }
        }
        if let Ok(oldest) = c
            .messages
            .get_first_raw_message_by_subject(message_subject(group), 1)
            .await
        {
            let published = oldest
                .headers
                .get(META)
                .and_then(|v| serde_json::from_str::<Meta>(v.as_str()).ok())
                .map_or(now, |m| m.published_at_ms);
            stats.lag_ms = now.saturating_sub(published);
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_become_subject_tokens() {
        assert_eq!(token("order/order"), "order_2Forder");
        assert_eq!(token("a.b*c>d_e"), "a_2Eb_2Ac_3Ed_5Fe");
        assert_ne!(token("a_2F"), token("a/"));
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redacted("nats://u:secret@h:4222"), "nats://…@h:4222");
        assert_eq!(redacted("nats://h:4222"), "nats://h:4222");
        assert!(NatsLog::new("redis://h").is_err());
    }
}
