//! Lists: create, find, count by status, delete.

use crate::{Doing, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use rundbrief_core::{
    Actor, AuditAction, List, ListCounts, ListLabel, ListSummary, MembershipStatus,
    SubscriberStatus,
};
use sea_orm::{ConnectionTrait, FromQueryResult};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(FromQueryResult)]
struct ListRow {
    id: Uuid,
    name: String,
    label: Option<String>,
    description: Option<String>,
    created_at: DateTime<Utc>,
    public: bool,
}

/// A stored label; migration m20261202_000007 gave every list one, so the
/// fallback (the one that migration uses for names that give none) only
/// covers a row written around the store.
pub(crate) fn stored_label(id: Uuid, name: &str, label: Option<&str>) -> ListLabel {
    label
        .and_then(|l| ListLabel::parse(l).ok())
        .or_else(|| ListLabel::derive(name).ok())
        .or_else(|| ListLabel::parse(&format!("list-{}", &id.simple().to_string()[..8])).ok())
        .expect("list- and 8 hex digits is a valid label")
}

impl From<ListRow> for List {
    fn from(r: ListRow) -> List {
        List {
            label: stored_label(r.id, &r.name, r.label.as_deref()),
            id: r.id,
            name: r.name,
            description: r.description,
            created_at: r.created_at,
            public: r.public,
        }
    }
}

#[derive(FromQueryResult)]
struct CountRow {
    list_id: Uuid,
    effective: String,
    n: i64,
}

/// The effective status of a membership: the subscriber's when it is not
/// `active`, otherwise the membership's. Both words are bound as values.
pub(crate) const EFFECTIVE: &str = "CASE WHEN s.status <> ? THEN s.status ELSE m.status END";

/// Adds `n` memberships of effective status `effective` to `counts`.
fn add_count(counts: &mut ListCounts, effective: &str, n: u64) -> Result<()> {
    {
        if let Ok(m) = effective.parse::<MembershipStatus>() {
            match m {
                MembershipStatus::Subscribed => counts.subscribed += n,
                MembershipStatus::Unconfirmed => counts.unconfirmed += n,
                MembershipStatus::Unsubscribed => counts.unsubscribed += n,
            }
            return Ok(());
        }
        match effective.parse::<SubscriberStatus>()? {
            SubscriberStatus::Unsubscribed => counts.unsubscribed += n,
            SubscriberStatus::Bounced => counts.bounced += n,
            SubscriberStatus::Blocklisted => counts.blocklisted += n,
            SubscriberStatus::Undeliverable => counts.undeliverable += n,
            SubscriberStatus::Active => {
                return Err(StoreError::CorruptColumn {
                    column: "status",
                    problem: "active is not a list status".into(),
                });
            }
        }
        Ok(())
    }
}

impl Store {
    /// Creates a list; its List-Id label is derived from the name
    /// ([`ListLabel::derive`]).
    ///
    /// # Errors
    /// [`StoreError::ListExists`] when the name is taken,
    /// [`StoreError::ListLabel`] when the name gives no label (say what to
    /// do: [`Store::create_list_labelled`] with one), [`StoreError::ListLabelTaken`].
    pub async fn create_list(&self, name: &str, description: Option<&str>) -> Result<List> {
        self.create_list_labelled(name, None, description).await
    }

