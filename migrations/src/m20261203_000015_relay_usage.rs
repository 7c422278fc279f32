//! Relay quotas and failover (issue #18), kept in the database so they hold
//! across restarts and across several workers on one database:
//!
//! - `relay_usage`: messages handed to a relay per bucket, one row per
//!   (relay, bucket kind `hour`|`day`, bucket start in UTC). A worker takes
//!   its share with one conditional `UPDATE … SET sent = sent + n WHERE
//!   sent + n <= quota`, so two workers never overshoot a quota together.
//! - `relay_rests`: a relay that failed at CONNECT, TLS or AUTH several times
//!   in a row is rested until `until`, with the error that rested it, so
//!   every worker (and `campaign status`) sees it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RelayUsage {
    Table,
    Relay,
    BucketKind,
    BucketStart,
    Sent,
}

#[derive(DeriveIden)]
enum RelayRests {
    Table,
    Relay,
    Until,
    Reason,
    Since,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RelayUsage::Table)
                    .if_not_exists()
                    .col(string(RelayUsage::Relay))
                    .col(string(RelayUsage::BucketKind))
                    .col(timestamp_with_time_zone(RelayUsage::BucketStart))
                    .col(big_integer(RelayUsage::Sent))
                    .primary_key(
                        Index::create()
                            .col(RelayUsage::Relay)
                            .col(RelayUsage::BucketKind)
                            .col(RelayUsage::BucketStart),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RelayRests::Table)
                    .if_not_exists()
                    .col(string(RelayRests::Relay).primary_key())
                    .col(timestamp_with_time_zone(RelayRests::Until))
                    .col(text(RelayRests::Reason))
                    .col(timestamp_with_time_zone(RelayRests::Since))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RelayRests::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(RelayUsage::Table).to_owned())
            .await
    }
}
