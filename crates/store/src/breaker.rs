//! The reputation circuit breaker's state: providers suspended or slowed per
//! campaign (`provider_states`), the reason a campaign was paused by the
//! breaker (`campaigns.paused_reason`), deliveries held while their provider
//! is suspended, and the counts the breaker and `campaign status` read.
//!
//! Which domain belongs to which provider is not the store's business: the
//! caller maps domains ([`Store::campaign_domain_counts`]) to providers.

use crate::{Doing, Result, Store};
use chrono::{DateTime, Utc};
use rundbrief_core::{CampaignState, DeliveryState};
use sea_orm::{ConnectionTrait, FromQueryResult, Value};
use uuid::Uuid;

/// What the breaker (or the throttle) did to a provider in one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderCondition {
    /// Nothing goes to it until `campaign resume` lifts it.
    Suspended,
    /// A 421/4.7.x halved its rate until `until`.
    Slowed,
}

impl ProviderCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderCondition::Suspended => "suspended",
            ProviderCondition::Slowed => "slowed",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "suspended" => Ok(ProviderCondition::Suspended),
            "slowed" => Ok(ProviderCondition::Slowed),
            other => Err(crate::StoreError::CorruptColumn {
                column: "provider_states.state",
                problem: format!("unknown state `{other}`"),
            }),
        }
    }
}

/// One provider's recorded state in one campaign.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProviderState {
    pub provider: String,
    pub state: ProviderCondition,
    /// Why: the breaker's numbers, or the reply that slowed it.
    pub reason: String,
    /// The rate in force while slowed (messages per second).
    pub rate: Option<u32>,
    pub since: DateTime<Utc>,
    /// When a slow-down ends.
    pub until: Option<DateTime<Utc>>,
}

/// Deliveries of one recipient domain in one campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainCount {
    /// The recipient domain (lower case, as stored).
    pub domain: String,
    /// Not yet final: pending, claimed or deferred (held ones included).
    pub pending: u64,
    /// Accepted by the receiver.
    pub sent: u64,
}

/// The `last_error` of a delivery held because its provider is suspended
/// starts with this; `campaign resume --provider` finds them by it.
pub fn hold_prefix(provider: &str) -> String {
    format!("held: provider `{provider}` ")
}

impl Store {
    /// Every recorded provider state of the campaign, by provider name.
    pub async fn provider_states(&self, campaign_id: Uuid) -> Result<Vec<ProviderState>> {
        #[derive(FromQueryResult)]
        struct R {
            provider: String,
            state: String,
            reason: String,
            rate: Option<i32>,
            since: DateTime<Utc>,
            until: Option<DateTime<Utc>>,
        }
        let rows = R::find_by_statement(self.stmt(
            "SELECT provider, state, reason, rate, since, until FROM provider_states \
             WHERE campaign_id = ? ORDER BY provider",
            vec![campaign_id.into()],
        ))
        .all(&self.db)
        .await
        .doing("reading provider states")?;
        rows.into_iter()
            .map(|r| {
                Ok(ProviderState {
                    provider: r.provider,
                    state: ProviderCondition::parse(&r.state)?,
                    reason: r.reason,
                    rate: r.rate.and_then(|n| u32::try_from(n).ok()),
                    since: r.since,
                    until: r.until,
                })
            })
            .collect()
    }

    /// The providers suspended in the campaign, with their reasons.
    pub async fn suspended_providers(&self, campaign_id: Uuid) -> Result<Vec<(String, String)>> {
        Ok(self
            .provider_states(campaign_id)
            .await?
            .into_iter()
            .filter(|s| s.state == ProviderCondition::Suspended)
            .map(|s| (s.provider, s.reason))
            .collect())
    }

