//! `rundbrief-store`: every query rundbrief runs, behind one API that works
//! the same on SQLite (embedded default) and PostgreSQL (production).
//!
//! Other crates see domain types from `rundbrief-core` only; no sea-orm type
//! leaves this crate. SQL is written out in each module (`lists`,
//! `subscribers`, `import`) with `?` placeholders, which [`Store::stmt`]
//! renumbers for PostgreSQL. Statuses are bound and read as the words of the
//! core enums and parsed back into them; a word the code does not know is a
//! [`StoreError::Corrupt`] error, never a silent default.
//!
//! Start with [`Store::connect`] and [`Store::migrate`], then the import in
//! [`import`]: it is the hot path and its doc explains the batching.

use rundbrief_core::model::UnknownValue;
use sea_orm::sea_query::Value;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    Statement, TransactionTrait,
};
use std::time::Duration;

mod admin;
mod bounces;
mod breaker;
mod budget;
mod campaigns;
mod counts;
mod domains;
mod holds;
pub mod import;
mod import_pg;
mod import_sqlite;
mod lists;
pub mod local_time;
mod optin;
mod relays;
mod stats;
mod subscribers;
mod work;

pub use admin::{AdminAction, AdminKey};
pub use bounces::{BounceQuery, NewBounce, NewMessage, POSTMASTER_KIND, StoredBounce};
pub use breaker::{DomainCount, ProviderCondition, ProviderState, hold_prefix};
pub use budget::Grants;
pub use campaigns::{
    Campaign, CampaignContent, CampaignCounts, DeliveryErrorCount, DeliveryTarget, NewCampaign,
    PendingDelivery, ScoredSubscriber, StoredScore,
};
pub use domains::{MarkedUndeliverable, Recipient, UndeliverableMark};
pub use holds::{DomainPrune, NewDomainPrune, PruneState};
pub use import::{BatchReport, Import, ImportOptions};
pub use local_time::{AttrGroup, DueGroup, DueMap, LocalTime, held_marker};
pub use optin::{Confirmed, MembershipView, NoWayBack, OptIn};
pub use relays::{
    RelayQuota, RelayRest, RelayUsage, Taken, day_bucket, hour_bucket, quota_frees_at,
};
pub use stats::{BounceBucket, GrowthDay, PACE_BUCKET_S, SendBucket, hour_of, pace_bucket};
pub use subscribers::{AddOutcome, SubscriberQuery};
pub use work::{CampaignEdit, DeliveryOutcome, MetricCounts, Schedule, ScheduledCampaign};

use rundbrief_migrations::{Migrator, MigratorTrait};

