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
mod campaigns;
mod holds;
pub mod import;
mod import_pg;
mod import_sqlite;
mod lists;
mod optin;
mod subscribers;
mod work;

pub use admin::{AdminAction, AdminKey};
pub use bounces::{BounceQuery, NewBounce, NewMessage, POSTMASTER_KIND, StoredBounce};
pub use campaigns::{
    Campaign, CampaignContent, CampaignCounts, DeliveryErrorCount, DeliveryTarget, NewCampaign,
    PendingDelivery, ScoredSubscriber, StoredScore,
};
pub use holds::{DomainPrune, NewDomainPrune, PruneState};
pub use import::{BatchReport, Import, ImportOptions};
pub use optin::{Confirmed, MembershipView, OptIn};
pub use subscribers::{AddOutcome, SubscriberQuery};
pub use work::{CampaignEdit, DeliveryOutcome, MetricCounts, Schedule, ScheduledCampaign};

use rundbrief_migrations::{Migrator, MigratorTrait};

/// What went wrong in the store. Variants name the thing that was not found
/// or not allowed, so the CLI can print a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the database {url}: {source}")]
    Connect { url: String, source: DbErr },
    /// Applying or reading migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(DbErr),
    /// A query failed; `doing` says which.
    #[error("database error while {doing}: {source}")]
    Query { doing: &'static str, source: DbErr },
    /// `list create` with a name that exists.
    #[error("a list named `{0}` already exists")]
    ListExists(String),
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
    /// `sub restore` on a subscriber who is not bounced.
    #[error("`{email}` is {status}, not bounced: restore only undoes bounce pruning")]
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

/// Adds what the query was doing to a database error.
pub(crate) trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T>;
}

impl<T> Doing<T> for std::result::Result<T, DbErr> {
    fn doing(self, doing: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Query { doing, source })
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
    /// SQLite gets WAL journaling, `synchronous=NORMAL` (durable at each
    /// commit against crashes of the process; a power loss may lose the last
    /// commits), a 5 s busy timeout, foreign keys on and a 32 MiB page cache.
    ///
    /// # Errors
    /// [`StoreError::Connect`] with the URL (password hidden).
    pub async fn connect(cfg: &ConnectConfig) -> Result<Store> {
        let url = normalise_url(&cfg.url);
        let shown = redact_url(&url);
        let connect_err = |source| StoreError::Connect {
            url: shown.clone(),
            source,
        };
        let mut opts = ConnectOptions::new(url.clone());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            opts.max_connections(1).map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
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
