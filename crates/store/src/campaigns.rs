//! Campaigns and the delivery ledger (the part the bounce endpoint needs
//! now: a campaign, its lists, one delivery row per eligible recipient, and
//! the way back from a delivery id to its subscriber).

use crate::{Doing, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use rundbrief_core::{CampaignState, DeliveryState, MembershipStatus, SubscriberStatus};
use sea_orm::{ConnectionTrait, DatabaseBackend, FromQueryResult, TransactionTrait, Value};
use uuid::Uuid;

/// What `create_campaign` needs.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub lists: Vec<String>,
    pub subject: String,
    pub content: String,
    /// `markdown` or `html`.
    pub content_kind: String,
    pub layout: Option<String>,
    pub from: Option<String>,
    pub relay: Option<String>,
}

/// A stored campaign.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Campaign {
    pub id: Uuid,
    pub name: String,
    pub subject: String,
    pub state: CampaignState,
    pub lists: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Who a delivery went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTarget {
    pub delivery_id: Uuid,
    pub campaign_id: Uuid,
    pub subscriber_id: Uuid,
    pub email: String,
}

impl Store {
    /// Creates a campaign in `draft` on the named lists.
    ///
    /// # Errors
    /// [`StoreError::ListNotFound`], [`StoreError::CampaignExists`].
    pub async fn create_campaign(&self, c: &NewCampaign) -> Result<Campaign> {
        let mut list_ids = Vec::new();
        for name in &c.lists {
            list_ids.push(self.list(name).await?.id);
        }
        let txn = self.db.begin().await.doing("starting a transaction")?;
        let backend = txn.get_database_backend();
        let (id, now) = (Uuid::now_v7(), Utc::now());
        txn.execute_raw(crate::stmt_for(
            backend,
            "INSERT INTO campaigns (id, name, subject, content, content_kind, layout, from_addr, relay, state, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                id.into(),
                c.name.clone().into(),
                c.subject.clone().into(),
                c.content.clone().into(),
                c.content_kind.clone().into(),
                c.layout.clone().into(),
                c.from.clone().into(),
                c.relay.clone().into(),
                CampaignState::Draft.as_str().into(),
                now.into(),
                now.into(),
            ],
        ))
        .await
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::CampaignExists(c.name.clone()),
            _ => StoreError::Query { doing: "creating a campaign", source: e },
        })?;
        for list in &list_ids {
            txn.execute_raw(crate::stmt_for(
                backend,
                "INSERT INTO campaign_lists (campaign_id, list_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                vec![id.into(), (*list).into()],
            ))
            .await
            .doing("linking a campaign to its lists")?;
        }
        txn.commit().await.doing("committing the campaign")?;
        Ok(Campaign {
            id,
            name: c.name.clone(),
            subject: c.subject.clone(),
            state: CampaignState::Draft,
            lists: c.lists.clone(),
            created_at: now,
        })
    }

    /// The names of campaigns that send to the list.
    pub async fn campaigns_for_list(&self, list_id: Uuid) -> Result<Vec<String>> {
        #[derive(FromQueryResult)]
        struct N {
            name: String,
        }
        Ok(N::find_by_statement(self.stmt(
            "SELECT c.name FROM campaigns c JOIN campaign_lists cl ON cl.campaign_id = c.id WHERE cl.list_id = ? ORDER BY c.name",
            vec![list_id.into()],
        ))
        .all(&self.db)
        .await
        .doing("finding campaigns of a list")?
        .into_iter()
        .map(|n| n.name)
        .collect())
    }

    /// Materialises one `pending` delivery per eligible recipient of the
    /// campaign (active subscriber, subscribed membership on any of its
    /// lists, each subscriber once), set-based. Running it again adds only
    /// recipients who became eligible since. Returns how many rows it added.
    pub async fn materialise_deliveries(&self, campaign_id: Uuid) -> Result<u64> {
        let backend = self.db.get_database_backend();
        let new_id = if backend == DatabaseBackend::Postgres {
            "gen_random_uuid()"
        } else {
            "randomblob(16)"
        };
        let now: Value = Utc::now().into();
        let sql = format!(
            "INSERT INTO deliveries (id, campaign_id, subscriber_id, email, state, attempts, created_at, updated_at) \
             SELECT {new_id}, ?, s.id, s.email, ?, 0, ?, ? FROM subscribers s \
             WHERE s.status = ? AND EXISTS (SELECT 1 FROM memberships m JOIN campaign_lists cl ON cl.list_id = m.list_id \
             WHERE m.subscriber_id = s.id AND m.status = ? AND cl.campaign_id = ?) \
             ON CONFLICT (campaign_id, subscriber_id) DO NOTHING"
        );
        let r = self
            .db
            .execute_raw(self.stmt(
                &sql,
                vec![
                    campaign_id.into(),
                    DeliveryState::Pending.as_str().into(),
                    now.clone(),
                    now,
                    SubscriberStatus::Active.as_str().into(),
                    MembershipStatus::Subscribed.as_str().into(),
                    campaign_id.into(),
                ],
            ))
            .await
            .doing("materialising deliveries")?;
        Ok(r.rows_affected())
    }

    /// The deliveries of a campaign, in no particular order.
    pub async fn deliveries(&self, campaign_id: Uuid) -> Result<Vec<DeliveryTarget>> {
        #[derive(FromQueryResult)]
        struct D {
            id: Uuid,
            campaign_id: Uuid,
            subscriber_id: Uuid,
            email: String,
        }
        Ok(D::find_by_statement(self.stmt(
            "SELECT id, campaign_id, subscriber_id, email FROM deliveries WHERE campaign_id = ?",
            vec![campaign_id.into()],
        ))
        .all(&self.db)
        .await
        .doing("reading deliveries")?
        .into_iter()
        .map(|d| DeliveryTarget {
            delivery_id: d.id,
            campaign_id: d.campaign_id,
            subscriber_id: d.subscriber_id,
            email: d.email,
        })
        .collect())
    }

    /// Who the delivery went to, if it exists.
    pub async fn delivery_target(&self, delivery_id: Uuid) -> Result<Option<DeliveryTarget>> {
        #[derive(FromQueryResult)]
        struct D {
            campaign_id: Uuid,
            subscriber_id: Uuid,
            email: String,
        }
        Ok(D::find_by_statement(self.stmt(
            "SELECT campaign_id, subscriber_id, email FROM deliveries WHERE id = ?",
            vec![delivery_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("looking up a delivery")?
        .map(|d| DeliveryTarget {
            delivery_id,
            campaign_id: d.campaign_id,
            subscriber_id: d.subscriber_id,
            email: d.email,
        }))
    }
}

/// A subscriber's stored bounce score: (value, day, weight counted that day).
pub type StoredScore = (f64, i64, f64);

impl Store {
    /// The subscriber's bounce score, if any bounce was counted.
    pub async fn bounce_score(&self, subscriber_id: Uuid) -> Result<Option<StoredScore>> {
        #[derive(FromQueryResult)]
        struct S {
            bounce_score: Option<f64>,
            bounce_day: Option<i64>,
            bounce_day_weight: Option<f64>,
        }
        let s = S::find_by_statement(self.stmt(
            "SELECT bounce_score, bounce_day, bounce_day_weight FROM subscribers WHERE id = ?",
            vec![subscriber_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a bounce score")?;
        Ok(s.and_then(|s| Some((s.bounce_score?, s.bounce_day?, s.bounce_day_weight?))))
    }

    /// Stores the subscriber's bounce score and marks the delivery bounced.
    pub async fn record_bounce_score(
        &self,
        target: &DeliveryTarget,
        score: Option<StoredScore>,
    ) -> Result<()> {
        let txn = self.db.begin().await.doing("starting a transaction")?;
        let backend = txn.get_database_backend();
        if let Some((value, day, weight)) = score {
            txn.execute_raw(crate::stmt_for(
                backend,
                "UPDATE subscribers SET bounce_score = ?, bounce_day = ?, bounce_day_weight = ? WHERE id = ?",
                vec![value.into(), day.into(), weight.into(), target.subscriber_id.into()],
            ))
            .await
            .doing("storing a bounce score")?;
        }
        txn.execute_raw(crate::stmt_for(
            backend,
            "UPDATE deliveries SET state = ?, updated_at = ? WHERE id = ?",
            vec![
                DeliveryState::Bounced.as_str().into(),
                Utc::now().into(),
                target.delivery_id.into(),
            ],
        ))
        .await
        .doing("marking a delivery bounced")?;
        txn.commit().await.doing("committing a bounce score")?;
        Ok(())
    }
}
