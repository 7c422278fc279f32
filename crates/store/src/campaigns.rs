//! Campaigns and the delivery ledger (the part the bounce endpoint needs
//! now: a campaign, its lists, one delivery row per eligible recipient, and
//! the way back from a delivery id to its subscriber).

use crate::{Doing, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use rundbrief_core::{
    AuditAction, CampaignState, DeliveryState, MembershipStatus, SubscriberStatus,
};
use sea_orm::{ConnectionTrait, DatabaseBackend, FromQueryResult, Value};
use uuid::Uuid;

/// What `create_campaign` needs.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub lists: Vec<String>,
    pub subject: String,
    pub content: String,
    pub content_kind: rundbrief_core::ContentKind,
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
        let txn = self.write_txn().await.doing("starting a transaction")?;
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
                c.content_kind.as_str().into(),
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
            _ => StoreError::Query { doing: "creating a campaign", cause: e },
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
    ///
    /// A campaign sent by local time (`campaign schedule --local-time`)
    /// gets its rows *held* (`next_attempt_at` = [`crate::held_marker`]):
    /// no claim takes them until the scheduler has given each its due time.
    pub async fn materialise_deliveries(&self, campaign_id: Uuid) -> Result<u64> {
        let backend = self.db.get_database_backend();
        let held: Value = match self.local_time(campaign_id).await? {
            Some(_) => Some(crate::held_marker()).into(),
            None => Option::<DateTime<Utc>>::None.into(),
        };
        let new_id = if backend == DatabaseBackend::Postgres {
            "gen_random_uuid()"
        } else {
            "randomblob(16)"
        };
        let now: Value = Utc::now().into();
        let sql = format!(
            "INSERT INTO deliveries (id, campaign_id, subscriber_id, email, state, attempts, created_at, updated_at, \
             next_attempt_at) SELECT {new_id}, ?, s.id, s.email, ?, 0, ?, ?, ? FROM subscribers s \
             WHERE s.status = ? AND EXISTS (SELECT 1 FROM memberships m JOIN campaign_lists cl ON cl.list_id = m.list_id \
             WHERE m.subscriber_id = s.id AND m.status = ? AND cl.campaign_id = ?) \
             ON CONFLICT (campaign_id, subscriber_id) DO NOTHING"
        );
        // On SQLite the inserts and their count commit together: the
        // deliveries above the largest rowid before them are counted into
        // `delivery_domain_counts` once (migration 19; PostgreSQL's
        // statement-level trigger counts them itself).
        let sqlite = backend != DatabaseBackend::Postgres;
        let txn = self
            .write_txn()
            .await
            .doing("starting to materialise deliveries")?;
        let before = if sqlite {
            #[derive(FromQueryResult)]
            struct M {
                m: Option<i64>,
            }
            M::find_by_statement(self.stmt("SELECT MAX(rowid) AS m FROM deliveries", vec![]))
                .one(&txn)
                .await
                .doing("materialising deliveries")?
                .and_then(|m| m.m)
                .unwrap_or(0)
        } else {
            0
        };
        let r = txn
            .execute_raw(self.stmt(
                &sql,
                vec![
                    campaign_id.into(),
                    DeliveryState::Pending.as_str().into(),
                    now.clone(),
                    now,
                    held,
                    SubscriberStatus::Active.as_str().into(),
                    MembershipStatus::Subscribed.as_str().into(),
                    campaign_id.into(),
                ],
            ))
            .await
            .doing("materialising deliveries")?;
        // Recipients the domain check marked `undeliverable` get a delivery
        // too, `skipped` at once with the check's reason (their latest
        // audit entry), so the campaign counts them. Not in the result.
        let now: Value = Utc::now().into();
        // `+a.action` on SQLite keeps its planner off the (action,
        // created_at) index, which read every `undeliverable` entry once per
        // skipped recipient: 26 s of CPU for 19,000 of them, 0.06 s by the
        // subscriber's index. PostgreSQL has no unary plus on text and
        // picks the subscriber index by itself.
        let action = if backend == DatabaseBackend::Postgres {
            "a.action"
        } else {
            "+a.action"
        };
        let skipped = format!(
            "INSERT INTO deliveries (id, campaign_id, subscriber_id, email, state, attempts, last_error, created_at, updated_at) \
             SELECT {new_id}, ?, s.id, s.email, ?, 0, \
             (SELECT a.reason FROM audit a WHERE a.subscriber_id = s.id AND {action} = ? ORDER BY a.created_at DESC LIMIT 1), \
             ?, ? FROM subscribers s \
             WHERE s.status = ? AND EXISTS (SELECT 1 FROM memberships m JOIN campaign_lists cl ON cl.list_id = m.list_id \
             WHERE m.subscriber_id = s.id AND m.status = ? AND cl.campaign_id = ?) \
             ON CONFLICT (campaign_id, subscriber_id) DO NOTHING"
        );
        let skipped_rows = txn
            .execute_raw(self.stmt(
                &skipped,
                vec![
                    campaign_id.into(),
                    DeliveryState::Skipped.as_str().into(),
                    AuditAction::Undeliverable.as_str().into(),
                    now.clone(),
                    now,
                    SubscriberStatus::Undeliverable.as_str().into(),
                    MembershipStatus::Subscribed.as_str().into(),
                    campaign_id.into(),
                ],
            ))
            .await
            .doing("materialising skipped deliveries")?;
        if sqlite && r.rows_affected() + skipped_rows.rows_affected() > 0 {
            txn.execute_raw(self.stmt(
                &rundbrief_migrations::sqlite_count_inserted(),
                vec![before.into()],
            ))
            .await
            .doing("counting materialised deliveries")?;
        }
        txn.commit()
            .await
            .doing("committing materialised deliveries")?;
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

impl Store {
    /// The subscriber a confirmation mail went to, for a bounce of it: those
    /// mails carry the subscriber's own id in their VERP token (no delivery
    /// row exists for them). `campaign_id` is nil.
    pub async fn confirmation_target(&self, subscriber_id: Uuid) -> Result<Option<DeliveryTarget>> {
        #[derive(FromQueryResult)]
        struct S {
            email: String,
        }
        Ok(S::find_by_statement(self.stmt(
            "SELECT email FROM subscribers WHERE id = ?",
            vec![subscriber_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("looking up a subscriber")?
        .map(|s| DeliveryTarget {
            delivery_id: subscriber_id,
            campaign_id: Uuid::nil(),
            subscriber_id,
            email: s.email,
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

    /// Marks a `sent` delivery `bounced` (a `rejected` one stays rejected: it
    /// bounced synchronously) and, when the bounce changed the subscriber's
    /// score, stores the new score with the bounce's description (`words`, as
    /// the audit trail puts it: bounce id, class, status, rule, score), which
    /// [`Store::scored_subscribers`] hands to `rundbrief clean` so that its
    /// prune can name the bounce behind it.
    pub async fn record_bounce_score(
        &self,
        target: &DeliveryTarget,
        counted: Option<(StoredScore, &str)>,
    ) -> Result<()> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let backend = txn.get_database_backend();
        if let Some(((value, day, weight), words)) = counted {
            txn.execute_raw(crate::stmt_for(
                backend,
                "UPDATE subscribers SET bounce_score = ?, bounce_day = ?, bounce_day_weight = ?, bounce_last = ? WHERE id = ?",
                vec![
                    value.into(),
                    day.into(),
                    weight.into(),
                    words.into(),
                    target.subscriber_id.into(),
                ],
            ))
            .await
            .doing("storing a bounce score")?;
        }
        txn.execute_raw(crate::stmt_for(
            backend,
            // `pending`/`sending` too: a fast DSN can arrive before the sender
            // has recorded its 250 (record_delivery never overwrites `bounced`).
            "UPDATE deliveries SET state = ?, updated_at = ? WHERE id = ? AND state IN (?, ?, ?)",
            vec![
                DeliveryState::Bounced.as_str().into(),
                Utc::now().into(),
                target.delivery_id.into(),
                DeliveryState::Sent.as_str().into(),
                DeliveryState::Pending.as_str().into(),
                DeliveryState::Sending.as_str().into(),
            ],
        ))
        .await
        .doing("marking a delivery bounced")?;
        txn.commit().await.doing("committing a bounce score")?;
        Ok(())
    }
}

/// A campaign with everything needed to render it.
#[derive(Debug, Clone)]
pub struct CampaignContent {
    pub campaign: Campaign,
    pub content: String,
    pub content_kind: rundbrief_core::ContentKind,
    pub layout: Option<String>,
    pub from: Option<String>,
    pub relay: Option<String>,
    /// The first of its lists (for List-Id and unsubscribe tokens).
    pub first_list_id: Option<Uuid>,
    /// Its lists' ids, in the order of `campaign.lists` (by name).
    pub list_ids: Vec<Uuid>,
    /// Its lists' List-Id labels, in the same order.
    pub list_labels: Vec<rundbrief_core::ListLabel>,
    /// The time zone of its schedule (`campaign schedule --tz`), for the
    /// `date` its templates see; None: UTC.
    pub tz: Option<String>,
}

/// Subscriber attributes as stored: a JSON object (PostgreSQL `jsonb`) or
/// its text (SQLite).
pub(crate) fn parse_attributes(v: serde_json::Value) -> rundbrief_core::Attributes {
    match v {
        serde_json::Value::Object(m) => m,
        serde_json::Value::String(t) => serde_json::from_str(&t).unwrap_or_default(),
        _ => Default::default(),
    }
}

/// A pending delivery with the subscriber data a message needs.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub delivery_id: Uuid,
    pub subscriber_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub attributes: rundbrief_core::Attributes,
    pub attempts: i32,
    /// When it was first claimed for sending (the start of its max age).
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// The campaign list this message is for: the first by name of the
    /// campaign's lists the subscriber is subscribed to (None: none any more).
    pub list_id: Option<Uuid>,
}

/// Counts by delivery state, as `campaign status --json` prints them (field
/// names are a contract; `state` is the campaign's).
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct CampaignCounts {
    pub state: String,
    pub total: u64,
    pub sent: u64,
    pub deferred: u64,
    pub failed: u64,
    /// Bounced: asynchronously (a DSN after a 250) or synchronously (a 5xx
    /// at RCPT or DATA, also counted in `rejected`).
    pub bounced: u64,
    /// Waiting to be sent, including `sending` (claimed, in flight).
    pub pending: u64,
    /// The synchronous part of `bounced`.
    pub rejected: u64,
    /// The part of `pending` a worker has claimed and is sending now.
    pub sending: u64,
    /// Not sent because the subscriber is `undeliverable` (the domain
    /// check found their domain cannot receive mail). Final.
    pub skipped: u64,
}

impl Store {
    /// The campaign called `name`, with its content.
    ///
    /// # Errors
    /// [`StoreError::CampaignNotFound`].
    pub async fn campaign(&self, name: &str) -> Result<CampaignContent> {
        #[derive(FromQueryResult)]
        struct C {
            id: Uuid,
            name: String,
            subject: String,
            content: String,
            content_kind: String,
            layout: Option<String>,
            from_addr: Option<String>,
            relay: Option<String>,
            state: String,
            created_at: DateTime<Utc>,
            tz: Option<String>,
        }
        let c = C::find_by_statement(self.stmt(
            "SELECT id, name, subject, content, content_kind, layout, from_addr, relay, state, created_at, tz FROM campaigns WHERE name = ?",
            vec![name.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a campaign")?
        .ok_or_else(|| StoreError::CampaignNotFound(name.to_string()))?;
        #[derive(FromQueryResult)]
        struct L {
            id: Uuid,
            name: String,
            label: Option<String>,
        }
        let lists = L::find_by_statement(self.stmt(
            "SELECT l.id, l.name, l.label FROM lists l JOIN campaign_lists cl ON cl.list_id = l.id WHERE cl.campaign_id = ? ORDER BY l.name",
            vec![c.id.into()],
        ))
        .all(&self.db)
        .await
        .doing("reading a campaign's lists")?;
        Ok(CampaignContent {
            first_list_id: lists.first().map(|l| l.id),
            list_ids: lists.iter().map(|l| l.id).collect(),
            list_labels: lists
                .iter()
                .map(|l| crate::lists::stored_label(l.id, &l.name, l.label.as_deref()))
                .collect(),
            tz: c.tz,
            campaign: Campaign {
                id: c.id,
                name: c.name,
                subject: c.subject,
                state: c.state.parse()?,
                lists: lists.into_iter().map(|l| l.name).collect(),
                created_at: c.created_at,
            },
            content: c.content,
            content_kind: c.content_kind.parse()?,
            layout: c.layout,
            from: c.from_addr,
            relay: c.relay,
        })
    }

    /// Every campaign, newest first.
    pub async fn campaigns(&self) -> Result<Vec<Campaign>> {
        #[derive(FromQueryResult)]
        struct N {
            name: String,
        }
        let names = N::find_by_statement(self.stmt(
            "SELECT name FROM campaigns ORDER BY created_at DESC",
            vec![],
        ))
        .all(&self.db)
        .await
        .doing("listing campaigns")?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(self.campaign(&n.name).await?.campaign);
        }
        Ok(out)
    }

    /// Moves a campaign to `to`, if the current state allows it.
    ///
    /// # Errors
    /// [`StoreError::CampaignNotFound`], [`StoreError::IllegalTransition`].
    pub async fn transition_campaign(
        &self,
        name: &str,
        to: CampaignState,
    ) -> Result<CampaignState> {
        let c = self.campaign(name).await?.campaign;
        if c.state == to {
            return Ok(to);
        }
        if !c.state.can_become(to) {
            return Err(StoreError::IllegalTransition {
                name: name.to_string(),
                from: c.state,
                to,
            });
        }
        self.set_campaign_state(c.id, to).await?;
        Ok(c.state)
    }

    /// The campaign's state now.
    pub async fn campaign_state(&self, campaign_id: Uuid) -> Result<CampaignState> {
        #[derive(FromQueryResult)]
        struct S {
            state: String,
        }
        let s = S::find_by_statement(self.stmt(
            "SELECT state FROM campaigns WHERE id = ?",
            vec![campaign_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a campaign's state")?
        .ok_or_else(|| StoreError::CampaignNotFound(campaign_id.to_string()))?;
        Ok(s.state.parse()?)
    }

    /// Sets the campaign's state (unchecked; see [`Store::transition_campaign`]).
    pub async fn set_campaign_state(&self, campaign_id: Uuid, state: CampaignState) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ?",
                vec![state.as_str().into(), Utc::now().into(), campaign_id.into()],
            ))
            .await
            .doing("changing a campaign's state")?;
        Ok(())
    }

    /// Up to `limit` deliveries in `states`, oldest first, with subscriber data.
    /// Single-process claiming: the caller records an outcome for each.
    pub async fn deliveries_in(
        &self,
        campaign_id: Uuid,
        states: &[DeliveryState],
        limit: u64,
    ) -> Result<Vec<PendingDelivery>> {
        #[derive(FromQueryResult)]
        struct P {
            id: Uuid,
            subscriber_id: Uuid,
            email: String,
            name: Option<String>,
            attributes: serde_json::Value,
            attempts: i32,
        }
        let mut values: Vec<Value> = vec![campaign_id.into()];
        values.extend(states.iter().map(|s| Value::from(s.as_str())));
        values.push((limit as i64).into());
        let marks = vec!["?"; states.len()].join(", ");
        let rows = P::find_by_statement(self.stmt(
            &format!(
                "SELECT d.id, d.subscriber_id, d.email, s.name, s.attributes, d.attempts FROM deliveries d \
                 JOIN subscribers s ON s.id = d.subscriber_id WHERE d.campaign_id = ? AND d.state IN ({marks}) \
                 ORDER BY d.created_at, d.id LIMIT ?"
            ),
            values,
        ))
        .all(&self.db)
        .await
        .doing("reading pending deliveries")?;
        rows.into_iter()
            .map(|p| {
                Ok(PendingDelivery {
                    delivery_id: p.id,
                    subscriber_id: p.subscriber_id,
                    email: p.email,
                    name: p.name,
                    attributes: parse_attributes(p.attributes),
                    attempts: p.attempts,
                    first_attempt_at: None,
                    list_id: None,
                })
            })
            .collect()
    }

    /// Records how one send ended. A delivery already `bounced` (its DSN was
    /// faster than this record) stays bounced.
    pub async fn record_delivery(
        &self,
        delivery_id: Uuid,
        state: DeliveryState,
        error: Option<&str>,
    ) -> Result<()> {
        let now = Utc::now();
        #[derive(FromQueryResult)]
        struct C {
            campaign_id: Uuid,
        }
        let r = C::find_by_statement(self.stmt(
            "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ?, updated_at = ? \
             WHERE id = ? AND state <> ? RETURNING campaign_id",
            vec![
                state.as_str().into(),
                error.map(str::to_string).into(),
                now.into(),
                delivery_id.into(),
                DeliveryState::Bounced.as_str().into(),
            ],
        ))
        .one(&self.db)
        .await
        .doing("recording a delivery")?;
        if let Some(r) = r {
            let counts = Self::outcome_counts([(r.campaign_id, state)], now);
            self.run_each(&self.db, counts, "counting an outcome")
                .await?;
        }
        Ok(())
    }

    /// Counts by state, for `campaign status`, the dashboard and the
    /// scheduler: the sums of the trigger-kept `delivery_domain_counts` (see
    /// the `counts` module), one row per domain instead of the campaign's
    /// deliveries. On PostgreSQL, folds the campaign's delta rows once they
    /// pile up.
    pub async fn campaign_counts(&self, campaign_id: Uuid) -> Result<CampaignCounts> {
        #[derive(FromQueryResult)]
        struct R {
            queued: Option<i64>,
            sent: Option<i64>,
            failed: Option<i64>,
            rejected: Option<i64>,
            bounced: Option<i64>,
            skipped: Option<i64>,
            deltas: i64,
            keys: i64,
        }
        let sum = |c: &str| format!("CAST(SUM({c}) AS BIGINT) AS {c}");
        let r = R::find_by_statement(self.stmt(
            &format!(
                "SELECT {}, {}, {}, {}, {}, {}, COUNT(*) AS deltas, COUNT(DISTINCT domain) AS keys \
                 FROM delivery_domain_counts WHERE campaign_id = ?",
                sum("queued"),
                sum("sent"),
                sum("failed"),
                sum("rejected"),
                sum("bounced"),
                sum("skipped")
            ),
            vec![campaign_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a campaign's delivery counts")?;
        let mut c = CampaignCounts::default();
        let Some(r) = r else { return Ok(c) };
        for (state, n) in [
            (DeliveryState::Sent, r.sent),
            (DeliveryState::Failed, r.failed),
            (DeliveryState::Rejected, r.rejected),
            (DeliveryState::Bounced, r.bounced),
            (DeliveryState::Skipped, r.skipped),
        ] {
            c.add(state, n.unwrap_or(0));
        }
        let queued = r.queued.unwrap_or(0);
        if queued > 0 {
            // `queued` is pending, sending and deferred together; the
            // claimed (in flight) and deferred ones are counted by the
            // (campaign, state) index: few rows, unlike the pending.
            #[derive(FromQueryResult)]
            struct Q {
                state: String,
                n: i64,
            }
            let split = Q::find_by_statement(self.stmt(
                "SELECT state, COUNT(*) AS n FROM deliveries \
                 WHERE campaign_id = ? AND state IN (?, ?) GROUP BY state",
                vec![
                    campaign_id.into(),
                    DeliveryState::Sending.as_str().into(),
                    DeliveryState::Deferred.as_str().into(),
                ],
            ))
            .all(&self.db)
            .await
            .doing("counting claimed and deferred deliveries")?;
            let mut rest = queued;
            for q in split {
                let n = q.n.min(rest);
                rest -= n;
                c.add(q.state.parse::<DeliveryState>()?, n);
            }
            c.add(DeliveryState::Pending, rest);
        }
        self.fold_if_piled_up(campaign_id, r.deltas, r.keys).await?;
        Ok(c)
    }
}

/// One reason deliveries of a campaign did not go out: a final or pending
/// state that needs an operator's eye (`failed`, `deferred`, `rejected`) and
/// the error recorded for it, with how many deliveries share both. As
/// `campaign status --json` prints it in `errors` (field names are a
/// contract).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct DeliveryErrorCount {
    pub state: DeliveryState,
    /// The recorded `last_error`: the SMTP step and the server's reply, or
    /// `render: …` with the template's message. `None` for rows recorded
    /// without one.
    pub error: Option<String>,
    pub count: u64,
}

impl Store {
    /// The campaign's failed, deferred and rejected deliveries grouped by
    /// (state, error), most frequent first, at most `limit` groups: why a
    /// send did not reach everybody, for `campaign status` and `send`.
    pub async fn campaign_errors(
        &self,
        campaign_id: Uuid,
        limit: u64,
    ) -> Result<Vec<DeliveryErrorCount>> {
        #[derive(FromQueryResult)]
        struct R {
            state: String,
            last_error: Option<String>,
            n: i64,
        }
        // The predicate of the partial index `idx_deliveries_problems`
        // (migrations 18, 19), spelled as the index spells it, so that
        // both planners see the query matches it and group with an
        // index-only scan.
        let states = rundbrief_migrations::problems_predicate(self.is_postgres());
        let rows = R::find_by_statement(self.stmt(
            &format!(
                "SELECT state, last_error, COUNT(*) AS n FROM deliveries \
                 WHERE campaign_id = ? AND {states} \
                 GROUP BY state, last_error ORDER BY n DESC, state, last_error LIMIT ?"
            ),
            vec![campaign_id.into(), (limit as i64).into()],
        ))
        .all(&self.db)
        .await
        .doing("grouping delivery errors")?;
        rows.into_iter()
            .map(|r| {
                Ok(DeliveryErrorCount {
                    state: r.state.parse()?,
                    error: r.last_error,
                    count: r.n as u64,
                })
            })
            .collect()
    }
}

/// An active subscriber with a bounce score, for `rundbrief clean`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoredSubscriber {
    pub subscriber_id: Uuid,
    pub email: String,
    /// The stored score (not decayed) and the day it was last counted.
    pub score: f64,
    pub day: i64,
    pub day_weight: f64,
    /// The last bounce that changed the score, as the audit trail words it
    /// (bounce id or sending step, class, status, rule, score then); `None`
    /// for a score counted before rundbrief kept it.
    pub last_bounce: Option<String>,
}

impl Store {
    /// Active subscribers that have a bounce score, ordered by address.
    pub async fn scored_subscribers(&self) -> Result<Vec<ScoredSubscriber>> {
        #[derive(FromQueryResult)]
        struct S {
            id: Uuid,
            email: String,
            bounce_score: f64,
            bounce_day: i64,
            bounce_day_weight: f64,
            bounce_last: Option<String>,
        }
        Ok(S::find_by_statement(self.stmt(
            "SELECT id, email, bounce_score, bounce_day, bounce_day_weight, bounce_last FROM subscribers \
             WHERE status = ? AND bounce_score IS NOT NULL AND bounce_day IS NOT NULL AND bounce_day_weight IS NOT NULL \
             ORDER BY email_key",
            vec![SubscriberStatus::Active.as_str().into()],
        ))
        .all(&self.db)
        .await
        .doing("reading bounce scores")?
        .into_iter()
        .map(|s| ScoredSubscriber {
            subscriber_id: s.id,
            email: s.email,
            score: s.bounce_score,
            day: s.bounce_day,
            day_weight: s.bounce_day_weight,
            last_bounce: s.bounce_last,
        })
        .collect())
    }
}
