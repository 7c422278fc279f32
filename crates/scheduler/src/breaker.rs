//! The reputation circuit breaker of one campaign run: a rolling window of
//! the latest outcomes per provider group and one over all providers.
//!
//! - A provider whose window holds at least `min_sample` outcomes of which
//!   more than `block_ratio` are blocks (the receiver refused *us*: a
//!   block-class refusal while sending) is **suspended**: its deliveries
//!   wait, the other providers go on.
//! - When the window over all providers holds at least `min_sample`
//!   outcomes, more than `block_ratio` of them blocks, and no single
//!   provider holds more than half of those blocks (one provider's blocks
//!   are that provider's problem, and suspend it instead), the **campaign**
//!   is paused: everybody is refusing us.
//! - Complaints above `complaint_ratio` of the messages sent (at least
//!   `min_sample` of them) pause the campaign too ([`complaint_trip`]).
//!
//! Pure bookkeeping: the runner records and acts on what it returns.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The breaker's thresholds (`[breaker]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerLimits {
    /// Outcomes kept per window.
    pub window: usize,
    /// Share of blocks above which a window trips.
    pub block_ratio: f64,
    /// Share of complaints of the sent messages above which the campaign pauses.
    pub complaint_ratio: f64,
    /// Outcomes (or sent messages) a ratio needs before it counts.
    pub min_sample: usize,
}

impl Default for BreakerLimits {
    fn default() -> Self {
        BreakerLimits {
            window: 500,
            block_ratio: 0.05,
            complaint_ratio: 0.003,
            min_sample: 100,
        }
    }
}

/// The latest `cap` outcomes of one provider: block or not.
#[derive(Debug, Clone)]
pub struct Window {
    cap: usize,
    outcomes: VecDeque<bool>,
    blocks: usize,
}

impl Window {
    pub fn new(cap: usize) -> Self {
        Window {
            cap: cap.max(1),
            outcomes: VecDeque::new(),
            blocks: 0,
        }
    }

    /// Adds one outcome, dropping the oldest beyond the window.
    pub fn push(&mut self, block: bool) {
        if self.outcomes.len() == self.cap
            && let Some(old) = self.outcomes.pop_front()
        {
            self.blocks -= usize::from(old);
        }
        self.outcomes.push_back(block);
        self.blocks += usize::from(block);
    }

    /// Outcomes in the window.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// Blocks in the window.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// True when the window holds at least `min_sample` outcomes and more
    /// than `ratio` of them are blocks.
    pub fn tripped(&self, ratio: f64, min_sample: usize) -> bool {
        self.len() >= min_sample.max(1) && self.blocks as f64 > ratio * self.len() as f64
    }
}

/// What a recorded outcome tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trip {
    /// Suspend this provider for the campaign, with the reason.
    Provider { provider: Arc<str>, reason: String },
    /// Pause the whole campaign, with the reason.
    Campaign { reason: String },
}

/// The campaign-wide window: each outcome with its provider.
#[derive(Debug)]
struct AllWindow {
    cap: usize,
    outcomes: VecDeque<(Arc<str>, bool)>,
    blocks: HashMap<Arc<str>, usize>,
    total_blocks: usize,
}

impl AllWindow {
    fn push(&mut self, provider: Arc<str>, block: bool) {
        if self.outcomes.len() == self.cap
            && let Some((p, old)) = self.outcomes.pop_front()
            && old
        {
            self.total_blocks -= 1;
            if let Some(n) = self.blocks.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.blocks.remove(&p);
                }
            }
        }
        if block {
            *self.blocks.entry(Arc::clone(&provider)).or_default() += 1;
            self.total_blocks += 1;
        }
        self.outcomes.push_back((provider, block));
    }

    /// Drops a provider's outcomes (it was suspended: its blocks are dealt with).
    fn forget(&mut self, provider: &str) {
        self.outcomes.retain(|(p, _)| &**p != provider);
        self.total_blocks -= self.blocks.remove(provider).unwrap_or(0);
    }
}

#[derive(Debug)]
struct Inner {
    providers: HashMap<Arc<str>, Window>,
    all: AllWindow,
    /// Suspended providers and why.
    suspended: HashMap<Arc<str>, String>,
}

