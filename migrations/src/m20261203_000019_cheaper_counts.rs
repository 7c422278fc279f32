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
//! The delete and update triggers stay: deletes come from cascades and
//! state changes from many paths.
//!
//! PostgreSQL: its triggers are statement-level already (one aggregated
//! insert per statement). Its update trigger function gains an early
//! return when neither the old nor the new rows hold a final state: a
//! claim of 128 deliveries (pending -> sending, the commonest update) spent
//! 2.2 ms joining the transition tables to find no change, 0.7 ms with two
//! `EXISTS` probes (EXPLAIN ANALYZE on the bench's database).

use crate::m20261203_000018_delivery_counts::{
    pg_claim_exit, pg_count_update_function, sqlite_insert_trigger,
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
        db.execute_unprepared("DROP TRIGGER IF EXISTS deliveries_count_insert")
            .await?;
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
        db.execute_unprepared(&sqlite_insert_trigger()).await?;
        Ok(())
    }
}

/// SQLite: adds the deliveries with a rowid above `?` (the largest before
/// the caller's inserts, in the same write transaction) to
/// `delivery_domain_counts`, one upsert per (campaign, domain); what the
/// dropped row trigger added one row at a time.
pub fn sqlite_count_inserted() -> String {
    use crate::m20261203_000018_delivery_counts::{columns, sqlite_domain, sqlite_flags};
    let sums: Vec<String> = sqlite_flags("state")
        .iter()
        .map(|f| format!("SUM({f})"))
        .collect();
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
