//! Rate limits (issue 15; ADR 0015): per credential, stricter per route class where one call
//! exposes much, per source network for everything unauthenticated and for authentication
//! failures, and the enumeration signal of lookups of many distinct numbers.
//!
//! The algorithm is `governor`'s GCRA (a token bucket without a timer), on Herald's injected
//! clock so tests drive it. Limits are per node: with N nodes behind a balancer the effective
//! limit is up to N times the configured one (docs/api.md, "Rate limits").

mod enumeration;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

pub use enumeration::{EnumerationSettings, Suspicion};

use crate::audit::network_of;
use crate::audit::{Action, AuditEvent, AuditRecord, Details, Initiator, Outcome, Target};
use crate::auth::Principal;
use crate::clock::{Clock, Timestamp};
use crate::ids::IntegrationId;
use crate::store::{Store, StoreError};

/// A rate: `per_minute` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Refuses a zero rate or burst (a limit that refuses everything is a configuration error,
    /// not a limit), and a burst above a day's worth.
    pub fn new(per_minute: u32, burst: u32) -> Result<Self, &'static str> {
        if per_minute == 0 || burst == 0 {
            return Err("per_minute and burst must be at least 1");
        }
        if per_minute > 1_000_000 || burst > 1_000_000 {
            return Err("per_minute and burst must be at most 1000000");
        }
        Ok(Self { per_minute, burst })
    }

    fn quota(self) -> Quota {
        let one = NonZeroU32::MIN;
        let burst = NonZeroU32::new(self.burst).unwrap_or(one);
        // One cell every 60 s / per_minute, in nanoseconds (never zero: per_minute ≤ 10⁶).
        let period = Duration::from_nanos(60_000_000_000 / u64::from(self.per_minute.max(1)));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_minute(one))
            .allow_burst(burst)
    }

    /// Seconds for one cell to come back.
    fn seconds_per_cell(self) -> f64 {
        60.0 / f64::from(self.per_minute.max(1))
    }
}

/// Route classes with their own, stricter limit per credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteClass {
    /// Finding or registering subjects by number (`POST /v1/subjects`, `…/lookup`).
    Lookup,
    /// A subject's decrypted export.
    Export,
    /// Erasing a subject.
    Erase,
    /// Double opt-in requests (each sends a message).
    OptIn,
    /// Reading the audit trail.
    Audit,
}

impl RouteClass {
    pub const ALL: [RouteClass; 5] = [
        RouteClass::Lookup,
        RouteClass::Export,
        RouteClass::Erase,
        RouteClass::OptIn,
        RouteClass::Audit,
    ];

    /// The limit's name in answers and metrics.
    pub fn limit_name(self) -> &'static str {
        match self {
            RouteClass::Lookup => "route:lookup",
            RouteClass::Export => "route:export",
            RouteClass::Erase => "route:erase",
            RouteClass::OptIn => "route:opt_in",
            RouteClass::Audit => "route:audit",
        }
    }

    pub fn config_name(self) -> &'static str {
        match self {
            RouteClass::Lookup => "lookup",
            RouteClass::Export => "export",
            RouteClass::Erase => "erase",
            RouteClass::OptIn => "opt_in",
            RouteClass::Audit => "audit",
        }
    }
}

pub const CREDENTIAL: &str = "credential";
pub const SOURCE: &str = "source";

/// A request that may go ahead, and where its limit stands (for `RateLimit` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: &'static str,
    pub rate: Rate,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
}

/// A request refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub limit: &'static str,
    pub rate: Rate,
    /// Whole seconds until a retry can succeed (at least 1).
    pub retry_after_seconds: u64,
}

/// What the limits are.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub enabled: bool,
    pub credential: Rate,
    pub routes: Vec<(RouteClass, Rate)>,
    /// Requests per source network to the unauthenticated endpoints.
    pub source_requests: Rate,
    /// Authentication and signature failures per source network before it cools off.
    pub source_failures: Rate,
    pub cooling_off: Duration,
    pub enumeration: EnumerationSettings,
    /// Per-integration credential rates from the configuration, by integration name.
    pub configured_overrides: Vec<(String, Rate)>,
}

/// Herald's clock as `governor` reads it: time since the Unix epoch.
#[derive(Clone)]
struct LimiterClock(Arc<dyn Clock>);

impl GovernorClock for LimiterClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        let now = self.0.now();
        let nanos = now.timestamp_nanos_opt().unwrap_or(0).max(0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }
}

type Keyed =
    RateLimiter<String, HashMapStateStore<String>, LimiterClock, StateInformationMiddleware>;

struct Bucket {
    rate: Rate,
    limiter: Keyed,
}

