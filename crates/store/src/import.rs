//! The import hot path. Rows arrive in batches; each batch is one
//! transaction (a dry run is one transaction for the whole import, rolled
//! back at the end). Rows of the same address within a batch are merged
//! first (`merge`), then each backend writes the batch its own way, below
//! sea-orm:
//!
//! - **SQLite** (`import_sqlite.rs`): the raw `sqlite3` handle is borrowed
//!   from sqlx's worker thread (`lock_handle`) for the whole batch, which
//!   then runs synchronously on the calling thread (the CLI's main thread,
//!   while its reader thread parses the next batch): `BEGIN IMMEDIATE`, five
//!   statements prepared once per batch (insert a subscriber `ON CONFLICT
//!   (email_key) DO NOTHING`, look one up with its membership on the list,
//!   update one, upsert a membership, insert an audit entry), bind / step /
//!   reset per row with the values borrowed straight from the row (no JSON,
//!   no copies, no round trip to the worker thread), `COMMIT`. The decision
//!   per row is made in Rust between the lookup and the writes, under the
//!   write lock, so nothing can change in between. When most addresses of
//!   the previous batch were new, a row is inserted first and looked up only
//!   if the insert did nothing; otherwise it is looked up first (re-runs).
//!   Foreign keys are switched off for the batch's transaction (and back on
//!   after it, also on errors): they hold by construction, since every
//!   subscriber id comes from the transaction's own inserts or lookups and
//!   the list is checked once at its start. A dry run writes inside its one
//!   sqlx transaction instead, with foreign keys on.
//! - **PostgreSQL** (`import_pg.rs`): the import holds one pooled connection
//!   with a temporary staging table (`ON COMMIT DELETE ROWS`). Per batch the
//!   merged rows are sent with `COPY … FROM STDIN` (with the ids their new
//!   subscriber and audit entries would get), then one statement decides and
//!   writes everything set-based: a `MATERIALIZED` CTE joins the staging rows
//!   to `subscribers` and their membership and classifies each row (new /
//!   update / skip, the same rules as [`Import::write_batch`]), and
//!   data-modifying CTEs insert the new subscribers, update the changed ones,
//!   upsert the memberships and insert all audit entries (`INSERT … SELECT`
//!   from the classified rows); it returns the batch's counts. It is sent as
//!   sqlx's unnamed statement, so it is planned for each batch, with hash and
//!   merge joins off for the batch's transaction: during an import the tables
//!   have no statistics, and the planner otherwise hashed whole tables for
//!   every batch instead of probing their indexes.
//!
//! Both paths store exactly what the other write paths store (16-byte UUID
//! blobs and sqlx's RFC 3339 text timestamps on SQLite, attributes as the
//! JSON object text), and a stored status word that the code does not know
//! fails the batch ([`crate::StoreError::Corrupt`]) and rolls it back.
//!
//! A committed batch is final, and every decision only depends on the rows
//! and on what is stored, so running the same file again converges on the
//! same state: an interrupted import is finished by running it again.

use crate::{Result, Store, StoreError};
use chrono::{DateTime, Utc};
use rundbrief_core::csvin::ImportRow;
use sea_orm::{DatabaseBackend, DbErr, RuntimeErr};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

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
    list_id: Uuid,
    list_name: String,
    opts: ImportOptions,
    backend: Backend,
}

enum Backend {
    Sqlite(crate::import_sqlite::SqliteImport),
    Postgres(crate::import_pg::PgImport),
}

