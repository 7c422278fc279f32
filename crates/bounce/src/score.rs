//! Scoring and the prune decision: what one classified bounce does to one
//! address, given what came before. Pure: the caller loads the previous
//! [`Score`], calls [`apply`], stores the new one and carries out the
//! [`Verdict`] (with an audit entry naming the rule and the score).
//!
//! The model follows Mailman's bounce processing, which list operators know:
//! a threshold (default 5.0), soft bounces weighing less than hard ones
//! (0.5), several bounces on one day counting once (the heaviest). Unlike
//! Mailman, the score decays continuously (half-life, default 14 days)
//! instead of being reset after a quiet week: an address that soft-bounces
//! every day is pruned after about two weeks, one that soft-bounces once a
//! week never is.

use crate::BounceClass;

/// Scoring settings; [`ScoreConfig::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreConfig {
    /// Score at which an address is pruned. Default 5.0.
    pub threshold: f64,
    /// What one day with soft bounces adds. Default 0.5.
    pub soft_weight: f64,
    /// Hard bounces needed to prune (on different days). Default 1: at once.
    pub hard_after: u32,
    /// Days after which a score has halved. Default 14.
    pub half_life_days: f64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            threshold: 5.0,
            soft_weight: 0.5,
            hard_after: 1,
            half_life_days: 14.0,
        }
    }
}

impl ScoreConfig {
    /// What one day with a hard bounce adds: enough to reach the threshold
    /// after `hard_after` of them.
    fn hard_weight(&self) -> f64 {
        self.threshold / f64::from(self.hard_after.max(1))
    }
}

/// The bounce history of one address, as stored between bounces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The score after the last counted bounce, before decay.
    pub value: f64,
    /// When it was last counted, as days since the Unix epoch (UTC).
    pub day: i64,
    /// The weight counted for `day` (the heaviest bounce of that day).
    pub day_weight: f64,
}

impl Score {
    /// The score as of `day`, decayed.
    pub fn decayed(&self, day: i64, cfg: &ScoreConfig) -> f64 {
        let elapsed = (day - self.day).max(0) as f64;
        self.value * 0.5f64.powf(elapsed / cfg.half_life_days.max(f64::MIN_POSITIVE))
    }
}

/// What to do with the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Mark the subscriber bounced; `rule` says why.
    Prune { rule: &'static str },
    /// Unsubscribe the subscriber from every list (a complaint).
    Unsubscribe,
    /// The receiver refused us: never prune; count it for the sending domain.
    SenderProblem,
    /// Keep the address (the score may have changed).
    Keep,
}

