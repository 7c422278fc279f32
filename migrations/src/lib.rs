//! The rundbrief schema: one sea-orm-migration set that runs on SQLite and
//! PostgreSQL alike.
//!
//! Rules that keep one set working on both (see docs/architecture.md):
//! timestamps are always written from Rust, never by a database default;
//! UUID columns use sea-query's `uuid` type (native on PostgreSQL, a blob on
//! SQLite); foreign keys are declared at `CREATE TABLE` time because SQLite
//! cannot add them later. One file per change, each with `up` and `down`.

pub use sea_orm_migration::MigrationStatus;
pub use sea_orm_migration::prelude::*;

mod m20261123_000001_subscribers;
mod m20261123_000002_bounces;
mod m20261123_000003_campaigns;
mod m20261128_000004_scheduler;
mod m20261128_000005_ledger_index;
mod m20261128_000006_bounce_counting;
mod m20261202_000007_list_ids;
mod m20261202_000008_hardening;
mod m20261202_000009_endpoint_and_holds;
mod m20261202_000010_admin;
mod m20261203_000011_campaign_dns_check;
mod m20261203_000012_local_time;
mod m20261203_000013_breaker;
mod m20261203_000014_dashboard_stats;
mod m20261203_000015_relay_usage;
mod m20261203_000016_provider_budget;
mod m20261203_000017_delivery_pace;
mod m20261203_000018_delivery_counts;
mod m20261203_000019_cheaper_counts;

/// SQLite: the count of a materialisation's rows (migration 19).
pub use m20261203_000019_cheaper_counts::{problems_predicate, sqlite_count_inserted};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_subscribers::Migration),
            Box::new(m20261123_000002_bounces::Migration),
            Box::new(m20261123_000003_campaigns::Migration),
            Box::new(m20261128_000004_scheduler::Migration),
            Box::new(m20261128_000005_ledger_index::Migration),
            Box::new(m20261128_000006_bounce_counting::Migration),
            Box::new(m20261202_000007_list_ids::Migration),
            Box::new(m20261202_000008_hardening::Migration),
            Box::new(m20261202_000009_endpoint_and_holds::Migration),
            Box::new(m20261202_000010_admin::Migration),
            Box::new(m20261203_000011_campaign_dns_check::Migration),
            Box::new(m20261203_000012_local_time::Migration),
            Box::new(m20261203_000013_breaker::Migration),
            Box::new(m20261203_000014_dashboard_stats::Migration),
            Box::new(m20261203_000015_relay_usage::Migration),
            Box::new(m20261203_000016_provider_budget::Migration),
            Box::new(m20261203_000017_delivery_pace::Migration),
            Box::new(m20261203_000018_delivery_counts::Migration),
            Box::new(m20261203_000019_cheaper_counts::Migration),
        ]
    }
}
