//! Local-time delivery (issue #18): what the store keeps for a campaign sent
//! at a wall-clock time in each reader's own zone, and the queries the
//! scheduler uses to give each delivery its due time.
//!
//! A pending delivery's due time is its `next_attempt_at`: the claim
//! ([`Store::claim_deliveries`]) takes a pending row only when that is NULL
//! (due at once, every campaign not sent by local time) or has come. A
//! local-time campaign's deliveries are materialised *held*
//! (`next_attempt_at` = [`held_marker`], far in the future), so no worker
//! can claim one before the scheduler has computed its due time from the
//! subscriber's zone attribute ([`Store::held_by_attr`], then
//! [`Store::set_due`]). Time zones are the scheduler's business (chrono-tz):
//! the store only groups deliveries by the attribute's raw value.

use crate::{Doing, Result, Store};
use chrono::{DateTime, TimeZone, Utc};
use rundbrief_core::{DeliveryState, MembershipStatus, SubscriberStatus};
use sea_orm::{ConnectionTrait, DatabaseBackend, FromQueryResult, Value};
use uuid::Uuid;

/// A campaign's local-time settings, as `campaign schedule --local-time`
/// stores them (checked by the caller; the store keeps the words).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalTime {
    /// The wall-clock time in each reader's zone, `HH:MM` (or `HH:MM:SS`).
    pub at: String,
    /// The day, `YYYY-MM-DD`, when `--at` named one; None: the next time
    /// `at` happens in each zone once the campaign has started.
    pub date: Option<String>,
    /// The subscriber attribute that holds the reader's IANA zone.
    pub tz_attr: String,
    /// The zone of readers whose attribute is missing or not a zone.
    pub default_tz: String,
}

/// The `next_attempt_at` of a delivery whose due time is not computed yet:
/// 9999-12-31, after anything a claim or a retry compares it with.
pub fn held_marker() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Deliveries (or recipients) sharing one value of the zone attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrGroup {
    /// The attribute's value as stored (a JSON string, or a number's
    /// text); None when the subscriber has no such attribute.
    pub value: Option<String>,
    pub count: u64,
}

/// Pending deliveries sharing one due time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueGroup {
    /// None: due at once (no due time).
    pub due: Option<DateTime<Utc>>,
    pub count: u64,
}

/// The due times [`Store::set_due`] gives held deliveries, by the value of
/// their subscriber's zone attribute.
#[derive(Debug, Clone)]
pub struct DueMap {
    /// A value (as [`AttrGroup::value`] gives it) and its due time.
    pub by_value: Vec<(String, DateTime<Utc>)>,
    /// Subscribers without the attribute.
    pub missing: DateTime<Utc>,
    /// Any other value; None leaves such deliveries held (a value that
    /// appeared since the caller grouped them: the next pass decides).
    pub otherwise: Option<DateTime<Utc>>,
}

#[derive(FromQueryResult)]
struct G {
    v: Option<String>,
    n: i64,
}

/// The SQL expression for subscriber `alias`'s attribute named by the
/// next bound value (see [`attr_param`]), as text.
fn attr_expr(backend: DatabaseBackend, alias: &str) -> String {
    if backend == DatabaseBackend::Postgres {
        format!("({alias}.attributes ->> ?)")
    } else {
        format!("CAST(json_extract({alias}.attributes, ?) AS TEXT)")
    }
}

/// The bound value that names attribute `attr` in [`attr_expr`].
fn attr_param(backend: DatabaseBackend, attr: &str) -> Value {
    if backend == DatabaseBackend::Postgres {
        attr.into()
    } else {
        format!("$.\"{}\"", attr.replace('"', "")).into()
    }
}

fn groups(rows: Vec<G>) -> Vec<AttrGroup> {
    rows.into_iter()
        .map(|g| AttrGroup {
            value: g.v,
            count: u64::try_from(g.n).unwrap_or(0),
        })
        .collect()
}