    /// Creates a list with the List-Id label `label`, or the one its name
    /// gives when `None`.
    ///
    /// # Errors
    /// As [`Store::create_list`].
    pub async fn create_list_labelled(
        &self,
        name: &str,
        label: Option<&ListLabel>,
        description: Option<&str>,
    ) -> Result<List> {
        if self.find_list(name).await?.is_some() {
            return Err(StoreError::ListExists(name.to_string()));
        }
        let label = match label {
            Some(l) => l.clone(),
            None => ListLabel::derive(name)?,
        };
        #[derive(FromQueryResult)]
        struct Holder {
            name: String,
        }
        if let Some(h) = Holder::find_by_statement(self.stmt(
            "SELECT name FROM lists WHERE label = ?",
            vec![label.as_str().into()],
        ))
        .one(&self.db)
        .await
        .doing("looking up a list label")?
        {
            return Err(StoreError::ListLabelTaken {
                label: label.to_string(),
                other: h.name,
            });
        }
        let now = Utc::now();
        let id = Uuid::now_v7();
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO lists (id, name, label, description, created_at, updated_at, public) VALUES (?, ?, ?, ?, ?, ?, ?)",
                vec![id.into(), name.into(), label.as_str().into(), description.map(str::to_string).into(), now.into(), now.into(), false.into()],
            ))
            .await
            .map_err(|e| match e.sql_err() {
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::ListExists(name.to_string()),
                _ => StoreError::Query { doing: "creating a list", cause: e },
            })?;
        Ok(List {
            id,
            name: name.to_string(),
            label,
            description: description.map(str::to_string),
            created_at: now,
            public: false,
        })
    }

    /// Opens (`public = true`) or closes the list's subscribe form
    /// (`POST /s/NAME`). A new list is closed. Returns whether anything
    /// changed.
    ///
    /// # Errors
    /// [`StoreError::ListNotFound`].
    pub async fn set_list_public(&self, name: &str, public: bool) -> Result<bool> {
        let list = self.list(name).await?;
        if list.public == public {
            return Ok(false);
        }
        self.db
            .execute_raw(self.stmt(
                "UPDATE lists SET public = ?, updated_at = ? WHERE id = ?",
                vec![public.into(), Utc::now().into(), list.id.into()],
            ))
            .await
            .doing("changing whether a list is public")?;
        Ok(true)
    }

    /// The list called `name`, if any.
    pub async fn find_list(&self, name: &str) -> Result<Option<List>> {
        let row = ListRow::find_by_statement(self.stmt(
            "SELECT id, name, label, description, created_at, public FROM lists WHERE name = ?",
            vec![name.into()],
        ))
        .one(&self.db)
        .await
        .doing("looking up a list")?;
        Ok(row.map(List::from))
    }

    /// The list called `name`.
    ///
    /// # Errors
    /// [`StoreError::ListNotFound`].
    pub async fn list(&self, name: &str) -> Result<List> {
        self.find_list(name)
            .await?
            .ok_or_else(|| StoreError::ListNotFound(name.to_string()))
    }

    /// Every list with its counts by effective status, ordered by name.
    pub async fn list_summaries(&self) -> Result<Vec<ListSummary>> {
        let lists = ListRow::find_by_statement(self.stmt(
            "SELECT id, name, label, description, created_at, public FROM lists ORDER BY name",
            vec![],
        ))
        .all(&self.db)
        .await
        .doing("listing lists")?;
        let mut counts = self.counts(None).await?;
        Ok(lists
            .into_iter()
            .map(|l| ListSummary {
                counts: counts.remove(&l.id).unwrap_or_default(),
                list: l.into(),
            })
            .collect())
    }

    /// One list with its counts.
    pub async fn list_summary(&self, name: &str) -> Result<ListSummary> {
        let list = self.list(name).await?;
        let counts = self
            .counts(Some(list.id))
            .await?
            .remove(&list.id)
            .unwrap_or_default();
        Ok(ListSummary { list, counts })
    }

    async fn counts(&self, list: Option<Uuid>) -> Result<HashMap<Uuid, ListCounts>> {
        let mut values = vec![SubscriberStatus::Active.as_str().into()];
        let filter = match list {
            Some(id) => {
                values.push(id.into());
                "WHERE m.list_id = ?"
            }
            None => "",
        };
        let sql = format!(
            "SELECT m.list_id AS list_id, {EFFECTIVE} AS effective, COUNT(*) AS n \
             FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id {filter} \
             GROUP BY m.list_id, effective"
        );
        let rows = CountRow::find_by_statement(self.stmt(&sql, values))
            .all(&self.db)
            .await
            .doing("counting list members")?;
        let mut out: HashMap<Uuid, ListCounts> = HashMap::new();
        for r in rows {
            add_count(
                out.entry(r.list_id).or_default(),
                &r.effective,
                u64::try_from(r.n).unwrap_or(0),
            )?;
        }
        Ok(out)
    }

    /// Deletes a list and its memberships. Refuses while the list has members,
    /// unless `force`; with `force`, each former member's audit trail records
    /// the removal.
    ///
    /// # Errors
    /// [`StoreError::ListNotFound`], [`StoreError::ListNotEmpty`].
    pub async fn delete_list(&self, name: &str, force: bool, actor: Actor) -> Result<u64> {
        let summary = self.list_summary(name).await?;
        let members = summary.counts.total();
        let campaigns = self.campaigns_for_list(summary.list.id).await?;
        if !campaigns.is_empty() && !force {
            return Err(StoreError::ListInUse {
                name: name.to_string(),
                campaigns: campaigns.join(", "),
            });
        }
        if members > 0 && !force {
            return Err(StoreError::ListNotEmpty {
                name: name.to_string(),
                members,
            });
        }
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let backend = txn.get_database_backend();
        let now = Utc::now();
        #[derive(FromQueryResult)]
        struct Member {
            subscriber_id: Uuid,
        }
        let ids = Member::find_by_statement(crate::stmt_for(
            backend,
            "SELECT subscriber_id FROM memberships WHERE list_id = ?",
            vec![summary.list.id.into()],
        ))
        .all(&txn)
        .await
        .doing("reading list members")?;
        let reason = format!("list `{name}` was deleted");
        for chunk in ids.chunks(500) {
            let mut values = Vec::with_capacity(chunk.len() * 7);
            for m in chunk {
                values.extend([
                    Uuid::now_v7().into(),
                    m.subscriber_id.into(),
                    summary.list.id.into(),
                    AuditAction::ListRemoved.as_str().into(),
                    actor.as_str().into(),
                    reason.clone().into(),
                    now.into(),
                ]);
            }
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            txn.execute_raw(crate::stmt_for(
                backend,
                &format!("INSERT INTO audit (id, subscriber_id, list_id, action, actor, reason, created_at) VALUES {rows}"),
                values,
            ))
            .await
            .doing("recording the list removal")?;
        }
        txn.execute_raw(crate::stmt_for(
            backend,
            "DELETE FROM memberships WHERE list_id = ?",
            vec![summary.list.id.into()],
        ))
        .await
        .doing("deleting memberships")?;
        txn.execute_raw(crate::stmt_for(
            backend,
            "DELETE FROM lists WHERE id = ?",
            vec![summary.list.id.into()],
        ))
        .await
        .doing("deleting the list")?;
        txn.commit().await.doing("committing the list removal")?;
        Ok(members)
    }
}
