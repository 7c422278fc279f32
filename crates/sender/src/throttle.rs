//! Throttling: a global rate, and per recipient domain — or per mailbox
//! provider group when the domain belongs to one ([`Grouping`]) — a rate, an
//! hourly rate and a concurrency limit, awaited (never slept), with
//! governor. A `421` or a `4.7.x` "slow down" from a relay halves that key's
//! rate for [`Limits::slow_down_for`]; afterwards every successful send
//! raises it by 10 % until it is back at its configured rate.
//!
//! The throttle's unit is a *key*: [`Throttle::key_of`] maps a recipient
//! domain to its provider group's name (`google` for `gmail.com` and for a
//! company domain whose MX is Google's) or, outside any group, to the
//! lower-case domain itself. [`Throttle::acquire`], [`Throttle::report`]
//! and [`Throttle::state`] take keys.
//!
//! Several workers on one database share the rates through a [`Budget`]
//! (issue #18; [`Throttle::with_budget`]): instead of its own governor, a
//! worker takes a few send grants at a time for the key's current
//! one-second window from the budget (the store's `provider_budget`
//! table), spends them, and waits for the next window when the budget
//! says the window is used up. The global rate is the key `*`, a key's
//! hourly limit `KEY@h` with one-hour windows. A slow-down seen by one
//! worker is published to the budget and the others adopt it at their
//! next grant. Concurrency limits stay per worker.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The length of a shared rate window.
pub const SHARED_WINDOW: Duration = Duration::from_secs(1);
/// The length of a shared hourly window.
const HOUR_WINDOW: Duration = Duration::from_secs(3600);

/// What one take from a [`Budget`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// Sends granted in the window asked for (0: the window is used up).
    pub granted: u32,
    /// The key's window in the budget now, ms since the Unix epoch (later
    /// than asked when another worker's clock is ahead).
    pub window_start: i64,
    /// A slow-down published by some worker: rate and until when (ms since
    /// the epoch), possibly past.
    pub cap: Option<(u32, i64)>,
}

/// Why the shared budget could not be asked (the store failed); the
/// throttle then falls back to its own per-worker limits for that send.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the shared rate budget failed: {0}")]
pub struct BudgetError(pub String);

/// Send grants shared by every worker on one database (the store's
/// `provider_budget`, in the application).
#[async_trait::async_trait]
pub trait Budget: Send + Sync {
    /// Up to `want` grants under `key` in the window starting at
    /// `window_start` (ms since the epoch) whose limit is `limit`.
    async fn take(
        &self,
        key: &str,
        window_start: i64,
        limit: u32,
        want: u32,
    ) -> Result<Grants, BudgetError>;
    /// Publishes that `key` is slowed to `rate` until `until` (ms).
    async fn cap(&self, key: &str, rate: u32, until: i64, now: i64) -> Result<(), BudgetError>;
    /// Every slow-down in force at `now` (ms): key, rate, until. Read once
    /// a second by a throttle for the keys it does not take grants for.
    async fn caps(&self, now: i64) -> Result<Vec<(String, u32, i64)>, BudgetError>;
}

/// How often a throttle reads the published slow-downs of keys it sends
/// under without grants (ms).
const CAPS_EVERY_MS: i64 = 1000;

/// Grants taken from the budget and not yet spent, for one window.
#[derive(Debug, Default)]
struct Pocket {
    /// The window they belong to (ms since the epoch).
    window: i64,
    left: u32,
    /// When the budget is worth asking again (ms): after a refusal, the
    /// start of the next window.
    retry_at: i64,
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One domain's (or provider group's) limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DomainLimits {
    /// Messages per second (also the burst).
    pub rate: u32,
    /// Messages in flight at once.
    pub concurrency: usize,
    /// Messages per hour, if limited (its burst is at most `rate`).
    pub rate_per_hour: Option<u32>,
    /// Messages to this provider over one relay connection before it is
    /// renewed ([`crate::Delivery::per_connection`]), if limited.
    pub messages_per_connection: Option<u32>,
}

