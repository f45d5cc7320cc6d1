//! Fault tolerance: which failed attempts may be tried again, on which
//! version, how often, and when a version that keeps failing is taken out
//! of selection for a while.
//!
//! - [`ResiliencePolicy`] is a manifest's `[resilience]` table, parsed and
//!   checked once at load; every default is pinned by a unit test.
//! - [`Attempted`] is what one failed attempt was (not started, no
//!   response, an error status), and [`ResiliencePolicy::may_retry`] the rule
//!   that decides whether it is tried again: a failure before guest code ran
//!   always once; a failure without a response only when the request is
//!   safe; a guest's error status only when the manifest lists it (and the
//!   request is safe); 4xx and a call loop never.
//! - [`RetryBudget`] is the per-service token bucket (Finagle's, as
//!   `tower`'s `TpsBudget`) every retry and fallback draws on.
//! - [`Outlier`] is the ejection state of one version: serving, ejected
//!   until a deadline, or on probation with exactly one probe let through.
//!
//! Invariants: this module decides, it never runs anything; time is
//! `tokio::time::Instant`, so tests drive it on a paused clock; the request
//! path pays one relaxed atomic load per request for a version that is
//! serving.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

/// Header on a response answered by the stable version after the version
/// first chosen failed: names that version.
pub const FALLBACK_HEADER: &str = "x-wasmhost-fallback-from";
/// Header on a response that took more than one attempt: how many.
pub const ATTEMPTS_HEADER: &str = "x-wasmhost-attempts";
/// The request header that makes a non-idempotent request safe to retry
/// when the manifest says `idempotency-key = true`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// A wasi:http request body is buffered (and so replayable) up to this size.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;
/// The longest ejection penalty and back-off a manifest may set.
pub const MAX_PENALTY: Duration = Duration::from_secs(24 * 3600);

/// An ejected version's ejection count falls by one per this much time
/// spent serving again (Envoy decays its multiplier the same way).
pub const EJECTION_DECAY: Duration = Duration::from_secs(60);

/// A manifest's `[resilience]` table.
///
/// ```toml
/// [resilience]
/// retries = 1                 # extra attempts after a failure with no response
/// retry-on = [503]            # guest statuses retried too (default: none)
/// per-try-timeout = "2s"      # default: what is left of `timeout`
/// fallback = true             # a failed non-stable version falls back to stable
/// idempotency-key = false     # an `Idempotency-Key` header makes a request safe
/// transactional-kv = false    # a request's writes commit only with its response
/// backoff = { base = "25ms", max = "250ms" }
/// budget = { percent = 20, min-per-sec = 10, ttl = "10s" }
/// eject = { consecutive = 5, base = "30s", max = "300s" }   # consecutive = 0: never
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ResiliencePolicy {
    /// Extra attempts after a failure with no response (trap, cpu-time,
    /// timeout, out of memory, malformed response), when the request is safe.
    pub retries: u32,
    /// Guest response statuses (5xx) that are retried like a failure.
    pub retry_on: Vec<u16>,
    /// Longest single attempt; by default each gets what is left of `timeout`.
    #[serde(with = "humantime_serde")]
    pub per_try_timeout: Option<Duration>,
    /// Whether a failure on a non-stable version picked by weight or
    /// stickiness is tried again on the stable version.
    pub fallback: bool,
    /// Whether an `Idempotency-Key` request header makes any method safe.
    pub idempotency_key: bool,
    /// Whether a request's key-value writes are held back until it answers.
    pub transactional_kv: bool,
    /// Wait before a retry on the same version.
    pub backoff: BackoffPolicy,
    /// How many retries the service may make.
    pub budget: BudgetPolicy,
    /// When a failing version is taken out of selection.
    pub eject: EjectPolicy,
}

impl Default for ResiliencePolicy {
    fn default() -> Self {
        Self {
            retries: 1,
            retry_on: Vec::new(),
            per_try_timeout: None,
            fallback: true,
            idempotency_key: false,
            transactional_kv: false,
            backoff: BackoffPolicy::default(),
            budget: BudgetPolicy::default(),
            eject: EjectPolicy::default(),
        }
    }
}

/// Full-jitter exponential back-off (Envoy's): retry `n` waits a random
/// time below `min(max, base × (2ⁿ − 1))`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffPolicy {
    /// The first retry waits below this.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// No retry waits longer.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}