/// What went wrong in the store. Variants name the thing that was not found
/// or not allowed, so the CLI can print a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened. `cause` is deliberately not the
    /// error's `source()`: the message already says it, and sea-orm's error
    /// repeats its own cause, so an error chain would print it three times.
    #[error("cannot open the database {url}: {}", reason(.cause))]
    Connect { url: String, cause: DbErr },
    /// Applying or reading migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(DbErr),
    /// A query failed; `doing` says which. (`cause` is in the message and,
    /// as for `Connect`, not a `source()`: said once.)
    #[error("database error while {doing}: {}", reason(.cause))]
    Query { doing: &'static str, cause: DbErr },
    /// `list create` with a name that exists.
    #[error("a list named `{0}` already exists")]
    ListExists(String),
    /// The list's name gives no List-Id label and none was given, or the
    /// label given is not one.
    #[error(transparent)]
    ListLabel(#[from] rundbrief_core::ListLabelError),
    /// Another list has that List-Id label already.
    #[error(
        "the List-Id label `{label}` belongs to the list `{other}` already: give this list \
         another with --label"
    )]
    ListLabelTaken {
        /// The label.
        label: String,
        /// The list that has it.
        other: String,
    },
    /// No list by that name.
    #[error("there is no list named `{0}`")]
    ListNotFound(String),
    /// `list rm` on a list that still has members.
    #[error(
        "list `{name}` still has {members} member(s); deleting it would delete their memberships too"
    )]
    ListNotEmpty { name: String, members: u64 },
    /// No subscriber with that address.
    #[error("there is no subscriber `{0}`")]
    SubscriberNotFound(String),
    /// The subscriber is not on that list.
    #[error("`{email}` is not on list `{list}`")]
    NotAMember { email: String, list: String },
    /// Adding a blocklisted address.
    #[error("`{0}` is blocklisted and will not be subscribed again")]
    Blocklisted(String),
    /// Adding a subscriber who left or bounced, without `--resubscribe`.
    #[error(
        "`{email}` is {status}; making it active again needs an explicit re-subscribe \
         (only when the subscriber asked for it)"
    )]
    Inactive {
        email: String,
        status: rundbrief_core::SubscriberStatus,
    },
    /// `campaign create` with a name that exists.
    #[error("a campaign named `{0}` already exists")]
    CampaignExists(String),
    /// A state change the campaign's life does not allow.
    #[error("campaign `{name}` is {from}; it cannot become {to}")]
    IllegalTransition {
        name: String,
        from: rundbrief_core::CampaignState,
        to: rundbrief_core::CampaignState,
    },
    /// `campaign edit` on a campaign that is no longer a draft.
    #[error(
        "campaign `{name}` is {state}: only drafts can be edited (create a new campaign, or `campaign test` to check a change)"
    )]
    NotADraft {
        name: String,
        state: rundbrief_core::CampaignState,
    },
    /// No campaign by that name.
    #[error("there is no campaign named `{0}`")]
    CampaignNotFound(String),
    /// `list rm` on a list that campaigns send to.
    #[error(
        "list `{name}` is used by campaign(s) {campaigns}; deleting it anyway takes it from them"
    )]
    ListInUse { name: String, campaigns: String },
    /// No stored inbound message with that id.
    #[error("there is no stored bounce {0}")]
    BounceNotFound(uuid::Uuid),
    /// `sub restore` on a subscriber who is neither bounced nor undeliverable.
    #[error(
        "`{email}` is {status}, not bounced or undeliverable: restore only undoes bounce \
         pruning and the domain check"
    )]
    NotBounced {
        email: String,
        status: rundbrief_core::SubscriberStatus,
    },
    /// `sub ls --status subscribed` without `--list`.
    #[error("status `{0}` describes a list membership: name the list")]
    StatusNeedsList(&'static str),
    /// A stored value that the code does not understand.
    #[error("unexpected value in the database: {0}")]
    Corrupt(#[from] UnknownValue),
    /// A stored value that is not of the expected shape.
    #[error("unexpected value in column `{column}`: {problem}")]
    CorruptColumn {
        column: &'static str,
        problem: String,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a database error says, without sea-orm's wrapper words
/// ("Connection Error: ", "Execution Error: ", "Custom Error: ").
fn reason(e: &DbErr) -> String {
    use sea_orm::RuntimeErr;
    match e {
        DbErr::Conn(r) | DbErr::Exec(r) | DbErr::Query(r) => match r {
            RuntimeErr::SqlxError(x) => x.to_string(),
            other => other.to_string(),
        },
        DbErr::Custom(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Adds what the query was doing to a database error.
pub(crate) trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T>;
}

impl<T> Doing<T> for std::result::Result<T, DbErr> {
    fn doing(self, doing: &'static str) -> Result<T> {
        self.map_err(|cause| StoreError::Query { doing, cause })
    }
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// `sqlite://FILE?mode=rwc`, a bare `FILE.db` path, or `postgres://…`.
    pub url: String,
    /// Pool size on PostgreSQL (SQLite always uses one connection).
    pub max_connections: u32,
    /// PostgreSQL only: put every table in this schema (created if missing).
    /// Tests use it to give each test its own schema in one database.
    pub pg_schema: Option<String>,
}

impl ConnectConfig {
    pub fn new(url: impl Into<String>) -> Self {
        ConnectConfig {
            url: url.into(),
            max_connections: 8,
            pg_schema: None,
        }
    }
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationState {
    pub name: String,
    pub applied: bool,
}

/// The database: a pool of connections and the queries.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Opens (and on SQLite creates) the database. Does not migrate.
    ///
    /// SQLite gets WAL journaling, `synchronous=FULL` (each commit is on disk
    /// before it returns, so what the bounce endpoint acknowledged with 250
    /// survives a power loss too, not only a crash of the process), a 5 s
    /// busy timeout, foreign keys on and a 32 MiB page cache. A new database
    /// file is created readable by its owner only (0600; SQLite gives its
    /// `-wal` and `-shm` files the same mode): it holds subscriber data and
    /// raw bounces.
    ///
    /// PostgreSQL: one connection is opened first, so a server that refuses
    /// connections, a wrong password or an unknown database fails at once
    /// with the server's reason instead of a pool timeout 30 s later.
    ///
    /// # Errors
    /// [`StoreError::Connect`] with the URL (password hidden).
    pub async fn connect(cfg: &ConnectConfig) -> Result<Store> {
        let url = normalise_url(&cfg.url);
        let shown = redact_url(&url);
        let connect_err = |cause| StoreError::Connect {
            url: shown.clone(),
            cause,
        };
        if url.starts_with("sqlite:") {
            create_private(&url).map_err(|e| connect_err(DbErr::Custom(e)))?;
        } else {
            probe_postgres(&url).await.map_err(connect_err)?;
        }
        let mut opts = ConnectOptions::new(url.clone());
        // Each statement with its time at TRACE (`RUST_LOG=sqlx::query=trace`):
        // off unless asked for, and cheap when off.
        opts.sqlx_logging(true)
            .sqlx_logging_level(log::LevelFilter::Trace)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            opts.max_connections(1).map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    // 32 MiB of page cache (default 2 MiB): the email index of a
                    // list of a million is ~40 MiB and imports touch it at random.
                    .pragma("cache_size", "-32768")
                    .page_size(8192)
                    .pragma("wal_autocheckpoint", "8192")
            });
        } else {
            opts.max_connections(cfg.max_connections);
            if let Some(schema) = &cfg.pg_schema {
                let admin = Database::connect(url.as_str()).await.map_err(connect_err)?;
                admin
                    .execute_unprepared(&format!(
                        "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                        schema.replace('"', "")
                    ))
                    .await
                    .map_err(connect_err)?;
                admin.close().await.map_err(connect_err)?;
                opts.set_schema_search_path(schema.clone());
            }
        }
        let db = Database::connect(opts).await.map_err(connect_err)?;
        Ok(Store { db })
    }

    /// Applies pending migrations and returns the names it applied (empty when
    /// the schema was already current).
    ///
    /// # Errors
    /// [`StoreError::Migrate`]; the failing migration's transaction is rolled
    /// back where the backend allows (PostgreSQL; SQLite DDL is also transactional).
    pub async fn migrate(&self) -> Result<Vec<String>> {
        let pending: Vec<String> = Migrator::get_pending_migrations(&self.db)
            .await
            .map_err(StoreError::Migrate)?
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        if !pending.is_empty() {
            Migrator::up(&self.db, None)
                .await
                .map_err(StoreError::Migrate)?;
        }
        Ok(pending)
    }

    /// Every migration this build knows, and whether it is applied.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>> {
        let all = Migrator::get_migration_with_status(&self.db)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(all
            .iter()
            .map(|m| MigrationState {
                name: m.name().to_string(),
                applied: m.status() == rundbrief_migrations::MigrationStatus::Applied,
            })
            .collect())
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DatabaseBackend::Sqlite => "sqlite",
            DatabaseBackend::Postgres => "postgres",
            _ => "other",
        }
    }

    /// Starts a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`:
    /// a deferred transaction that reads first and then writes gets
    /// SQLITE_BUSY at once (without waiting out the busy timeout) when another
    /// process wrote in between, e.g. the bounce endpoint while a campaign is
    /// sending. PostgreSQL ignores the mode.
    pub(crate) async fn write_txn(
        &self,
    ) -> std::result::Result<sea_orm::DatabaseTransaction, DbErr> {
        self.db
            .begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(self) -> Result<()> {
        self.db.close().await.doing("closing the database")
    }

    /// Builds a statement from SQL written with `?` placeholders; on
    /// PostgreSQL they become `$1, $2, …`. Our SQL never has `?` inside a
    /// string literal.
    pub(crate) fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        stmt_for(self.db.get_database_backend(), sql, values)
    }
}

