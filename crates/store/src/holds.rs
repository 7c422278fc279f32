//! Prunes per receiving domain, and holding them: every hard-bounce prune of
//! a campaign delivery is recorded with its domain (`domain_prunes`), so that
//! when one domain's hard bounces in one campaign look like a block in
//! disguise, its prunes can be held for the operator (and those already
//! applied undone) instead of pruning live readers.

use crate::{Doing, Result, Store};
use chrono::{DateTime, Utc};
use rundbrief_core::{Actor, AuditAction, SubscriberStatus};
use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait, Value};
use uuid::Uuid;

/// Where a recorded prune stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneState {
    /// The subscriber was pruned.
    Applied,
    /// Waiting for the operator: the subscriber stays active.
    Held,
    /// The operator applied it.
    Released,
    /// The operator kept the subscriber.
    Discarded,
}

impl PruneState {
    pub fn as_str(self) -> &'static str {
        match self {
            PruneState::Applied => "applied",
            PruneState::Held => "held",
            PruneState::Released => "released",
            PruneState::Discarded => "discarded",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "applied" => PruneState::Applied,
            "held" => PruneState::Held,
            "released" => PruneState::Released,
            "discarded" => PruneState::Discarded,
            other => {
                return Err(crate::StoreError::CorruptColumn {
                    column: "domain_prunes.state",
                    problem: format!("unknown state `{other}`"),
                });
            }
        })
    }
}

/// One recorded prune.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainPrune {
    pub id: Uuid,
    pub campaign: String,
    pub domain: String,
    pub email: String,
    /// The audit words of the prune (the bounce, its class, status, rule).
    pub reason: String,
    pub state: PruneState,
    pub created_at: DateTime<Utc>,
}

/// A prune to record ([`Store::record_domain_prune`]).
#[derive(Debug, Clone)]
pub struct NewDomainPrune<'a> {
    pub campaign_id: Uuid,
    /// The receiving domain, lower-case.
    pub domain: &'a str,
    pub subscriber_id: Uuid,
    pub email: &'a str,
    /// The prune's audit words.
    pub reason: &'a str,
    pub state: PruneState,
    pub at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct Row {
    id: Uuid,
    campaign: String,
    domain: String,
    email: String,
    reason: String,
    state: String,
    created_at: DateTime<Utc>,
}

impl Row {
    fn into_prune(self) -> Result<DomainPrune> {
        Ok(DomainPrune {
            id: self.id,
            campaign: self.campaign,
            domain: self.domain,
            email: self.email,
            reason: self.reason,
            state: PruneState::parse(&self.state)?,
            created_at: self.created_at,
        })
    }
}

const SELECT: &str = "SELECT p.id, c.name AS campaign, p.domain, p.email, p.reason, p.state, p.created_at \
     FROM domain_prunes p JOIN campaigns c ON c.id = p.campaign_id";

