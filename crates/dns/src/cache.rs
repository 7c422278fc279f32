//! The answer cache: one entry per (domain, record type), kept for the
//! answer's TTL and bounded in size.
//!
//! Expiry is decided by the injected [`Clock`] on every read, so tests move
//! time without sleeping. moka (already in the tree through
//! hickory-resolver) bounds the number of entries and also drops entries
//! whose TTL has passed in real time, so stale answers do not hold memory.

use crate::clock::Clock;
use crate::resolver::{Answer, LookupError, Rtype};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) type Key = (Arc<str>, Rtype);

/// An answer, or a failure remembered for a short while.
pub(crate) type Outcome = Result<Answer, LookupError>;

#[derive(Clone)]
struct Entry {
    answer: Outcome,
    expires: Instant,
    ttl: Duration,
}

/// Real-time expiry for moka: an entry leaves at the latest when its TTL has
/// passed (the clock check on read decides earlier under a manual clock).
struct TtlExpiry;

impl moka::Expiry<Key, Entry> for TtlExpiry {
    fn expire_after_create(&self, _key: &Key, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Entry,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub(crate) struct AnswerCache {
    map: moka::sync::Cache<Key, Entry>,
    clock: Arc<dyn Clock>,
}

impl AnswerCache {
    pub(crate) fn new(capacity: u64, clock: Arc<dyn Clock>) -> Self {
        AnswerCache {
            map: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(TtlExpiry)
                .build(),
            clock,
        }
    }

    /// The cached outcome, if there is one whose TTL has not passed.
    pub(crate) fn get(&self, key: &Key) -> Option<Outcome> {
        let e = self.map.get(key)?;
        if e.expires > self.clock.now() {
            Some(e.answer)
        } else {
            self.map.invalidate(key);
            None
        }
    }

    /// Keeps `answer` for `ttl` (nothing is kept for a TTL of zero).
    pub(crate) fn insert(&self, key: Key, answer: Outcome, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let expires = self.clock.now() + ttl;
        self.map.insert(
            key,
            Entry {
                answer,
                expires,
                ttl,
            },
        );
    }

    /// Entries held now, after pending evictions have run.
    pub(crate) fn len(&self) -> u64 {
        self.map.run_pending_tasks();
        self.map.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn entries_expire_by_the_clock_and_the_size_is_bounded() {
        let clock = Arc::new(ManualClock::new());
        let cache = AnswerCache::new(100, clock.clone());
        let key: Key = (Arc::from("example.org"), Rtype::Mx);
        cache.insert(key.clone(), Ok(Answer::NoData), Duration::from_secs(60));
        cache.insert(
            (Arc::from("zero.example"), Rtype::A),
            Ok(Answer::NoData),
            Duration::ZERO,
        );
        assert!(cache.get(&(Arc::from("zero.example"), Rtype::A)).is_none());
        clock.advance(Duration::from_secs(59));
        assert!(matches!(cache.get(&key), Some(Ok(Answer::NoData))));
        clock.advance(Duration::from_secs(1));
        assert!(cache.get(&key).is_none(), "expired at its TTL");
        for i in 0..1000 {
            cache.insert(
                (Arc::from(format!("d{i}.example")), Rtype::Mx),
                Ok(Answer::NxDomain),
                Duration::from_secs(600),
            );
        }
        let n = cache.len();
        assert!(n <= 100, "cache holds {n} entries, capacity 100");
        assert!(n > 0);
    }
}