pub(crate) fn stmt_for(backend: DatabaseBackend, sql: &str, values: Vec<Value>) -> Statement {
    if backend == DatabaseBackend::Postgres {
        let mut out = String::with_capacity(sql.len() + values.len() * 3);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        Statement::from_sql_and_values(backend, out, values)
    } else {
        Statement::from_sql_and_values(backend, sql, values)
    }
}

/// The file a `sqlite:` URL names, or `None` for an in-memory database.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(':') && !url.contains("mode=memory")).then_some(path)
}

/// Creates the SQLite file (if it does not exist yet) with mode 0600, before
/// SQLite would create it with the process's umask (usually 0644); SQLite
/// gives the `-wal` and `-shm` files the mode of the database file. An
/// existing file is left as it is, with a warning when others can read it.
fn create_private(url: &str) -> std::result::Result<(), String> {
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path,
                        mode = format_args!("{mode:o}"),
                        "the database file can be read by other users of this machine \
                         (it holds subscriber data and raw bounces): `chmod 600` it and its -wal and -shm files"
                    );
                }
            }
            Ok(())
        }
        // A directory that does not exist and the like: SQLite says it better.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot create {path}: {e}")),
    }
}

/// Opens one PostgreSQL connection and closes it again, so the real reason
/// of a failure (connection refused, authentication, unknown database)
/// comes back at once: the pool would retry until its acquire timeout and
/// then only say that it timed out.
async fn probe_postgres(url: &str) -> std::result::Result<(), DbErr> {
    use sea_orm::sqlx::Connection;
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        sea_orm::sqlx::PgConnection::connect(url),
    )
    .await
    .map_err(|_| DbErr::Custom("no answer from the server within 10 s".into()))?
    .map_err(|e| DbErr::Custom(e.to_string()))?;
    let _ = conn.close().await;
    Ok(())
}

