//! Counts over time for the dashboard's charts, each from a bounded range
//! on an indexed time column or from the `delivery_stats` counters that
//! [`Store::record_outcomes`] keeps per campaign and hour (so a chart of
//! sends never groups the deliveries table).

use crate::{Doing, Result, Store};
use chrono::{DateTime, NaiveDate, TimeZone, Timelike, Utc};
use rundbrief_core::{AuditAction, DeliveryState};
use sea_orm::{ConnectionTrait, FromQueryResult, Value};
use uuid::Uuid;

/// Outcomes recorded in one UTC hour (all campaigns, or one).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SendBucket {
    /// The start of the hour.
    pub at: DateTime<Utc>,
    pub sent: u64,
    /// Failed and rejected together: not delivered, for good.
    pub failed: u64,
    pub deferred: u64,
}

/// Bounces of one class received in one bucket (an hour or a day).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BounceBucket {
    /// The start of the bucket (UTC).
    pub at: DateTime<Utc>,
    /// The class (`hard`, `soft`, …), `unparsed` when not classified.
    pub class: String,
    pub count: u64,
}

/// A list's changes on one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GrowthDay {
    pub day: NaiveDate,
    /// Memberships created.
    pub joined: u64,
    /// Members who unsubscribed (from this list or from everything).
    pub unsubscribed: u64,
    /// Members pruned: marked bounced or undeliverable.
    pub pruned: u64,
}

/// The length of a `delivery_pace` bucket, seconds.
pub const PACE_BUCKET_S: i64 = 5;

/// The start of the five-second `delivery_pace` bucket of `t`.
pub fn pace_bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    Utc.timestamp_opt(s - s.rem_euclid(PACE_BUCKET_S), 0)
        .single()
        .unwrap_or(t)
}

/// The start of the UTC hour of `t`.
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(t)
}

/// A bucket key as the SQL of [`Store::bucket_sql`] writes it,
/// `YYYY-MM-DD` or `YYYY-MM-DD HH` (SQLite may have a `T`), as a time.
fn parse_bucket(s: &str) -> Option<DateTime<Utc>> {
    let day = NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()?;
    let hour: u32 = match s.get(11..13) {
        Some(h) => h.parse().ok()?,
        None => 0,
    };
    Utc.from_local_datetime(&day.and_hms_opt(hour, 0, 0)?)
        .single()
}

impl Store {
    /// SQL for the UTC day (or hour) of timestamp column `col` as text.
    fn bucket_sql(&self, col: &str, hourly: bool) -> String {
        if self.is_postgres() {
            let f = if hourly {
                "YYYY-MM-DD HH24"
            } else {
                "YYYY-MM-DD"
            };
            format!("to_char({col} AT TIME ZONE 'UTC', '{f}')")
        } else {
            // Timestamps are stored as UTC text starting `YYYY-MM-DD HH`.
            format!("substr({col}, 1, {})", if hourly { 13 } else { 10 })
        }
    }

