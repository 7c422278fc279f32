//! Three columns that make a bounce count once, and a prune and its undoing
//! name their bounce:
//!
//! - `subscribers.bounce_last`: what the last bounce that counted towards the
//!   subscriber's bounce score was, in the words of the audit trail (the
//!   bounce id or the sending step of a 5xx, class, status, rule and the
//!   score it made). The score alone cannot say which bounce is behind it,
//!   and a prune by `rundbrief clean` must name that bounce as the
//!   endpoint's own prune does. NULL for scores counted before it existed.
//! - `subscribers.bounce_reset_at`: when the score was last reset by a way
//!   back from `bounced` (`sub restore`, `sub add --resubscribe`, `import
//!   --resubscribe-bounced`, a confirmed opt-in). Bounces received before
//!   it must not count again, not even when `bounce reprocess` parses them
//!   anew; the bounces themselves stay stored as evidence.
//! - `bounces.acted_at`: when the stored message was applied to its
//!   subscriber (score, prune, unsubscribe). `bounce reprocess` parses it
//!   again but does not count it again; one never acted on (no delivery
//!   found, or its parse failed) still can be.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Subscribers {
    Table,
    BounceLast,
    BounceResetAt,
}

#[derive(DeriveIden)]
enum Bounces {
    Table,
    ActedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite takes no more.
        for column in [
            text_null(Subscribers::BounceLast),
            timestamp_with_time_zone_null(Subscribers::BounceResetAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Subscribers::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Bounces::Table)
                    .add_column(timestamp_with_time_zone_null(Bounces::ActedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Bounces::Table)
                    .drop_column(Bounces::ActedAt)
                    .to_owned(),
            )
            .await?;
        for column in [Subscribers::BounceResetAt, Subscribers::BounceLast] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Subscribers::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
