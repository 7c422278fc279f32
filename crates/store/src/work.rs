//! Work claiming for the scheduler: leases on deliveries, outcomes recorded
//! in groups, retries, schedules and the runs of recurring campaigns.
//!
//! A worker claims a batch with [`Store::claim_deliveries`]: due rows
//! (`pending`, `deferred` whose retry time has come, or `sending` whose lease
//! expired because its worker died) become `sending` with the worker's name
//! and a lease end. On PostgreSQL the candidate rows are selected `FOR UPDATE
//! SKIP LOCKED`, so workers in several processes never claim the same row;
//! SQLite serialises writers (`BEGIN IMMEDIATE`) and is one node. Each
//! outcome clears the lease ([`Store::record_outcomes`]). The only deliveries
//! that can be sent twice are those a worker handed to the relay and then
//! died before recording: at most its in-flight sends plus its unrecorded
//! buffer.

use crate::campaigns::parse_attributes;
use crate::{Doing, PendingDelivery, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use rundbrief_core::{CampaignState, DeliveryState, SubscriberStatus};
use sea_orm::{ConnectionTrait, DatabaseBackend, FromQueryResult, Value};
use uuid::Uuid;

/// How one send ended, as the scheduler records it.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub delivery_id: Uuid,
    /// The delivery's campaign (for the per-hour and per-five-seconds
    /// counters, summed without reading the deliveries again).
    pub campaign_id: Uuid,
    pub state: DeliveryState,
    pub error: Option<String>,
    /// For `deferred`: when to try again.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// What `campaign edit` changes (None: unchanged).
#[derive(Debug, Clone, Default)]
pub struct CampaignEdit {
    pub subject: Option<String>,
    pub content: Option<String>,
    pub content_kind: Option<rundbrief_core::ContentKind>,
    pub layout: Option<String>,
    pub from: Option<String>,
    pub relay: Option<String>,
}

/// Totals for the metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct MetricCounts {
    pub bounces: Vec<(String, u64)>,
    pub subscribers: Vec<(String, u64)>,
}

/// A campaign's schedule, as `campaign schedule` sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Schedule {
    /// One-off: start at this instant.
    pub send_at: Option<DateTime<Utc>>,
    /// Recurring: a cron expression evaluated in `tz`.
    pub cron: Option<String>,
    /// IANA time zone of the schedule and the window (`Europe/Berlin`).
    pub tz: Option<String>,
    /// Send window start and end, `HH:MM` in `tz`.
    pub window_start: Option<String>,
    pub window_end: Option<String>,
}

