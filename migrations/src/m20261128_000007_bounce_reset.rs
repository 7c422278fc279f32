//! When a subscriber's bounce score was last reset (`subscribers.bounce_reset_at`):
//! `sub restore` clears the score, and bounces received before this moment
//! must not count again, not even when `bounce reprocess` parses them anew.
//! The bounces themselves stay stored: they are evidence.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Subscribers {
    Table,
    BounceResetAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Subscribers::Table)
                    .add_column(timestamp_with_time_zone_null(Subscribers::BounceResetAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Subscribers::Table)
                    .drop_column(Subscribers::BounceResetAt)
                    .to_owned(),
            )
            .await
    }
}