impl BackoffPolicy {
    /// The wait before retry `n` (1-based), drawn from `roll` in `[0, 1)`.
    pub fn delay(&self, n: u32, roll: f64) -> Duration {
        let factor = 2u32.saturating_pow(n.min(16)).saturating_sub(1);
        let ceiling = self.base.saturating_mul(factor).min(self.max);
        ceiling.mul_f64(roll.clamp(0.0, 1.0))
    }
}

/// The retry budget (Finagle's and Linkerd's): `percent` of the requests
/// of the last `ttl`, plus `min-per-sec` retries a second.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BudgetPolicy {
    /// Retries allowed per 100 requests.
    pub percent: u32,
    /// Retries allowed each second whatever the traffic.
    pub min_per_sec: u32,
    /// How long a request's credit lasts (1 to 60 s).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            percent: 20,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

/// Passive outlier detection per version.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EjectPolicy {
    /// Consecutive failures with no response that eject a version (0: never).
    pub consecutive: u32,
    /// The n-th ejection lasts `base × n`…
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// …at most this long.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for EjectPolicy {
    fn default() -> Self {
        Self {
            consecutive: 5,
            base: Duration::from_secs(30),
            max: Duration::from_secs(300),
        }
    }
}

impl ResiliencePolicy {
    /// Checks values serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(code) = self.retry_on.iter().find(|c| !(500..=599).contains(*c)) {
            return Err(format!(
                "`resilience.retry-on` lists {code}: only 5xx statuses can be retried (4xx never are)"
            ));
        }
        if self.retry_on.contains(&508) {
            return Err("`resilience.retry-on` lists 508: a call loop is never retried".into());
        }
        if self.retries > 5 {
            return Err(format!(
                "`resilience.retries` = {} is above 5 (each attempt shares the request's `timeout`)",
                self.retries
            ));
        }
        if self.per_try_timeout.is_some_and(|d| d.is_zero()) {
            return Err("`resilience.per-try-timeout` must be above zero".into());
        }
        let ttl = self.budget.ttl;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(60) {
            return Err("`resilience.budget.ttl` must be between 1s and 60s".into());
        }
        if self.budget.percent > 1000 {
            return Err("`resilience.budget.percent` must be at most 1000".into());
        }
        if self.backoff.max > MAX_PENALTY || self.eject.max > MAX_PENALTY {
            return Err(
                "`resilience.backoff.max` and `resilience.eject.max` must be at most 24h".into(),
            );
        }
        if self.backoff.base > self.backoff.max {
            return Err("`resilience.backoff.base` is above `resilience.backoff.max`".into());
        }
        if self.eject.consecutive > 0
            && (self.eject.base.is_zero() || self.eject.base > self.eject.max)
        {
            return Err(
                "`resilience.eject.base` must be above zero and at most `resilience.eject.max`"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether a request whose attempt failed as `failed` may be tried
    /// again, `retried` retries in already; `safe` says it may be repeated
    /// (see [`is_safe`]).
    pub fn may_retry(&self, failed: Attempted, safe: bool, retried: u32) -> bool {
        match failed {
            // Guest code never ran: once, whatever the method.
            Attempted::NotStarted => retried < self.retries.max(1),
            Attempted::NoResponse => safe && retried < self.retries,
            Attempted::Status(status) => {
                safe && retried < self.retries && self.retry_on.contains(&status)
            }
            Attempted::Final => false,
        }
    }
}

/// What a failed attempt was, for the retry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempted {
    /// Guest code never ran: the service was full, the host out of
    /// instances, the instance could not be created.
    NotStarted,
    /// Guest code ran and gave no usable response: a trap, a limit, a
    /// timeout, a malformed response.
    NoResponse,
    /// The guest answered with this status (5xx).
    Status(u16),
    /// Never retried: a call loop, a client error.
    Final,
}

/// Whether a request may be repeated: its method is idempotent (RFC 9110),
/// or it carries an idempotency key the service honours, or its failed
/// attempt left no trace (`untouched`).
pub fn is_safe(method: &str, idempotency_key: bool, untouched: bool) -> bool {
    untouched
        || idempotency_key
        || matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
}

/// Whether `method` cannot change anything (RFC 9110 "safe"): a request
/// sent with it does not mark an attempt as having touched the world.
pub fn is_read_only(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// The per-service retry budget.
pub struct RetryBudget {
    budget: TpsBudget,
    exhausted: AtomicU64,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("budget", &self.budget)
            .field("exhausted", &self.exhausted())
            .finish()
    }
}