impl Store {
    /// Records a prune of a campaign delivery's subscriber at its domain, in
    /// its state (`Applied` after pruning, `Held` instead of it). A
    /// subscriber already held for that campaign is not recorded twice.
    pub async fn record_domain_prune(&self, p: &NewDomainPrune<'_>) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO domain_prunes (id, campaign_id, domain, subscriber_id, email, reason, state, created_at) \
                 SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS \
                 (SELECT 1 FROM domain_prunes WHERE campaign_id = ? AND subscriber_id = ? AND state = ?)",
                vec![
                    Uuid::now_v7().into(),
                    p.campaign_id.into(),
                    p.domain.into(),
                    p.subscriber_id.into(),
                    p.email.into(),
                    p.reason.into(),
                    p.state.as_str().into(),
                    p.at.into(),
                    p.campaign_id.into(),
                    p.subscriber_id.into(),
                    PruneState::Held.as_str().into(),
                ],
            ))
            .await
            .doing("recording a prune")?;
        Ok(())
    }

    /// Hard-bounce prunes (applied or held) of `domain` in the campaign since `since`.
    pub async fn domain_prunes_since(
        &self,
        campaign_id: Uuid,
        domain: &str,
        since: DateTime<Utc>,
    ) -> Result<u64> {
        count(
            self,
            "SELECT COUNT(*) AS n FROM domain_prunes WHERE campaign_id = ? AND domain = ? \
             AND state IN (?, ?) AND created_at >= ?",
            vec![
                campaign_id.into(),
                domain.into(),
                PruneState::Applied.as_str().into(),
                PruneState::Held.as_str().into(),
                since.into(),
            ],
        )
        .await
    }

    /// Whether prunes of `domain` in the campaign are being held.
    pub async fn domain_is_held(&self, campaign_id: Uuid, domain: &str) -> Result<bool> {
        Ok(count(
            self,
            "SELECT COUNT(*) AS n FROM domain_prunes WHERE campaign_id = ? AND domain = ? AND state = ?",
            vec![
                campaign_id.into(),
                domain.into(),
                PruneState::Held.as_str().into(),
            ],
        )
        .await?
            > 0)
    }

    /// The campaign's deliveries to `domain` (lower-case).
    pub async fn campaign_domain_deliveries(&self, campaign_id: Uuid, domain: &str) -> Result<u64> {
        count(
            self,
            "SELECT COUNT(*) AS n FROM deliveries WHERE campaign_id = ? AND email LIKE ?",
            vec![campaign_id.into(), format!("%@{domain}").into()],
        )
        .await
    }

    /// Starts holding `domain` in the campaign: the prunes applied there
    /// since `since` become held, and their subscribers, still `bounced`
    /// by them, active again (score reset, audited with `why`). Returns
    /// how many were undone.
    pub async fn hold_domain(
        &self,
        campaign_id: Uuid,
        domain: &str,
        since: DateTime<Utc>,
        why: &str,
    ) -> Result<u64> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let backend = txn.get_database_backend();
        #[derive(FromQueryResult)]
        struct Applied {
            id: Uuid,
            subscriber_id: Uuid,
        }
        let applied = Applied::find_by_statement(crate::stmt_for(
            backend,
            "SELECT id, subscriber_id FROM domain_prunes WHERE campaign_id = ? AND domain = ? \
             AND state = ? AND created_at >= ?",
            vec![
                campaign_id.into(),
                domain.into(),
                PruneState::Applied.as_str().into(),
                since.into(),
            ],
        ))
        .all(&txn)
        .await
        .doing("reading applied prunes")?;
        let now = Utc::now();
        let mut undone = 0;
        for a in &applied {
            txn.execute_raw(crate::stmt_for(
                backend,
                "UPDATE domain_prunes SET state = ? WHERE id = ?",
                vec![PruneState::Held.as_str().into(), a.id.into()],
            ))
            .await
            .doing("holding a prune")?;
            let r = txn
                .execute_raw(crate::stmt_for(
                    backend,
                    "UPDATE subscribers SET status = ?, bounce_score = NULL, bounce_day = NULL, \
                     bounce_day_weight = NULL, bounce_last = NULL, bounce_reset_at = ?, updated_at = ? \
                     WHERE id = ? AND status = ?",
                    vec![
                        SubscriberStatus::Active.as_str().into(),
                        now.into(),
                        now.into(),
                        a.subscriber_id.into(),
                        SubscriberStatus::Bounced.as_str().into(),
                    ],
                ))
                .await
                .doing("undoing a held prune")?;
            if r.rows_affected() > 0 {
                undone += 1;
                crate::subscribers::audit(
                    &txn,
                    a.subscriber_id,
                    None,
                    AuditAction::Restored,
                    Actor::Bounce,
                    why,
                    now,
                )
                .await?;
            }
        }
        txn.commit().await.doing("committing held prunes")?;
        Ok(undone)
    }

    /// Prunes by state (held ones, say), optionally for one domain, oldest first.
    pub async fn domain_prunes(
        &self,
        state: PruneState,
        domain: Option<&str>,
    ) -> Result<Vec<DomainPrune>> {
        let mut sql = format!("{SELECT} WHERE p.state = ?");
        let mut values: Vec<Value> = vec![state.as_str().into()];
        if let Some(d) = domain {
            sql.push_str(" AND p.domain = ?");
            values.push(d.to_ascii_lowercase().into());
        }
        sql.push_str(" ORDER BY p.created_at, p.id");
        Row::find_by_statement(self.stmt(&sql, values))
            .all(&self.db)
            .await
            .doing("listing prunes")?
            .into_iter()
            .map(Row::into_prune)
            .collect()
    }

    /// How many prunes of the campaign are held now.
    pub async fn campaign_held_prunes(&self, campaign_id: Uuid) -> Result<u64> {
        count(
            self,
            "SELECT COUNT(*) AS n FROM domain_prunes WHERE campaign_id = ? AND state = ?",
            vec![campaign_id.into(), PruneState::Held.as_str().into()],
        )
        .await
    }

    /// Moves held prunes (of `domain`, or all) to `to` (`Released` or
    /// `Discarded`) and returns them as they were; the caller applies the
    /// released ones.
    pub async fn decide_held(
        &self,
        domain: Option<&str>,
        to: PruneState,
    ) -> Result<Vec<DomainPrune>> {
        let held = self.domain_prunes(PruneState::Held, domain).await?;
        let txn = self.db.begin().await.doing("starting a transaction")?;
        for p in &held {
            txn.execute_raw(crate::stmt_for(
                txn.get_database_backend(),
                "UPDATE domain_prunes SET state = ?, decided_at = ? WHERE id = ? AND state = ?",
                vec![
                    to.as_str().into(),
                    Utc::now().into(),
                    p.id.into(),
                    PruneState::Held.as_str().into(),
                ],
            ))
            .await
            .doing("deciding a held prune")?;
        }
        txn.commit().await.doing("committing decided prunes")?;
        Ok(held)
    }
}

async fn count(store: &Store, sql: &str, values: Vec<Value>) -> Result<u64> {
    #[derive(FromQueryResult)]
    struct N {
        n: i64,
    }
    let n = N::find_by_statement(store.stmt(sql, values))
        .one(&store.db)
        .await
        .doing("counting")?
        .map_or(0, |r| r.n);
    Ok(u64::try_from(n).unwrap_or(0))
}
