//! The domain check's marks (the check itself is `rundbrief-dns`'s, the
//! decision the application's): a subscriber whose domain cannot receive
//! mail becomes `undeliverable`, audited with the reason, and a campaign's
//! deliveries to such subscribers are `skipped`, never sent.
//!
//! Only `active` subscribers are marked: a blocklisted, unsubscribed or
//! bounced one keeps the stronger status. Marking is reversible
//! ([`Store::restore_subscriber`]).

use crate::subscribers::{audit, exec};
use crate::{Doing, Result, Store};
use chrono::{DateTime, Utc};
use rundbrief_core::{Actor, AuditAction, DeliveryState, SubscriberStatus};
use sea_orm::{ConnectionTrait, FromQueryResult};
use uuid::Uuid;

/// One subscriber to mark: who (by `Address::key`, the unique `email_key`)
/// and why, in the words the audit shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndeliverableMark {
    /// The subscriber's `email_key` (`Address::key`).
    pub key: String,
    /// The audit reason, e.g. `gone.example: no MX or A (NXDOMAIN)`.
    pub reason: String,
}

/// A recipient of a campaign whose delivery is still to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub subscriber_id: Uuid,
    /// The address in normal form (its domain is what the check asks about).
    pub email: String,
}

/// What marking a campaign's recipients did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarkedUndeliverable {
    /// Subscribers that went from `active` to `undeliverable`.
    pub subscribers: u64,
    /// Deliveries that became `skipped`.
    pub deliveries: u64,
}

/// Marks one subscriber `undeliverable` when it is `active`, with its audit
/// entry; returns whether it changed.
async fn mark_one<C: ConnectionTrait>(
    c: &C,
    id: Uuid,
    reason: &str,
    actor: Actor,
    now: DateTime<Utc>,
) -> Result<bool> {
    let changed = exec(
        c,
        "marking a subscriber undeliverable",
        "UPDATE subscribers SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
        vec![
            SubscriberStatus::Undeliverable.as_str().into(),
            now.into(),
            id.into(),
            SubscriberStatus::Active.as_str().into(),
        ],
    )
    .await?;
    if changed > 0 {
        audit(c, id, None, AuditAction::Undeliverable, actor, reason, now).await?;
    }
    Ok(changed > 0)
}

impl Store {
    /// Marks the `active` subscribers among `marks` `undeliverable`, each
    /// with an audit entry (`actor`, the mark's reason), in one transaction.
    /// Subscribers that do not exist or are not active are left alone.
    /// Returns how many changed.
    pub async fn mark_undeliverable(
        &self,
        marks: &[UndeliverableMark],
        actor: Actor,
    ) -> Result<u64> {
        if marks.is_empty() {
            return Ok(0);
        }
        #[derive(FromQueryResult)]
        struct Id {
            id: Uuid,
        }
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let now = Utc::now();
        let mut n = 0;
        for m in marks {
            let found = Id::find_by_statement(crate::stmt_for(
                txn.get_database_backend(),
                "SELECT id FROM subscribers WHERE email_key = ?",
                vec![m.key.clone().into()],
            ))
            .one(&txn)
            .await
            .doing("looking up a subscriber")?;
            if let Some(Id { id }) = found
                && mark_one(&txn, id, &m.reason, actor, now).await?
            {
                n += 1;
            }
        }
        txn.commit()
            .await
            .doing("committing undeliverable subscribers")?;
        Ok(n)
    }

    /// The recipients of a campaign whose deliveries are `pending` or
    /// `deferred` (not claimed by a worker): whom the check before a send
    /// asks about.
    pub async fn recipients_to_send(&self, campaign_id: Uuid) -> Result<Vec<Recipient>> {
        #[derive(FromQueryResult)]
        struct R {
            subscriber_id: Uuid,
            email: String,
        }
        Ok(R::find_by_statement(self.stmt(
            "SELECT subscriber_id, email FROM deliveries WHERE campaign_id = ? AND state IN (?, ?)",
            vec![
                campaign_id.into(),
                DeliveryState::Pending.as_str().into(),
                DeliveryState::Deferred.as_str().into(),
            ],
        ))
        .all(&self.db)
        .await
        .doing("reading a campaign's recipients")?
        .into_iter()
        .map(|r| Recipient {
            subscriber_id: r.subscriber_id,
            email: r.email,
        })
        .collect())
    }

    /// For each (subscriber, reason): marks the subscriber `undeliverable`
    /// when it is `active` (audited with `actor` and the reason) and makes
    /// its `pending` or `deferred` delivery of the campaign `skipped` with
    /// the reason as its error, in one transaction. A subscriber marked by
    /// an earlier check (no longer active) still has its delivery skipped.
    pub async fn skip_undeliverable(
        &self,
        campaign_id: Uuid,
        marks: &[(Uuid, String)],
        actor: Actor,
    ) -> Result<MarkedUndeliverable> {
        let mut out = MarkedUndeliverable::default();
        if marks.is_empty() {
            return Ok(out);
        }
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let now = Utc::now();
        for (id, reason) in marks {
            if mark_one(&txn, *id, reason, actor, now).await? {
                out.subscribers += 1;
            }
            out.deliveries += exec(
                &txn,
                "skipping a delivery",
                "UPDATE deliveries SET state = ?, last_error = ?, lease_owner = NULL, lease_until = NULL, \
                 next_attempt_at = NULL, updated_at = ? \
                 WHERE campaign_id = ? AND subscriber_id = ? AND state IN (?, ?)",
                vec![
                    DeliveryState::Skipped.as_str().into(),
                    reason.clone().into(),
                    now.into(),
                    campaign_id.into(),
                    (*id).into(),
                    DeliveryState::Pending.as_str().into(),
                    DeliveryState::Deferred.as_str().into(),
                ],
            )
            .await?;
        }
        txn.commit().await.doing("committing skipped deliveries")?;
        Ok(out)
    }
}

impl Store {
    /// Whether `campaign start --no-dns-check` asked `serve` to skip the
    /// domain check for this campaign.
    pub async fn campaign_skips_dns_check(&self, campaign_id: Uuid) -> Result<bool> {
        #[derive(FromQueryResult)]
        struct R {
            skip_dns_check: bool,
        }
        Ok(R::find_by_statement(self.stmt(
            "SELECT skip_dns_check FROM campaigns WHERE id = ?",
            vec![campaign_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a campaign's domain check setting")?
        .is_some_and(|r| r.skip_dns_check))
    }

    /// Records whether `serve` skips the domain check for this campaign.
    pub async fn set_campaign_skips_dns_check(&self, campaign_id: Uuid, skip: bool) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "UPDATE campaigns SET skip_dns_check = ? WHERE id = ?",
                vec![skip.into(), campaign_id.into()],
            ))
            .await
            .doing("setting a campaign's domain check")?;
        Ok(())
    }
}
