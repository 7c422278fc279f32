//! Throttling: a global rate, and per recipient domain a rate and a
//! concurrency limit, awaited (never slept), with governor. A `421` or a
//! `4.7.x` "slow down" from a relay halves that domain's rate for
//! [`Limits::slow_down_for`]; afterwards every successful send raises it by
//! 10 % until it is back at its configured rate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One domain's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DomainLimits {
    /// Messages per second (also the burst).
    pub rate: u32,
    /// Messages in flight at once.
    pub concurrency: usize,
}

/// The throttle's configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Messages per second over all domains. Default 100.
    pub global_rate: u32,
    /// For domains without their own entry. Default 20/s, 4 at once.
    pub default_domain: DomainLimits,
    /// Per-domain overrides, keyed by lower-case domain (e.g. `gmail.com`).
    pub domains: HashMap<String, DomainLimits>,
    /// How long a slow-down holds before the rate starts to recover. Default 10 min.
    pub slow_down_for: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            global_rate: 100,
            default_domain: DomainLimits {
                rate: 20,
                concurrency: 4,
            },
            domains: HashMap::new(),
            slow_down_for: Duration::from_secs(600),
        }
    }
}

fn limiter(rate: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate))
}

struct Domain {
    limits: DomainLimits,
    /// The rate in force now (≤ `limits.rate`).
    rate: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
    slots: Arc<Semaphore>,
    slowed_until: Option<Instant>,
}

/// Why a domain is held back right now (for status displays).
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
}

/// Held while a message to the domain is in flight.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl Throttle {
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            global: limiter(limits.global_rate),
            limits,
            domains: Mutex::new(HashMap::new()),
        }
    }

    fn with_domain<T>(&self, domain: &str, f: impl FnOnce(&mut Domain) -> T) -> T {
        let key = domain.to_ascii_lowercase();
        let mut map = self
            .domains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let d = map.entry(key.clone()).or_insert_with(|| {
            let limits = self
                .limits
                .domains
                .get(&key)
                .copied()
                .unwrap_or(self.limits.default_domain);
            Domain {
                limits,
                rate: limits.rate,
                limiter: Arc::new(limiter(limits.rate)),
                slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
                slowed_until: None,
            }
        });
        f(d)
    }

    /// Waits until a message to `domain` may go: a concurrency slot, then the
    /// domain's and the global rate.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the future gives back whatever it had taken.
    pub async fn acquire(&self, domain: &str) -> Permit {
        let (slots, limiter) =
            self.with_domain(domain, |d| (Arc::clone(&d.slots), Arc::clone(&d.limiter)));
        let slot = slots
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"));
        limiter.until_ready().await;
        self.global.until_ready().await;
        Permit { _slot: slot }
    }

    /// Tells the throttle how a send to `domain` ended: `code` and the
    /// enhanced status `(class, subject)` of the reply, if any.
    pub fn report(&self, domain: &str, code: Option<u16>, enhanced: Option<(u8, u16)>, ok: bool) {
        let now = Instant::now();
        let slow_down = code == Some(421) || matches!(enhanced, Some((4, 7)));
        let hold = self.limits.slow_down_for;
        self.with_domain(domain, |d| {
            if slow_down {
                let halved = (d.rate / 2).max(1);
                if halved != d.rate {
                    d.rate = halved;
                    d.limiter = Arc::new(limiter(halved));
                }
                d.slowed_until = Some(now + hold);
            } else if ok && d.rate < d.limits.rate && d.slowed_until.is_none_or(|t| now >= t) {
                d.rate = (d.rate + (d.rate / 10).max(1)).min(d.limits.rate);
                d.limiter = Arc::new(limiter(d.rate));
                if d.rate == d.limits.rate {
                    d.slowed_until = None;
                }
            }
        });
    }

    /// The domain's current state.
    pub fn state(&self, domain: &str) -> DomainState {
        let now = Instant::now();
        self.with_domain(domain, |d| DomainState {
            rate: d.rate,
            configured_rate: d.limits.rate,
            slowed: d.slowed_until.is_some_and(|t| now < t),
        })
    }

    /// Whether a message to `domain` could go right now without waiting
    /// (takes the rate cell if so). For tests and status displays.
    pub fn try_now(&self, domain: &str) -> bool {
        let limiter = self.with_domain(domain, |d| Arc::clone(&d.limiter));
        limiter.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn limits(rate: u32, concurrency: usize) -> Limits {
        Limits {
            global_rate: 10_000,
            default_domain: DomainLimits { rate, concurrency },
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
        custom.domains.insert(
            "gmail.com".into(),
            DomainLimits {
                rate: 2,
                concurrency: 1,
            },
        );
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
