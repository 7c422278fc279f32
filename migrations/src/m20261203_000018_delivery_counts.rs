//! Delivery counts the dashboard and `campaign status` read without
//! scanning a campaign's deliveries (issue 19: at 1M deliveries the scans
//! took 0.5 s to 2 s per request).
//!
//! - `delivery_domain_counts (campaign_id, domain, total, queued, sent,
//!   failed, rejected, bounced, skipped)`: deliveries per recipient domain
//!   (the part of `email` after the first '@', as stored): all of them, the
//!   ones not yet final (pending, sending and deferred together as
//!   `queued`), and per final state. A campaign's counts by state are the
//!   sums over its domains (a few thousand rows for a big campaign); the
//!   reader splits `queued` with an indexed count of the few `sending` and
//!   `deferred` rows. One table and one category per delivery keep the
//!   send path's cost down: a claim (pending -> sending), the commonest
//!   change, changes no count, and a recorded outcome changes one row.
//!
//! It is kept by triggers on `deliveries`, so every path that inserts,
//! deletes (cascades included) or changes `state` stays counted without
//! knowing about them. Readers always sum, which is right on both backends:
//!
//! - SQLite: a row-level trigger per change updates the (campaign, domain)
//!   row in place (an insert upserts it; migration 19 drops that insert
//!   trigger, and the materialisation counts its rows once per statement).
//!   Writers are serialised, so a hot row costs nothing extra.
//! - PostgreSQL: row-level upserts would make the claim and the outcome
//!   transactions of concurrent workers lock the same counter rows in
//!   different orders, which deadlocks. Statement-level triggers with
//!   transition tables instead APPEND one aggregated delta row per (campaign,
//!   domain) that the statement changed: plain inserts, no unique key, no
//!   lock on any existing row. Readers fold a campaign's delta rows back
//!   into one row per domain (`Store::fold_delivery_counts`) when they pile
//!   up. PostgreSQL allows no column list on a trigger with transition
//!   tables, so the update trigger fires on every update of `deliveries` and
//!   keeps only rows whose category changed.
//!
//! `idx_deliveries_problems`: a partial index on (campaign, state,
//! last_error) of the failed, deferred, rejected and skipped deliveries, so
//! `Store::campaign_errors` groups them with an index-only scan (2 ms
//! instead of 26-40 ms warm, and 0.5 s cold under load, for 20,000 failures
//! among 1M deliveries) and nothing else on the sending path pays for it: sent
//! deliveries are not in it. A btree entry must stay under ~2,700 bytes on
//! PostgreSQL, so a BEFORE trigger there cuts a `last_error` longer than
//! 2,000 bytes to its first 500 characters and says so (an SMTP reply line
//! is at most 512 bytes; only unusual multi-line replies get there).
//!
//! No foreign key to `campaigns`: a deleted campaign's deliveries cascade,
//! their delete trigger brings its counts to zero (folding drops zero rows).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// States whose deliveries are not final yet (`DomainCount::pending`).
const QUEUED: &str = "('pending', 'sending', 'deferred')";

/// States `campaign_errors` lists; the index's predicate. The query must
/// spell them as literals (not bound values) for either planner to use it.
const PROBLEMS_INDEX: &str = "CREATE INDEX idx_deliveries_problems ON deliveries (campaign_id, state, last_error) \
     WHERE state IN ('failed', 'deferred', 'rejected', 'skipped')";

/// The final states counted in a column of their own.
pub(crate) const FINAL: [&str; 5] = ["sent", "failed", "rejected", "bounced", "skipped"];

