//! Send grants shared by every worker on one database (issue #18):
//! `provider_budget` holds, per throttle key (a provider group, a recipient
//! domain, `*` for the global rate, with an `@h` suffix for an hourly
//! limit), the window in force and how many sends were granted in it.
//! A worker takes a few grants at a time with one atomic statement
//! (`Store::take_grants`) and spends them locally; a new window resets the
//! count. `cap`/`cap_until` carry a slow-down (a 421 or 4.7.x seen by any
//! worker) to the others. Windows and times are milliseconds since the
//! Unix epoch, computed in Rust (no database clock). One row per key: the
//! table never grows past the number of keys.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProviderBudget {
    Table,
    Key,
    WindowStart,
    Granted,
    Last,
    Cap,
    CapUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ProviderBudget::Table)
                    .if_not_exists()
                    .col(string(ProviderBudget::Key).primary_key())
                    .col(big_integer(ProviderBudget::WindowStart))
                    .col(big_integer(ProviderBudget::Granted))
                    .col(big_integer(ProviderBudget::Last))
                    .col(big_integer_null(ProviderBudget::Cap))
                    .col(big_integer_null(ProviderBudget::CapUntil))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ProviderBudget::Table).to_owned())
            .await
    }
}
