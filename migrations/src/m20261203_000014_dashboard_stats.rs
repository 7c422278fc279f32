//! What the dashboard's charts read, kept cheap to query:
//!
//! - `delivery_stats`: a counter per campaign and UTC hour of the outcomes
//!   recorded in it (`sent`, `failed`, `rejected`, `deferred`), added to in
//!   the same statement group that records the outcomes. Charts of sends
//!   per hour and per day read at most 24 × 30 rows per campaign instead of
//!   grouping millions of deliveries. No foreign key: the counts stay when
//!   a campaign is deleted, since the mail was sent.
//! - `idx_memberships_list_created`: a list's joins per day (growth chart).
//! - `idx_audit_action_created`: unsubscribes and prunes per day, by action
//!   and a bounded time range.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DeliveryStats {
    Table,
    CampaignId,
    Hour,
    Sent,
    Failed,
    Rejected,
    Deferred,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    ListId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Audit {
    Table,
    Action,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeliveryStats::Table)
                    .if_not_exists()
                    .col(uuid(DeliveryStats::CampaignId))
                    .col(timestamp_with_time_zone(DeliveryStats::Hour))
                    .col(big_integer(DeliveryStats::Sent))
                    .col(big_integer(DeliveryStats::Failed))
                    .col(big_integer(DeliveryStats::Rejected))
                    .col(big_integer(DeliveryStats::Deferred))
                    .primary_key(
                        Index::create()
                            .col(DeliveryStats::CampaignId)
                            .col(DeliveryStats::Hour),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_delivery_stats_hour")
                    .table(DeliveryStats::Table)
                    .col(DeliveryStats::Hour)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_memberships_list_created")
                    .table(Memberships::Table)
                    .col(Memberships::ListId)
                    .col(Memberships::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_action_created")
                    .table(Audit::Table)
                    .col(Audit::Action)
                    .col(Audit::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_audit_action_created")
                    .table(Audit::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_memberships_list_created")
                    .table(Memberships::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(DeliveryStats::Table).to_owned())
            .await
    }
}