impl DomainLimits {
    /// `rate` per second and `concurrency` at once, no hourly limit.
    pub fn new(rate: u32, concurrency: usize) -> Self {
        DomainLimits {
            rate,
            concurrency,
            rate_per_hour: None,
            messages_per_connection: None,
        }
    }
}

/// Which provider group a recipient domain belongs to (the DNS crate's
/// provider table behind it, in the application).
#[async_trait::async_trait]
pub trait Grouping: Send + Sync {
    /// The group's name, or `None` when the domain is a provider of its own.
    async fn group_of(&self, domain: &str) -> Option<Arc<str>>;
}

/// The throttle's configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Messages per second over all domains. Default 100.
    pub global_rate: u32,
    /// For domains without their own entry. Default 20/s, 4 at once.
    pub default_domain: DomainLimits,
    /// Per-domain overrides, keyed by lower-case domain (e.g. `gmail.com`).
    /// A domain named here is throttled on its own even when it belongs
    /// to a provider group.
    pub domains: HashMap<String, DomainLimits>,
    /// Per provider group, by group name: applied to the group as a whole.
    pub groups: HashMap<String, DomainLimits>,
    /// How long a slow-down holds before the rate starts to recover. Default 10 min.
    pub slow_down_for: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            global_rate: 100,
            default_domain: DomainLimits::new(20, 4),
            domains: HashMap::new(),
            groups: HashMap::new(),
            slow_down_for: Duration::from_secs(600),
        }
    }
}

fn limiter(rate: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate))
}

fn hourly(per_hour: u32, burst: u32) -> DefaultDirectRateLimiter {
    let n = NonZeroU32::new(per_hour.max(1)).unwrap_or(NonZeroU32::MIN);
    let b = NonZeroU32::new(burst.clamp(1, per_hour.max(1))).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_hour(n).allow_burst(b))
}

struct Domain {
    limits: DomainLimits,
    /// The rate in force now (≤ `limits.rate`).
    rate: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
    hourly: Option<Arc<DefaultDirectRateLimiter>>,
    slots: Arc<Semaphore>,
    slowed_until: Option<Instant>,
    /// Shared grants of the per-second and the hourly window.
    second: Arc<tokio::sync::Mutex<Pocket>>,
    hour: Arc<tokio::sync::Mutex<Pocket>>,
    /// A slow-down not yet published to the budget: rate, until (ms).
    unpublished: Option<(u32, i64)>,
}

/// Why a domain (or group) is held back right now (for status displays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainState {
    pub rate: u32,
    pub configured_rate: u32,
    pub slowed: bool,
}

/// Shared by all sending tasks.
pub struct Throttle {
    limits: Limits,
    global: DefaultDirectRateLimiter,
    domains: Mutex<HashMap<String, Domain>>,
    grouping: Option<Arc<dyn Grouping>>,
    /// With several workers: the shared grants (else governor alone).
    budget: Option<Arc<dyn Budget>>,
    /// Shared grants of the global rate.
    global_pocket: tokio::sync::Mutex<Pocket>,
    /// When the published slow-downs were last read (ms).
    caps_read: tokio::sync::Mutex<i64>,
}

/// How a throttle's key was found: what [`Throttle::key_of`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The provider group's name, or the lower-case domain.
    pub name: Arc<str>,
    /// True for a provider group.
    pub group: bool,
}

/// Held while a message to the domain is in flight.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    /// The key's `messages_per_connection`, read with the slot.
    per_connection: Option<u32>,
}

impl Permit {
    /// The key's [`DomainLimits::messages_per_connection`].
    pub fn messages_per_connection(&self) -> Option<u32> {
        self.per_connection
    }
}