    /// Suspends `provider` in the campaign (replacing a slow-down).
    pub async fn suspend_provider(
        &self,
        campaign_id: Uuid,
        provider: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO provider_states (campaign_id, provider, state, reason, rate, since, until) \
                 VALUES (?, ?, ?, ?, NULL, ?, NULL) ON CONFLICT (campaign_id, provider) DO UPDATE SET \
                 state = excluded.state, reason = excluded.reason, rate = NULL, since = excluded.since, until = NULL",
                vec![
                    campaign_id.into(),
                    provider.into(),
                    ProviderCondition::Suspended.as_str().into(),
                    reason.into(),
                    at.into(),
                ],
            ))
            .await
            .doing("suspending a provider")?;
        Ok(())
    }

    /// Records that `provider` is slowed to `rate` until `until`; a
    /// suspension stays as it is.
    pub async fn slow_provider(
        &self,
        campaign_id: Uuid,
        provider: &str,
        reason: &str,
        rate: u32,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO provider_states (campaign_id, provider, state, reason, rate, since, until) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (campaign_id, provider) DO UPDATE SET \
                 reason = excluded.reason, rate = excluded.rate, until = excluded.until \
                 WHERE provider_states.state = excluded.state",
                vec![
                    campaign_id.into(),
                    provider.into(),
                    ProviderCondition::Slowed.as_str().into(),
                    reason.into(),
                    (rate.min(i32::MAX as u32) as i32).into(),
                    at.into(),
                    until.into(),
                ],
            ))
            .await
            .doing("recording a slowed provider")?;
        Ok(())
    }

    /// Lifts the suspension of `provider` (or of every provider with
    /// `None`) in the campaign, and makes the deliveries held for it due
    /// at once. Returns the providers lifted.
    pub async fn lift_providers(
        &self,
        campaign_id: Uuid,
        provider: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let lifted: Vec<String> = self
            .suspended_providers(campaign_id)
            .await?
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| provider.is_none_or(|want| want == p))
            .collect();
        let txn = self.write_txn().await.doing("starting to lift providers")?;
        for p in &lifted {
            txn.execute_raw(self.stmt(
                "DELETE FROM provider_states WHERE campaign_id = ? AND provider = ?",
                vec![campaign_id.into(), p.as_str().into()],
            ))
            .await
            .doing("lifting a provider")?;
            let prefix = hold_prefix(p);
            txn.execute_raw(self.stmt(
                "UPDATE deliveries SET next_attempt_at = ? WHERE campaign_id = ? AND state = ? \
                 AND substr(last_error, 1, ?) = ?",
                vec![
                    now.into(),
                    campaign_id.into(),
                    DeliveryState::Deferred.as_str().into(),
                    (prefix.chars().count() as i32).into(),
                    prefix.into(),
                ],
            ))
            .await
            .doing("releasing held deliveries")?;
        }
        txn.commit().await.doing("committing lifted providers")?;
        Ok(lifted)
    }

    /// Puts claimed deliveries back as `deferred` until `until` with
    /// `error` (which starts with [`hold_prefix`]), lease cleared, without
    /// counting an attempt: their provider is suspended.
    pub async fn hold_deliveries(
        &self,
        ids: &[Uuid],
        error: &str,
        until: DateTime<Utc>,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let mut values: Vec<Value> = vec![
            DeliveryState::Deferred.as_str().into(),
            error.into(),
            until.into(),
            Utc::now().into(),
            DeliveryState::Sending.as_str().into(),
        ];
        values.extend(ids.iter().map(|id| Value::from(*id)));
        self.db
            .execute_raw(self.stmt(
                &format!(
                    "UPDATE deliveries SET state = ?, last_error = ?, next_attempt_at = ?, \
                     lease_owner = NULL, lease_until = NULL, updated_at = ? \
                     WHERE state = ? AND id IN ({marks})"
                ),
                values,
            ))
            .await
            .doing("holding deliveries")?;
        Ok(())
    }

    /// True when the campaign has work that is not held for a suspended
    /// provider: pending or claimed deliveries, or deferred ones waiting
    /// for a retry.
    pub async fn has_unheld_work(&self, campaign_id: Uuid) -> Result<bool> {
        #[derive(FromQueryResult)]
        struct N {
            n: i64,
        }
        let prefix = "held: provider `";
        let n = N::find_by_statement(self.stmt(
            "SELECT COUNT(*) AS n FROM deliveries WHERE campaign_id = ? AND (state IN (?, ?) \
             OR (state = ? AND (last_error IS NULL OR substr(last_error, 1, ?) <> ?)))",
            vec![
                campaign_id.into(),
                DeliveryState::Pending.as_str().into(),
                DeliveryState::Sending.as_str().into(),
                DeliveryState::Deferred.as_str().into(),
                (prefix.chars().count() as i32).into(),
                prefix.into(),
            ],
        ))
        .one(&self.db)
        .await
        .doing("looking for work that is not held")?
        .map_or(0, |n| n.n);
        Ok(n > 0)
    }

    /// Pauses a running campaign with the breaker's reason. Returns whether
    /// it did (false when it was not running any more).
    pub async fn pause_campaign_because(&self, campaign_id: Uuid, reason: &str) -> Result<bool> {
        let r = self
            .db
            .execute_raw(self.stmt(
                "UPDATE campaigns SET state = ?, paused_reason = ?, updated_at = ? WHERE id = ? AND state = ?",
                vec![
                    CampaignState::Paused.as_str().into(),
                    reason.into(),
                    Utc::now().into(),
                    campaign_id.into(),
                    CampaignState::Running.as_str().into(),
                ],
            ))
            .await
            .doing("pausing a campaign")?;
        Ok(r.rows_affected() > 0)
    }

    /// Why the breaker paused the campaign, if it did and nobody resumed it.
    pub async fn campaign_paused_reason(&self, campaign_id: Uuid) -> Result<Option<String>> {
        #[derive(FromQueryResult)]
        struct R {
            paused_reason: Option<String>,
        }
        Ok(R::find_by_statement(self.stmt(
            "SELECT paused_reason FROM campaigns WHERE id = ?",
            vec![campaign_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading why a campaign is paused")?
        .and_then(|r| r.paused_reason))
    }

    /// Forgets why the campaign was paused (it is being resumed) and starts
    /// the complaint count anew from `now`.
    pub async fn reset_breaker(&self, campaign_id: Uuid, now: DateTime<Utc>) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "UPDATE campaigns SET paused_reason = NULL, breaker_since = ? WHERE id = ?",
                vec![now.into(), campaign_id.into()],
            ))
            .await
            .doing("clearing why a campaign is paused")?;
        Ok(())
    }

    /// The campaign's deliveries per recipient domain: not yet final and
    /// sent, most deliveries first, at most `limit` domains. Read from the
    /// trigger-kept `delivery_domain_counts` (see the `counts` module), one
    /// row per domain instead of the campaign's deliveries; on PostgreSQL,
    /// folds the campaign's delta rows once they pile up.
    pub async fn campaign_domain_counts(
        &self,
        campaign_id: Uuid,
        limit: u64,
    ) -> Result<Vec<DomainCount>> {
        #[derive(FromQueryResult)]
        struct R {
            domain: String,
            pending: i64,
            sent: i64,
            deltas: i64,
            keys: i64,
        }
        let rows = R::find_by_statement(self.stmt(
            "SELECT domain, CAST(SUM(queued) AS BIGINT) AS pending, CAST(SUM(sent) AS BIGINT) AS sent, \
             CAST(SUM(COUNT(*)) OVER () AS BIGINT) AS deltas, COUNT(*) OVER () AS keys \
             FROM delivery_domain_counts WHERE campaign_id = ? GROUP BY domain \
             HAVING SUM(total) <> 0 ORDER BY SUM(total) DESC, domain LIMIT ?",
            vec![
                campaign_id.into(),
                (limit.min(i64::MAX as u64) as i64).into(),
            ],
        ))
        .all(&self.db)
        .await
        .doing("reading a campaign's per-domain delivery counts")?;
        if let Some(r) = rows.first() {
            self.fold_if_piled_up(campaign_id, r.deltas, r.keys).await?;
        }
        Ok(rows
            .into_iter()
            .map(|r| DomainCount {
                domain: r.domain,
                pending: u64::try_from(r.pending).unwrap_or(0),
                sent: u64::try_from(r.sent).unwrap_or(0),
            })
            .collect())
    }

    /// Complaints (ARF reports) about the campaign's messages, and how many
    /// of its messages were accepted (sent or later bounced), for the
    /// breaker's complaint ratio; both since the last `campaign resume`.
    pub async fn campaign_complaints(&self, campaign_id: Uuid) -> Result<(u64, u64)> {
        #[derive(FromQueryResult)]
        struct N {
            n: i64,
        }
        let complaints = N::find_by_statement(self.stmt(
            "SELECT COUNT(DISTINCT b.delivery_id) AS n FROM bounces b \
             JOIN deliveries d ON d.id = b.delivery_id JOIN campaigns c ON c.id = d.campaign_id \
             WHERE d.campaign_id = ? AND b.class = ? \
             AND (c.breaker_since IS NULL OR b.received_at > c.breaker_since)",
            vec![campaign_id.into(), "complaint".into()],
        ))
        .one(&self.db)
        .await
        .doing("counting complaints")?
        .map_or(0, |n| n.n);
        let sent = N::find_by_statement(self.stmt(
            "SELECT COUNT(*) AS n FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id \
             WHERE d.campaign_id = ? AND d.state IN (?, ?) \
             AND (c.breaker_since IS NULL OR d.updated_at > c.breaker_since)",
            vec![
                campaign_id.into(),
                DeliveryState::Sent.as_str().into(),
                DeliveryState::Bounced.as_str().into(),
            ],
        ))
        .one(&self.db)
        .await
        .doing("counting sent deliveries")?
        .map_or(0, |n| n.n);
        Ok((
            u64::try_from(complaints).unwrap_or(0),
            u64::try_from(sent).unwrap_or(0),
        ))
    }
}