/// The counts' columns after `total`.
pub(crate) fn columns() -> String {
    std::iter::once("queued")
        .chain(FINAL)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The recipient domain of the address in `e` on SQLite (after the first '@').
pub(crate) fn sqlite_domain(e: &str) -> String {
    format!("substr({e}, instr({e}, '@') + 1)")
}

/// One 0/1 expression per column after `total`, for a delivery whose state
/// is `state` (SQLite: a comparison is 0 or 1).
fn sqlite_flags(state: &str) -> Vec<String> {
    std::iter::once(format!("({state} IN {QUEUED})"))
        .chain(FINAL.iter().map(|f| format!("({state} = '{f}')")))
        .collect()
}

/// The key a delivery is counted under: its state, with the not-yet-final
/// ones together (a change within them changes no count).
fn category(state: &str) -> String {
    format!("(CASE WHEN {state} IN {QUEUED} THEN 'queued' ELSE {state} END)")
}

pub(crate) fn sqlite_up() -> Vec<String> {
    let domain = sqlite_domain;
    let cols = columns();
    let names: Vec<&str> = std::iter::once("queued").chain(FINAL).collect();
    let sums: Vec<String> = sqlite_flags("state")
        .iter()
        .map(|f| format!("SUM({f})"))
        .collect();
    let add: Vec<String> = names
        .iter()
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    let [delete, update] = sqlite_change_triggers(sqlite_flags, category);
    vec![
        PROBLEMS_INDEX.into(),
        format!(
            "CREATE TABLE delivery_domain_counts (campaign_id uuid_text NOT NULL, domain text NOT NULL, \
             total bigint NOT NULL, {}, PRIMARY KEY (campaign_id, domain))",
            names
                .iter()
                .map(|c| format!("{c} bigint NOT NULL"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "INSERT INTO delivery_domain_counts (campaign_id, domain, total, {cols}) \
             SELECT campaign_id, {}, COUNT(*), {} FROM deliveries GROUP BY 1, 2",
            domain("email"),
            sums.join(", ")
        ),
        format!(
            "CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries BEGIN \
             INSERT INTO delivery_domain_counts (campaign_id, domain, total, {cols}) \
             VALUES (new.campaign_id, {}, 1, {}) \
             ON CONFLICT (campaign_id, domain) DO UPDATE SET total = total + 1, {}; \
             END",
            domain("new.email"),
            sqlite_flags("new.state").join(", "),
            add.join(", ")
        ),
        delete,
        update,
    ]
}

/// SQLite's delete and update triggers, with `flags` (one 0/1 expression
/// per column after `total` for a state) and `category` (the key a state is
/// counted under) as given: migration 18 writes their state tests as `IN`
/// lists, migration 19 as `= … OR` chains.
pub(crate) fn sqlite_change_triggers(
    flags: fn(&str) -> Vec<String>,
    category: fn(&str) -> String,
) -> [String; 2] {
    let names: Vec<&str> = std::iter::once("queued").chain(FINAL).collect();
    let new = flags("new.state");
    let old = flags("old.state");
    let sub: Vec<String> = names
        .iter()
        .zip(&old)
        .map(|(c, o)| format!("{c} = {c} - {o}"))
        .collect();
    let moved: Vec<String> = names
        .iter()
        .zip(new.iter().zip(&old))
        .map(|(c, (n, o))| format!("{c} = {c} + {n} - {o}"))
        .collect();
    [
        format!(
            "CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries BEGIN \
             UPDATE delivery_domain_counts SET total = total - 1, {} \
             WHERE campaign_id = old.campaign_id AND domain = {}; \
             END",
            sub.join(", "),
            sqlite_domain("old.email")
        ),
        // Only when a delivery moves between categories: claims (pending
        // -> sending) and retries (deferred -> sending) run no statement.
        format!(
            "CREATE TRIGGER deliveries_count_update AFTER UPDATE OF state ON deliveries \
             WHEN {} IS NOT {} BEGIN \
             UPDATE delivery_domain_counts SET {} \
             WHERE campaign_id = new.campaign_id AND domain = {}; \
             END",
            category("old.state"),
            category("new.state"),
            moved.join(", "),
            sqlite_domain("new.email")
        ),
    ]
}

const SQLITE_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_deliveries_problems",
    "DROP TRIGGER IF EXISTS deliveries_count_update",
    "DROP TRIGGER IF EXISTS deliveries_count_delete",
    "DROP TRIGGER IF EXISTS deliveries_count_insert",
    "DROP TABLE IF EXISTS delivery_domain_counts",
];

/// PostgreSQL's update trigger function: `verb` is `CREATE` (migration 18)
/// or `CREATE OR REPLACE` (19), `first` statements run before the count
/// (19's early return for a statement that changed no category).
pub(crate) fn pg_count_update_function(verb: &str, first: &str) -> String {
    let cols = columns();
    let moved: Vec<String> = std::iter::once(format!(
        "SUM((new_state IN {QUEUED})::int - (old_state IN {QUEUED})::int)"
    ))
    .chain(
        FINAL
            .iter()
            .map(|f| format!("SUM((new_state = '{f}')::int - (old_state = '{f}')::int)")),
    )
    .collect();
    format!(
        "{verb} FUNCTION rundbrief_deliveries_count_update() RETURNS trigger LANGUAGE plpgsql AS $f$ \
         BEGIN {first}\
         INSERT INTO delivery_domain_counts (campaign_id, domain, total, {cols}) \
         SELECT n.campaign_id, split_part(n.email, '@', 2), 0, {} FROM ( \
           SELECT n.campaign_id, n.email, o.state AS old_state, n.state AS new_state \
           FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE {} IS DISTINCT FROM {}) n \
         GROUP BY 1, 2; \
         RETURN NULL; END $f$",
        moved.join(", "),
        category("o.state"),
        category("n.state"),
    )
}

/// PostgreSQL: an early return, before any join, when neither the old nor
/// the new rows of the statement hold a final state: a claim (pending,
/// deferred or an expired sending -> sending) changes no count.
pub(crate) fn pg_claim_exit() -> String {
    format!(
        "IF NOT EXISTS (SELECT 1 FROM new_rows WHERE state NOT IN {QUEUED}) \
         AND NOT EXISTS (SELECT 1 FROM old_rows WHERE state NOT IN {QUEUED}) \
         THEN RETURN NULL; END IF; "
    )
}

fn postgres_up() -> Vec<String> {
    let cols = columns();
    // The delta rows of `rows` (a transition table or the deliveries):
    // one per (campaign, domain), counted with `sign`.
    let delta = |rows: &str, sign: &str| {
        let flags: Vec<String> =
            std::iter::once(format!("{sign}COUNT(*) FILTER (WHERE state IN {QUEUED})"))
                .chain(
                    FINAL
                        .iter()
                        .map(|f| format!("{sign}COUNT(*) FILTER (WHERE state = '{f}')")),
                )
                .collect();
        format!(
            "INSERT INTO delivery_domain_counts (campaign_id, domain, total, {cols}) \
             SELECT campaign_id, split_part(email, '@', 2), {sign}COUNT(*), {} \
             FROM {rows} GROUP BY 1, 2;",
            flags.join(", ")
        )
    };
    vec![
        "CREATE FUNCTION rundbrief_deliveries_cap_error() RETURNS trigger LANGUAGE plpgsql AS $f$ \
         BEGIN \
         NEW.last_error := left(NEW.last_error, 500) || ' [cut from ' || octet_length(NEW.last_error) || ' bytes]'; \
         RETURN NEW; END $f$"
            .into(),
        "UPDATE deliveries SET last_error = left(last_error, 500) || ' [cut from ' || octet_length(last_error) || ' bytes]' \
         WHERE octet_length(last_error) > 2000"
            .into(),
        "CREATE TRIGGER deliveries_cap_error BEFORE INSERT OR UPDATE OF last_error ON deliveries \
         FOR EACH ROW WHEN (octet_length(NEW.last_error) > 2000) \
         EXECUTE FUNCTION rundbrief_deliveries_cap_error()"
            .into(),
        PROBLEMS_INDEX.into(),
        format!(
            "CREATE TABLE delivery_domain_counts (campaign_id uuid NOT NULL, domain text NOT NULL, \
             total bigint NOT NULL, {})",
            std::iter::once("queued")
                .chain(FINAL)
                .map(|c| format!("{c} bigint NOT NULL"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "CREATE INDEX idx_delivery_domain_counts ON delivery_domain_counts (campaign_id)".into(),
        delta("deliveries", ""),
        format!(
            "CREATE FUNCTION rundbrief_deliveries_count_insert() RETURNS trigger LANGUAGE plpgsql AS $f$ \
             BEGIN {} RETURN NULL; END $f$",
            delta("new_rows", "")
        ),
        format!(
            "CREATE FUNCTION rundbrief_deliveries_count_delete() RETURNS trigger LANGUAGE plpgsql AS $f$ \
             BEGIN {} RETURN NULL; END $f$",
            delta("old_rows", "-")
        ),
        // One pass over the changed rows, keeping only those that moved
        // between categories (a claim moves none).
        pg_count_update_function("CREATE", ""),
        "CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries \
         REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION rundbrief_deliveries_count_insert()"
            .into(),
        "CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries \
         REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION rundbrief_deliveries_count_delete()"
            .into(),
        "CREATE TRIGGER deliveries_count_update AFTER UPDATE ON deliveries \
         REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION rundbrief_deliveries_count_update()"
            .into(),
    ]
}

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_deliveries_problems",
    "DROP TRIGGER IF EXISTS deliveries_cap_error ON deliveries",
    "DROP FUNCTION IF EXISTS rundbrief_deliveries_cap_error()",
    "DROP TRIGGER IF EXISTS deliveries_count_update ON deliveries",
    "DROP TRIGGER IF EXISTS deliveries_count_delete ON deliveries",
    "DROP TRIGGER IF EXISTS deliveries_count_insert ON deliveries",
    "DROP FUNCTION IF EXISTS rundbrief_deliveries_count_update()",
    "DROP FUNCTION IF EXISTS rundbrief_deliveries_count_delete()",
    "DROP FUNCTION IF EXISTS rundbrief_deliveries_count_insert()",
    "DROP TABLE IF EXISTS delivery_domain_counts",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let stmts: Vec<String> = match manager.get_database_backend() {
            DbBackend::Postgres => postgres_up(),
            _ => sqlite_up(),
        };
        for s in stmts {
            db.execute_unprepared(&s).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let stmts = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        for s in stmts {
            db.execute_unprepared(s).await?;
        }
        Ok(())
    }
}