impl Throttle {
    /// A throttle keyed by recipient domain alone.
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            global: limiter(limits.global_rate),
            limits,
            domains: Mutex::new(HashMap::new()),
            grouping: None,
            budget: None,
            global_pocket: tokio::sync::Mutex::new(Pocket::default()),
            caps_read: tokio::sync::Mutex::new(0),
        }
    }

    /// Shares the rates with every worker on `budget` (see the module doc).
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<dyn Budget>) -> Throttle {
        self.budget = Some(budget);
        self
    }

    /// Whether the rates are shared through a [`Budget`].
    pub fn is_shared(&self) -> bool {
        self.budget.is_some()
    }

    /// A throttle keyed by provider group where `grouping` knows one.
    pub fn with_grouping(limits: Limits, grouping: Arc<dyn Grouping>) -> Throttle {
        Throttle {
            grouping: Some(grouping),
            ..Throttle::new(limits)
        }
    }

    /// The key `domain` is throttled under: its provider group (unless the
    /// domain has limits of its own in [`Limits::domains`]), else the
    /// lower-case domain.
    pub async fn key_of(&self, domain: &str) -> Key {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        if !self.limits.domains.contains_key(&d)
            && let Some(g) = &self.grouping
            && let Some(name) = g.group_of(&d).await
        {
            return Key { name, group: true };
        }
        Key {
            name: Arc::from(d),
            group: false,
        }
    }

    fn with_domain<T>(&self, key: &str, f: impl FnOnce(&mut Domain) -> T) -> T {
        let mut map = self
            .domains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(key) {
            let lower = key.to_ascii_lowercase();
            let limits = self
                .limits
                .groups
                .get(key)
                .or_else(|| self.limits.domains.get(&lower))
                .copied()
                .unwrap_or(self.limits.default_domain);
            map.insert(
                key.to_string(),
                Domain {
                    limits,
                    rate: limits.rate,
                    limiter: Arc::new(limiter(limits.rate)),
                    hourly: limits
                        .rate_per_hour
                        .map(|h| Arc::new(hourly(h, limits.rate))),
                    slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
                    slowed_until: None,
                    second: Arc::default(),
                    hour: Arc::default(),
                    unpublished: None,
                },
            );
        }
        let d = map
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("inserted above under the same lock"));
        f(d)
    }

    /// The limits `key` is throttled with.
    pub fn limits_of(&self, key: &str) -> DomainLimits {
        self.with_domain(key, |d| d.limits)
    }

    /// Waits until a message under `key` (see [`Throttle::key_of`]) may go:
    /// a concurrency slot, then the key's hourly and per-second rate and
    /// the global rate — from the shared [`Budget`] when there is one.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future gives back the slot; grants already
    /// taken from the budget stay with this throttle for the next send.
    pub async fn acquire(&self, key: &str) -> Permit {
        let (slots, limiter, hourly, per_connection) = self.with_domain(key, |d| {
            (
                Arc::clone(&d.slots),
                Arc::clone(&d.limiter),
                d.hourly.clone(),
                d.limits.messages_per_connection,
            )
        });
        let slot = slots
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"));
        if let Some(budget) = &self.budget {
            match self.acquire_shared(budget.as_ref(), key).await {
                Ok(()) => {
                    return Permit {
                        _slot: slot,
                        per_connection,
                    };
                }
                Err(e) => {
                    // The database is the shared part; without it each
                    // worker keeps to the limits on its own.
                    tracing::warn!(key, error = %e, "sending under this worker's own limits");
                }
            }
        }
        if let Some(h) = hourly {
            h.until_ready().await;
        }
        limiter.until_ready().await;
        self.global.until_ready().await;
        Permit {
            _slot: slot,
            per_connection,
        }
    }

    /// One grant of the key's hourly limit (if any), of its rate and of the
    /// global rate, from the budget.
    async fn acquire_shared(&self, budget: &dyn Budget, key: &str) -> Result<(), BudgetError> {
        let (rate, per_hour, second, hour, publish) = self.with_domain(key, |d| {
            (
                d.rate,
                d.limits.rate_per_hour,
                Arc::clone(&d.second),
                Arc::clone(&d.hour),
                d.unpublished.take(),
            )
        });
        if let Some((rate, until)) = publish {
            budget.cap(key, rate, until, epoch_ms()).await?;
        }
        let batch = (rate / 4).max(1);
        if let Some(h) = per_hour {
            let hkey = format!("{key}@h");
            self.spend(
                budget,
                &hour,
                &hkey,
                HOUR_WINDOW,
                h,
                batch.min(h.max(1)),
                None,
            )
            .await?;
        }
        let global = self.limits.global_rate;
        // A key whose rate is at least the global rate can never bind
        // before the global one does: sharing it would cost a grant from
        // the database per key and second (one per recipient domain in an
        // unthrottled campaign) for nothing. A slowed key is below it again.
        if rate < global {
            self.spend(budget, &second, key, SHARED_WINDOW, rate, batch, Some(key))
                .await?;
        } else {
            // No grants, so no cap with them: another worker's slow-down of
            // this key arrives with the once-a-second read of all of them.
            self.read_caps(budget).await?;
        }
        self.spend(
            budget,
            &self.global_pocket,
            "*",
            SHARED_WINDOW,
            global,
            (global / 4).max(1),
            None,
        )
        .await
    }

    /// Spends one grant of `pocket`, taking `want` more from the budget
    /// when it is empty, and waiting for the next window when the budget
    /// has none left in this one. `adopt`: the throttle key whose rate
    /// follows a slow-down published by another worker.
    #[allow(clippy::too_many_arguments)]
    async fn spend(
        &self,
        budget: &dyn Budget,
        pocket: &tokio::sync::Mutex<Pocket>,
        key: &str,
        window: Duration,
        limit: u32,
        want: u32,
        adopt: Option<&str>,
    ) -> Result<(), BudgetError> {
        let len = i64::try_from(window.as_millis()).unwrap_or(1000).max(1);
        // Held while taking and waiting: one refill per key at a time.
        let mut p = pocket.lock().await;
        // Bounded: each pass either returns or waits for a later window.
        loop {
            let now = epoch_ms();
            let current = now - now.rem_euclid(len);
            if p.window == current && p.left > 0 {
                p.left -= 1;
                return Ok(());
            }
            if now >= p.retry_at {
                let limit = limit.max(1);
                let g = budget
                    .take(key, current, limit, want.clamp(1, limit))
                    .await?;
                if let (Some(k), Some((rate, until))) = (adopt, g.cap) {
                    self.adopt_cap(k, rate, until, now);
                }
                p.window = current;
                p.left = g.granted;
                if p.left > 0 {
                    p.left -= 1;
                    return Ok(());
                }
                // Used up: ask again in the next window (or when our clock
                // reaches the one another worker is in).
                p.retry_at =
                    g.window_start.max(current) + if g.window_start > current { 0 } else { len };
            }
            let wait = u64::try_from(p.retry_at - epoch_ms()).unwrap_or(0).max(1);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Reads the slow-downs in force, at most once per [`CAPS_EVERY_MS`],
    /// and follows those of keys this throttle knows.
    async fn read_caps(&self, budget: &dyn Budget) -> Result<(), BudgetError> {
        let now = epoch_ms();
        {
            let mut last = self.caps_read.lock().await;
            if now - *last < CAPS_EVERY_MS {
                return Ok(());
            }
            *last = now;
        }
        for (key, rate, until) in budget.caps(now).await? {
            let known = self
                .domains
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(&key);
            if known {
                self.adopt_cap(&key, rate, until, now);
            }
        }
        Ok(())
    }

    /// Another worker slowed `key` to `rate` until `until` (ms): follow it.
    fn adopt_cap(&self, key: &str, rate: u32, until: i64, now: i64) {
        let left = u64::try_from(until - now).unwrap_or(0);
        if left == 0 {
            return;
        }
        self.with_domain(key, |d| {
            if rate < d.rate {
                d.rate = rate.max(1);
                d.limiter = Arc::new(limiter(d.rate));
                d.slowed_until = Some(Instant::now() + Duration::from_millis(left));
            }
        });
    }

    /// Tells the throttle how a send under `key` ended: `code` and the
    /// enhanced status `(class, subject)` of the reply, if any. Returns the
    /// halved rate when this reply slowed the key down.
    pub fn report(
        &self,
        key: &str,
        code: Option<u16>,
        enhanced: Option<(u8, u16)>,
        ok: bool,
    ) -> Option<u32> {
        let now = Instant::now();
        let slow_down = code == Some(421) || matches!(enhanced, Some((4, 7)));
        let hold = self.limits.slow_down_for;
        self.with_domain(key, |d| {
            if slow_down {
                let halved = (d.rate / 2).max(1);
                if halved != d.rate {
                    d.rate = halved;
                    d.limiter = Arc::new(limiter(halved));
                }
                d.slowed_until = Some(now + hold);
                if self.budget.is_some() {
                    let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
                    d.unpublished = Some((d.rate, epoch_ms().saturating_add(hold_ms)));
                }
                return Some(d.rate);
            } else if ok && d.rate < d.limits.rate && d.slowed_until.is_none_or(|t| now >= t) {
                d.rate = (d.rate + (d.rate / 10).max(1)).min(d.limits.rate);
                d.limiter = Arc::new(limiter(d.rate));
                if d.rate == d.limits.rate {
                    d.slowed_until = None;
                }
            }
            None
        })
    }

    /// How long a slow-down holds.
    pub fn slow_down_for(&self) -> Duration {
        self.limits.slow_down_for
    }

    /// The key's current state.
    pub fn state(&self, key: &str) -> DomainState {
        let now = Instant::now();
        self.with_domain(key, |d| DomainState {
            rate: d.rate,
            configured_rate: d.limits.rate,
            slowed: d.slowed_until.is_some_and(|t| now < t),
        })
    }

    /// Whether a message under `key` could go right now without waiting
    /// (takes the rate cells if so). For tests and status displays.
    pub fn try_now(&self, key: &str) -> bool {
        let (limiter, hourly) =
            self.with_domain(key, |d| (Arc::clone(&d.limiter), d.hourly.clone()));
        hourly.is_none_or(|h| h.check().is_ok()) && limiter.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn limits(rate: u32, concurrency: usize) -> Limits {
        Limits {
            global_rate: 10_000,
            default_domain: DomainLimits::new(rate, concurrency),
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_is_bounded_by_the_domain_rate_and_domains_are_separate() {
        let t = Throttle::new(limits(5, 4));
        let allowed = (0..20).filter(|_| t.try_now("example.org")).count();
        assert_eq!(allowed, 5, "the burst equals the rate");
        assert!(
            t.try_now("Example.NET"),
            "another domain has its own budget"
        );
        let mut custom = limits(5, 4);
        custom
            .domains
            .insert("gmail.com".into(), DomainLimits::new(2, 1));
        let t = Throttle::new(custom);
        assert_eq!((0..10).filter(|_| t.try_now("gmail.com")).count(), 2);
    }

    #[test]
    fn slow_down_halves_then_recovers_gradually() {
        let mut l = limits(20, 4);
        l.slow_down_for = Duration::ZERO;
        let t = Throttle::new(l);
        t.report("example.org", Some(421), None, false);
        assert_eq!(t.state("example.org").rate, 10);
        t.report("example.org", Some(451), Some((4, 7)), false);
        assert_eq!(t.state("example.org").rate, 5);
        t.report("example.org", Some(550), Some((5, 1)), false);
        assert_eq!(
            t.state("example.org").rate,
            5,
            "a permanent error is not a slow-down"
        );
        let mut seen = vec![];
        for _ in 0..30 {
            t.report("example.org", Some(250), None, true);
            seen.push(t.state("example.org").rate);
        }
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "recovery only goes up: {seen:?}"
        );
        assert_eq!(
            *seen.last().unwrap(),
            20,
            "back at the configured rate: {seen:?}"
        );
        assert!(seen[0] < 20, "not at once: {seen:?}");
    }

    #[test]
    fn slow_down_holds_before_recovering() {
        let t = Throttle::new(limits(20, 4)); // default hold: 10 minutes
        t.report("example.org", Some(421), None, false);
        for _ in 0..10 {
            t.report("example.org", Some(250), None, true);
        }
        assert_eq!(
            t.state("example.org"),
            DomainState {
                rate: 10,
                configured_rate: 20,
                slowed: true
            }
        );
    }

    /// Groups by a fixed table, as the application's provider table does.
    struct Table;
    #[async_trait::async_trait]
    impl Grouping for Table {
        async fn group_of(&self, domain: &str) -> Option<Arc<str>> {
            matches!(domain, "gmail.com" | "googlemail.com" | "corp.example")
                .then(|| Arc::from("google"))
        }
    }

    #[tokio::test]
    async fn domains_of_one_group_share_its_limits() {
        let mut l = limits(5, 4);
        l.groups.insert("google".into(), DomainLimits::new(3, 1));
        l.domains
            .insert("googlemail.com".into(), DomainLimits::new(7, 1));
        let t = Throttle::with_grouping(l, Arc::new(Table));
        let gmail = t.key_of("Gmail.COM.").await;
        assert_eq!(
            gmail,
            Key {
                name: Arc::from("google"),
                group: true
            }
        );
        assert_eq!(t.key_of("corp.example").await.name, gmail.name);
        // A domain with its own [sending.domains] entry stays on its own.
        assert_eq!(&*t.key_of("googlemail.com").await.name, "googlemail.com");
        let other = t.key_of("example.org").await;
        assert!(!other.group);
        assert_eq!(&*other.name, "example.org");
        // Three per second for the whole group, whichever domain asks.
        let sent = (0..10).filter(|_| t.try_now(&gmail.name)).count();
        assert_eq!(sent, 3, "the group's burst is its rate");
        assert!(t.try_now("example.org"), "another key has its own budget");
        assert_eq!(t.limits_of("google").concurrency, 1);
        // A slow-down from one domain of the group slows the group.
        let halved = t.report(&gmail.name, Some(421), None, false);
        assert_eq!(halved, Some(1));
        assert!(t.state("google").slowed);
        assert!(!t.state("example.org").slowed);
        assert_eq!(t.report("google", Some(250), None, true), None);
    }

    #[test]
    fn an_hourly_limit_caps_the_group() {
        let mut l = limits(100, 4);
        l.groups.insert(
            "yahoo".into(),
            DomainLimits {
                rate_per_hour: Some(4),
                ..DomainLimits::new(100, 4)
            },
        );
        let t = Throttle::new(l);
        assert_eq!((0..50).filter(|_| t.try_now("yahoo")).count(), 4);
        assert_eq!((0..150).filter(|_| t.try_now("other.example")).count(), 100);
    }

    #[tokio::test]
    async fn concurrency_per_domain_is_never_exceeded() {
        let t = Arc::new(Throttle::new(limits(10_000, 2)));
        let inflight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (t, inflight, peak) = (Arc::clone(&t), Arc::clone(&inflight), Arc::clone(&peak));
            tasks.spawn(async move {
                let _permit = t.acquire("example.org").await;
                let now = inflight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inflight.fetch_sub(1, Ordering::SeqCst);
            });
        }
        while tasks.join_next().await.is_some() {}
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    /// The store's grant statement in memory: per key, the window and the
    /// grants handed out in it, and the published cap.
    /// Window, grants handed out in it, published cap.
    type Row = (i64, u32, Option<(u32, i64)>);
    #[derive(Default)]
    struct Memory(Mutex<HashMap<String, Row>>);

    #[async_trait::async_trait]
    impl Budget for Memory {
        async fn take(
            &self,
            key: &str,
            window_start: i64,
            limit: u32,
            want: u32,
        ) -> Result<Grants, BudgetError> {
            let mut m = self.0.lock().unwrap();
            let e = m.entry(key.to_string()).or_insert((window_start, 0, None));
            if e.0 < window_start {
                (e.0, e.1) = (window_start, 0);
            }
            let granted = if e.0 == window_start {
                want.min(limit.saturating_sub(e.1))
            } else {
                0
            };
            e.1 += granted;
            Ok(Grants {
                granted,
                window_start: e.0,
                cap: e.2,
            })
        }
        async fn cap(
            &self,
            key: &str,
            rate: u32,
            until: i64,
            _now: i64,
        ) -> Result<(), BudgetError> {
            let mut m = self.0.lock().unwrap();
            m.entry(key.to_string()).or_insert((0, 0, None)).2 = Some((rate, until));
            Ok(())
        }
        async fn caps(&self, now: i64) -> Result<Vec<(String, u32, i64)>, BudgetError> {
            let m = self.0.lock().unwrap();
            Ok(m.iter()
                .filter_map(|(k, r)| r.2.filter(|c| c.1 > now).map(|c| (k.clone(), c.0, c.1)))
                .collect())
        }
    }

    fn shared(budget: &Arc<Memory>) -> Throttle {
        Throttle::new(Limits {
            global_rate: 10_000,
            default_domain: DomainLimits::new(40, 8),
            ..Limits::default()
        })
        .with_budget(Arc::clone(budget) as Arc<dyn Budget>)
    }

    #[tokio::test]
    async fn issue_18_a_key_that_cannot_bind_takes_no_grants_but_follows_slow_downs() {
        // The domain's rate (1000/s) is above the global one (100/s): the
        // global rate always binds first, so the key is never asked for.
        let with = |budget: &Arc<Memory>| {
            Throttle::new(Limits {
                global_rate: 100,
                default_domain: DomainLimits::new(1000, 8),
                ..Limits::default()
            })
            .with_budget(Arc::clone(budget) as Arc<dyn Budget>)
        };
        let budget = Arc::new(Memory::default());
        let (a, b) = (with(&budget), with(&budget));
        for _ in 0..5 {
            drop(a.acquire("example.org").await);
            drop(b.acquire("example.org").await);
        }
        {
            let m = budget.0.lock().unwrap();
            assert!(!m.contains_key("example.org"), "no grants for the key");
            assert_eq!(m["*"].1, 50, "two batches of a quarter of the global rate");
        }
        // A slow-down at a is published and b follows it within a second.
        assert_eq!(a.report("example.org", Some(421), None, false), Some(500));
        drop(a.acquire("example.org").await);
        assert_eq!(
            budget.0.lock().unwrap()["example.org"].2.map(|c| c.0),
            Some(500)
        );
        let started = Instant::now();
        while !b.state("example.org").slowed {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "b never followed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(b.acquire("example.org").await);
        }
        assert_eq!(b.state("example.org").rate, 500);
    }

    #[tokio::test]
    async fn issue_18_two_throttles_share_one_window_and_a_slow_down() {
        let budget = Arc::new(Memory::default());
        let (a, b) = (shared(&budget), shared(&budget));
        assert!(a.is_shared());
        // Each takes a batch of a quarter of the rate and spends from it.
        drop(a.acquire("example.org").await);
        drop(b.acquire("example.org").await);
        let (_, granted, _) = budget.0.lock().unwrap()["example.org"];
        assert!(granted <= 40, "never past the window's limit: {granted}");
        assert_eq!(
            granted % 10,
            0,
            "grants come in batches of rate/4: {granted}"
        );
        // A slow-down at one worker reaches the other at its next grant.
        assert_eq!(a.report("example.org", Some(421), None, false), Some(20));
        drop(a.acquire("example.org").await); // publishes the cap
        assert_eq!(
            budget.0.lock().unwrap()["example.org"].2.map(|c| c.0),
            Some(20)
        );
        // b spends what it holds, then asks again and learns the cap.
        for _ in 0..40 {
            drop(b.acquire("example.org").await);
            if b.state("example.org").slowed {
                break;
            }
        }
        assert_eq!(
            b.state("example.org"),
            DomainState {
                rate: 20,
                configured_rate: 40,
                slowed: true
            }
        );
    }
}
