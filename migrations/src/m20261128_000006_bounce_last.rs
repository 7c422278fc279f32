//! What the last bounce that counted towards a subscriber's bounce score was
//! (`subscribers.bounce_last`), in the words of the audit trail: the bounce
//! id (or the sending step of a 5xx), class, status, rule and the score it
//! made. The score alone cannot say which bounce is behind it, and a prune
//! by `rundbrief clean` must name that bounce as the endpoint's own prune
//! does. NULL for scores counted before this column existed.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Subscribers {
    Table,
    BounceLast,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Subscribers::Table)
                    .add_column(text_null(Subscribers::BounceLast))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Subscribers::Table)
                    .drop_column(Subscribers::BounceLast)
                    .to_owned(),
            )
            .await
    }
}
