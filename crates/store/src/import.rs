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
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseTransaction, FromQueryResult, Statement, Value,
};
use std::collections::HashMap;
use uuid::Uuid;

/// Keys per existing-subscriber lookup.
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
            Some(self.write_txn().await.doing("starting the dry run")?)
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
                let txn = self.store.write_txn().await.doing("starting a batch")?;
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
    if backend == DatabaseBackend::Postgres {
        // sqlx prepares statements by name, so PostgreSQL may reuse a generic
        // plan made while the tables were nearly empty (a sequential scan)
        // for the whole import: each batch would then scan a growing table.
        // Custom plans see the table as it is now and use the index.
        c.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan")
            .await
            .doing("preparing the import transaction")?;
    }
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
    let sql = Sql::for_backend(backend);
    let mut existing: HashMap<String, Existing> = HashMap::with_capacity(order.len());
    for chunk in order.chunks(ROWS_PER_STATEMENT) {
        let keys = json_array(chunk.iter().map(|(k, _)| k.as_str()))?;
        for e in Existing::find_by_statement(Statement::from_sql_and_values(
            backend,
            sql.existing,
            [Value::from(list_id), Value::from(keys)],
        ))
        .all(c)
        .await
        .doing("looking up existing subscribers")?
        {
            existing.insert(e.email_key.clone(), e);
        }
    }

    // 2. Decide, collecting one JSON array per table.
    let mut report = BatchReport::default();
    let mut subs = JsonRows::default();
    let mut members = JsonRows::default();
    let mut audits = JsonRows::default();
    let list_hex = hex(list_id);
    for (key, m) in order {
        let line = m.row.line;
        let why = |what: &str| format!("{what}: {}:{line}", opts.source);
        let (id, join, created) = match existing.remove(&key) {
            None => {
                let id = Uuid::now_v7();
                subs.push(&(
                    hex(id),
                    m.row.address.as_str(),
                    &key,
                    &m.row.name,
                    &m.row.attributes,
                ))?;
                audits.push(&(
                    hex(Uuid::now_v7()),
                    hex(id),
                    Some(&list_hex),
                    AuditAction::Created.as_str(),
                    why("import"),
                ))?;
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
                    subs.push(&(hex(sub.id), &sub.email, &key, &name, &attributes))?;
                }
                if restore {
                    audits.push(&(
                        hex(Uuid::now_v7()),
                        hex(sub.id),
                        None::<&str>,
                        AuditAction::Restored.as_str(),
                        why("import --resubscribe-bounced"),
                    ))?;
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
            members.push(&hex(id))?;
            // A new subscriber's creation entry already names the list.
            if !created {
                audits.push(&(
                    hex(Uuid::now_v7()),
                    hex(id),
                    Some(&list_hex),
                    AuditAction::Subscribed.as_str(),
                    why("import"),
                ))?;
            }
        }
    }

    // 3. Write: one statement per table, each with one JSON parameter plus
    //    the values every row shares.
    let now = Value::from(now);
    let run = async |rows: JsonRows,
                     sql: &str,
                     mut shared: Vec<Value>,
                     doing: &'static str|
           -> Result<()> {
        if let Some(json) = rows.finish() {
            shared.insert(0, json.into());
            c.execute_raw(Statement::from_sql_and_values(backend, sql, shared))
                .await
                .doing(doing)?;
        }
        Ok(())
    };
    run(
        subs,
        sql.subscribers,
        vec![SubscriberStatus::Active.as_str().into(), now.clone()],
        "writing subscribers",
    )
    .await?;
    run(
        members,
        sql.memberships,
        vec![
            list_id.into(),
            MembershipStatus::Subscribed.as_str().into(),
            now.clone(),
        ],
        "writing memberships",
    )
    .await?;
    run(
        audits,
        sql.audit,
        vec![Actor::Import.as_str().into(), now],
        "writing the audit trail",
    )
    .await?;
    Ok(report)
}

/// Rows collected as one JSON array of arrays (the statement's parameter).
#[derive(Default)]
struct JsonRows {
    buf: Vec<u8>,
}