    /// Adds recorded outcomes (campaign, state) to the hourly
    /// `delivery_stats` counters and the five-second `delivery_pace`
    /// buckets of `now`, summed here (never a re-read of the deliveries
    /// just updated): the statements, `?`-marked with their values, for the
    /// caller to run with the deliveries' update — in its transaction, or
    /// on PostgreSQL in the same statement ([`Store::run_together`]). A
    /// delivery whose DSN was recorded before its 250 is counted as sent
    /// here: the relay did take it.
    pub(crate) fn outcome_counts(
        outcomes: impl IntoIterator<Item = (Uuid, DeliveryState)>,
        now: DateTime<Utc>,
    ) -> Vec<(String, Vec<Value>)> {
        // Per campaign: sent, failed, rejected, deferred.
        let mut sums: Vec<(Uuid, [i64; 4])> = Vec::new();
        for (campaign, state) in outcomes {
            let i = match state {
                DeliveryState::Sent => 0,
                DeliveryState::Failed => 1,
                DeliveryState::Rejected => 2,
                DeliveryState::Deferred => 3,
                _ => continue,
            };
            match sums.iter_mut().find(|(c, _)| *c == campaign) {
                Some((_, n)) => n[i] += 1,
                None => {
                    let mut n = [0; 4];
                    n[i] = 1;
                    sums.push((campaign, n));
                }
            }
        }
        let mut out = Vec::new();
        if sums.is_empty() {
            return out;
        }
        let hour = hour_of(now);
        let marks = vec!["(?, ?, ?, ?, ?, ?)"; sums.len()].join(", ");
        let mut values: Vec<Value> = Vec::with_capacity(sums.len() * 6);
        for (c, n) in &sums {
            values.push((*c).into());
            values.push(hour.into());
            values.extend(n.iter().map(|&x| Value::from(x)));
        }
        out.push((
            format!(
                "INSERT INTO delivery_stats (campaign_id, hour, sent, failed, rejected, deferred) \
                 VALUES {marks} \
                 ON CONFLICT (campaign_id, hour) DO UPDATE SET \
                 sent = delivery_stats.sent + excluded.sent, \
                 failed = delivery_stats.failed + excluded.failed, \
                 rejected = delivery_stats.rejected + excluded.rejected, \
                 deferred = delivery_stats.deferred + excluded.deferred"
            ),
            values,
        ));
        // The pace counts final outcomes (a deferral is tried again).
        let pace: Vec<(Uuid, i64)> = sums
            .iter()
            .map(|(c, n)| (*c, n[0] + n[1] + n[2]))
            .filter(|(_, n)| *n > 0)
            .collect();
        if pace.is_empty() {
            return out;
        }
        let at = pace_bucket(now);
        let marks = vec!["(?, ?, ?, ?)"; pace.len()].join(", ");
        let mut values: Vec<Value> = Vec::with_capacity(pace.len() * 4);
        for (c, n) in &pace {
            values.push((*c).into());
            values.push(at.into());
            values.push(now.into());
            values.push((*n).into());
        }
        out.push((
            format!(
                "INSERT INTO delivery_pace (campaign_id, at, first_at, outcomes) VALUES {marks} \
                 ON CONFLICT (campaign_id, at) DO UPDATE SET \
                 outcomes = delivery_pace.outcomes + excluded.outcomes, \
                 first_at = CASE WHEN excluded.first_at < delivery_pace.first_at \
                   THEN excluded.first_at ELSE delivery_pace.first_at END"
            ),
            values,
        ));
        // In the first bucket of each minute, drop these campaigns' buckets
        // older than an hour (a few rows by the primary key): the table
        // stays at most an hour of buckets per campaign.
        if at.second() == 0 {
            let marks = vec!["?"; pace.len()].join(", ");
            let mut values: Vec<Value> = vec![(at - chrono::Duration::hours(1)).into()];
            values.extend(pace.iter().map(|(c, _)| Value::from(*c)));
            out.push((
                format!("DELETE FROM delivery_pace WHERE at < ? AND campaign_id IN ({marks})"),
                values,
            ));
        }
        out
    }

    /// Runs `parts` (`?`-marked SQL with values) on `conn` in order.
    pub(crate) async fn run_each(
        &self,
        conn: &impl ConnectionTrait,
        parts: Vec<(String, Vec<Value>)>,
        doing: &'static str,
    ) -> Result<()> {
        for (sql, values) in parts {
            conn.execute_raw(self.stmt(&sql, values))
                .await
                .doing(doing)?;
        }
        Ok(())
    }

