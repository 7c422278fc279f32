//! Local-time delivery (issue #18): a campaign scheduled with
//! `campaign schedule NAME --at 09:00 --local-time` reaches each reader at
//! 09:00 on their own wall clock.
//!
//! - `campaigns.local_at`: the wall-clock time (`HH:MM` or `HH:MM:SS`);
//!   NULL for a campaign that is not sent by local time.
//! - `campaigns.local_date`: the day (`YYYY-MM-DD`) when `--at` named one;
//!   NULL: the next time it happens in each zone after the campaign starts.
//! - `campaigns.tz_attr`: the subscriber attribute holding the IANA zone.
//! - `campaigns.default_tz`: the zone of readers without a known one.
//!
//! The deliveries need no new column: a pending delivery's due time is its
//! `next_attempt_at` (the claim takes a pending row only when that is NULL
//! or has come), covered by the existing index (campaign, state,
//! next_attempt_at).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    LocalAt,
    LocalDate,
    TzAttr,
    DefaultTz,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for col in [
            string_len_null(Campaigns::LocalAt, 8),
            string_len_null(Campaigns::LocalDate, 10),
            text_null(Campaigns::TzAttr),
            text_null(Campaigns::DefaultTz),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Campaigns::Table)
                        .add_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [
            Campaigns::LocalAt,
            Campaigns::LocalDate,
            Campaigns::TzAttr,
            Campaigns::DefaultTz,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Campaigns::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
