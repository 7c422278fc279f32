//! The import hot path: rows arrive in batches; each batch is one
//! transaction of four set-based statements, whatever its size:
//!
//! 1. one `SELECT … WHERE email_key IN (…)` finds the subscribers that exist
//!    (with their membership on the target list);
//! 2. the decision per row is made in Rust (new / update / skip, see
//!    [`Import::write_batch`]);
//! 3. one multi-row upsert of subscribers (`ON CONFLICT (email_key)`), one of
//!    memberships, one insert of audit entries.
//!
//! A committed batch is final, and every decision only depends on the rows
//! and on what is stored, so running the same file again converges on the
//! same state: an interrupted import is finished by running it again.

use crate::subscribers::SubRow;
use crate::{Doing, Result, Store};
use chrono::{DateTime, Utc};
use rundbrief_core::csvin::ImportRow;
use rundbrief_core::{Actor, Attributes, AuditAction, MembershipStatus, SubscriberStatus};
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult, TransactionTrait, Value};
use std::collections::HashMap;
use uuid::Uuid;

/// Rows per multi-row statement: keeps every statement under PostgreSQL's
/// 65,535 bind parameters and SQLite's 32,766 whatever the batch size.
const ROWS_PER_STATEMENT: usize = 2000;

/// How an import treats existing subscribers.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Make `bounced` subscribers in the file active again (the operator says
    /// they were wrongly pruned). Blocklisted and unsubscribed ones are never
    /// brought back by an import.
    pub resubscribe_bounced: bool,
    /// Run everything in one transaction and roll it back at the end: the
    /// counts are exactly what a real run would report, nothing is written.
    pub dry_run: bool,
    /// Where the rows come from (the file name), for the audit trail.
    pub source: String,
}

/// Counts for one batch (and, summed, for the whole import). `imported`:
/// new subscribers; `updated`: rows that matched an existing subscriber or an
/// earlier row of the file; `skipped`: rows left untouched because the
/// subscriber is blocklisted, bounced, unsubscribed, or left this list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchReport {
    pub imported: u64,
    pub updated: u64,
    pub skipped: u64,
}

impl std::ops::AddAssign for BatchReport {
    fn add_assign(&mut self, o: Self) {
        self.imported += o.imported;
        self.updated += o.updated;
        self.skipped += o.skipped;
    }
}

/// An import in progress into one list.
pub struct Import {
    store: Store,
    list_id: Uuid,
    opts: ImportOptions,
    /// The one transaction of a dry run.
    dry: Option<DatabaseTransaction>,
}

impl Store {
    /// Starts an import into `list`.
    ///
    /// # Errors
    /// [`crate::StoreError::ListNotFound`].
    pub async fn begin_import(&self, list: &str, opts: ImportOptions) -> Result<Import> {
        let list = self.list(list).await?;
        let dry = if opts.dry_run {
            Some(self.db.begin().await.doing("starting the dry run")?)
        } else {
            None
        };
        Ok(Import {
            store: self.clone(),
            list_id: list.id,
            opts,
            dry,
        })
    }
}

impl Import {
    /// Writes one batch in its own transaction (or, on a dry run, in the
    /// import's single transaction) and returns its counts.
    ///
    /// Per address (rows with the same address are merged: later non-empty
    /// values win): new → created `active` and `subscribed`; existing
    /// `active` → name and attributes merged, membership made `subscribed`
    /// unless the subscriber left this list (then skipped); `bounced` →
    /// skipped, or restored with `resubscribe_bounced`; `blocklisted` or
    /// `unsubscribed` → skipped.
    pub async fn write_batch(&mut self, rows: Vec<ImportRow>) -> Result<BatchReport> {
        let now = Utc::now();
        match &self.dry {
            Some(txn) => apply(txn, self.list_id, &self.opts, rows, now).await,
            None => {
                let txn = self.store.db.begin().await.doing("starting a batch")?;
                let report = apply(&txn, self.list_id, &self.opts, rows, now).await?;
                txn.commit().await.doing("committing a batch")?;
                Ok(report)
            }
        }
    }

