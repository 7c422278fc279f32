//! SQLite: the delivery counts of rows the campaign's materialisation
//! inserts are added by that materialisation, once per statement, instead
//! of by a row trigger (issue 18's send rate).
//!
//! Migration 18's `deliveries_count_insert` ran an upsert into
//! `delivery_domain_counts` for every inserted delivery: 20,000 upserts
//! before the first message of a 20,000-recipient campaign, about a sixth of
//! the SQLite thread's time for the whole send (measured by dropping it on a
//! copy of the bench's database: 1.7 s -> 1.3 s of that thread per 20,000).
//! SQLite has no statement-level triggers, so `Store::materialise_deliveries`
//! (the only code that inserts deliveries) now inserts and counts in one
//! write transaction: it notes the largest rowid before its inserts and adds
//! one aggregated row per (campaign, domain) of the rows above it — a rowid
//! range, read once.
//!
//! The delete and update triggers stay (deletes come from cascades and
//! state changes from many paths) but are written again without `IN`
//! lists, and so is the partial index's predicate: SQLite evaluates
//! `state IN ('a', 'b', 'c')` (three or more constants) by filling a
//! temporary b-tree with the constants, and where that happens per row —
//! a partial index's predicate for the old and the new row of every
//! update, and each `IN` of a trigger body, whose `Once` flags start over
//! with each firing — it opened six of them for every recorded outcome
//! (EXPLAIN of the recorder's UPDATE; perf showed the SQLite thread in
//! `sqlite3BtreeOpen`, `sqlite3BtreeCreateTable` and `memset`). Chains of
//! `=` and `OR` compile to plain comparisons. The query that reads the
//! partial index (`Store::campaign_errors`) spells the same predicate
//! ([`problems_predicate`]), so SQLite still sees that the index covers it.
//!
//! PostgreSQL: its triggers are statement-level already (one aggregated
//! insert per statement). Its update trigger function gains an early
//! return when neither the old nor the new rows hold a final state: a
//! claim of 128 deliveries (pending -> sending, the commonest update) spent
//! 2.2 ms joining the transition tables to find no change, 0.7 ms with two
//! `EXISTS` probes (EXPLAIN ANALYZE on the bench's database).

use crate::m20261203_000018_delivery_counts::{
    self as m18, FINAL, columns, pg_claim_exit, pg_count_update_function, sqlite_domain,
};
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(&pg_count_update_function(
                "CREATE OR REPLACE",
                &pg_claim_exit(),
            ))
            .await?;
            return Ok(());
        }
        for stmt in sqlite_up() {
            db.execute_unprepared(&stmt).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Migration 18's trigger and function, as they were.
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(&pg_count_update_function("CREATE OR REPLACE", ""))
                .await?;
            return Ok(());
        }
        for stmt in [
            "DROP TRIGGER IF EXISTS deliveries_count_update",
            "DROP TRIGGER IF EXISTS deliveries_count_delete",
            "DROP INDEX IF EXISTS idx_deliveries_problems",
        ] {
            db.execute_unprepared(stmt).await?;
        }
        // Migration 18's index and triggers (the insert trigger included),
        // as it wrote them.
        for stmt in m18::sqlite_up()
            .into_iter()
            .filter(|s| s.starts_with("CREATE TRIGGER") || s.starts_with("CREATE INDEX"))
        {
            db.execute_unprepared(&stmt).await?;
        }
        Ok(())
    }
}

/// States whose deliveries are not final yet (counted together as `queued`).
const QUEUED: [&str; 3] = ["pending", "sending", "deferred"];

/// States `Store::campaign_errors` lists: the partial index's predicate.
const PROBLEMS: [&str; 4] = ["failed", "deferred", "rejected", "skipped"];

/// `(col = 'a' OR col = 'b' …)`: what `col IN ('a', 'b', …)` means, as
/// comparisons SQLite evaluates without a temporary b-tree.
fn one_of(col: &str, states: &[&str]) -> String {
    let terms: Vec<String> = states.iter().map(|s| format!("{col} = '{s}'")).collect();
    format!("({})", terms.join(" OR "))
}

/// One 0/1 expression per column after `total` for a delivery in `state`.
fn flags(state: &str) -> Vec<String> {
    std::iter::once(one_of(state, &QUEUED))
        .chain(FINAL.iter().map(|f| format!("({state} = '{f}')")))
        .collect()
}

/// A delivery's counting category: its state, the not-yet-final ones as one.
fn category(state: &str) -> String {
    format!(
        "(CASE WHEN {} THEN 'queued' ELSE {state} END)",
        one_of(state, &QUEUED)
    )
}

/// The predicate of `idx_deliveries_problems`, which a query must repeat
/// to read that index: an `IN` list on PostgreSQL (migration 18), an `OR`
/// chain on SQLite (this migration).
pub fn problems_predicate(postgres: bool) -> String {
    if postgres {
        let states: Vec<String> = PROBLEMS.iter().map(|s| format!("'{s}'")).collect();
        format!("state IN ({})", states.join(", "))
    } else {
        one_of("state", &PROBLEMS)
    }
}

fn sqlite_up() -> Vec<String> {
    let [delete, update] = m18::sqlite_change_triggers(flags, category);
    vec![
        "DROP TRIGGER IF EXISTS deliveries_count_insert".into(),
        "DROP TRIGGER IF EXISTS deliveries_count_update".into(),
        "DROP TRIGGER IF EXISTS deliveries_count_delete".into(),
        "DROP INDEX IF EXISTS idx_deliveries_problems".into(),
        format!(
            "CREATE INDEX idx_deliveries_problems ON deliveries (campaign_id, state, last_error) WHERE {}",
            problems_predicate(false)
        ),
        delete,
        update,
    ]
}

/// SQLite: adds the deliveries with a rowid above `?` (the largest before
/// the caller's inserts, in the same write transaction) to
/// `delivery_domain_counts`, one upsert per (campaign, domain); what the
/// dropped row trigger added one row at a time.
pub fn sqlite_count_inserted() -> String {
    let sums: Vec<String> = flags("state").iter().map(|f| format!("SUM({f})")).collect();
    let cols = columns();
    let add: Vec<String> = std::iter::once("total")
        .chain(cols.split(", "))
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO delivery_domain_counts (campaign_id, domain, total, {cols}) \
         SELECT campaign_id, {}, COUNT(*), {} FROM deliveries WHERE rowid > ? GROUP BY 1, 2 \
         ON CONFLICT (campaign_id, domain) DO UPDATE SET {}",
        sqlite_domain("email"),
        sums.join(", "),
        add.join(", ")
    )
}
