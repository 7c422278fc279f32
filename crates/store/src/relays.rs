//! Relay quotas and rests (issue #18): how many messages each relay was
//! handed per UTC hour and day (`relay_usage`), and which relays are rested
//! after failing at CONNECT, TLS or AUTH (`relay_rests`).
//!
//! A quota is taken, never read-then-written: [`Store::take_relay_quota`]
//! raises a bucket's count with `UPDATE … WHERE sent + n <= quota` inside a
//! write transaction, so several workers (processes, machines) on one
//! database never hand a relay more than its quota together. On PostgreSQL a
//! second worker's UPDATE waits for the first one's row lock and then sees
//! the raised count; on SQLite writers take turns anyway.

use crate::{Doing, Result, Store};
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use rundbrief_core::DeliveryState;
use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait, Value};
use uuid::Uuid;

/// A relay's limits: messages per UTC hour and per UTC day (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayQuota {
    pub max_per_hour: Option<u64>,
    pub max_per_day: Option<u64>,
}

/// What [`Store::take_relay_quota`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Messages granted (at most the number asked for; 0 when the relay is
    /// at its quota).
    pub n: u64,
    /// The hour bucket they were counted in (give back to it).
    pub hour: DateTime<Utc>,
    /// The day bucket they were counted in.
    pub day: DateTime<Utc>,
    /// When fewer than asked were granted: when the quota that stopped it
    /// frees up (the next hour, or the next day when the day is full).
    pub full_until: Option<DateTime<Utc>>,
}

/// A relay's count in the current hour and day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayUsage {
    pub sent_hour: u64,
    pub sent_day: u64,
}

/// A rested relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRest {
    pub relay: String,
    pub until: DateTime<Utc>,
    /// The failure that rested it (`CONNECT to … failed: …`).
    pub reason: String,
}

/// The start of `t`'s UTC hour.
pub fn hour_bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .and_hms_opt(t.hour(), 0, 0)
        .map_or(t, |h| Utc.from_utc_datetime(&h))
}

/// The start of `t`'s UTC day.
pub fn day_bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(t, |h| Utc.from_utc_datetime(&h))
}

/// When the quota stopping a relay with `usage` frees up: the next day when
/// the day is full, the next hour when the hour is; `None` when neither is.
pub fn quota_frees_at(
    now: DateTime<Utc>,
    quota: RelayQuota,
    usage: RelayUsage,
) -> Option<DateTime<Utc>> {
    if quota.max_per_day.is_some_and(|q| usage.sent_day >= q) {
        return Some(day_bucket(now) + Duration::days(1));
    }
    if quota.max_per_hour.is_some_and(|q| usage.sent_hour >= q) {
        return Some(hour_bucket(now) + Duration::hours(1));
    }
    None
}

const HOUR: &str = "hour";
const DAY: &str = "day";

#[derive(FromQueryResult)]
struct Row {
    bucket_kind: String,
    sent: i64,
}

impl Store {
    /// Takes up to `want` messages of `relay`'s quota in the buckets of
    /// `now` (counted in both the hour and the day), as many as both leave.
    /// A relay without limits is counted too (for `campaign status`).
    ///
    /// # Errors
    /// The store failed.
    pub async fn take_relay_quota(
        &self,
        relay: &str,
        now: DateTime<Utc>,
        want: u64,
        quota: RelayQuota,
    ) -> Result<Taken> {
        let (hour, day) = (hour_bucket(now), day_bucket(now));
        // A concurrent worker can take between our read and our UPDATE; the
        // UPDATE's condition then fails and we read again. Bounded.
        for _ in 0..8 {
            let txn = self.write_txn().await.doing("starting a quota take")?;
            txn.execute_raw(self.stmt(
                "INSERT INTO relay_usage (relay, bucket_kind, bucket_start, sent) \
                 VALUES (?, ?, ?, 0), (?, ?, ?, 0) ON CONFLICT DO NOTHING",
                vec![
                    relay.into(),
                    HOUR.into(),
                    hour.into(),
                    relay.into(),
                    DAY.into(),
                    day.into(),
                ],
            ))
            .await
            .doing("opening relay quota buckets")?;
            let rows = Row::find_by_statement(self.stmt(
                "SELECT bucket_kind, sent FROM relay_usage WHERE relay = ? AND \
                 ((bucket_kind = ? AND bucket_start = ?) OR (bucket_kind = ? AND bucket_start = ?))",
                vec![
                    relay.into(),
                    HOUR.into(),
                    hour.into(),
                    DAY.into(),
                    day.into(),
                ],
            ))
            .all(&txn)
            .await
            .doing("reading relay quota buckets")?;
            let usage = usage_of(&rows);
            let left = |q: Option<u64>, sent: u64| q.map_or(u64::MAX, |q| q.saturating_sub(sent));
            let n = want
                .min(left(quota.max_per_hour, usage.sent_hour))
                .min(left(quota.max_per_day, usage.sent_day));
            if n == 0 {
                txn.rollback().await.doing("ending a quota take")?;
                return Ok(Taken {
                    n,
                    hour,
                    day,
                    full_until: (want > 0)
                        .then(|| quota_frees_at(now, quota, usage))
                        .flatten(),
                });
            }
            let mut ok = true;
            for (kind, start, q) in [
                (HOUR, hour, quota.max_per_hour),
                (DAY, day, quota.max_per_day),
            ] {
                let q = q.map_or(i64::MAX, |q| i64::try_from(q).unwrap_or(i64::MAX));
                let r = txn
                    .execute_raw(self.stmt(
                        "UPDATE relay_usage SET sent = sent + ? WHERE relay = ? AND \
                         bucket_kind = ? AND bucket_start = ? AND sent + ? <= ?",
                        vec![
                            (n as i64).into(),
                            relay.into(),
                            kind.into(),
                            start.into(),
                            (n as i64).into(),
                            q.into(),
                        ],
                    ))
                    .await
                    .doing("taking relay quota")?;
                ok &= r.rows_affected() == 1;
            }
            if !ok {
                txn.rollback().await.doing("ending a quota take")?;
                continue;
            }
            txn.commit().await.doing("committing a quota take")?;
            return Ok(Taken {
                n,
                hour,
                day,
                full_until: (n < want)
                    .then(|| {
                        let after = RelayUsage {
                            sent_hour: usage.sent_hour + n,
                            sent_day: usage.sent_day + n,
                        };
                        quota_frees_at(now, quota, after)
                    })
                    .flatten(),
            });
        }
        // Lost every race: take nothing now; the caller asks again.
        Ok(Taken {
            n: 0,
            hour,
            day,
            full_until: None,
        })
    }

