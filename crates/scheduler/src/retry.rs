//! When a deferred delivery is tried again: exponential back-off with
//! jitter, up to a maximum age after which it is `failed`.

use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

/// Back-off for deferred deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first deferral; doubles with each attempt.
    pub base: Duration,
    /// Longest delay between two attempts.
    pub max: Duration,
    /// A delivery still deferred this long after its first attempt fails.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            max_age: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

/// What to do with a delivery that was just deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again at this instant.
    At(DateTime<Utc>),
    /// Past its maximum age: give up.
    GiveUp,
}

impl RetryPolicy {
    /// After attempt number `attempts` (1 for the first) of a delivery first
    /// tried at `first`, deferred at `now`. The delay is `base × 2^(attempts-1)`,
    /// capped at `max`, then spread by ±25 % with a jitter drawn from the
    /// delivery id, so that recipients deferred together (one slow domain)
    /// do not come back together.
    pub fn after_deferral(
        &self,
        delivery: Uuid,
        attempts: u32,
        first: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Retry {
        let exp = attempts.saturating_sub(1).min(30);
        let delay = self
            .base
            .saturating_mul(1u32 << exp)
            .min(self.max.max(self.base));
        let b = delivery.as_bytes();
        let spread = u16::from_le_bytes([b[14] ^ (attempts as u8), b[15]]) as f64 / u16::MAX as f64;
        let delay = delay.mul_f64(0.75 + 0.5 * spread);
        let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
        let deadline =
            first + chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::days(3));
        if now >= deadline || at > deadline {
            Retry::GiveUp
        } else {
            Retry::At(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_with_jitter_and_gives_up_at_max_age() {
        let p = RetryPolicy {
            base: Duration::from_secs(60),
            max: Duration::from_secs(600),
            max_age: Duration::from_secs(3600),
        };
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut spreads = std::collections::BTreeSet::new();
        for i in 0..50u128 {
            let id = Uuid::from_u128(i * 0x1234_5678_9abc_def1);
            for (attempt, nominal) in [(1u32, 60.0), (2, 120.0), (3, 240.0), (6, 600.0)] {
                let Retry::At(at) = p.after_deferral(id, attempt, t0, t0) else {
                    panic!("gave up too early");
                };
                let secs = (at - t0).num_milliseconds() as f64 / 1000.0;
                assert!(
                    secs >= nominal * 0.75 - 0.01 && secs <= nominal * 1.25 + 0.01,
                    "{attempt}: {secs}"
                );
                if attempt == 1 {
                    spreads.insert(secs as u64);
                }
            }
        }
        assert!(spreads.len() > 10, "jitter spreads retries: {spreads:?}");
        let id = Uuid::nil();
        let late = t0 + chrono::Duration::minutes(59);
        assert_eq!(p.after_deferral(id, 3, t0, late), Retry::GiveUp);
        assert_eq!(
            p.after_deferral(id, 3, t0, t0 + chrono::Duration::hours(2)),
            Retry::GiveUp
        );
    }
}