    /// Ends the import; a dry run is rolled back here.
    pub async fn finish(self) -> Result<()> {
        if let Some(txn) = self.dry {
            txn.rollback().await.doing("rolling back the dry run")?;
        }
        Ok(())
    }
}

/// The rows of one address within a batch, merged.
struct Merged {
    row: ImportRow,
    occurrences: u64,
}

#[derive(FromQueryResult)]
struct Existing {
    #[sea_orm(nested)]
    sub: SubRow,
    email_key: String,
    membership: Option<String>,
}

async fn apply<C: ConnectionTrait>(
    c: &C,
    list_id: Uuid,
    opts: &ImportOptions,
    rows: Vec<ImportRow>,
    now: DateTime<Utc>,
) -> Result<BatchReport> {
    let backend = c.get_database_backend();
    // Merge duplicates inside the batch, keeping first-seen order.
    let mut order: Vec<(String, Merged)> = Vec::with_capacity(rows.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = row.address.key();
        match index.get(&key) {
            Some(&i) => {
                let m = &mut order[i].1;
                m.occurrences += 1;
                if row.name.is_some() {
                    m.row.name = row.name;
                }
                m.row.attributes.extend(row.attributes);
            }
            None => {
                index.insert(key.clone(), order.len());
                order.push((
                    key,
                    Merged {
                        row,
                        occurrences: 1,
                    },
                ));
            }
        }
    }

    // 1. What exists already.
    let mut existing: HashMap<String, Existing> = HashMap::with_capacity(order.len());
    for chunk in order.chunks(ROWS_PER_STATEMENT) {
        let mut values: Vec<Value> = Vec::with_capacity(chunk.len() + 1);
        values.push(list_id.into());
        values.extend(chunk.iter().map(|(k, _)| Value::from(k.clone())));
        let sql = format!(
            "SELECT s.id, s.email, s.name, s.attributes, s.status, s.created_at, s.updated_at, \
             s.email_key, m.status AS membership \
             FROM subscribers s LEFT JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = ? \
             WHERE s.email_key IN ({})",
            crate::placeholders(chunk.len())
        );
        for e in Existing::find_by_statement(crate::stmt_for(backend, &sql, values))
            .all(c)
            .await
            .doing("looking up existing subscribers")?
        {
            existing.insert(e.email_key.clone(), e);
        }
    }

    // 2. Decide.
    let mut report = BatchReport::default();
    let mut sub_values: Vec<Value> = Vec::new();
    let mut sub_rows = 0usize;
    let mut member_values: Vec<Value> = Vec::new();
    let mut member_rows = 0usize;
    let mut audit_values: Vec<Value> = Vec::new();
    let mut audit_rows = 0usize;
    let active = SubscriberStatus::Active.as_str();
    let subscribed = MembershipStatus::Subscribed.as_str();
    let mut push_audit = |id: Uuid, list: Option<Uuid>, action: AuditAction, reason: String| {
        audit_values.extend([
            Uuid::now_v7().into(),
            id.into(),
            list.into(),
            action.as_str().into(),
            Actor::Import.as_str().into(),
            reason.into(),
            now.into(),
        ]);
        audit_rows += 1;
    };
    for (key, m) in order {
        let line = m.row.line;
        let why = |what: &str| format!("{what} (import {} line {line})", opts.source);
        let (id, join, created) = match existing.remove(&key) {
            None => {
                let id = Uuid::now_v7();
                sub_values.extend([
                    id.into(),
                    m.row.address.as_str().into(),
                    key.into(),
                    m.row.name.into(),
                    serde_json::Value::Object(m.row.attributes).into(),
                    active.into(),
                    now.into(),
                    now.into(),
                ]);
                sub_rows += 1;
                push_audit(
                    id,
                    Some(list_id),
                    AuditAction::Created,
                    why("created as a member of the list"),
                );
                report.imported += 1;
                report.updated += m.occurrences - 1;
                (id, true, true)
            }
            Some(e) => {
                let status: SubscriberStatus = e.sub.status.parse()?;
                let membership: Option<MembershipStatus> =
                    e.membership.as_deref().map(str::parse).transpose()?;
                let restore = status == SubscriberStatus::Bounced && opts.resubscribe_bounced;
                let eligible = status == SubscriberStatus::Active || restore;
                if !eligible || membership == Some(MembershipStatus::Unsubscribed) {
                    report.skipped += m.occurrences;
                    continue;
                }
                let sub = e.sub.into_subscriber()?;
                let mut attributes: Attributes = sub.attributes.clone();
                attributes.extend(m.row.attributes);
                let name = m.row.name.or(sub.name.clone());
                if restore || name != sub.name || attributes != sub.attributes {
                    sub_values.extend([
                        sub.id.into(),
                        sub.email.clone().into(),
                        key.into(),
                        name.into(),
                        serde_json::Value::Object(attributes).into(),
                        active.into(),
                        sub.created_at.into(),
                        now.into(),
                    ]);
                    sub_rows += 1;
                }
                if restore {
                    push_audit(
                        sub.id,
                        None,
                        AuditAction::Restored,
                        why("was bounced; --resubscribe-bounced"),
                    );
                }
                report.updated += m.occurrences;
                (
                    sub.id,
                    membership != Some(MembershipStatus::Subscribed),
                    false,
                )
            }
        };
        if join {
            member_values.extend([
                id.into(),
                list_id.into(),
                subscribed.into(),
                now.into(),
                now.into(),
            ]);
            member_rows += 1;
            // A new subscriber's creation entry already names the list.
            if !created {
                push_audit(
                    id,
                    Some(list_id),
                    AuditAction::Subscribed,
                    why("subscribed"),
                );
            }
        }
    }

    // 3. Write.
    write_rows(
        c,
        "INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at, updated_at) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?, ?)",
        " ON CONFLICT (email_key) DO UPDATE SET name = COALESCE(excluded.name, subscribers.name), \
          attributes = excluded.attributes, status = excluded.status, updated_at = excluded.updated_at",
        sub_values,
        sub_rows,
        "writing subscribers",
    )
    .await?;
    write_rows(
        c,
        "INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at) VALUES ",
        "(?, ?, ?, ?, ?)",
        " ON CONFLICT (subscriber_id, list_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
        member_values,
        member_rows,
        "writing memberships",
    )
    .await?;
    write_rows(
        c,
        "INSERT INTO audit (id, subscriber_id, list_id, action, actor, reason, created_at) VALUES ",
        "(?, ?, ?, ?, ?, ?, ?)",
        "",
        audit_values,
        audit_rows,
        "writing the audit trail",
    )
    .await?;
    Ok(report)
}

/// Runs `head (tuple), (tuple), … tail` over `values` in statements of at
/// most [`ROWS_PER_STATEMENT`] rows.
async fn write_rows<C: ConnectionTrait>(
    c: &C,
    head: &str,
    tuple: &str,
    tail: &str,
    values: Vec<Value>,
    rows: usize,
    doing: &'static str,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let per_row = values.len() / rows;
    let mut values = values.into_iter();
    let mut left = rows;
    while left > 0 {
        let n = left.min(ROWS_PER_STATEMENT);
        let mut sql = String::with_capacity(head.len() + tail.len() + n * (tuple.len() + 2));
        sql.push_str(head);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(tuple);
        }
        sql.push_str(tail);
        let chunk: Vec<Value> = values.by_ref().take(n * per_row).collect();
        c.execute_raw(crate::stmt_for(c.get_database_backend(), &sql, chunk))
            .await
            .doing(doing)?;
        left -= n;
    }
    Ok(())
}