impl RetryBudget {
    /// A budget as `policy` describes it (checked by
    /// [`ResiliencePolicy::validate`]).
    pub fn new(policy: &BudgetPolicy) -> Self {
        let ttl = policy
            .ttl
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let percent = policy.percent.min(1000) as f32 / 100.0;
        Self {
            budget: TpsBudget::new(ttl, policy.min_per_sec, percent),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Credits one request.
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Takes one retry; false (and counted) when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let ok = self.budget.withdraw();
        if !ok {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Retries refused for want of budget.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

/// Where a version stands in selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Takes its share of traffic.
    Serving,
    /// Out of weighted and sticky selection until this instant.
    Ejected(Instant),
    /// Its penalty is over: the next request probes it, and the one probe
    /// in flight keeps every other request away.
    Probation,
}

impl Standing {
    /// `serving`, `ejected` or `probation`.
    pub fn name(&self) -> &'static str {
        match self {
            Standing::Serving => "serving",
            Standing::Ejected(_) => "ejected",
            Standing::Probation => "probation",
        }
    }
}

/// Whether a request may go to a version now.
#[derive(Debug)]
pub enum Admission {
    /// Yes.
    Admit,
    /// Yes, as the one probe of a version on probation: settle the guard
    /// with the attempt's result.
    Probe(ProbeGuard),
    /// No: the version is ejected (or probed by another request).
    Refuse,
}

/// An ejection that just happened, for the log and the release history.
#[derive(Debug, Clone, PartialEq)]
pub struct Ejection {
    /// How many times the version has been ejected, this one included
    /// (after decay).
    pub count: u32,
    /// How long it is out.
    pub penalty: Duration,
    /// Why: `5 consecutive failures (last: trap …)` or `its probe failed`.
    pub reason: String,
}

#[derive(Debug)]
struct OutlierState {
    standing: Standing,
    /// Ejections counted for the penalty (decays while serving).
    count: u32,
    /// The penalty of the last ejection.
    penalty: Duration,
    /// When the version last started serving again.
    restored: Option<Instant>,
    /// Whether a probe is in flight.
    probing: bool,
}

/// The ejection state of one version; kept across reloads of the version.
#[derive(Debug)]
pub struct Outlier {
    /// Consecutive failures with no response.
    failing: AtomicU32,
    /// Whether the version is not serving (the request path's fast check).
    out: AtomicBool,
    /// Ejections so far (for metrics; never decays).
    total: AtomicU64,
    state: Mutex<OutlierState>,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            failing: AtomicU32::new(0),
            out: AtomicBool::new(false),
            total: AtomicU64::new(0),
            state: Mutex::new(OutlierState {
                standing: Standing::Serving,
                count: 0,
                penalty: Duration::ZERO,
                restored: None,
                probing: false,
            }),
        }
    }
}