/// Applies one bounce of `class` on `day` (days since the Unix epoch, UTC)
/// to the previous score. Returns the new score (unchanged for classes that
/// do not count) and the verdict.
pub fn apply(
    previous: Option<Score>,
    class: BounceClass,
    day: i64,
    cfg: &ScoreConfig,
) -> (Option<Score>, Verdict) {
    let weight = match class {
        BounceClass::Hard => cfg.hard_weight(),
        BounceClass::Soft => cfg.soft_weight,
        BounceClass::Complaint => return (previous, Verdict::Unsubscribe),
        BounceClass::Block => return (previous, Verdict::SenderProblem),
        BounceClass::Ignore | BounceClass::Unknown => return (previous, Verdict::Keep),
    };
    let score = match previous {
        // Several bounces on one day count once: the heaviest of them.
        Some(p) if p.day == day => Score {
            value: p.value + (weight - p.day_weight).max(0.0),
            day_weight: p.day_weight.max(weight),
            ..p
        },
        Some(p) => Score {
            value: p.decayed(day, cfg) + weight,
            day,
            day_weight: weight,
        },
        None => Score {
            value: weight,
            day,
            day_weight: weight,
        },
    };
    let verdict = if score.value + 1e-9 >= cfg.threshold {
        Verdict::Prune {
            rule: if class == BounceClass::Hard {
                "hard-bounce"
            } else {
                "soft-bounce-score"
            },
        }
    } else {
        Verdict::Keep
    };
    (Some(score), verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(days: &[(i64, BounceClass)], cfg: &ScoreConfig) -> (Option<Score>, Verdict) {
        let mut score = None;
        let mut verdict = Verdict::Keep;
        for &(day, class) in days {
            (score, verdict) = apply(score, class, day, cfg);
        }
        (score, verdict)
    }

    #[test]
    fn hard_prunes_at_once_by_default_and_after_n_when_configured() {
        let cfg = ScoreConfig::default();
        assert_eq!(
            apply(None, BounceClass::Hard, 100, &cfg).1,
            Verdict::Prune {
                rule: "hard-bounce"
            }
        );
        let cfg3 = ScoreConfig {
            hard_after: 3,
            ..ScoreConfig::default()
        };
        assert_eq!(
            run(&[(100, BounceClass::Hard), (101, BounceClass::Hard)], &cfg3).1,
            Verdict::Keep
        );
        assert_eq!(
            run(
                &[
                    (100, BounceClass::Hard),
                    (100, BounceClass::Hard),
                    (100, BounceClass::Hard)
                ],
                &cfg3
            )
            .1,
            Verdict::Keep,
            "three on one day count once"
        );
        // Three days in a row: decay shaves a little off; the fourth reaches it.
        let (_, v) = run(
            &[
                (100, BounceClass::Hard),
                (101, BounceClass::Hard),
                (102, BounceClass::Hard),
                (103, BounceClass::Hard),
            ],
            &cfg3,
        );
        assert_eq!(
            v,
            Verdict::Prune {
                rule: "hard-bounce"
            }
        );
    }

    #[test]
    fn soft_bounces_accumulate_with_decay() {
        let cfg = ScoreConfig::default();
        // Every day: pruned within a couple of weeks.
        let daily: Vec<_> = (0..30).map(|d| (d, BounceClass::Soft)).collect();
        let first_prune =
            (1..=daily.len()).find(|&n| matches!(run(&daily[..n], &cfg).1, Verdict::Prune { .. }));
        let n = first_prune.expect("daily soft bounces must prune eventually");
        assert!((10..=20).contains(&n), "pruned after {n} days");
        // Once a week: never.
        let weekly: Vec<_> = (0..52).map(|w| (w * 7, BounceClass::Soft)).collect();
        assert_eq!(run(&weekly, &cfg).1, Verdict::Keep);
        // Many on one day: counted once.
        let burst: Vec<_> = (0..50).map(|_| (5, BounceClass::Soft)).collect();
        assert!((run(&burst, &cfg).0.unwrap().value - 0.5).abs() < 1e-9);
    }

    #[test]
    fn block_complaint_and_ignore_never_prune_or_count() {
        let cfg = ScoreConfig::default();
        let prev = Some(Score {
            value: 4.9,
            day: 10,
            day_weight: 0.5,
        });
        for (class, want) in [
            (BounceClass::Block, Verdict::SenderProblem),
            (BounceClass::Complaint, Verdict::Unsubscribe),
            (BounceClass::Ignore, Verdict::Keep),
            (BounceClass::Unknown, Verdict::Keep),
        ] {
            let (score, verdict) = apply(prev, class, 10, &cfg);
            assert_eq!((score, verdict), (prev, want), "{class:?}");
        }
        // A reputation incident: a hundred blocks in a row prune nobody.
        let blocks: Vec<_> = (0..100).map(|d| (d, BounceClass::Block)).collect();
        assert_eq!(run(&blocks, &cfg), (None, Verdict::SenderProblem));
    }

    #[test]
    fn a_hard_bounce_on_a_soft_day_still_prunes() {
        let cfg = ScoreConfig::default();
        let (_, v) = run(&[(3, BounceClass::Soft), (3, BounceClass::Hard)], &cfg);
        assert_eq!(
            v,
            Verdict::Prune {
                rule: "hard-bounce"
            }
        );
    }
}