/// One campaign run's breaker. Shared by the send tasks.
#[derive(Debug)]
pub struct Breaker {
    limits: BreakerLimits,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(limits: BreakerLimits) -> Self {
        Breaker {
            limits,
            inner: Mutex::new(Inner {
                providers: HashMap::new(),
                all: AllWindow {
                    cap: limits.window.max(1),
                    outcomes: VecDeque::new(),
                    blocks: HashMap::new(),
                    total_blocks: 0,
                },
                suspended: HashMap::new(),
            }),
        }
    }

    pub fn limits(&self) -> BreakerLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why `provider` is suspended, if it is.
    pub fn suspended(&self, provider: &str) -> Option<String> {
        self.lock().suspended.get(provider).cloned()
    }

    /// Takes the suspensions recorded in the database (they survive a
    /// restart, and `campaign resume --provider` lifts them from another
    /// process). A provider no longer suspended starts with an empty
    /// window. Returns the providers lifted since the last look.
    pub fn sync_suspended(&self, stored: &[(String, String)]) -> Vec<Arc<str>> {
        let mut inner = self.lock();
        let lifted: Vec<Arc<str>> = inner
            .suspended
            .keys()
            .filter(|p| !stored.iter().any(|(s, _)| s == &***p))
            .cloned()
            .collect();
        for p in &lifted {
            inner.suspended.remove(p);
            inner.providers.remove(p);
        }
        for (p, reason) in stored {
            if !inner.suspended.contains_key(p.as_str()) {
                let p: Arc<str> = Arc::from(p.as_str());
                inner.all.forget(&p);
                inner.suspended.insert(p, reason.clone());
            }
        }
        lifted
    }

    /// Records one final (or block-deferred) outcome for `provider`.
    /// Returns what it tripped, once: a provider trips when it is
    /// suspended (later outcomes of its sends in flight trip nothing).
    pub fn record(&self, provider: &Arc<str>, block: bool) -> Option<Trip> {
        let l = self.limits;
        let mut inner = self.lock();
        if inner.suspended.contains_key(provider) {
            return None;
        }
        let w = inner
            .providers
            .entry(Arc::clone(provider))
            .or_insert_with(|| Window::new(l.window));
        w.push(block);
        if w.tripped(l.block_ratio, l.min_sample) {
            let reason = format!(
                "{} of the last {} messages to {provider} were refused as blocks \
                 ({:.1} % > {:.1} %)",
                w.blocks(),
                w.len(),
                100.0 * w.blocks() as f64 / w.len() as f64,
                100.0 * l.block_ratio
            );
            inner.all.forget(provider);
            inner.suspended.insert(Arc::clone(provider), reason.clone());
            return Some(Trip::Provider {
                provider: Arc::clone(provider),
                reason,
            });
        }
        inner.all.push(Arc::clone(provider), block);
        let all = &inner.all;
        let n = all.outcomes.len();
        let worst = all.blocks.values().copied().max().unwrap_or(0);
        if n >= l.min_sample.max(1)
            && all.total_blocks as f64 > l.block_ratio * n as f64
            && worst * 2 <= all.total_blocks
        {
            return Some(Trip::Campaign {
                reason: format!(
                    "{} of the last {n} messages were refused as blocks by {} providers \
                     ({:.1} % > {:.1} %)",
                    all.total_blocks,
                    all.blocks.len(),
                    100.0 * all.total_blocks as f64 / n as f64,
                    100.0 * l.block_ratio
                ),
            });
        }
        None
    }
}