impl JsonRows {
    fn push<T: serde::Serialize>(&mut self, row: &T) -> Result<()> {
        self.buf.push(if self.buf.is_empty() { b'[' } else { b',' });
        serde_json::to_writer(&mut self.buf, row).map_err(|e| crate::StoreError::CorruptColumn {
            column: "import row",
            problem: e.to_string(),
        })
    }

    /// The JSON text, or `None` when no row was pushed.
    fn finish(mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        self.buf.push(b']');
        // serde_json writes valid UTF-8.
        String::from_utf8(self.buf).ok()
    }
}

fn json_array<'a>(items: impl Iterator<Item = &'a str>) -> Result<String> {
    let mut rows = JsonRows::default();
    for i in items {
        rows.push(&i)?;
    }
    Ok(rows.finish().unwrap_or_else(|| "[]".into()))
}

/// 32 lower-case hex digits: how ids travel inside the JSON parameter.
fn hex(id: Uuid) -> String {
    id.simple().to_string()
}

/// The batch statements, written once per backend: SQLite expands the JSON
/// parameter with `json_each` and turns hex back into its 16-byte UUID blobs
/// with `unhex`; PostgreSQL uses `jsonb_array_elements` and casts.
struct Sql {
    existing: &'static str,
    subscribers: &'static str,
    memberships: &'static str,
    audit: &'static str,
}

/// The conflict clause both backends share for subscribers.
macro_rules! subscriber_upsert {
    () => {
        " ON CONFLICT (email_key) DO UPDATE SET name = COALESCE(excluded.name, subscribers.name), \
          attributes = excluded.attributes, status = excluded.status, updated_at = excluded.updated_at"
    };
}

impl Sql {
    fn for_backend(backend: DatabaseBackend) -> Sql {
        if backend == DatabaseBackend::Postgres {
            Sql {
                existing: "SELECT s.id, s.email, s.name, s.attributes, s.status, s.created_at, s.updated_at, \
                    s.email_key, m.status AS membership \
                    FROM subscribers s LEFT JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = $1 \
                    WHERE s.email_key IN (SELECT jsonb_array_elements_text($2::jsonb))",
                subscribers: concat!(
                    "INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at, updated_at) \
                     SELECT (r->>0)::uuid, r->>1, r->>2, r->>3, r->4, $2, $3, $3 FROM jsonb_array_elements($1::jsonb) AS r",
                    subscriber_upsert!()
                ),
                memberships: "INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at) \
                    SELECT r::uuid, $2, $3, $4, $4 FROM jsonb_array_elements_text($1::jsonb) AS r \
                    ON CONFLICT (subscriber_id, list_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
                audit: "INSERT INTO audit (id, subscriber_id, list_id, action, actor, reason, created_at) \
                    SELECT (r->>0)::uuid, (r->>1)::uuid, (r->>2)::uuid, r->>3, $2, r->>4, $3 FROM jsonb_array_elements($1::jsonb) AS r",
            }
        } else {
            Sql {
                existing: "SELECT s.id, s.email, s.name, s.attributes, s.status, s.created_at, s.updated_at, \
                    s.email_key, m.status AS membership \
                    FROM subscribers s LEFT JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = ?1 \
                    WHERE s.email_key IN (SELECT value FROM json_each(?2))",
                subscribers: concat!(
                    "INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at, updated_at) \
                     SELECT unhex(r.value ->> 0), r.value ->> 1, r.value ->> 2, r.value ->> 3, r.value ->> 4, ?2, ?3, ?3 \
                     FROM jsonb_each(?1) AS r WHERE true",
                    subscriber_upsert!()
                ),
                memberships: "INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at) \
                    SELECT unhex(r.value), ?2, ?3, ?4, ?4 FROM json_each(?1) AS r WHERE true \
                    ON CONFLICT (subscriber_id, list_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
                audit: "INSERT INTO audit (id, subscriber_id, list_id, action, actor, reason, created_at) \
                    SELECT unhex(r.value ->> 0), unhex(r.value ->> 1), unhex(r.value ->> 2), r.value ->> 3, ?2, r.value ->> 4, ?3 \
                    FROM json_each(?1) AS r",
            }
        }
    }
}