impl Store {
    /// Sets (or with None removes) the campaign's local-time settings.
    pub async fn set_local_time(&self, campaign_id: Uuid, lt: Option<&LocalTime>) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "UPDATE campaigns SET local_at = ?, local_date = ?, tz_attr = ?, default_tz = ?, \
                 updated_at = ? WHERE id = ?",
                vec![
                    lt.map(|l| l.at.clone()).into(),
                    lt.and_then(|l| l.date.clone()).into(),
                    lt.map(|l| l.tz_attr.clone()).into(),
                    lt.map(|l| l.default_tz.clone()).into(),
                    Utc::now().into(),
                    campaign_id.into(),
                ],
            ))
            .await
            .doing("setting a campaign's local time")?;
        Ok(())
    }

    /// The campaign's local-time settings; None for a campaign that is not
    /// sent by local time.
    pub async fn local_time(&self, campaign_id: Uuid) -> Result<Option<LocalTime>> {
        #[derive(FromQueryResult)]
        struct L {
            local_at: Option<String>,
            local_date: Option<String>,
            tz_attr: Option<String>,
            default_tz: Option<String>,
        }
        let l = L::find_by_statement(self.stmt(
            "SELECT local_at, local_date, tz_attr, default_tz FROM campaigns WHERE id = ?",
            vec![campaign_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a campaign's local time")?;
        Ok(l.and_then(|l| {
            Some(LocalTime {
                at: l.local_at?,
                date: l.local_date,
                tz_attr: l.tz_attr.unwrap_or_else(|| "tz".into()),
                default_tz: l.default_tz.unwrap_or_else(|| "UTC".into()),
            })
        }))
    }

    /// Held deliveries of the campaign (pending, due time not computed
    /// yet) grouped by the value of their subscriber's attribute `attr`.
    pub async fn held_by_attr(&self, campaign_id: Uuid, attr: &str) -> Result<Vec<AttrGroup>> {
        let backend = self.db.get_database_backend();
        let expr = attr_expr(backend, "s");
        Ok(groups(
            G::find_by_statement(self.stmt(
                &format!(
                    "SELECT {expr} AS v, COUNT(*) AS n FROM deliveries d \
                     JOIN subscribers s ON s.id = d.subscriber_id \
                     WHERE d.campaign_id = ? AND d.state = ? AND d.next_attempt_at = ? GROUP BY 1"
                ),
                vec![
                    attr_param(backend, attr),
                    campaign_id.into(),
                    DeliveryState::Pending.as_str().into(),
                    held_marker().into(),
                ],
            ))
            .all(&self.db)
            .await
            .doing("grouping held deliveries by zone")?,
        ))
    }

    /// Gives the campaign's held deliveries their due times from `map`,
    /// in one statement (one pass over the held rows, a key lookup of the
    /// subscriber each). A delivery whose subscriber was removed becomes due
    /// at once (the claim records it failed). Returns how many were updated
    /// (those left held by `otherwise: None` included).
    pub async fn set_due(&self, campaign_id: Uuid, attr: &str, map: &DueMap) -> Result<u64> {
        let backend = self.db.get_database_backend();
        let expr = attr_expr(backend, "s");
        // Placeholders are numbered in the order they appear in the text.
        let mut values: Vec<Value> = vec![map.missing.into()];
        let mut whens = String::new();
        for (v, due) in &map.by_value {
            whens.push_str(" WHEN z.v = ? THEN ?");
            values.push(v.as_str().into());
            values.push((*due).into());
        }
        values.push(map.otherwise.unwrap_or_else(held_marker).into());
        values.extend([
            attr_param(backend, attr),
            campaign_id.into(),
            DeliveryState::Pending.as_str().into(),
            held_marker().into(),
        ]);
        let r = self
            .db
            .execute_raw(self.stmt(
                &format!(
                    "UPDATE deliveries SET next_attempt_at = (SELECT CASE WHEN z.v IS NULL THEN ?{whens} ELSE ? END \
                     FROM (SELECT {expr} AS v FROM subscribers s WHERE s.id = deliveries.subscriber_id) z) \
                     WHERE campaign_id = ? AND state = ? AND next_attempt_at = ?"
                ),
                values,
            ))
            .await
            .doing("setting due times")?;
        Ok(r.rows_affected())
    }

    /// Every delivery of the campaign grouped by the value of its
    /// subscriber's attribute `attr` (for how many fell back to the
    /// default zone).
    pub async fn deliveries_by_attr(
        &self,
        campaign_id: Uuid,
        attr: &str,
    ) -> Result<Vec<AttrGroup>> {
        let backend = self.db.get_database_backend();
        let expr = attr_expr(backend, "s");
        Ok(groups(
            G::find_by_statement(self.stmt(
                &format!(
                    "SELECT {expr} AS v, COUNT(*) AS n FROM deliveries d \
                     JOIN subscribers s ON s.id = d.subscriber_id WHERE d.campaign_id = ? GROUP BY 1"
                ),
                vec![attr_param(backend, attr), campaign_id.into()],
            ))
            .all(&self.db)
            .await
            .doing("grouping deliveries by zone")?,
        ))
    }

    /// The campaign's eligible recipients now (as materialisation would
    /// take them) grouped by the value of their attribute `attr`: what
    /// `campaign schedule --local-time` reports before anything is sent.
    pub async fn recipients_by_attr(
        &self,
        campaign_id: Uuid,
        attr: &str,
    ) -> Result<Vec<AttrGroup>> {
        let backend = self.db.get_database_backend();
        let expr = attr_expr(backend, "s");
        Ok(groups(
            G::find_by_statement(self.stmt(
                &format!(
                    "SELECT {expr} AS v, COUNT(*) AS n FROM subscribers s WHERE s.status = ? AND EXISTS \
                     (SELECT 1 FROM memberships m JOIN campaign_lists cl ON cl.list_id = m.list_id \
                     WHERE m.subscriber_id = s.id AND m.status = ? AND cl.campaign_id = ?) GROUP BY 1"
                ),
                vec![
                    attr_param(backend, attr),
                    SubscriberStatus::Active.as_str().into(),
                    MembershipStatus::Subscribed.as_str().into(),
                    campaign_id.into(),
                ],
            ))
            .all(&self.db)
            .await
            .doing("grouping recipients by zone")?,
        ))
    }

    /// The campaign's pending deliveries (not claimed) grouped by their due
    /// time; held ones (due time not computed yet) are left out.
    pub async fn pending_by_due(&self, campaign_id: Uuid) -> Result<Vec<DueGroup>> {
        #[derive(FromQueryResult)]
        struct D {
            t: Option<DateTime<Utc>>,
            n: i64,
        }
        Ok(D::find_by_statement(self.stmt(
            "SELECT next_attempt_at AS t, COUNT(*) AS n FROM deliveries WHERE campaign_id = ? \
             AND state = ? AND (next_attempt_at IS NULL OR next_attempt_at < ?) GROUP BY next_attempt_at",
            vec![
                campaign_id.into(),
                DeliveryState::Pending.as_str().into(),
                held_marker().into(),
            ],
        ))
        .all(&self.db)
        .await
        .doing("grouping pending deliveries by due time")?
        .into_iter()
        .map(|d| DueGroup {
            due: d.t,
            count: u64::try_from(d.n).unwrap_or(0),
        })
        .collect())
    }
}