/// Accepts a bare path to a `.db`/`.sqlite` file as a SQLite URL.
fn normalise_url(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") || url.starts_with("sqlite:") {
        url.to_string()
    } else {
        format!("sqlite://{url}?mode=rwc")
    }
}

/// Hides the password of `scheme://user:password@host`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::FromQueryResult;

    #[test]
    fn urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(normalise_url("data/x.db"), "sqlite://data/x.db?mode=rwc");
        assert_eq!(normalise_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/x.db?mode=rwc"),
            Some("data/x.db")
        );
        assert_eq!(sqlite_path("sqlite:///abs/x.db"), Some("/abs/x.db"));
        assert_eq!(sqlite_path("sqlite:x.db"), Some("x.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://x?mode=memory"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    /// #21.8 and #21.13: the database and its -wal and -shm files are the
    /// owner's only, and every commit is synced (`synchronous=FULL`, 2).
    #[cfg(unix)]
    #[tokio::test]
    async fn issue_21_sqlite_files_are_private_and_commits_synced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("rundbrief.db");
        let store = Store::connect(&ConnectConfig::new(db.display().to_string()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.create_list("news", None).await.unwrap();
        #[derive(sea_orm::FromQueryResult)]
        struct S {
            synchronous: i64,
        }
        let s = S::find_by_statement(store.stmt("PRAGMA synchronous", vec![]))
            .one(&store.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.synchronous, 2, "FULL");
        for suffix in ["", "-wal", "-shm"] {
            let p = format!("{}{suffix}", db.display());
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{p}: {mode:o}");
        }
        store.close().await.unwrap();
    }

    /// #21.7: a PostgreSQL port nobody listens on fails at once with the
    /// reason, said once, instead of "pool timed out" after 30 s.
    #[tokio::test]
    async fn issue_21_a_refused_postgres_connection_fails_fast_with_its_reason() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let url = format!("postgres://u:pw@127.0.0.1:{port}/db");
        let e = tokio::time::timeout(
            Duration::from_secs(15),
            Store::connect(&ConnectConfig::new(url)),
        )
        .await
        .expect("fails within 15 s, not after the pool's 30 s")
        .err()
        .expect("nobody listens there");
        let text = e.to_string();
        assert!(text.contains("refused"), "{text}");
        assert_eq!(text.matches("refused").count(), 1, "{text}");
        assert!(text.contains("u:***@127.0.0.1"), "password hidden: {text}");
        assert!(std::error::Error::source(&e).is_none(), "said once: {text}");
    }

    #[test]
    fn placeholders_are_renumbered_for_postgres() {
        let s = stmt_for(
            DatabaseBackend::Postgres,
            "a = ? AND b IN (?, ?)",
            vec![1.into(), 2.into(), 3.into()],
        );
        assert_eq!(s.sql, "a = $1 AND b IN ($2, $3)");
        let s = stmt_for(DatabaseBackend::Sqlite, "a = ?", vec![1.into()]);
        assert_eq!(s.sql, "a = ?");
    }
}
