//! Subscribers and memberships: add, look up, list, change status, remove.
//! Every status change writes an audit entry in the same transaction.

use crate::lists::EFFECTIVE;
use crate::{Doing, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use rundbrief_core::{
    Actor, Address, Attributes, AuditAction, AuditEntry, Membership, MembershipStatus,
    StatusFilter, Subscriber, SubscriberDetail, SubscriberRow, SubscriberStatus,
};
use sea_orm::{ConnectionTrait, FromQueryResult, Value};
use uuid::Uuid;

#[derive(FromQueryResult)]
pub(crate) struct SubRow {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub attributes: serde_json::Value,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SUB_COLUMNS: &str =
    "s.id, s.email, s.name, s.attributes, s.status, s.created_at, s.updated_at";

impl SubRow {
    pub(crate) fn into_subscriber(self) -> Result<Subscriber> {
        let attributes = match self.attributes {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => Attributes::new(),
            // SQLite may hand back the JSON text itself.
            serde_json::Value::String(text) => {
                serde_json::from_str(&text).map_err(|e| StoreError::CorruptColumn {
                    column: "subscribers.attributes",
                    problem: e.to_string(),
                })?
            }
            other => {
                return Err(StoreError::CorruptColumn {
                    column: "subscribers.attributes",
                    problem: format!("expected a JSON object, found {other}"),
                });
            }
        };
        Ok(Subscriber {
            id: self.id,
            email: self.email,
            name: self.name,
            attributes,
            status: self.status.parse()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// What `add_subscriber` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct AddOutcome {
    /// A new subscriber was created.
    pub created: bool,
    /// The membership became `subscribed` (it was missing or not subscribed).
    pub joined: bool,
    /// An unsubscribed or bounced subscriber was made active again.
    pub restored: bool,
    /// An existing subscriber's name or attributes changed.
    pub updated: bool,
}

/// Which subscribers `sub ls` / `export` want, one page at a time.
#[derive(Debug, Clone, Default)]
pub struct SubscriberQuery {
    /// Only members of this list (any membership status unless `status` says).
    pub list: Option<String>,
    pub status: Option<StatusFilter>,
    /// Keyset paging: only addresses sorting after this key (`Address::key`).
    pub after: Option<String>,
    /// Page size; 0 = no limit.
    pub limit: u64,
}

/// Writes one audit entry.
pub(crate) async fn audit<C: ConnectionTrait>(
    c: &C,
    subscriber: Uuid,
    list: Option<Uuid>,
    action: AuditAction,
    actor: Actor,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    c.execute_raw(crate::stmt_for(
        c.get_database_backend(),
        "INSERT INTO audit (id, subscriber_id, list_id, action, actor, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        vec![
            Uuid::now_v7().into(),
            subscriber.into(),
            list.into(),
            action.as_str().into(),
            actor.as_str().into(),
            reason.into(),
            at.into(),
        ],
    ))
    .await
    .doing("writing the audit trail")?;
    Ok(())
}

pub(crate) async fn exec<C: ConnectionTrait>(
    c: &C,
    doing: &'static str,
    sql: &str,
    values: Vec<Value>,
) -> Result<u64> {
    Ok(
        c.execute_raw(crate::stmt_for(c.get_database_backend(), sql, values))
            .await
            .doing(doing)?
            .rows_affected(),
    )
}

/// Creates an active subscriber and audits it; returns its id.
pub(crate) async fn insert_subscriber<C: ConnectionTrait>(
    c: &C,
    addr: &Address,
    name: Option<&str>,
    attributes: Attributes,
    actor: Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    exec(
        c,
        "creating a subscriber",
        "INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            id.into(),
            addr.as_str().into(),
            addr.key().into(),
            name.map(str::to_string).into(),
            serde_json::Value::Object(attributes).into(),
            SubscriberStatus::Active.as_str().into(),
            now.into(),
            now.into(),
        ],
    )
    .await?;
    audit(c, id, None, AuditAction::Created, actor, reason, now).await?;
    Ok(id)
}

/// Sets a subscriber's status (the caller writes the audit entry).
async fn set_status<C: ConnectionTrait>(
    c: &C,
    id: Uuid,
    status: SubscriberStatus,
    now: DateTime<Utc>,
    doing: &'static str,
) -> Result<()> {
    exec(
        c,
        doing,
        "UPDATE subscribers SET status = ?, updated_at = ? WHERE id = ?",
        vec![status.as_str().into(), now.into(), id.into()],
    )
    .await
    .map(drop)
}

/// Clears a subscriber's bounce score (and the words of the bounce behind
/// it) and sets `bounce_reset_at`, so bounces received before `now` no longer
/// count, not even when `bounce reprocess` parses them again. Every way back
/// from `bounced` calls it, or the next `rundbrief clean` would prune the
/// subscriber again at once. The stored bounces stay: they are evidence.
pub(crate) async fn reset_bounce_score<C: ConnectionTrait>(
    c: &C,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<()> {
    exec(
        c,
        "resetting a bounce score",
        RESET_BOUNCE_SCORE,
        vec![now.into(), id.into()],
    )
    .await
    .map(drop)
}

/// The statement of [`reset_bounce_score`] (parameters: now, subscriber id),
/// also used by the import's own paths.
pub(crate) const RESET_BOUNCE_SCORE: &str = "UPDATE subscribers SET bounce_score = NULL, \
    bounce_day = NULL, bounce_day_weight = NULL, bounce_last = NULL, bounce_reset_at = ? WHERE id = ?";

pub(crate) async fn find<C: ConnectionTrait>(c: &C, addr: &Address) -> Result<Option<SubRow>> {
    SubRow::find_by_statement(crate::stmt_for(
        c.get_database_backend(),
        &format!("SELECT {SUB_COLUMNS} FROM subscribers s WHERE s.email_key = ?"),
        vec![addr.key().into()],
    ))
    .one(c)
    .await
    .doing("looking up a subscriber")
}

async fn membership_status<C: ConnectionTrait>(
    c: &C,
    sub: Uuid,
    list: Uuid,
) -> Result<Option<MembershipStatus>> {
    #[derive(FromQueryResult)]
    struct M {
        status: String,
    }
    let m = M::find_by_statement(crate::stmt_for(
        c.get_database_backend(),
        "SELECT status FROM memberships WHERE subscriber_id = ? AND list_id = ?",
        vec![sub.into(), list.into()],
    ))
    .one(c)
    .await
    .doing("looking up a membership")?;
    Ok(m.map(|m| m.status.parse()).transpose()?)
}

impl Store {
    /// Subscribes `addr` to `list`, creating the subscriber when needed and
    /// merging `name`/`attributes` into an existing one.
    ///
    /// # Errors
    /// [`StoreError::Blocklisted`]; [`StoreError::Inactive`] for an
    /// unsubscribed or bounced subscriber unless `resubscribe`.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_subscriber(
        &self,
        addr: &Address,
        list: &str,
        name: Option<&str>,
        attributes: Attributes,
        resubscribe: bool,
        actor: Actor,
        reason: &str,
    ) -> Result<AddOutcome> {
        let list = self.list(list).await?;
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let now = Utc::now();
        let mut out = AddOutcome::default();
        let id = match find(&txn, addr).await? {
            None => {
                let id =
                    insert_subscriber(&txn, addr, name, attributes, actor, reason, now).await?;
                out.created = true;
                id
            }
            Some(row) => {
                let sub = row.into_subscriber()?;
                match sub.status {
                    SubscriberStatus::Active => {}
                    SubscriberStatus::Blocklisted => {
                        return Err(StoreError::Blocklisted(sub.email));
                    }
                    status if !resubscribe => {
                        return Err(StoreError::Inactive {
                            email: sub.email,
                            status,
                        });
                    }
                    _ => {
                        set_status(
                            &txn,
                            sub.id,
                            SubscriberStatus::Active,
                            now,
                            "restoring a subscriber",
                        )
                        .await?;
                        if sub.status == SubscriberStatus::Bounced {
                            reset_bounce_score(&txn, sub.id, now).await?;
                        }
                        let why = format!("{reason} (was {}; --resubscribe)", sub.status);
                        audit(&txn, sub.id, None, AuditAction::Restored, actor, &why, now).await?;
                        out.restored = true;
                    }
                }
                let mut merged = sub.attributes.clone();
                merged.extend(attributes);
                if merged != sub.attributes || name.is_some_and(|n| Some(n) != sub.name.as_deref())
                {
                    out.updated = true;
                    exec(
                        &txn,
                        "updating a subscriber",
                        "UPDATE subscribers SET name = COALESCE(?, name), attributes = ?, updated_at = ? WHERE id = ?",
                        vec![
                            name.map(str::to_string).into(),
                            serde_json::Value::Object(merged).into(),
                            now.into(),
                            sub.id.into(),
                        ],
                    )
                    .await?;
                }
                sub.id
            }
        };
        match membership_status(&txn, id, list.id).await? {
            Some(MembershipStatus::Subscribed) => {}
            Some(_) => {
                exec(
                    &txn,
                    "updating a membership",
                    "UPDATE memberships SET status = ?, updated_at = ? WHERE subscriber_id = ? AND list_id = ?",
                    vec![MembershipStatus::Subscribed.as_str().into(), now.into(), id.into(), list.id.into()],
                )
                .await?;
                out.joined = true;
            }
            None => {
                exec(
                    &txn,
                    "adding a membership",
                    "INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    vec![id.into(), list.id.into(), MembershipStatus::Subscribed.as_str().into(), now.into(), now.into()],
                )
                .await?;
                out.joined = true;
            }
        }
        if out.joined {
            audit(
                &txn,
                id,
                Some(list.id),
                AuditAction::Subscribed,
                actor,
                reason,
                now,
            )
            .await?;
        }
        txn.commit().await.doing("committing the subscription")?;
        Ok(out)
    }

    fn query_sql(&self, q: &SubscriberQuery, count: bool) -> Result<(String, Vec<Value>, bool)> {
        let mut values: Vec<Value> = Vec::new();
        let mut sql = String::from("SELECT ");
        let list_id = q.list.is_some();
        if count {
            sql.push_str("COUNT(*) AS n");
        } else if list_id {
            sql.push_str(SUB_COLUMNS);
            sql.push_str(", m.status AS membership");
        } else {
            sql.push_str(SUB_COLUMNS);
            sql.push_str(", CAST(NULL AS TEXT) AS membership");
        }
        sql.push_str(" FROM subscribers s");
        if list_id {
            sql.push_str(" JOIN memberships m ON m.subscriber_id = s.id JOIN lists l ON l.id = m.list_id AND l.name = ?");
            values.push(q.list.clone().into());
        }
        sql.push_str(" WHERE 1 = 1");
        match (q.status, list_id) {
            (None, _) => {}
            (Some(StatusFilter::Subscriber(s)), false)
            | (Some(StatusFilter::Subscriber(s @ SubscriberStatus::Active)), true) => {
                sql.push_str(" AND s.status = ?");
                values.push(s.as_str().into());
            }
            (Some(StatusFilter::Membership(m)), false) => {
                return Err(StoreError::StatusNeedsList(m.as_str()));
            }
            (Some(f), true) => {
                let word = match f {
                    StatusFilter::Subscriber(s) => s.as_str(),
                    StatusFilter::Membership(m) => m.as_str(),
                };
                sql.push_str(&format!(" AND {EFFECTIVE} = ?"));
                values.push(SubscriberStatus::Active.as_str().into());
                values.push(word.into());
            }
        }
        if !count {
            if let Some(after) = &q.after {
                sql.push_str(" AND s.email_key > ?");
                values.push(after.clone().into());
            }
            sql.push_str(" ORDER BY s.email_key");
            if q.limit > 0 {
                sql.push_str(" LIMIT ?");
                values.push((q.limit as i64).into());
            }
        }
        Ok((sql, values, list_id))
    }

    /// One page of subscribers, ordered by address key. Pass the last row's
    /// `Address::key` (lower-cased email) as `after` for the next page.
    ///
    /// # Errors
    /// [`StoreError::ListNotFound`], [`StoreError::StatusNeedsList`].
    pub async fn subscribers(&self, q: &SubscriberQuery) -> Result<Vec<SubscriberRow>> {
        if let Some(list) = &q.list {
            self.list(list).await?;
        }
        let (sql, values, _) = self.query_sql(q, false)?;
        #[derive(FromQueryResult)]
        struct Row {
            #[sea_orm(nested)]
            sub: SubRow,
            membership: Option<String>,
        }
        let rows = Row::find_by_statement(self.stmt(&sql, values))
            .all(&self.db)
            .await
            .doing("listing subscribers")?;
        rows.into_iter()
            .map(|r| {
                Ok(SubscriberRow {
                    subscriber: r.sub.into_subscriber()?,
                    membership: r.membership.map(|m| m.parse()).transpose()?,
                })
            })
            .collect()
    }

    /// How many subscribers match `q` (ignoring `after` and `limit`).
    pub async fn count_subscribers(&self, q: &SubscriberQuery) -> Result<u64> {
        if let Some(list) = &q.list {
            self.list(list).await?;
        }
        let (sql, values, _) = self.query_sql(q, true)?;
        #[derive(FromQueryResult)]
        struct N {
            n: i64,
        }
        let n = N::find_by_statement(self.stmt(&sql, values))
            .one(&self.db)
            .await
            .doing("counting subscribers")?;
        Ok(n.map_or(0, |n| n.n as u64))
    }

    /// The subscriber, their memberships and their audit trail (oldest first).
    ///
    /// # Errors
    /// [`StoreError::SubscriberNotFound`].
    pub async fn subscriber_detail(&self, addr: &Address) -> Result<SubscriberDetail> {
        let sub = find(&self.db, addr)
            .await?
            .ok_or_else(|| StoreError::SubscriberNotFound(addr.to_string()))?
            .into_subscriber()?;
        #[derive(FromQueryResult)]
        struct M {
            list: String,
            status: String,
            created_at: DateTime<Utc>,
            updated_at: DateTime<Utc>,
        }
        let memberships = M::find_by_statement(self.stmt(
            "SELECT l.name AS list, m.status, m.created_at, m.updated_at FROM memberships m \
             JOIN lists l ON l.id = m.list_id WHERE m.subscriber_id = ? ORDER BY l.name",
            vec![sub.id.into()],
        ))
        .all(&self.db)
        .await
        .doing("reading memberships")?
        .into_iter()
        .map(|m| {
            Ok(Membership {
                list: m.list,
                status: m.status.parse()?,
                created_at: m.created_at,
                updated_at: m.updated_at,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let audit = self.audit_trail(sub.id).await?;
        Ok(SubscriberDetail {
            subscriber: sub,
            memberships,
            audit,
        })
    }

    async fn audit_trail(&self, id: Uuid) -> Result<Vec<AuditEntry>> {
        #[derive(FromQueryResult)]
        struct A {
            created_at: DateTime<Utc>,
            action: String,
            actor: String,
            list: Option<String>,
            reason: String,
        }
        A::find_by_statement(self.stmt(
            "SELECT a.created_at, a.action, a.actor, l.name AS list, a.reason FROM audit a \
             LEFT JOIN lists l ON l.id = a.list_id WHERE a.subscriber_id = ? ORDER BY a.created_at, a.id",
            vec![id.into()],
        ))
        .all(&self.db)
        .await
        .doing("reading the audit trail")?
        .into_iter()
        .map(|a| {
            Ok(AuditEntry { at: a.created_at, action: a.action.parse()?, actor: a.actor.parse()?, list: a.list, reason: a.reason })
        })
        .collect()
    }

    /// Unsubscribes `addr` from one list, or (without `list`) from everything:
    /// then the subscriber's own status becomes `unsubscribed` too. Returns
    /// whether anything changed (it is idempotent).
    ///
    /// # Errors
    /// [`StoreError::SubscriberNotFound`], [`StoreError::ListNotFound`], [`StoreError::NotAMember`].
    pub async fn unsubscribe(
        &self,
        addr: &Address,
        list: Option<&str>,
        actor: Actor,
        reason: &str,
    ) -> Result<bool> {
        let list = match list {
            Some(name) => Some(self.list(name).await?),
            None => None,
        };
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let sub = find(&txn, addr)
            .await?
            .ok_or_else(|| StoreError::SubscriberNotFound(addr.to_string()))?;
        let now = Utc::now();
        let unsub = MembershipStatus::Unsubscribed.as_str();
        let changed = match &list {
            Some(l) => match membership_status(&txn, sub.id, l.id).await? {
                None => {
                    return Err(StoreError::NotAMember {
                        email: sub.email,
                        list: l.name.clone(),
                    });
                }
                Some(MembershipStatus::Unsubscribed) => false,
                Some(_) => {
                    exec(
                            &txn,
                            "unsubscribing",
                            "UPDATE memberships SET status = ?, updated_at = ? WHERE subscriber_id = ? AND list_id = ?",
                            vec![unsub.into(), now.into(), sub.id.into(), l.id.into()],
                        )
                        .await?;
                    audit(
                        &txn,
                        sub.id,
                        Some(l.id),
                        AuditAction::Unsubscribed,
                        actor,
                        reason,
                        now,
                    )
                    .await?;
                    true
                }
            },
            None => {
                let status: SubscriberStatus = sub.status.parse()?;
                let n = exec(
                    &txn,
                    "unsubscribing",
                    "UPDATE memberships SET status = ?, updated_at = ? WHERE subscriber_id = ? AND status <> ?",
                    vec![unsub.into(), now.into(), sub.id.into(), unsub.into()],
                )
                .await?;
                let global = status == SubscriberStatus::Active;
                if global {
                    set_status(
                        &txn,
                        sub.id,
                        SubscriberStatus::Unsubscribed,
                        now,
                        "unsubscribing",
                    )
                    .await?;
                }
                if global || n > 0 {
                    audit(
                        &txn,
                        sub.id,
                        None,
                        AuditAction::Unsubscribed,
                        actor,
                        &format!("{reason} (all lists)"),
                        now,
                    )
                    .await?;
                }
                global || n > 0
            }
        };
        txn.commit().await.doing("committing the unsubscribe")?;
        Ok(changed)
    }

    /// Blocklists `addr`, creating a subscriber record for an unknown address
    /// so that no later import or `sub add` can bring it in. Returns whether
    /// anything changed.
    pub async fn blocklist(&self, addr: &Address, actor: Actor, reason: &str) -> Result<bool> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let now = Utc::now();
        let blocked = SubscriberStatus::Blocklisted.as_str();
        let changed = match find(&txn, addr).await? {
            Some(sub)
                if sub.status.parse::<SubscriberStatus>()? == SubscriberStatus::Blocklisted =>
            {
                false
            }
            Some(sub) => {
                set_status(
                    &txn,
                    sub.id,
                    SubscriberStatus::Blocklisted,
                    now,
                    "blocklisting",
                )
                .await?;
                audit(
                    &txn,
                    sub.id,
                    None,
                    AuditAction::Blocklisted,
                    actor,
                    reason,
                    now,
                )
                .await?;
                true
            }
            None => {
                let id = Uuid::now_v7();
                exec(
                    &txn,
                    "blocklisting",
                    "INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at, updated_at) \
                     VALUES (?, ?, ?, NULL, ?, ?, ?, ?)",
                    vec![
                        id.into(),
                        addr.as_str().into(),
                        addr.key().into(),
                        serde_json::json!({}).into(),
                        blocked.into(),
                        now.into(),
                        now.into(),
                    ],
                )
                .await?;
                audit(
                    &txn,
                    id,
                    None,
                    AuditAction::Blocklisted,
                    actor,
                    &format!("{reason} (address was not known)"),
                    now,
                )
                .await?;
                true
            }
        };
        txn.commit().await.doing("committing the blocklisting")?;
        Ok(changed)
    }

    /// Deletes the subscriber and their memberships. The audit trail keeps
    /// the subscriber's id (not the address) and records the removal.
    ///
    /// # Errors
    /// [`StoreError::SubscriberNotFound`].
    pub async fn remove_subscriber(
        &self,
        addr: &Address,
        actor: Actor,
        reason: &str,
    ) -> Result<()> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let sub = find(&txn, addr)
            .await?
            .ok_or_else(|| StoreError::SubscriberNotFound(addr.to_string()))?;
        exec(
            &txn,
            "removing memberships",
            "DELETE FROM memberships WHERE subscriber_id = ?",
            vec![sub.id.into()],
        )
        .await?;
        exec(
            &txn,
            "removing a subscriber",
            "DELETE FROM subscribers WHERE id = ?",
            vec![sub.id.into()],
        )
        .await?;
        audit(
            &txn,
            sub.id,
            None,
            AuditAction::Removed,
            actor,
            reason,
            Utc::now(),
        )
        .await?;
        txn.commit().await.doing("committing the removal")?;
        Ok(())
    }
}

impl Store {
    /// Marks `addr` as `bounced` (the bounce processor's prune). Returns
    /// whether anything changed.
    ///
    /// # Errors
    /// [`StoreError::SubscriberNotFound`].
    pub async fn mark_bounced(&self, addr: &Address, actor: Actor, reason: &str) -> Result<bool> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let sub = find(&txn, addr)
            .await?
            .ok_or_else(|| StoreError::SubscriberNotFound(addr.to_string()))?;
        if sub.status.parse::<SubscriberStatus>()? != SubscriberStatus::Active {
            return Ok(false);
        }
        let now = Utc::now();
        set_status(
            &txn,
            sub.id,
            SubscriberStatus::Bounced,
            now,
            "marking a subscriber bounced",
        )
        .await?;
        audit(&txn, sub.id, None, AuditAction::Bounced, actor, reason, now).await?;
        txn.commit().await.doing("committing the bounce")?;
        Ok(true)
    }
}

impl Store {
    /// Undoes a bounce prune: a `bounced` subscriber becomes `active` again,
    /// with their memberships as they were. Only bounces are undone here:
    /// unsubscribing and blocklisting were somebody's decision.
    ///
    /// The bounce score is reset with it, or the next `rundbrief clean` would
    /// prune the subscriber again at once: the score and the words of the
    /// bounce behind it are cleared and `bounce_reset_at` is set, so bounces
    /// received before now no longer count, not even when `bounce reprocess`
    /// parses them again ([`Store::bounce_reset_at`]). The stored bounces
    /// stay: they are evidence. The audit entry says what was reset.
    ///
    /// # Errors
    /// [`StoreError::SubscriberNotFound`]; [`StoreError::NotBounced`] for any
    /// other status.
    pub async fn restore_subscriber(
        &self,
        addr: &Address,
        actor: Actor,
        reason: &str,
    ) -> Result<()> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let sub = find(&txn, addr)
            .await?
            .ok_or_else(|| StoreError::SubscriberNotFound(addr.to_string()))?;
        let status: SubscriberStatus = sub.status.parse()?;
        if status == SubscriberStatus::Undeliverable {
            // The domain check's mark: no score to reset.
            let now = Utc::now();
            set_status(
                &txn,
                sub.id,
                SubscriberStatus::Active,
                now,
                "restoring a subscriber",
            )
            .await?;
            audit(
                &txn,
                sub.id,
                None,
                AuditAction::Restored,
                actor,
                &format!(
                    "{reason}; was undeliverable (domain check): the next check marks the address \
                     again while its domain still cannot receive mail (--no-dns-check skips it)"
                ),
                now,
            )
            .await?;
            txn.commit().await.doing("committing the restore")?;
            return Ok(());
        }
        if status != SubscriberStatus::Bounced {
            return Err(StoreError::NotBounced {
                email: sub.email,
                status,
            });
        }
        let now = Utc::now();
        #[derive(FromQueryResult)]
        struct Score {
            bounce_score: Option<f64>,
        }
        let score = Score::find_by_statement(crate::stmt_for(
            txn.get_database_backend(),
            "SELECT bounce_score FROM subscribers WHERE id = ?",
            vec![sub.id.into()],
        ))
        .one(&txn)
        .await
        .doing("reading a bounce score")?
        .and_then(|s| s.bounce_score);
        set_status(
            &txn,
            sub.id,
            SubscriberStatus::Active,
            now,
            "restoring a subscriber",
        )
        .await?;
        reset_bounce_score(&txn, sub.id, now).await?;
        let reset = score.map_or_else(String::new, |v| format!(" bounce score {v:.1} reset:"));
        audit(
            &txn,
            sub.id,
            None,
            AuditAction::Restored,
            actor,
            &format!(
                "{reason};{reset} bounces received before this restore no longer count (they stay stored)"
            ),
            now,
        )
        .await?;
        txn.commit().await.doing("committing the restore")?;
        Ok(())
    }

    /// When the subscriber's bounce score was last reset by
    /// [`Store::restore_subscriber`], if ever: bounces received before it
    /// must not count towards the score again.
    pub async fn bounce_reset_at(&self, subscriber_id: Uuid) -> Result<Option<DateTime<Utc>>> {
        #[derive(FromQueryResult)]
        struct R {
            bounce_reset_at: Option<DateTime<Utc>>,
        }
        Ok(R::find_by_statement(self.stmt(
            "SELECT bounce_reset_at FROM subscribers WHERE id = ?",
            vec![subscriber_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("reading when a bounce score was reset")?
        .and_then(|r| r.bounce_reset_at))
    }
}