/// The campaign's pause reason when `complaints` of `sent` messages are
/// more than the limits allow (and `sent` reaches the minimum sample).
pub fn complaint_trip(limits: &BreakerLimits, complaints: u64, sent: u64) -> Option<String> {
    (sent >= limits.min_sample.max(1) as u64
        && complaints as f64 > limits.complaint_ratio * sent as f64)
        .then(|| {
            format!(
                "{complaints} complaints about {sent} messages sent ({:.2} % > {:.2} %)",
                100.0 * complaints as f64 / sent as f64,
                100.0 * limits.complaint_ratio
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(window: usize, min_sample: usize) -> BreakerLimits {
        BreakerLimits {
            window,
            block_ratio: 0.05,
            complaint_ratio: 0.003,
            min_sample,
        }
    }

    #[test]
    fn a_window_keeps_only_the_latest_outcomes() {
        let mut w = Window::new(4);
        for b in [true, true, false, false] {
            w.push(b);
        }
        assert_eq!((w.len(), w.blocks()), (4, 2));
        w.push(false);
        w.push(false);
        assert_eq!((w.len(), w.blocks()), (4, 0), "the two blocks rolled out");
        assert!(!w.tripped(0.05, 1));
        w.push(true);
        assert!(w.tripped(0.05, 4));
        assert!(!w.tripped(0.05, 5), "below the minimum sample");
        assert!(!w.tripped(0.25, 4), "exactly the ratio is not above it");
    }

    #[test]
    fn one_provider_refusing_is_suspended_and_the_others_go_on() {
        let b = Breaker::new(limits(100, 20));
        let (google, other): (Arc<str>, Arc<str>) = (Arc::from("google"), Arc::from("example.org"));
        let mut trips = vec![];
        for i in 0..200 {
            // The other provider: all fine. Google: every other one blocked.
            trips.extend(b.record(&other, false));
            trips.extend(b.record(&google, i % 2 == 0));
        }
        assert_eq!(trips.len(), 1, "{trips:?}");
        match &trips[0] {
            Trip::Provider { provider, reason } => {
                assert_eq!(&**provider, "google");
                assert!(
                    reason.contains("of the last 20 messages to google"),
                    "{reason}"
                );
            }
            t => panic!("expected a provider trip, got {t:?}"),
        }
        assert!(b.suspended("google").is_some());
        assert!(b.suspended("example.org").is_none());
    }

    #[test]
    fn blocks_from_every_provider_pause_the_campaign() {
        let b = Breaker::new(limits(100, 20));
        let providers: Vec<Arc<str>> = (0..20)
            .map(|i| Arc::from(format!("d{i}.example")))
            .collect();
        let mut trip = None;
        for round in 0..10 {
            for p in &providers {
                // One block in ten, everywhere: each provider has 1–2
                // outcomes, too few to trip alone.
                trip = trip.or(b.record(p, round == 0));
            }
        }
        match trip {
            Some(Trip::Campaign { reason }) => assert!(reason.contains("20 providers"), "{reason}"),
            t => panic!("expected a campaign trip, got {t:?}"),
        }
    }

    #[test]
    fn lifting_a_suspension_starts_an_empty_window() {
        let b = Breaker::new(limits(50, 10));
        let g: Arc<str> = Arc::from("google");
        let tripped = (0..10).filter_map(|_| b.record(&g, true)).count();
        assert_eq!(tripped, 1);
        assert_eq!(b.record(&g, true), None, "trips once");
        // Stored as suspended (the runner wrote it), then lifted by resume.
        assert!(
            b.sync_suspended(&[("google".into(), "r".into())])
                .is_empty()
        );
        assert_eq!(b.sync_suspended(&[]), vec![g.clone()]);
        assert!(b.suspended("google").is_none());
        for _ in 0..9 {
            assert_eq!(b.record(&g, false), None);
        }
        // A suspension from the database (a restart) is taken as it is.
        b.sync_suspended(&[("yahoo".into(), "5 of 50".into())]);
        assert_eq!(b.suspended("yahoo").as_deref(), Some("5 of 50"));
    }

    #[test]
    fn complaints_count_above_the_ratio_and_the_minimum() {
        let l = limits(500, 100);
        assert_eq!(complaint_trip(&l, 1, 99), None, "below the minimum sample");
        assert_eq!(complaint_trip(&l, 0, 10_000), None);
        assert_eq!(
            complaint_trip(&l, 3, 1000),
            None,
            "0.3 % is not above 0.3 %"
        );
        let r = complaint_trip(&l, 4, 1000).unwrap();
        assert!(r.starts_with("4 complaints about 1000 messages"), "{r}");
    }
}