    /// Gives `n` messages taken in the buckets `hour` and `day` back (taken
    /// but not handed to the relay).
    ///
    /// # Errors
    /// The store failed.
    pub async fn give_back_relay_quota(
        &self,
        relay: &str,
        hour: DateTime<Utc>,
        day: DateTime<Utc>,
        n: u64,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let txn = self.db.begin().await.doing("starting a quota give-back")?;
        for (kind, start) in [(HOUR, hour), (DAY, day)] {
            txn.execute_raw(self.stmt(
                "UPDATE relay_usage SET sent = CASE WHEN sent > ? THEN sent - ? ELSE 0 END \
                 WHERE relay = ? AND bucket_kind = ? AND bucket_start = ?",
                vec![
                    (n as i64).into(),
                    (n as i64).into(),
                    relay.into(),
                    kind.into(),
                    start.into(),
                ],
            ))
            .await
            .doing("giving relay quota back")?;
        }
        txn.commit().await.doing("committing a quota give-back")?;
        Ok(())
    }

    /// `relay`'s counts in the hour and the day of `now`.
    ///
    /// # Errors
    /// The store failed.
    pub async fn relay_usage(&self, relay: &str, now: DateTime<Utc>) -> Result<RelayUsage> {
        let rows = Row::find_by_statement(self.stmt(
            "SELECT bucket_kind, sent FROM relay_usage WHERE relay = ? AND \
             ((bucket_kind = ? AND bucket_start = ?) OR (bucket_kind = ? AND bucket_start = ?))",
            vec![
                relay.into(),
                HOUR.into(),
                hour_bucket(now).into(),
                DAY.into(),
                day_bucket(now).into(),
            ],
        ))
        .all(&self.db)
        .await
        .doing("reading relay usage")?;
        Ok(usage_of(&rows))
    }

    /// Rests `relay` until `until` because of `reason` (replacing an
    /// earlier rest).
    ///
    /// # Errors
    /// The store failed.
    pub async fn rest_relay(
        &self,
        relay: &str,
        until: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO relay_rests (relay, until, reason, since) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (relay) DO UPDATE SET until = excluded.until, \
                 reason = excluded.reason, since = excluded.since",
                vec![relay.into(), until.into(), reason.into(), now.into()],
            ))
            .await
            .doing("resting a relay")?;
        Ok(())
    }

    /// The rests of `relays` that last beyond `now`.
    ///
    /// # Errors
    /// The store failed.
    pub async fn relay_rests(&self, relays: &[&str], now: DateTime<Utc>) -> Result<Vec<RelayRest>> {
        if relays.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(FromQueryResult)]
        struct R {
            relay: String,
            until: DateTime<Utc>,
            reason: String,
        }
        let marks = vec!["?"; relays.len()].join(", ");
        let mut values: Vec<Value> = vec![now.into()];
        values.extend(relays.iter().map(|r| Value::from(*r)));
        Ok(R::find_by_statement(self.stmt(
            &format!("SELECT relay, until, reason FROM relay_rests WHERE until > ? AND relay IN ({marks})"),
            values,
        ))
        .all(&self.db)
        .await
        .doing("reading relay rests")?
        .into_iter()
        .map(|r| RelayRest {
            relay: r.relay,
            until: r.until,
            reason: r.reason,
        })
        .collect())
    }

    /// Puts claimed deliveries back as pending, due at `until`, untried
    /// (their attempts unchanged): no relay could take them now (every one
    /// at its quota or rested).
    ///
    /// # Errors
    /// The store failed.
    pub async fn requeue_deliveries(&self, ids: &[Uuid], until: DateTime<Utc>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let mut values: Vec<Value> = vec![
            DeliveryState::Pending.as_str().into(),
            until.into(),
            Utc::now().into(),
            DeliveryState::Sending.as_str().into(),
        ];
        values.extend(ids.iter().map(|id| Value::from(*id)));
        self.db
            .execute_raw(self.stmt(
                &format!(
                    "UPDATE deliveries SET state = ?, next_attempt_at = ?, lease_owner = NULL, \
                     lease_until = NULL, updated_at = ? WHERE state = ? AND id IN ({marks})"
                ),
                values,
            ))
            .await
            .doing("putting deliveries back until a relay is free")?;
        Ok(())
    }
}

fn usage_of(rows: &[Row]) -> RelayUsage {
    let mut u = RelayUsage::default();
    for r in rows {
        let n = u64::try_from(r.sent).unwrap_or(0);
        match r.bucket_kind.as_str() {
            HOUR => u.sent_hour = n,
            DAY => u.sent_day = n,
            _ => {}
        }
    }
    u
}