impl Outlier {
    /// Whether a request may go to this version at `now`.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Admission {
        if !self.out.load(Ordering::Relaxed) {
            return Admission::Admit;
        }
        let Ok(mut state) = self.state.lock() else {
            return Admission::Admit;
        };
        match state.standing {
            Standing::Serving => Admission::Admit,
            Standing::Ejected(until) if now < until => Admission::Refuse,
            Standing::Ejected(_) | Standing::Probation if !state.probing => {
                state.standing = Standing::Probation;
                state.probing = true;
                Admission::Probe(ProbeGuard {
                    outlier: self.clone(),
                    settled: false,
                })
            }
            _ => Admission::Refuse,
        }
    }

    /// Whether the version takes its share of traffic (one relaxed load:
    /// the request path's check before it asks [`Self::admit`]).
    pub fn is_serving(&self) -> bool {
        !self.out.load(Ordering::Relaxed)
    }

    /// Where the version stands at `now` (an ejection whose penalty is over
    /// reads as probation).
    pub fn standing(&self, now: Instant) -> Standing {
        match self.state.lock().map(|s| s.standing) {
            Ok(Standing::Ejected(until)) if now >= until => Standing::Probation,
            Ok(standing) => standing,
            Err(_) => Standing::Serving,
        }
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Records an admitted (non-probe) attempt that answered.
    pub fn succeeded(&self) {
        if self.failing.load(Ordering::Relaxed) != 0 {
            self.failing.store(0, Ordering::Relaxed);
        }
    }

    /// Records an admitted (non-probe) attempt that gave no response at
    /// `now`; `ejectable` is false for the version traffic falls back to
    /// (never ejected). Returns the ejection it caused, if any.
    pub fn failed(
        &self,
        policy: &EjectPolicy,
        ejectable: bool,
        now: Instant,
        why: &str,
    ) -> Option<Ejection> {
        let failing = self.failing.fetch_add(1, Ordering::Relaxed) + 1;
        if !ejectable || policy.consecutive == 0 || failing < policy.consecutive {
            return None;
        }
        let mut state = self.state.lock().ok()?;
        if state.standing != Standing::Serving {
            return None;
        }
        // The count decays by one per EJECTION_DECAY spent serving.
        let decayed = state.restored.map_or(0, |since| {
            (now.saturating_duration_since(since).as_secs() / EJECTION_DECAY.as_secs()) as u32
        });
        state.count = state.count.saturating_sub(decayed) + 1;
        state.penalty = policy.base.saturating_mul(state.count).min(policy.max);
        Some(self.eject(
            &mut state,
            now,
            format!("{failing} consecutive failures (last: {why})"),
        ))
    }

    fn eject(&self, state: &mut OutlierState, now: Instant, reason: String) -> Ejection {
        // The penalty is at most a day (checked at load), so this cannot overflow.
        state.standing = Standing::Ejected(now + state.penalty.min(MAX_PENALTY));
        state.probing = false;
        self.out.store(true, Ordering::Relaxed);
        self.failing.store(0, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        Ejection {
            count: state.count,
            penalty: state.penalty,
            reason,
        }
    }

    /// Settles the probe: a success restores the version, a failure
    /// ejects it again for twice as long.
    fn settle(&self, policy: &EjectPolicy, ok: Option<bool>, now: Instant) -> Option<Ejection> {
        let mut state = self.state.lock().ok()?;
        state.probing = false;
        match ok {
            // The probe ended without a verdict (its client went away):
            // the next request probes instead.
            None => None,
            Some(true) => {
                state.standing = Standing::Serving;
                state.restored = Some(now);
                self.failing.store(0, Ordering::Relaxed);
                self.out.store(false, Ordering::Relaxed);
                None
            }
            Some(false) => {
                state.count = state.count.saturating_add(1);
                state.penalty = state
                    .penalty
                    .max(policy.base)
                    .saturating_mul(2)
                    .min(policy.max);
                Some(self.eject(&mut state, now, "its probe failed".into()))
            }
        }
    }
}

/// The one probe of a version on probation. Settle it with the attempt's
/// result; dropped unsettled, it lets the next request probe.
#[derive(Debug)]
pub struct ProbeGuard {
    outlier: Arc<Outlier>,
    settled: bool,
}

impl ProbeGuard {
    /// The probe answered (`ok`) or failed with no response; returns the
    /// renewed ejection if it failed.
    pub fn settle(mut self, policy: &EjectPolicy, ok: bool, now: Instant) -> Option<Ejection> {
        self.settled = true;
        self.outlier.settle(policy, Some(ok), now)
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.settled {
            self.outlier
                .settle(&EjectPolicy::default(), None, Instant::now());
        }
    }
}

/// Per-version counts of retries (by reason) and fallbacks (by target),
/// for Prometheus. Touched only when something failed.
#[derive(Debug, Default)]
pub struct Counters {
    retries: Mutex<BTreeMap<&'static str, u64>>,
    fallbacks: Mutex<BTreeMap<Arc<str>, u64>>,
}

impl Counters {
    /// Counts a retry of a failure of kind `reason`.
    pub fn retried(&self, reason: &'static str) {
        if let Ok(mut m) = self.retries.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Counts a request answered by `to` after this version failed it.
    pub fn fell_back(&self, to: &Arc<str>) {
        if let Ok(mut m) = self.fallbacks.lock() {
            *m.entry(to.clone()).or_default() += 1;
        }
    }

    /// Retries by reason.
    pub fn retries(&self) -> BTreeMap<&'static str, u64> {
        self.retries.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Fallbacks by the version that answered.
    pub fn fallbacks(&self) -> BTreeMap<Arc<str>, u64> {
        self.fallbacks.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pinned() {
        // Every default of `[resilience]`, as the docs and the issue give them:
        // a change of a default is a change of this test.
        let p: ResiliencePolicy = toml::from_str("").unwrap();
        assert_eq!(p, ResiliencePolicy::default());
        assert_eq!(p.retries, 1);
        assert!(
            p.retry_on.is_empty(),
            "guest 5xx are not retried by default"
        );
        assert_eq!(p.per_try_timeout, None);
        assert!(p.fallback);
        assert!(!p.idempotency_key);
        assert!(!p.transactional_kv);
        assert_eq!(p.backoff.base, Duration::from_millis(25));
        assert_eq!(p.backoff.max, Duration::from_millis(250));
        assert_eq!(p.budget.percent, 20);
        assert_eq!(p.budget.min_per_sec, 10);
        assert_eq!(p.budget.ttl, Duration::from_secs(10));
        assert_eq!(p.eject.consecutive, 5);
        assert_eq!(p.eject.base, Duration::from_secs(30));
        assert_eq!(p.eject.max, Duration::from_secs(300));
        assert_eq!(MAX_REPLAY_BODY, 64 * 1024);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad = |text: &str| {
            let p: ResiliencePolicy = toml::from_str(text).unwrap();
            p.validate().unwrap_err()
        };
        assert!(bad("retry-on = [404]").contains("retry-on"));
        assert!(bad("retry-on = [508]").contains("508"));
        assert!(bad("retries = 9").contains("retries"));
        assert!(bad("budget = { ttl = \"0s\" }").contains("budget.ttl"));
        assert!(bad("backoff = { base = \"1s\", max = \"10ms\" }").contains("backoff.base"));
        assert!(bad("eject = { max = \"100000000years\" }").contains("eject.max"));
        assert!(toml::from_str::<ResiliencePolicy>("retrys = 1").is_err());
        assert!(
            toml::from_str::<ResiliencePolicy>("eject = { consecutive = 3, bse = \"1s\" }")
                .is_err()
        );
    }

    #[test]
    fn the_retry_rule() {
        let p = ResiliencePolicy::default();
        // Not started: once, whatever the method, even with `retries = 0`.
        assert!(p.may_retry(Attempted::NotStarted, false, 0));
        assert!(!p.may_retry(Attempted::NotStarted, false, 1));
        let none = ResiliencePolicy {
            retries: 0,
            ..p.clone()
        };
        assert!(none.may_retry(Attempted::NotStarted, false, 0));
        assert!(!none.may_retry(Attempted::NoResponse, true, 0));
        // No response: only when safe.
        assert!(p.may_retry(Attempted::NoResponse, true, 0));
        assert!(!p.may_retry(Attempted::NoResponse, false, 0));
        assert!(!p.may_retry(Attempted::NoResponse, true, 1));
        // An error status: only when listed.
        assert!(!p.may_retry(Attempted::Status(503), true, 0));
        let on_503 = ResiliencePolicy {
            retry_on: vec![503],
            ..p.clone()
        };
        assert!(on_503.may_retry(Attempted::Status(503), true, 0));
        assert!(!on_503.may_retry(Attempted::Status(503), false, 0));
        assert!(!on_503.may_retry(Attempted::Status(500), true, 0));
        assert!(!p.may_retry(Attempted::Final, true, 0));
        // Safety.
        assert!(is_safe("GET", false, false));
        assert!(is_safe("PUT", false, false));
        assert!(is_safe("DELETE", false, false));
        assert!(!is_safe("POST", false, false));
        assert!(!is_safe("PATCH", false, false));
        assert!(is_safe("POST", true, false));
        assert!(is_safe("POST", false, true));
        assert!(!is_read_only("PUT"));
        assert!(is_read_only("HEAD"));
    }

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        let b = BackoffPolicy::default();
        assert_eq!(b.delay(1, 0.0), Duration::ZERO);
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(25));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(75));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(175));
        assert_eq!(b.delay(4, 1.0), Duration::from_millis(250));
        assert_eq!(b.delay(40, 0.5), Duration::from_millis(125));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_a_fifth_of_the_traffic_plus_ten_a_second() {
        // 10,000 failing requests over 10 s of virtual time, each wanting a
        // retry: at most 20% of them plus 10 a second get one.
        let budget = RetryBudget::new(&BudgetPolicy::default());
        let mut retries = 0u32;
        for _ in 0..10_000 {
            budget.deposit();
            if budget.withdraw() {
                retries += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(retries <= 2_100, "{retries} retries");
        assert!(retries >= 1_900, "{retries} retries: the budget starved");
        assert_eq!(budget.exhausted(), 10_000 - u64::from(retries));
    }

    #[tokio::test(start_paused = true)]
    async fn at_low_traffic_every_failure_is_retried() {
        // 5 requests a second for 20 s: the 10-a-second floor covers them all.
        let budget = RetryBudget::new(&BudgetPolicy::default());
        for _ in 0..100 {
            budget.deposit();
            assert!(budget.withdraw());
            tokio::time::advance(Duration::from_millis(200)).await;
        }
    }

    fn fail(o: &Outlier, n: u32) -> Option<Ejection> {
        let policy = EjectPolicy::default();
        let mut last = None;
        for _ in 0..n {
            last = o.failed(&policy, true, Instant::now(), "trap");
        }
        last
    }

    #[tokio::test(start_paused = true)]
    async fn five_consecutive_failures_eject_for_thirty_seconds_then_one_probe() {
        let o = Arc::new(Outlier::default());
        // 4 failures and a success: no ejection; the count starts again.
        assert_eq!(fail(&o, 4), None);
        o.succeeded();
        assert_eq!(fail(&o, 4), None);
        assert!(matches!(o.admit(Instant::now()), Admission::Admit));
        let ejection = fail(&o, 1).expect("the 5th consecutive failure ejects");
        assert_eq!(ejection.count, 1);
        assert_eq!(ejection.penalty, Duration::from_secs(30));
        assert!(ejection.reason.contains("5 consecutive failures"));
        assert_eq!(o.ejections(), 1);

        tokio::time::advance(Duration::from_millis(29_999)).await;
        assert!(matches!(o.admit(Instant::now()), Admission::Refuse));
        assert_eq!(o.standing(Instant::now()).name(), "ejected");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(o.standing(Instant::now()), Standing::Probation);
        let Admission::Probe(probe) = o.admit(Instant::now()) else {
            panic!("no probe at 30.001 s");
        };
        // A concurrent second request is not let through.
        assert!(matches!(o.admit(Instant::now()), Admission::Refuse));
        // The probe fails: out again for twice as long.
        let again = probe
            .settle(&EjectPolicy::default(), false, Instant::now())
            .expect("a failed probe ejects again");
        assert_eq!(again.penalty, Duration::from_secs(60));
        assert_eq!(o.ejections(), 2);
        tokio::time::advance(Duration::from_millis(59_999)).await;
        assert!(matches!(o.admit(Instant::now()), Admission::Refuse));
        tokio::time::advance(Duration::from_millis(2)).await;
        let Admission::Probe(probe) = o.admit(Instant::now()) else {
            panic!("no probe after the second penalty");
        };
        assert_eq!(
            probe.settle(&EjectPolicy::default(), true, Instant::now()),
            None
        );
        assert_eq!(o.standing(Instant::now()), Standing::Serving);
        assert!(matches!(o.admit(Instant::now()), Admission::Admit));
    }

    #[tokio::test(start_paused = true)]
    async fn penalties_grow_to_the_cap_and_decay_while_serving() {
        let o = Arc::new(Outlier::default());
        let policy = EjectPolicy::default();
        let mut penalties = Vec::new();
        for _ in 0..10 {
            let e = fail(&o, 5).expect("ejected");
            penalties.push(e.penalty.as_secs());
            tokio::time::advance(e.penalty).await;
            let Admission::Probe(p) = o.admit(Instant::now()) else {
                panic!("no probe");
            };
            p.settle(&policy, true, Instant::now());
        }
        assert_eq!(&penalties[..3], &[30, 60, 90]);
        assert_eq!(penalties[9], 300, "the tenth ejection is capped");
        // Ten minutes serving take the count back down.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(fail(&o, 5).expect("ejected").penalty.as_secs(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_version_traffic_falls_back_to_is_never_ejected() {
        let o = Arc::new(Outlier::default());
        for _ in 0..20 {
            assert_eq!(
                o.failed(&EjectPolicy::default(), false, Instant::now(), "trap"),
                None
            );
            assert!(matches!(o.admit(Instant::now()), Admission::Admit));
        }
        let off = EjectPolicy {
            consecutive: 0,
            ..EjectPolicy::default()
        };
        assert_eq!(fail_with(&o, &off, 20), None);
    }

    fn fail_with(o: &Outlier, policy: &EjectPolicy, n: u32) -> Option<Ejection> {
        (0..n)
            .filter_map(|_| o.failed(policy, true, Instant::now(), "trap"))
            .last()
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_without_a_verdict_lets_the_next_request_probe() {
        let o = Arc::new(Outlier::default());
        fail(&o, 5).expect("ejected");
        tokio::time::advance(Duration::from_secs(31)).await;
        let Admission::Probe(probe) = o.admit(Instant::now()) else {
            panic!("no probe");
        };
        drop(probe);
        assert!(matches!(o.admit(Instant::now()), Admission::Probe(_)));
    }
}