    /// Runs `parts` atomically with one commit: on PostgreSQL as one
    /// statement (each but the last a data-modifying `WITH` clause: one
    /// round trip), on SQLite in one write transaction (one fsync instead
    /// of one per statement).
    pub(crate) async fn run_together(
        &self,
        parts: Vec<(String, Vec<Value>)>,
        doing: &'static str,
    ) -> Result<()> {
        if parts.len() <= 1 {
            return self.run_each(&self.db, parts, doing).await;
        }
        if self.is_postgres() {
            let n = parts.len();
            let mut sql = String::from("WITH ");
            let mut values = Vec::new();
            for (i, (s, v)) in parts.into_iter().enumerate() {
                if i + 1 < n {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("w{i} AS ({s})"));
                } else {
                    sql.push(' ');
                    sql.push_str(&s);
                }
                values.extend(v);
            }
            self.db
                .execute_raw(self.stmt(&sql, values))
                .await
                .doing(doing)?;
            return Ok(());
        }
        let txn = self.write_txn().await.doing(doing)?;
        self.run_each(&txn, parts, doing).await?;
        txn.commit().await.doing(doing)?;
        Ok(())
    }

    /// Outcomes per UTC hour since `since` (of one campaign, or all), from
    /// `delivery_stats`; hours without any are left out.
    pub async fn send_stats(
        &self,
        campaign_id: Option<Uuid>,
        since: DateTime<Utc>,
    ) -> Result<Vec<SendBucket>> {
        #[derive(FromQueryResult)]
        struct R {
            hour: DateTime<Utc>,
            sent: i64,
            failed: i64,
            deferred: i64,
        }
        let mut values: Vec<Value> = vec![hour_of(since).into()];
        let only = match campaign_id {
            Some(id) => {
                values.push(id.into());
                " AND campaign_id = ?"
            }
            None => "",
        };
        let rows = R::find_by_statement(self.stmt(
            &format!(
                "SELECT hour, CAST(SUM(sent) AS BIGINT) AS sent, \
                 CAST(SUM(failed + rejected) AS BIGINT) AS failed, \
                 CAST(SUM(deferred) AS BIGINT) AS deferred \
                 FROM delivery_stats WHERE hour >= ?{only} GROUP BY hour ORDER BY hour"
            ),
            values,
        ))
        .all(&self.db)
        .await
        .doing("reading sends per hour")?;
        Ok(rows
            .into_iter()
            .map(|r| SendBucket {
                at: r.hour,
                sent: r.sent.max(0) as u64,
                failed: r.failed.max(0) as u64,
                deferred: r.deferred.max(0) as u64,
            })
            .collect())
    }

    /// Stored bounces received since `since`, per class and UTC hour
    /// (`hourly`) or day (range scan on `idx_bounces_received`).
    pub async fn bounce_stats(
        &self,
        since: DateTime<Utc>,
        hourly: bool,
    ) -> Result<Vec<BounceBucket>> {
        #[derive(FromQueryResult)]
        struct R {
            bucket: Option<String>,
            class: Option<String>,
            n: i64,
        }
        let b = self.bucket_sql("received_at", hourly);
        let rows = R::find_by_statement(self.stmt(
            &format!(
                "SELECT {b} AS bucket, class, COUNT(*) AS n FROM bounces \
                 WHERE received_at >= ? GROUP BY {b}, class ORDER BY 1"
            ),
            vec![since.into()],
        ))
        .all(&self.db)
        .await
        .doing("counting bounces over time")?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(BounceBucket {
                    at: parse_bucket(r.bucket.as_deref()?)?,
                    class: r.class.unwrap_or_else(|| "unparsed".into()),
                    count: r.n.max(0) as u64,
                })
            })
            .collect())
    }

    /// The receiving domains with the most bounces since `since` (the
    /// domain of the bounced delivery's address), most first, at most
    /// `limit`.
    pub async fn bounces_by_domain(
        &self,
        since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<(String, u64)>> {
        #[derive(FromQueryResult)]
        struct R {
            domain: String,
            n: i64,
        }
        let domain = if self.is_postgres() {
            "lower(split_part(d.email, '@', 2))"
        } else {
            "lower(substr(d.email, instr(d.email, '@') + 1))"
        };
        let rows = R::find_by_statement(self.stmt(
            &format!(
                "SELECT {domain} AS domain, COUNT(*) AS n FROM bounces b \
                 JOIN deliveries d ON d.id = b.delivery_id WHERE b.received_at >= ? \
                 GROUP BY {domain} ORDER BY n DESC, domain LIMIT ?"
            ),
            vec![since.into(), (limit as i64).into()],
        ))
        .all(&self.db)
        .await
        .doing("counting bounces by domain")?;
        Ok(rows
            .into_iter()
            .map(|r| (r.domain, r.n.max(0) as u64))
            .collect())
    }

    /// The campaign's stored bounces by class, most first: bounces received
    /// since the campaign was created (a bounded range of the received
    /// index) whose delivery is one of the campaign's.
    pub async fn campaign_bounce_classes(&self, campaign_id: Uuid) -> Result<Vec<(String, u64)>> {
        #[derive(FromQueryResult)]
        struct R {
            class: Option<String>,
            n: i64,
        }
        let rows = R::find_by_statement(self.stmt(
            "SELECT b.class AS class, COUNT(*) AS n FROM bounces b \
             JOIN deliveries d ON d.id = b.delivery_id \
             WHERE b.received_at >= (SELECT created_at FROM campaigns WHERE id = ?) \
             AND d.campaign_id = ? GROUP BY b.class ORDER BY n DESC",
            vec![campaign_id.into(), campaign_id.into()],
        ))
        .all(&self.db)
        .await
        .doing("counting a campaign's bounces by class")?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.class.unwrap_or_else(|| "unparsed".into()),
                    r.n.max(0) as u64,
                )
            })
            .collect())
    }

    /// List `list_id`'s joins, unsubscribes and prunes per UTC day since
    /// `since` (days without any are left out): joins from the
    /// memberships' creation, the others from the audit trail of its
    /// members (a global unsubscribe or prune counts on each of their
    /// lists).
    pub async fn list_growth(&self, list_id: Uuid, since: DateTime<Utc>) -> Result<Vec<GrowthDay>> {
        #[derive(FromQueryResult)]
        struct R {
            bucket: Option<String>,
            n: i64,
        }
        let mut days: std::collections::BTreeMap<NaiveDate, GrowthDay> = Default::default();
        let b = self.bucket_sql("created_at", false);
        let joined = R::find_by_statement(self.stmt(
            &format!(
                "SELECT {b} AS bucket, COUNT(*) AS n FROM memberships \
                 WHERE list_id = ? AND created_at >= ? GROUP BY {b}"
            ),
            vec![list_id.into(), since.into()],
        ))
        .all(&self.db)
        .await
        .doing("counting a list's joins per day")?;
        let b = self.bucket_sql("a.created_at", false);
        let left = |actions: &[AuditAction]| {
            let marks = vec!["?"; actions.len()].join(", ");
            let mut values: Vec<Value> = actions.iter().map(|a| a.as_str().into()).collect();
            values.extend([since.into(), list_id.into(), list_id.into()]);
            self.stmt(
                &format!(
                    "SELECT {b} AS bucket, COUNT(*) AS n FROM audit a \
                     WHERE a.action IN ({marks}) AND a.created_at >= ? \
                     AND (a.list_id = ? OR (a.list_id IS NULL AND EXISTS \
                     (SELECT 1 FROM memberships m WHERE m.subscriber_id = a.subscriber_id AND m.list_id = ?))) \
                     GROUP BY {b}"
                ),
                values,
            )
        };
        let unsubscribed = R::find_by_statement(left(&[AuditAction::Unsubscribed]))
            .all(&self.db)
            .await
            .doing("counting a list's unsubscribes per day")?;
        let pruned =
            R::find_by_statement(left(&[AuditAction::Bounced, AuditAction::Undeliverable]))
                .all(&self.db)
                .await
                .doing("counting a list's prunes per day")?;
        for (rows, which) in [(joined, 0), (unsubscribed, 1), (pruned, 2)] {
            for r in rows {
                let Some(at) = r.bucket.as_deref().and_then(parse_bucket) else {
                    continue;
                };
                let day = at.date_naive();
                let g = days.entry(day).or_insert_with(|| GrowthDay {
                    day,
                    ..Default::default()
                });
                let n = r.n.max(0) as u64;
                match which {
                    0 => g.joined += n,
                    1 => g.unsubscribed += n,
                    _ => g.pruned += n,
                }
            }
        }
        Ok(days.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_parse_from_both_backends() {
        let t = |s: &str| parse_bucket(s).map(|t| t.to_rfc3339());
        assert_eq!(t("2026-12-03"), Some("2026-12-03T00:00:00+00:00".into()));
        assert_eq!(t("2026-12-03 07"), Some("2026-12-03T07:00:00+00:00".into()));
        assert_eq!(t("2026-12-03T07"), Some("2026-12-03T07:00:00+00:00".into()));
        assert_eq!(t("garbage"), None);
    }
}