impl Bucket {
    fn new(rate: Rate, clock: &LimiterClock) -> Self {
        Self {
            rate,
            limiter: RateLimiter::<_, _, _, NoOpMiddleware<Duration>>::new(
                rate.quota(),
                HashMapStateStore::default(),
                clock.clone(),
            )
            .with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check(
        &self,
        key: &str,
        limit: &'static str,
        clock: &LimiterClock,
    ) -> Result<Allowance, Limited> {
        match self.limiter.check_key(&key.to_owned()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let missing = f64::from(self.rate.burst.saturating_sub(remaining));
                Ok(Allowance {
                    limit,
                    rate: self.rate,
                    remaining,
                    reset_seconds: (missing * self.rate.seconds_per_cell()).ceil() as u64,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(clock.now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(Limited {
                    limit,
                    rate: self.rate,
                    retry_after_seconds: seconds.max(1),
                })
            }
        }
    }

    fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

struct Inner {
    settings: LimitSettings,
    clock: LimiterClock,
    credential: Bucket,
    routes: HashMap<RouteClass, Bucket>,
    /// Integrations with a credential rate of their own.
    overrides: RwLock<HashMap<IntegrationId, Arc<Bucket>>>,
    source_requests: Bucket,
    source_failures: Bucket,
    cooling: Mutex<HashMap<String, Timestamp>>,
    enumeration: enumeration::Tracker,
}

/// The limits of one node. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits(Arc<Inner>);

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("enabled", &self.0.settings.enabled)
            .finish_non_exhaustive()
    }
}

/// Networks remembered in cooling-off at most; beyond, the oldest go first.
const MAX_COOLING: usize = 10_000;

impl RateLimits {
    pub fn new(
        settings: LimitSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, herald_crypto::CryptoError> {
        let limiter_clock = LimiterClock(clock);
        let routes = settings
            .routes
            .iter()
            .map(|(class, rate)| (*class, Bucket::new(*rate, &limiter_clock)))
            .collect();
        let enumeration = enumeration::Tracker::new(settings.enumeration.clone())?;
        Ok(Self(Arc::new(Inner {
            credential: Bucket::new(settings.credential, &limiter_clock),
            source_requests: Bucket::new(settings.source_requests, &limiter_clock),
            source_failures: Bucket::new(settings.source_failures, &limiter_clock),
            routes,
            overrides: RwLock::new(HashMap::new()),
            cooling: Mutex::new(HashMap::new()),
            enumeration,
            clock: limiter_clock,
            settings,
        })))
    }

    fn now(&self) -> Timestamp {
        self.0.clock.0.now()
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.0.settings
    }

    pub fn enabled(&self) -> bool {
        self.0.settings.enabled
    }

    /// Counts an authenticated request against its credential's limit and, for a limited
    /// route class, the class's. Returns the stricter standing.
    pub fn check_credential(
        &self,
        principal: &Principal,
        class: Option<RouteClass>,
    ) -> Result<Option<Allowance>, Limited> {
        if !self.enabled() {
            return Ok(None);
        }
        let holder = principal.credential.holder();
        let own = self
            .0
            .overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&principal.integration_id)
            .cloned();
        let credential = match &own {
            Some(bucket) => bucket.check(holder, CREDENTIAL, &self.0.clock)?,
            None => self.0.credential.check(holder, CREDENTIAL, &self.0.clock)?,
        };
        match class.and_then(|c| self.0.routes.get(&c).map(|b| (c, b))) {
            Some((class, bucket)) => bucket
                .check(holder, class.limit_name(), &self.0.clock)
                .map(Some),
            None => Ok(Some(credential)),
        }
    }

    /// A request to an unauthenticated endpoint (or one whose credential is about to be
    /// checked) from `source`: refused while the network cools off after failures, and
    /// counted against the network's request rate when `count` is set.
    pub fn check_source(&self, source: Option<IpAddr>, count: bool) -> Result<(), Limited> {
        if !self.enabled() {
            return Ok(());
        }
        let cooling_until = {
            let cooling = self.0.cooling.lock().unwrap_or_else(|e| e.into_inner());
            // The common case on the send path: nobody cools off, nothing to count.
            if cooling.is_empty() && !count {
                return Ok(());
            }
            cooling.get(&network(source)).copied()
        };
        let now = self.now();
        if let Some(until) = cooling_until.filter(|until| *until > now) {
            let left = (until - now).num_milliseconds().max(0);
            return Err(Limited {
                limit: SOURCE,
                rate: self.0.settings.source_failures,
                retry_after_seconds: u64::try_from((left + 999) / 1000).unwrap_or(1).max(1),
            });
        }
        if count {
            self.0
                .source_requests
                .check(&network(source), SOURCE, &self.0.clock)?;
        }
        Ok(())
    }

    /// Counts a failed authentication or signature from `source`; past the failure rate the
    /// network cools off (every request from it refused) for the configured period.
    pub fn source_failure(&self, source: Option<IpAddr>) {
        if !self.enabled() {
            return;
        }
        let network = network(source);
        if self
            .0
            .source_failures
            .check(&network, SOURCE, &self.0.clock)
            .is_err()
        {
            let cooling_off = chrono::TimeDelta::from_std(self.0.settings.cooling_off)
                .unwrap_or(chrono::TimeDelta::minutes(1));
            let now = self.now();
            let mut cooling = self.0.cooling.lock().unwrap_or_else(|e| e.into_inner());
            if cooling.len() >= MAX_COOLING {
                cooling.retain(|_, until| *until > now);
            }
            if cooling.len() < MAX_COOLING {
                cooling.insert(network, now + cooling_off);
            }
        }
    }

    /// Notes a lookup or registration of `number` (E.164) by the caller; returns a suspicion
    /// the first time in a window the caller's distinct numbers pass the threshold.
    pub fn note_lookup(&self, principal: &Principal, number: &str) -> Option<Suspicion> {
        self.0
            .enumeration
            .note(principal.credential.holder(), number, self.now())
    }

    /// Re-reads the per-integration rates: those set with `PATCH` (stored, so every node
    /// sees them at its next refresh), else the configuration's by integration name.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut rates: HashMap<IntegrationId, Rate> = HashMap::new();
        for (name, rate) in &self.0.settings.configured_overrides {
            if let Some(integration) = store.integration_by_name(name).await? {
                rates.insert(integration.id, *rate);
            }
        }
        rates.extend(store.integration_rates().await?);
        self.set_overrides(rates.into_iter().collect());
        Ok(())
    }

    /// Gives an integration's credentials a rate of their own (`None`: back to the
    /// configured one), audited; applies on this node at once and on the others at their next
    /// refresh. False: no such integration.
    pub async fn set_integration_rate(
        &self,
        store: &dyn Store,
        integration: &IntegrationId,
        rate: Option<Rate>,
        initiator: &Initiator,
    ) -> Result<bool, StoreError> {
        let details = match rate {
            Some(r) => Details::new()
                .with("per_minute", u64::from(r.per_minute))
                .with("burst", u64::from(r.burst)),
            None => Details::new().with("rate", "default"),
        };
        let event = AuditEvent::new(initiator, Action::RateLimitChanged, Outcome::Success)
            .target(Target::Integration(integration.clone()))
            .details(details);
        let now = self.now();
        let found = store
            .set_integration_rate(integration, rate, &AuditRecord::new(&event, now))
            .await?;
        if found {
            self.refresh(store).await?;
        }
        Ok(found)
    }

    /// Counts a lookup or registration of `number` by the caller and, when it makes the
    /// caller's distinct numbers pass the threshold, records `security.enumeration_suspected`.
    /// Returns whether it did (for the metric).
    pub async fn observe_lookup(
        &self,
        audit: &crate::audit::Audit,
        principal: &Principal,
        initiator: &Initiator,
        number: &str,
    ) -> Result<bool, StoreError> {
        // Digits only: the same number written with spaces or dashes is one number.
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        let Some(suspicion) = self.note_lookup(principal, &digits) else {
            return Ok(false);
        };
        let event = AuditEvent::new(initiator, Action::EnumerationSuspected, Outcome::Denied)
            .target(Target::Integration(principal.integration_id.clone()))
            .details(
                Details::new()
                    .with("distinct_numbers", u64::from(suspicion.distinct_numbers))
                    .with("window_seconds", suspicion.window_seconds),
            );
        audit.append(&event).await?;
        Ok(true)
    }

    /// Replaces the per-integration credential rates (configuration and `PATCH`), keeping the
    /// buckets of integrations whose rate did not change.
    pub fn set_overrides(&self, rates: Vec<(IntegrationId, Rate)>) {
        let mut overrides = self.0.overrides.write().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::new();
        for (integration, rate) in rates {
            let bucket = match overrides.remove(&integration) {
                Some(existing) if existing.rate == rate => existing,
                _ => Arc::new(Bucket::new(rate, &self.0.clock)),
            };
            next.insert(integration, bucket);
        }
        *overrides = next;
    }

    /// The credential rate that applies to an integration's credentials.
    pub fn credential_rate(&self, integration: &IntegrationId) -> Rate {
        self.0
            .overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(integration)
            .map_or(self.0.settings.credential, |b| b.rate)
    }

    /// Forgets the state of keys that are back to a full bucket, and old windows (bounded
    /// memory whatever the number of keys seen).
    pub fn forget_idle(&self) {
        self.0.credential.forget_idle();
        self.0.source_requests.forget_idle();
        self.0.source_failures.forget_idle();
        for bucket in self.0.routes.values() {
            bucket.forget_idle();
        }
        for bucket in self
            .0
            .overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            bucket.forget_idle();
        }
        let now = self.now();
        self.0
            .cooling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
        self.0.enumeration.forget_old(now);
    }
}

fn network(source: Option<IpAddr>) -> String {
    source.map_or_else(|| "unknown".to_owned(), network_of)
}

#[cfg(test)]
mod tests;

/// Where per-integration credential rates set at run time are kept.
#[async_trait::async_trait]
pub trait LimitsStore: Send + Sync {
    /// Sets (or with `None` clears) an integration's own credential rate, with its audit
    /// entry. False: no such integration.
    async fn set_integration_rate(
        &self,
        integration: &IntegrationId,
        rate: Option<Rate>,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
    /// Every integration's own credential rate.
    async fn integration_rates(&self) -> Result<Vec<(IntegrationId, Rate)>, StoreError>;
}