impl Store {
    /// Starts an import into `list`.
    ///
    /// On PostgreSQL the import keeps one pooled connection until
    /// [`Import::finish`] (or until it is dropped); on SQLite a dry run keeps
    /// the only connection for its whole transaction, a real import takes it
    /// for one batch at a time.
    ///
    /// # Errors
    /// [`crate::StoreError::ListNotFound`].
    pub async fn begin_import(&self, list: &str, opts: ImportOptions) -> Result<Import> {
        let list = self.list(list).await?;
        let backend = match self.db.get_database_backend() {
            DatabaseBackend::Postgres => Backend::Postgres(
                crate::import_pg::PgImport::begin(
                    self.db.get_postgres_connection_pool(),
                    opts.dry_run,
                )
                .await?,
            ),
            _ => Backend::Sqlite(
                crate::import_sqlite::SqliteImport::begin(
                    self.db.get_sqlite_connection_pool(),
                    opts.dry_run,
                )
                .await?,
            ),
        };
        Ok(Import {
            list_id: list.id,
            list_name: list.name,
            opts,
            backend,
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
    /// `unsubscribed` → skipped. Every creation, restoration and new
    /// `subscribed` membership gets an audit entry (actor `import`, reason
    /// `import: SOURCE:LINE`).
    ///
    /// On SQLite the rows are written synchronously on the calling thread
    /// (a few milliseconds per thousand rows).
    pub async fn write_batch(&mut self, rows: Vec<ImportRow>) -> Result<BatchReport> {
        let now = Utc::now();
        let batch = Batch {
            list_id: self.list_id,
            list_name: &self.list_name,
            opts: &self.opts,
            rows: merge(rows),
            now,
        };
        match &mut self.backend {
            Backend::Sqlite(s) => s.write(batch).await,
            Backend::Postgres(p) => p.write(batch).await,
        }
    }

    /// Ends the import; a dry run is rolled back here.
    pub async fn finish(self) -> Result<()> {
        match self.backend {
            Backend::Sqlite(s) => s.finish().await,
            Backend::Postgres(p) => p.finish().await,
        }
    }
}

/// One batch, merged, as the backends get it.
pub(crate) struct Batch<'a> {
    pub list_id: Uuid,
    pub list_name: &'a str,
    pub opts: &'a ImportOptions,
    pub rows: Vec<Merged>,
    pub now: DateTime<Utc>,
}

/// The rows of one address within a batch, merged.
pub(crate) struct Merged {
    /// `Address::key` (the unique `email_key`).
    pub key: String,
    /// The first row of the address, with the later rows' non-empty values
    /// merged in (its `line` stays the first one's).
    pub row: ImportRow,
    pub occurrences: u64,
}

/// Merges the rows of the same address, keeping first-seen order: later
/// non-empty names and attribute values win.
pub(crate) fn merge(rows: Vec<ImportRow>) -> Vec<Merged> {
    let mut order: Vec<Merged> = Vec::with_capacity(rows.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = row.address.key();
        match index.get(&key) {
            Some(&i) => {
                let m = &mut order[i];
                m.occurrences += 1;
                if row.name.is_some() {
                    m.row.name = row.name;
                }
                m.row.attributes.extend(row.attributes);
            }
            None => {
                index.insert(key.clone(), order.len());
                order.push(Merged {
                    key,
                    row,
                    occurrences: 1,
                });
            }
        }
    }
    order
}

/// The audit reason of an import entry: `WHAT: SOURCE:LINE`.
pub(crate) fn reason_prefix(what: &str, source: &str) -> String {
    format!("{what}: {source}:")
}

/// The reason of the entry written when an import restores a bounced subscriber.
pub(crate) const RESTORE_REASON: &str = "import --resubscribe-bounced";

/// A sqlx error from the import's own statements.
pub(crate) fn sqlx_error(doing: &'static str) -> impl FnOnce(sea_orm::sqlx::Error) -> StoreError {
    move |e| StoreError::Query {
        doing,
        cause: DbErr::Query(RuntimeErr::SqlxError(Arc::new(e))),
    }
}

/// An error reported by SQLite itself on the raw connection.
pub(crate) fn raw_error(doing: &'static str, message: String) -> StoreError {
    StoreError::Query {
        doing,
        cause: DbErr::Query(RuntimeErr::Internal(message)),
    }
}

#[cfg(test)]
mod tests {
    //! Both write paths against the rules of [`Import::write_batch`], on
    //! SQLite (both row orders: insert first and look up first) and, when
    //! `RUNDBRIEF_TEST_POSTGRES` is set, on PostgreSQL; plus what only the
    //! raw SQLite path has to guarantee (stored formats, foreign keys back
    //! on, the list checked).

    use super::*;
    use crate::ConnectConfig;
    use rundbrief_core::{Actor, Address, Attributes, AuditAction, MembershipStatus};
    use rundbrief_core::{AuditEntry, SubscriberStatus};
    use sea_orm::{ConnectionTrait, Statement};

    struct Db {
        store: Store,
        _dir: Option<tempfile::TempDir>,
    }

    async fn stores() -> Vec<Db> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&ConnectConfig::new(url)).await.unwrap();
        store.migrate().await.unwrap();
        let mut out = vec![Db {
            store,
            _dir: Some(dir),
        }];
        if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
            let cfg = ConnectConfig {
                url,
                max_connections: 4,
                pg_schema: Some(format!("t_{}", Uuid::now_v7().simple())),
            };
            let store = Store::connect(&cfg)
                .await
                .expect("RUNDBRIEF_TEST_POSTGRES unusable");
            store.migrate().await.unwrap();
            out.push(Db { store, _dir: None });
        }
        out
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect()
    }

    fn row(line: u64, email: &str, name: Option<&str>, a: &[(&str, &str)]) -> ImportRow {
        ImportRow {
            line,
            address: addr(email),
            name: name.map(str::to_string),
            attributes: attrs(a),
        }
    }

    async fn scalar(s: &Store, sql: &str) -> i64 {
        let r =
            s.db.query_one_raw(Statement::from_string(s.db.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap();
        r.try_get_by_index::<i64>(0).unwrap()
    }

    async fn execute(s: &Store, sql: &str) {
        s.db.execute_unprepared(sql).await.unwrap();
    }

    fn import_entries(audit: &[AuditEntry]) -> Vec<(AuditAction, Option<&str>, &str)> {
        audit
            .iter()
            .filter(|a| a.actor == Actor::Import)
            .map(|a| (a.action, a.list.as_deref(), a.reason.as_str()))
            .collect()
    }

    /// Forces the SQLite path's row order for the next batch.
    fn set_insert_first(imp: &mut Import, insert_first: bool) {
        if let Backend::Sqlite(s) = &mut imp.backend {
            s.set_mostly_new(insert_first);
        }
    }

    #[tokio::test]
    async fn every_rule_holds_on_every_path() {
        for db in stores().await {
            let s = &db.store;
            let b = s.backend_name();
            let orders: &[bool] = if b == "sqlite" {
                &[true, false]
            } else {
                &[true]
            };
            for (i, &insert_first) in orders.iter().enumerate() {
                let ctx = format!("{b}, insert first: {insert_first}");
                let l = format!("news{i}");
                let o = format!("other{i}");
                let e = |who: &str| format!("{who}{i}@example.org");
                s.create_list(&l, None).await.unwrap();
                s.create_list(&o, None).await.unwrap();
                let add = async |who: &str, list: &str, name: Option<&str>, a: Attributes| {
                    s.add_subscriber(&addr(&e(who)), list, name, a, false, Actor::Cli, "t")
                        .await
                        .unwrap();
                };
                add("old", &o, Some("Old"), attrs(&[("a", "1")])).await;
                add("same", &l, Some("Same"), attrs(&[("c", "3")])).await;
                s.request_subscription(&addr(&e("pend")), &l, Some("Pend"), Actor::Http, "t")
                    .await
                    .unwrap();
                add("left", &l, None, Attributes::new()).await;
                s.unsubscribe(&addr(&e("left")), Some(&l), Actor::Cli, "t")
                    .await
                    .unwrap();
                s.blocklist(&addr(&e("blocked")), Actor::Cli, "t")
                    .await
                    .unwrap();
                add("dead", &o, None, Attributes::new()).await;
                s.mark_bounced(&addr(&e("dead")), Actor::Bounce, "t")
                    .await
                    .unwrap();
                add("gone", &o, None, Attributes::new()).await;
                s.unsubscribe(&addr(&e("gone")), None, Actor::Cli, "t")
                    .await
                    .unwrap();
                add("deadleft", &l, None, Attributes::new()).await;
                s.unsubscribe(&addr(&e("deadleft")), Some(&l), Actor::Cli, "t")
                    .await
                    .unwrap();
                s.mark_bounced(&addr(&e("deadleft")), Actor::Bounce, "t")
                    .await
                    .unwrap();
                let same_before = s.subscriber_detail(&addr(&e("same"))).await.unwrap();

                let rows = || {
                    vec![
                        row(2, &e("new1"), Some("New One"), &[("city", "Wien")]),
                        row(3, &e("OLD"), None, &[("b", "2")]),
                        row(4, &e("same"), Some("Same"), &[("c", "3")]),
                        row(5, &e("pend"), None, &[]),
                        row(6, &e("left"), Some("X"), &[]),
                        row(7, &e("blocked"), None, &[]),
                        row(8, &e("dead"), None, &[]),
                        row(9, &e("gone"), None, &[]),
                        row(10, &e("deadleft"), None, &[]),
                        row(
                            11,
                            &format!("new1{i}@Example.org"),
                            None,
                            &[("plan", "pro")],
                        ),
                    ]
                };
                let opts = ImportOptions {
                    resubscribe_bounced: true,
                    dry_run: false,
                    source: "t.csv".into(),
                };
                let mut imp = s.begin_import(&l, opts.clone()).await.unwrap();
                set_insert_first(&mut imp, insert_first);
                let report = imp.write_batch(rows()).await.unwrap();
                imp.finish().await.unwrap();
                assert_eq!(
                    report,
                    BatchReport {
                        imported: 1,
                        updated: 5,
                        skipped: 4
                    },
                    "{ctx}"
                );

                let detail = async |who: &str| s.subscriber_detail(&addr(&e(who))).await.unwrap();
                let new1 = detail("new1").await;
                assert_eq!(new1.subscriber.name.as_deref(), Some("New One"), "{ctx}");
                assert_eq!(
                    new1.subscriber.attributes,
                    attrs(&[("city", "Wien"), ("plan", "pro")]),
                    "{ctx}"
                );
                assert_eq!(new1.subscriber.status, SubscriberStatus::Active, "{ctx}");
                assert_eq!(new1.memberships.len(), 1, "{ctx}");
                assert_eq!(
                    new1.memberships[0].status,
                    MembershipStatus::Subscribed,
                    "{ctx}"
                );
                assert_eq!(
                    import_entries(&new1.audit),
                    vec![(AuditAction::Created, Some(l.as_str()), "import: t.csv:2")],
                    "{ctx}"
                );

                let old = detail("old").await;
                assert_eq!(old.subscriber.name.as_deref(), Some("Old"), "{ctx}");
                assert_eq!(
                    old.subscriber.attributes,
                    attrs(&[("a", "1"), ("b", "2")]),
                    "{ctx}"
                );
                assert!(
                    old.memberships
                        .iter()
                        .all(|m| m.status == MembershipStatus::Subscribed)
                        && old.memberships.len() == 2,
                    "{ctx}"
                );
                assert_eq!(
                    import_entries(&old.audit),
                    vec![(AuditAction::Subscribed, Some(l.as_str()), "import: t.csv:3")],
                    "{ctx}"
                );

                let same = detail("same").await;
                assert_eq!(
                    same.subscriber.updated_at, same_before.subscriber.updated_at,
                    "{ctx}: an unchanged subscriber is not written"
                );
                assert_eq!(same.audit.len(), same_before.audit.len(), "{ctx}");

                let pend = detail("pend").await;
                assert_eq!(
                    pend.memberships[0].status,
                    MembershipStatus::Subscribed,
                    "{ctx}"
                );
                assert_eq!(pend.subscriber.name.as_deref(), Some("Pend"), "{ctx}");
                assert_eq!(
                    import_entries(&pend.audit),
                    vec![(AuditAction::Subscribed, Some(l.as_str()), "import: t.csv:5")],
                    "{ctx}"
                );

                let left = detail("left").await;
                assert_eq!(
                    left.memberships[0].status,
                    MembershipStatus::Unsubscribed,
                    "{ctx}"
                );
                assert_eq!(left.subscriber.name, None, "{ctx}");
                assert!(import_entries(&left.audit).is_empty(), "{ctx}");
                let blocked = detail("blocked").await;
                assert_eq!(
                    blocked.subscriber.status,
                    SubscriberStatus::Blocklisted,
                    "{ctx}"
                );
                assert!(import_entries(&blocked.audit).is_empty(), "{ctx}");
                let gone = detail("gone").await;
                assert_eq!(
                    gone.subscriber.status,
                    SubscriberStatus::Unsubscribed,
                    "{ctx}"
                );
                assert!(import_entries(&gone.audit).is_empty(), "{ctx}");
                let deadleft = detail("deadleft").await;
                assert_eq!(
                    deadleft.subscriber.status,
                    SubscriberStatus::Bounced,
                    "{ctx}"
                );
                assert!(import_entries(&deadleft.audit).is_empty(), "{ctx}");

                let dead = detail("dead").await;
                assert_eq!(dead.subscriber.status, SubscriberStatus::Active, "{ctx}");
                assert!(
                    dead.memberships
                        .iter()
                        .any(|m| m.list == l && m.status == MembershipStatus::Subscribed),
                    "{ctx}"
                );
                assert_eq!(
                    import_entries(&dead.audit),
                    vec![
                        (
                            AuditAction::Restored,
                            None,
                            "import --resubscribe-bounced: t.csv:8"
                        ),
                        (AuditAction::Subscribed, Some(l.as_str()), "import: t.csv:8"),
                    ],
                    "{ctx}"
                );

                // Running it again writes nothing (whichever order it starts with).
                let audits = scalar(s, "SELECT count(*) FROM audit").await;
                let mut again = s.begin_import(&l, opts.clone()).await.unwrap();
                set_insert_first(&mut again, !insert_first);
                assert_eq!(
                    again.write_batch(rows()).await.unwrap(),
                    BatchReport {
                        imported: 0,
                        updated: 6,
                        skipped: 4
                    },
                    "{ctx}"
                );
                again.finish().await.unwrap();
                assert_eq!(
                    scalar(s, "SELECT count(*) FROM audit").await,
                    audits,
                    "{ctx}"
                );
                assert_eq!(
                    detail("new1").await.subscriber.updated_at,
                    new1.subscriber.updated_at,
                    "{ctx}"
                );

                if b == "sqlite" {
                    assert_eq!(scalar(s, "PRAGMA foreign_keys").await, 1, "{ctx}");
                    // Stored like every other write path: 16-byte UUID blobs
                    // and sqlx's RFC 3339 text.
                    let key = e("new1");
                    let sql = |q: &str| q.replace("KEY", &key);
                    assert_eq!(
                        scalar(s, &sql("SELECT count(*) FROM subscribers s JOIN memberships m ON m.subscriber_id = s.id \
                            JOIN audit a ON a.subscriber_id = s.id WHERE s.email_key = 'KEY' \
                            AND typeof(s.id) = 'blob' AND length(s.id) = 16 AND typeof(a.id) = 'blob' \
                            AND typeof(s.attributes) = 'text' AND s.created_at = s.updated_at \
                            AND s.created_at = m.created_at AND a.created_at = s.created_at \
                            AND a.list_id = m.list_id"))
                        .await,
                        1,
                        "{ctx}"
                    );
                    let r = s
                        .db
                        .query_one_raw(Statement::from_string(
                            DatabaseBackend::Sqlite,
                            sql("SELECT created_at, attributes FROM subscribers WHERE email_key = 'KEY'"),
                        ))
                        .await
                        .unwrap()
                        .unwrap();
                    let at: String = r.try_get_by_index(0).unwrap();
                    let parsed = DateTime::parse_from_rfc3339(&at)
                        .unwrap()
                        .with_timezone(&Utc);
                    assert_eq!(
                        parsed.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
                        at,
                        "{ctx}"
                    );
                    let json: String = r.try_get_by_index(1).unwrap();
                    assert_eq!(json, r#"{"city":"Wien","plan":"pro"}"#, "{ctx}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_list_removed_during_an_import_fails_its_batch() {
        for db in stores().await {
            let s = &db.store;
            let b = s.backend_name();
            s.create_list("gone", None).await.unwrap();
            let mut imp = s
                .begin_import("gone", ImportOptions::default())
                .await
                .unwrap();
            s.delete_list("gone", true, Actor::Cli).await.unwrap();
            let err = imp
                .write_batch(vec![row(2, "x@example.org", None, &[])])
                .await
                .expect_err(b);
            if b == "sqlite" {
                assert!(
                    matches!(err, StoreError::ListNotFound(ref n) if n == "gone"),
                    "{err}"
                );
                assert_eq!(scalar(s, "PRAGMA foreign_keys").await, 1);
            }
            drop(imp);
            assert_eq!(
                scalar(s, "SELECT count(*) FROM subscribers").await,
                0,
                "{b}"
            );
            assert_eq!(scalar(s, "SELECT count(*) FROM audit").await, 0, "{b}");
        }
    }

    #[tokio::test]
    async fn an_unknown_status_word_fails_the_batch_and_writes_nothing() {
        for db in stores().await {
            let s = &db.store;
            let b = s.backend_name();
            s.create_list("news", None).await.unwrap();
            s.add_subscriber(
                &addr("odd@example.org"),
                "news",
                None,
                Attributes::new(),
                false,
                Actor::Cli,
                "t",
            )
            .await
            .unwrap();
            execute(s, "UPDATE subscribers SET status = 'zombie'").await;
            let audits = scalar(s, "SELECT count(*) FROM audit").await;
            for insert_first in [true, false] {
                let mut imp = s
                    .begin_import("news", ImportOptions::default())
                    .await
                    .unwrap();
                set_insert_first(&mut imp, insert_first);
                let err = imp
                    .write_batch(vec![
                        row(2, "fresh@example.org", None, &[]),
                        row(3, "odd@example.org", None, &[]),
                    ])
                    .await
                    .expect_err(b);
                assert!(
                    matches!(err, StoreError::Corrupt(ref u) if u.given == "zombie"),
                    "{b}: {err}"
                );
                drop(imp);
                assert_eq!(
                    scalar(s, "SELECT count(*) FROM subscribers").await,
                    1,
                    "{b}"
                );
                assert_eq!(scalar(s, "SELECT count(*) FROM audit").await, audits, "{b}");
            }
        }
    }

    #[tokio::test]
    async fn a_dry_run_counts_exactly_and_writes_nothing() {
        for db in stores().await {
            let s = &db.store;
            let b = s.backend_name();
            s.create_list("news", None).await.unwrap();
            let opts = ImportOptions {
                dry_run: true,
                ..ImportOptions::default()
            };
            let mut imp = s.begin_import("news", opts).await.unwrap();
            // The second batch sees the first one's rows (same transaction).
            let first = imp
                .write_batch(
                    (0..300)
                        .map(|i| row(i + 2, &format!("p{i}@example.org"), None, &[]))
                        .collect(),
                )
                .await
                .unwrap();
            let second = imp
                .write_batch(
                    (0..600)
                        .map(|i| row(i + 302, &format!("p{i}@example.org"), Some("P"), &[]))
                        .collect(),
                )
                .await
                .unwrap();
            imp.finish().await.unwrap();
            assert_eq!((first.imported, first.updated), (300, 0), "{b}");
            assert_eq!((second.imported, second.updated), (300, 300), "{b}");
            assert_eq!(
                scalar(s, "SELECT count(*) FROM subscribers").await,
                0,
                "{b}"
            );
            assert_eq!(scalar(s, "SELECT count(*) FROM audit").await, 0, "{b}");
        }
    }
}
