//! `delivery_pace`: outcomes recorded per campaign in five-second buckets
//! (with the time of the bucket's first, so a campaign younger than the
//! window is measured over its real age), added to with the hourly `delivery_stats` counters when outcomes are
//! recorded. `campaign status` measures a running campaign's rate over the
//! last minute from at most thirteen of these rows, where it used to count
//! the campaign's deliveries updated in that minute (a scan of the whole
//! campaign at a million deliveries: an index on (campaign, updated_at)
//! would have made every state change of every delivery dearer). Buckets
//! older than an hour are deleted as new ones are written. No foreign key:
//! like `delivery_stats`, the rows outlive a deleted campaign briefly and
//! harmlessly.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DeliveryPace {
    Table,
    CampaignId,
    At,
    FirstAt,
    Outcomes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeliveryPace::Table)
                    .if_not_exists()
                    .col(uuid(DeliveryPace::CampaignId))
                    .col(timestamp_with_time_zone(DeliveryPace::At))
                    .col(timestamp_with_time_zone(DeliveryPace::FirstAt))
                    .col(big_integer(DeliveryPace::Outcomes))
                    .primary_key(
                        Index::create()
                            .col(DeliveryPace::CampaignId)
                            .col(DeliveryPace::At),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_delivery_pace_at")
                    .table(DeliveryPace::Table)
                    .col(DeliveryPace::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeliveryPace::Table).to_owned())
            .await
    }
}