/// A campaign the scheduler looks at.
#[derive(Debug, Clone)]
pub struct ScheduledCampaign {
    pub id: Uuid,
    pub name: String,
    pub state: CampaignState,
    pub schedule: Schedule,
    /// For a recurring campaign: the occurrence its last run was for.
    pub last_run_at: Option<DateTime<Utc>>,
    /// When it was scheduled (the first occurrence counted is after this).
    pub updated_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct SchedRow {
    id: Uuid,
    name: String,
    state: String,
    send_at: Option<DateTime<Utc>>,
    cron: Option<String>,
    tz: Option<String>,
    window_start: Option<String>,
    window_end: Option<String>,
    last_run_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl Store {
    /// How many lists the campaign goes to.
    pub async fn campaign_list_count(&self, campaign_id: Uuid) -> Result<u64> {
        #[derive(FromQueryResult)]
        struct N {
            n: i64,
        }
        Ok(N::find_by_statement(self.stmt(
            "SELECT COUNT(*) AS n FROM campaign_lists WHERE campaign_id = ?",
            vec![campaign_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("counting a campaign's lists")?
        .map_or(0, |r| r.n.max(0) as u64))
    }
}

/// The list a claimed delivery's message is for (`alias` is the delivery's
/// row): the first by name of its campaign's lists that the subscriber is
/// subscribed to, so that List-Id, the footer and the unsubscribe link of a
/// campaign to several lists name a list the recipient is on. NULL when
/// there is none any more, and for a campaign to one list (the caller falls
/// back to the campaign's first list).
///
/// The membership is found by its primary key (subscriber, list): the
/// status test is kept off the index (`|| ''`), or PostgreSQL, without
/// statistics on a freshly imported list, walked `idx_memberships_list_status`
/// through the whole list for every delivery (quadratic: a 20k campaign fell
/// from 7,000 to 1,150 msg/s).
fn via_list(alias: &str, several_lists: bool, backend: DatabaseBackend) -> String {
    if !several_lists {
        return if backend == DatabaseBackend::Postgres {
            "CAST(NULL AS uuid)".into()
        } else {
            "NULL".into()
        };
    }
    format!(
        "(SELECT cl.list_id FROM campaign_lists cl JOIN lists l ON l.id = cl.list_id \
         JOIN memberships m ON m.subscriber_id = {alias}.subscriber_id AND m.list_id = cl.list_id \
         WHERE cl.campaign_id = {alias}.campaign_id AND (m.status || '') = '{}' ORDER BY l.name LIMIT 1)",
        rundbrief_core::MembershipStatus::Subscribed.as_str()
    )
}

/// 1 when the subscriber of delivery row `alias` is still a recipient of
/// its campaign (active, and subscribed to one of the campaign's lists),
/// else 0. The membership is found by its primary key, the status test kept
/// off the index as in [`via_list`].
fn eligible(alias: &str) -> String {
    format!(
        "(CASE WHEN s.status = '{active}' AND EXISTS (SELECT 1 FROM campaign_lists cl \
         JOIN memberships m ON m.subscriber_id = {alias}.subscriber_id AND m.list_id = cl.list_id \
         WHERE cl.campaign_id = {alias}.campaign_id AND (m.status || '') = '{subscribed}') THEN 1 ELSE 0 END)",
        active = SubscriberStatus::Active.as_str(),
        subscribed = rundbrief_core::MembershipStatus::Subscribed.as_str(),
    )
}

impl SchedRow {
    fn into_campaign(self) -> Result<ScheduledCampaign> {
        Ok(ScheduledCampaign {
            id: self.id,
            name: self.name,
            state: self.state.parse()?,
            schedule: Schedule {
                send_at: self.send_at,
                cron: self.cron,
                tz: self.tz,
                window_start: self.window_start,
                window_end: self.window_end,
            },
            last_run_at: self.last_run_at,
            updated_at: self.updated_at,
        })
    }
}

const SCHED_COLUMNS: &str =
    "id, name, state, send_at, cron, tz, window_start, window_end, last_run_at, updated_at";

impl Store {
    /// Claims up to `limit` due deliveries of the campaign for `owner` until
    /// `lease_until`, with the subscriber data a message needs.
    ///
    /// PostgreSQL: one statement, one round trip (the due rows of each kind
    /// picked `FOR UPDATE SKIP LOCKED` in their own CTE, then `UPDATE …
    /// RETURNING` joined to the subscribers). SQLite: the `UPDATE … RETURNING`
    /// and the `SELECT` in one `BEGIN IMMEDIATE`.
    /// A claimed delivery whose subscriber was removed meanwhile (`sub rm`)
    /// is recorded `failed` here instead of being handed out, so it can
    /// neither be sent nor hold its campaign open.
    pub async fn claim_deliveries(
        &self,
        campaign_id: Uuid,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<PendingDelivery>> {
        let backend = self.db.get_database_backend();
        // Which list a message is for only matters with several lists (one
        // indexed count per batch; the per-delivery lookup is not free).
        let several_lists = self.campaign_list_count(campaign_id).await? > 1;
        // What a claim writes, on both backends.
        const SET: &str = "UPDATE deliveries SET state = ?, lease_owner = ?, lease_until = ?, \
             first_attempt_at = COALESCE(first_attempt_at, ?), updated_at = ?";
        let sending: Value = DeliveryState::Sending.as_str().into();
        let mut values: Vec<Value> = vec![
            sending.clone(),
            owner.into(),
            lease_until.into(),
            now.into(),
            now.into(),
        ];
        let limit: Value = (limit as i64).into();
        #[derive(FromQueryResult)]
        struct P {
            id: Uuid,
            subscriber_id: Uuid,
            email: String,
            name: Option<String>,
            attributes: Option<serde_json::Value>,
            attempts: i32,
            first_attempt_at: Option<DateTime<Utc>>,
            /// NULL when the subscriber was removed.
            present: Option<Uuid>,
            /// The subscriber's status now.
            status: Option<String>,
            /// 1 when the subscriber is still a recipient: active and
            /// subscribed to one of the campaign's lists.
            eligible: i32,
            via_list: Option<Uuid>,
        }
        let rows = if backend == DatabaseBackend::Postgres {
            // One CTE per kind of due work, each a plain index range scan that
            // stops at the limit. The single OR of the three (as on SQLite)
            // made PostgreSQL OR three bitmap scans, reading every pending
            // entry of the campaign for each claim: quadratic in its size
            // (a 1M campaign sent at a third of the 50k rate).
            //
            // `fresh` is ordered as its index is: with half a campaign
            // pending, the planner otherwise expects a sequential scan to
            // find 128 rows at once, and it reads past every row already
            // sent (3.1 ms of a claim at 20,000 deliveries, growing with
            // the table). The subscribers are read per claimed row by their
            // key (`OFFSET 0` keeps the planner from turning the lateral
            // lookup back into a join that hashes the whole table: 3 ms at
            // 20,000 subscribers). EXPLAIN ANALYZE of one claim of 128:
            // 17.8 ms before, 7.5 ms after.
            let picks: [Value; 16] = [
                campaign_id.into(),
                sending,
                now.into(),
                limit.clone(),
                campaign_id.into(),
                DeliveryState::Deferred.as_str().into(),
                now.into(),
                limit.clone(),
                campaign_id.into(),
                DeliveryState::Pending.as_str().into(),
                limit.clone(),
                campaign_id.into(),
                DeliveryState::Pending.as_str().into(),
                now.into(),
                limit.clone(),
                limit,
            ];
            values.splice(0..0, picks);
            let via = via_list("c", several_lists, backend);
            let elig = eligible("c");
            P::find_by_statement(self.stmt(
                &format!(
                    "WITH expired AS (SELECT id FROM deliveries WHERE campaign_id = ? AND state = ? \
                       AND lease_until < ? LIMIT ? FOR UPDATE SKIP LOCKED), \
                     retry AS (SELECT id FROM deliveries WHERE campaign_id = ? AND state = ? \
                       AND (next_attempt_at IS NULL OR next_attempt_at <= ?) LIMIT ? FOR UPDATE SKIP LOCKED), \
                     fresh AS (SELECT id FROM deliveries WHERE campaign_id = ? AND state = ? \
                       AND next_attempt_at IS NULL ORDER BY campaign_id, state, next_attempt_at \
                       LIMIT ? FOR UPDATE SKIP LOCKED), \
                     due AS (SELECT id FROM deliveries WHERE campaign_id = ? AND state = ? \
                       AND next_attempt_at <= ? LIMIT ? FOR UPDATE SKIP LOCKED), \
                     pick AS (SELECT id FROM expired UNION ALL SELECT id FROM retry \
                       UNION ALL SELECT id FROM fresh UNION ALL SELECT id FROM due LIMIT ?), \
                     c AS ({SET} WHERE id IN (SELECT id FROM pick) \
                       RETURNING id, campaign_id, subscriber_id, email, attempts, first_attempt_at) \
                     SELECT c.id, c.subscriber_id, c.email, s.name, s.attributes, c.attempts, \
                     c.first_attempt_at, s.id AS present, s.status AS status, {elig} AS eligible, \
                     {via} AS via_list FROM c LEFT JOIN LATERAL (SELECT * FROM subscribers s \
                     WHERE s.id = c.subscriber_id OFFSET 0) s ON true"
                ),
                values,
            ))
            .all(&self.db)
            .await
            .doing("claiming deliveries")?
        } else {
            let txn = self.write_txn().await.doing("starting a claim")?;
            #[derive(FromQueryResult)]
            struct Id {
                id: Uuid,
            }
            values.extend([
                campaign_id.into(),
                DeliveryState::Pending.as_str().into(),
                DeliveryState::Deferred.as_str().into(),
                now.into(),
                sending,
                now.into(),
                limit,
            ]);
            let ids = Id::find_by_statement(self.stmt(
                &format!(
                    "{SET} WHERE id IN (SELECT id FROM deliveries WHERE campaign_id = ? AND \
                     ((state = ? OR state = ?) AND (next_attempt_at IS NULL OR next_attempt_at <= ?) \
                     OR (state = ? AND lease_until < ?)) LIMIT ?) RETURNING id"
                ),
                values,
            ))
                .all(&txn)
                .await
                .doing("claiming deliveries")?;
            let rows = if ids.is_empty() {
                Vec::new()
            } else {
                let marks = vec!["?"; ids.len()].join(", ");
                let via = via_list("d", several_lists, backend);
                let elig = eligible("d");
                P::find_by_statement(self.stmt(
                    &format!(
                        "SELECT d.id, d.subscriber_id, d.email, s.name, s.attributes, d.attempts, \
                         d.first_attempt_at, s.id AS present, s.status AS status, {elig} AS eligible, \
                         {via} AS via_list \
                         FROM deliveries d LEFT JOIN subscribers s ON s.id = d.subscriber_id \
                         WHERE d.id IN ({marks})"
                    ),
                    ids.iter().map(|i| Value::from(i.id)).collect(),
                ))
                .all(&txn)
                .await
                .doing("reading claimed deliveries")?
            };
            txn.commit().await.doing("committing a claim")?;
            rows
        };
        // Who left since the campaign started (removed, unsubscribed,
        // pruned, blocklisted, or off the campaign's lists) gets nothing:
        // recorded failed with the reason, never handed to the sender. A
        // local-time delivery waits for hours; this is where an
        // unsubscribe in between is honoured.
        let (rows, gone): (Vec<P>, Vec<P>) = rows
            .into_iter()
            .partition(|p| p.present.is_some() && p.eligible == 1);
        if !gone.is_empty() {
            let gone: Vec<DeliveryOutcome> = gone
                .iter()
                .map(|p| DeliveryOutcome {
                    delivery_id: p.id,
                    campaign_id,
                    state: DeliveryState::Failed,
                    error: Some(match (&p.present, p.status.as_deref()) {
                        (None, _) => "the subscriber was removed before this message was sent".into(),
                        (Some(_), Some(st)) if st != SubscriberStatus::Active.as_str() => format!(
                            "not sent: the subscriber became {st} before this message was sent"
                        ),
                        _ => "not sent: the subscriber left the campaign's lists before this message was sent"
                            .into(),
                    }),
                    next_attempt_at: None,
                })
                .collect();
            self.record_outcomes(&gone).await?;
        }
        Ok(rows
            .into_iter()
            .map(|p| PendingDelivery {
                delivery_id: p.id,
                subscriber_id: p.subscriber_id,
                email: p.email,
                name: p.name,
                attributes: p.attributes.map(parse_attributes).unwrap_or_default(),
                attempts: p.attempts,
                first_attempt_at: p.first_attempt_at,
                list_id: p.via_list,
            })
            .collect())
    }

    /// Records outcomes atomically and releases their leases. A delivery
    /// already `bounced` (its DSN was faster) stays bounced.
    ///
    /// The common group, plain 250s only, is one `UPDATE … WHERE id IN (…)`
    /// with the counters' upserts ([`Store::run_together`]): one round trip
    /// and one commit. Groups with deferrals, rejections or failures take a
    /// transaction.
    pub async fn record_outcomes(&self, outcomes: &[DeliveryOutcome]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let (plain, other): (Vec<&DeliveryOutcome>, Vec<&DeliveryOutcome>) =
            outcomes.iter().partition(|o| {
                o.state == DeliveryState::Sent && o.error.is_none() && o.next_attempt_at.is_none()
            });
        let sent = (!plain.is_empty()).then(|| {
            let marks = vec!["?"; plain.len()].join(", ");
            let mut values: Vec<Value> = vec![
                DeliveryState::Bounced.as_str().into(),
                DeliveryState::Sent.as_str().into(),
                now.into(),
            ];
            values.extend(plain.iter().map(|o| Value::from(o.delivery_id)));
            (
                format!(
                    "UPDATE deliveries SET state = CASE WHEN state = ? THEN state ELSE ? END, \
                     attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL, \
                     lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id IN ({marks})"
                ),
                values,
            )
        });
        let counts = Self::outcome_counts(outcomes.iter().map(|o| (o.campaign_id, o.state)), now);
        if other.is_empty() {
            // The common group: the update and the counters with one
            // commit (one statement on PostgreSQL, one transaction on
            // SQLite, where every commit is an fsync).
            let parts: Vec<_> = sent.into_iter().chain(counts).collect();
            return self.run_together(parts, "recording sent deliveries").await;
        }
        let txn = self
            .write_txn()
            .await
            .doing("starting to record outcomes")?;
        self.run_each(
            &txn,
            sent.into_iter().collect(),
            "recording sent deliveries",
        )
        .await?;
        for o in other {
            txn.execute_raw(self.stmt(
                "UPDATE deliveries SET state = CASE WHEN state = ? THEN state ELSE ? END, \
                 attempts = attempts + 1, last_error = ?, next_attempt_at = ?, \
                 lease_owner = NULL, lease_until = NULL, updated_at = ? WHERE id = ?",
                vec![
                    DeliveryState::Bounced.as_str().into(),
                    o.state.as_str().into(),
                    o.error.clone().into(),
                    o.next_attempt_at.into(),
                    now.into(),
                    o.delivery_id.into(),
                ],
            ))
            .await
            .doing("recording an outcome")?;
        }
        self.run_each(&txn, counts, "counting outcomes").await?;
        txn.commit().await.doing("committing outcomes")?;
        Ok(())
    }

    /// Returns this owner's unfinished claims to the pool at once (a worker
    /// that stops cleanly before sending them).
    pub async fn release_claims(&self, campaign_id: Uuid, owner: &str) -> Result<u64> {
        let r = self
            .db
            .execute_raw(self.stmt(
                "UPDATE deliveries SET state = ?, lease_owner = NULL, lease_until = NULL \
                 WHERE campaign_id = ? AND state = ? AND lease_owner = ?",
                vec![
                    DeliveryState::Pending.as_str().into(),
                    campaign_id.into(),
                    DeliveryState::Sending.as_str().into(),
                    owner.into(),
                ],
            ))
            .await
            .doing("releasing claims")?;
        Ok(r.rows_affected())
    }

    /// When the campaign next has work that is not due yet: the earliest
    /// retry of a deferred delivery, due time of a pending one (local
    /// time), or end of another worker's lease.
    pub async fn next_work_at(&self, campaign_id: Uuid) -> Result<Option<DateTime<Utc>>> {
        #[derive(FromQueryResult)]
        struct T {
            t: Option<DateTime<Utc>>,
        }
        let mut earliest: Option<DateTime<Utc>> = None;
        for (col, state) in [
            ("next_attempt_at", DeliveryState::Deferred),
            ("lease_until", DeliveryState::Sending),
            ("next_attempt_at", DeliveryState::Pending),
        ] {
            // Held rows (due time not computed yet) are not a time.
            let t = T::find_by_statement(self.stmt(
                &format!(
                    "SELECT MIN({col}) AS t FROM deliveries WHERE campaign_id = ? AND state = ? \
                     AND {col} < ?"
                ),
                vec![
                    campaign_id.into(),
                    state.as_str().into(),
                    crate::held_marker().into(),
                ],
            ))
            .one(&self.db)
            .await
            .doing("finding the next retry")?
            .and_then(|t| t.t);
            earliest = match (earliest, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(earliest)
    }

    /// Deliveries of the campaign claimed by a worker (`sending`) and when
    /// the last of those claims ends: after a crash, the dead worker's
    /// claims, which another run takes over only then.
    pub async fn campaign_leases(&self, campaign_id: Uuid) -> Result<(u64, Option<DateTime<Utc>>)> {
        #[derive(FromQueryResult)]
        struct L {
            n: i64,
            t: Option<DateTime<Utc>>,
        }
        let l = L::find_by_statement(self.stmt(
            "SELECT COUNT(*) AS n, MAX(lease_until) AS t FROM deliveries WHERE campaign_id = ? AND state = ?",
            vec![campaign_id.into(), DeliveryState::Sending.as_str().into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a campaign's leases")?;
        Ok(l.map_or((0, None), |l| (u64::try_from(l.n).unwrap_or(0), l.t)))
    }

    /// Moves a running campaign to `finished` when no delivery is left to
    /// send or retry. Returns whether it did.
    pub async fn finish_if_done(&self, campaign_id: Uuid) -> Result<bool> {
        let r = self
            .db
            .execute_raw(self.stmt(
                "UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ? AND state = ? \
                 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE campaign_id = ? AND state IN (?, ?, ?))",
                vec![
                    CampaignState::Finished.as_str().into(),
                    Utc::now().into(),
                    campaign_id.into(),
                    CampaignState::Running.as_str().into(),
                    campaign_id.into(),
                    DeliveryState::Pending.as_str().into(),
                    DeliveryState::Deferred.as_str().into(),
                    DeliveryState::Sending.as_str().into(),
                ],
            ))
            .await
            .doing("finishing a campaign")?;
        Ok(r.rows_affected() > 0)
    }

    /// `campaign retry-failed`: failed deliveries of subscribers who are
    /// still active become pending again (attempts and age start over), and
    /// the campaign runs again. Returns how many.
    pub async fn retry_failed(&self, name: &str) -> Result<u64> {
        let c = self.campaign(name).await?.campaign;
        if matches!(c.state, CampaignState::Draft | CampaignState::Cancelled) {
            return Err(StoreError::IllegalTransition {
                name: name.to_string(),
                from: c.state,
                to: CampaignState::Running,
            });
        }
        // A campaign sent by each reader's local time holds the retried
        // rows (as at materialisation): the scheduler gives each the
        // reader's next wall-clock time again, not the middle of the night.
        let due: Value = match self.local_time(c.id).await? {
            Some(_) => Some(crate::held_marker()).into(),
            None => Option::<DateTime<Utc>>::None.into(),
        };
        let txn = self.write_txn().await.doing("starting a retry")?;
        let r = txn
            .execute_raw(self.stmt(
                "UPDATE deliveries SET state = ?, attempts = 0, first_attempt_at = NULL, next_attempt_at = ?, \
                 updated_at = ? WHERE campaign_id = ? AND state = ? \
                 AND subscriber_id IN (SELECT id FROM subscribers WHERE status = ?)",
                vec![
                    DeliveryState::Pending.as_str().into(),
                    due,
                    Utc::now().into(),
                    c.id.into(),
                    DeliveryState::Failed.as_str().into(),
                    SubscriberStatus::Active.as_str().into(),
                ],
            ))
            .await
            .doing("resetting failed deliveries")?;
        if r.rows_affected() > 0 && c.state == CampaignState::Finished {
            txn.execute_raw(self.stmt(
                "UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ?",
                vec![
                    CampaignState::Running.as_str().into(),
                    Utc::now().into(),
                    c.id.into(),
                ],
            ))
            .await
            .doing("restarting a campaign")?;
        }
        txn.commit().await.doing("committing a retry")?;
        Ok(r.rows_affected())
    }

    /// Sets a draft's schedule and moves it to `scheduled`.
    pub async fn schedule_campaign(&self, name: &str, s: &Schedule) -> Result<()> {
        let c = self.campaign(name).await?.campaign;
        if !matches!(c.state, CampaignState::Draft | CampaignState::Scheduled) {
            return Err(StoreError::IllegalTransition {
                name: name.to_string(),
                from: c.state,
                to: CampaignState::Scheduled,
            });
        }
        self.db
            .execute_raw(self.stmt(
                "UPDATE campaigns SET state = ?, send_at = ?, cron = ?, tz = ?, window_start = ?, \
                 window_end = ?, last_run_at = NULL, updated_at = ? WHERE id = ?",
                vec![
                    CampaignState::Scheduled.as_str().into(),
                    s.send_at.into(),
                    s.cron.clone().into(),
                    s.tz.clone().into(),
                    s.window_start.clone().into(),
                    s.window_end.clone().into(),
                    Utc::now().into(),
                    c.id.into(),
                ],
            ))
            .await
            .doing("scheduling a campaign")?;
        Ok(())
    }

    /// Campaigns in `scheduled` or `running`, with their schedules.
    pub async fn active_campaigns(&self) -> Result<Vec<ScheduledCampaign>> {
        SchedRow::find_by_statement(self.stmt(
            &format!(
                "SELECT {SCHED_COLUMNS} FROM campaigns WHERE state IN (?, ?) ORDER BY created_at, id"
            ),
            vec![
                CampaignState::Scheduled.as_str().into(),
                CampaignState::Running.as_str().into(),
            ],
        ))
        .all(&self.db)
        .await
        .doing("reading scheduled campaigns")?
        .into_iter()
        .map(SchedRow::into_campaign)
        .collect()
    }

    /// One campaign's schedule.
    pub async fn campaign_schedule(&self, campaign_id: Uuid) -> Result<ScheduledCampaign> {
        SchedRow::find_by_statement(self.stmt(
            &format!("SELECT {SCHED_COLUMNS} FROM campaigns WHERE id = ?"),
            vec![campaign_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading a schedule")?
        .ok_or_else(|| StoreError::CampaignNotFound(campaign_id.to_string()))?
        .into_campaign()
    }

    /// Starts a one-off scheduled campaign: `scheduled` → `running`, once
    /// (false when another worker was first).
    pub async fn start_scheduled(&self, campaign_id: Uuid) -> Result<bool> {
        let r = self
            .db
            .execute_raw(self.stmt(
                "UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
                vec![
                    CampaignState::Running.as_str().into(),
                    Utc::now().into(),
                    campaign_id.into(),
                    CampaignState::Scheduled.as_str().into(),
                ],
            ))
            .await
            .doing("starting a scheduled campaign")?;
        Ok(r.rows_affected() > 0)
    }

    /// Creates the run of a recurring campaign for one occurrence: a copy
    /// named `run_name` (content, lists, window), `running`, pointing at its
    /// parent, whose `last_run_at` becomes `occurrence`. Exactly once per
    /// occurrence even with several workers: the parent's `last_run_at` is
    /// advanced with a compare-and-set. Returns the run's id, or None when
    /// another worker created it.
    pub async fn create_run(
        &self,
        parent_id: Uuid,
        previous: Option<DateTime<Utc>>,
        occurrence: DateTime<Utc>,
        run_name: &str,
    ) -> Result<Option<Uuid>> {
        let now = Utc::now();
        let txn = self.write_txn().await.doing("starting a run")?;
        let (cond, mut values): (&str, Vec<Value>) = match previous {
            Some(p) => ("last_run_at = ?", vec![p.into()]),
            None => ("last_run_at IS NULL", vec![]),
        };
        let mut v: Vec<Value> = vec![occurrence.into(), parent_id.into()];
        v.append(&mut values);
        let r = txn
            .execute_raw(self.stmt(
                &format!("UPDATE campaigns SET last_run_at = ? WHERE id = ? AND {cond}"),
                v,
            ))
            .await
            .doing("advancing a recurring campaign")?;
        if r.rows_affected() == 0 {
            txn.rollback().await.doing("rolling back a run")?;
            return Ok(None);
        }
        let id = Uuid::now_v7();
        let created = txn
            .execute_raw(self.stmt(
                "INSERT INTO campaigns (id, name, subject, content, content_kind, layout, from_addr, relay, state, \
                 created_at, updated_at, tz, window_start, window_end, parent_id) \
                 SELECT ?, ?, subject, content, content_kind, layout, from_addr, relay, ?, ?, ?, tz, window_start, \
                 window_end, id FROM campaigns WHERE id = ?",
                vec![
                    id.into(),
                    run_name.into(),
                    CampaignState::Running.as_str().into(),
                    now.into(),
                    now.into(),
                    parent_id.into(),
                ],
            ))
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.to_string().to_ascii_lowercase().contains("unique") => {
                txn.rollback().await.doing("rolling back a run")?;
                return Err(StoreError::CampaignExists(run_name.to_string()));
            }
            Err(e) => return Err(e).doing("creating a run"),
        }
        txn.execute_raw(self.stmt(
            "INSERT INTO campaign_lists (campaign_id, list_id) SELECT ?, list_id FROM campaign_lists WHERE campaign_id = ?",
            vec![id.into(), parent_id.into()],
        ))
        .await
        .doing("copying a campaign's lists")?;
        txn.commit().await.doing("committing a run")?;
        Ok(Some(id))
    }

    /// The runs of a recurring campaign, oldest first: (name, state).
    pub async fn campaign_runs(&self, parent_id: Uuid) -> Result<Vec<(String, CampaignState)>> {
        #[derive(FromQueryResult)]
        struct R {
            name: String,
            state: String,
        }
        R::find_by_statement(self.stmt(
            "SELECT name, state FROM campaigns WHERE parent_id = ? ORDER BY created_at, id",
            vec![parent_id.into()],
        ))
        .all(&self.db)
        .await
        .doing("listing runs")?
        .into_iter()
        .map(|r| Ok((r.name, r.state.parse()?)))
        .collect()
    }

    /// Counts for the metrics endpoint: bounces by class (`unparsed` before
    /// parsing) and subscribers by status.
    pub async fn metric_counts(&self) -> Result<MetricCounts> {
        #[derive(FromQueryResult)]
        struct R {
            k: Option<String>,
            n: i64,
        }
        let bounces = R::find_by_statement(self.stmt(
            "SELECT class AS k, COUNT(*) AS n FROM bounces GROUP BY class",
            vec![],
        ))
        .all(&self.db)
        .await
        .doing("counting bounces")?
        .into_iter()
        .map(|r| (r.k.unwrap_or_else(|| "unparsed".into()), r.n as u64))
        .collect();
        let subscribers = R::find_by_statement(self.stmt(
            "SELECT status AS k, COUNT(*) AS n FROM subscribers GROUP BY status",
            vec![],
        ))
        .all(&self.db)
        .await
        .doing("counting subscribers")?
        .into_iter()
        .map(|r| (r.k.unwrap_or_default(), r.n as u64))
        .collect();
        Ok(MetricCounts {
            bounces,
            subscribers,
        })
    }

    /// Final outcomes (sent, failed, rejected; not deferrals) of the
    /// campaign recorded since about `since`, and when the first of them
    /// was recorded: from the five-second `delivery_pace` buckets, so the
    /// count covers whole buckets from the one `since` falls in (up to
    /// [`crate::stats::PACE_BUCKET_S`] seconds before it) and the time
    /// returned is the first outcome in those buckets, the start of what
    /// was counted. A handful of rows, whatever the campaign's size.
    pub async fn outcomes_since(
        &self,
        campaign_id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<(u64, Option<DateTime<Utc>>)> {
        #[derive(FromQueryResult)]
        struct N {
            n: Option<i64>,
            first: Option<DateTime<Utc>>,
        }
        let n = N::find_by_statement(self.stmt(
            "SELECT CAST(SUM(outcomes) AS BIGINT) AS n, MIN(first_at) AS first FROM delivery_pace \
             WHERE campaign_id = ? AND at >= ?",
            vec![campaign_id.into(), crate::stats::pace_bucket(since).into()],
        ))
        .one(&self.db)
        .await
        .doing("counting recent outcomes")?;
        Ok(n.map_or((0, None), |n| (n.n.unwrap_or(0).max(0) as u64, n.first)))
    }

    /// `campaign edit`: changes a draft's content; `None` keeps a field.
    pub async fn edit_campaign(&self, name: &str, e: &CampaignEdit) -> Result<()> {
        let c = self.campaign(name).await?.campaign;
        if c.state != CampaignState::Draft {
            return Err(StoreError::NotADraft {
                name: name.to_string(),
                state: c.state,
            });
        }
        let mut sets = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let kind = e.content_kind.map(|k| k.as_str().to_string());
        for (col, v) in [
            ("subject", &e.subject),
            ("content", &e.content),
            ("content_kind", &kind),
            ("layout", &e.layout),
            ("from_addr", &e.from),
            ("relay", &e.relay),
        ] {
            if let Some(v) = v {
                sets.push(format!("{col} = ?"));
                values.push(v.clone().into());
            }
        }
        sets.push("updated_at = ?".into());
        values.push(Utc::now().into());
        values.push(c.id.into());
        self.db
            .execute_raw(self.stmt(
                &format!("UPDATE campaigns SET {} WHERE id = ?", sets.join(", ")),
                values,
            ))
            .await
            .doing("editing a campaign")?;
        Ok(())
    }

    /// Whether the database can take writers in several processes at once
    /// (PostgreSQL) or is one node (SQLite).
    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DatabaseBackend::Postgres
    }
}
