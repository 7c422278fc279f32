//! What the scheduler needs: leases on deliveries (so several workers can
//! share a campaign and a crashed worker's claims return to the pool), a
//! retry time for deferred deliveries, and schedules on campaigns (one-off
//! `send_at` or recurring `cron`, in a time zone, with an optional send
//! window; each run of a recurring campaign is a campaign of its own that
//! names its `parent_id`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    CampaignId,
    State,
    LeaseOwner,
    LeaseUntil,
    NextAttemptAt,
    FirstAttemptAt,
}

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    SendAt,
    Cron,
    Tz,
    WindowStart,
    WindowEnd,
    ParentId,
    LastRunAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for col in [
            text_null(Deliveries::LeaseOwner),
            timestamp_with_time_zone_null(Deliveries::LeaseUntil),
            timestamp_with_time_zone_null(Deliveries::NextAttemptAt),
            timestamp_with_time_zone_null(Deliveries::FirstAttemptAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deliveries::Table)
                        .add_column(col)
                        .to_owned(),
                )
                .await?;
        }
        for col in [
            timestamp_with_time_zone_null(Campaigns::SendAt),
            text_null(Campaigns::Cron),
            text_null(Campaigns::Tz),
            string_len_null(Campaigns::WindowStart, 5),
            string_len_null(Campaigns::WindowEnd, 5),
            uuid_null(Campaigns::ParentId),
            timestamp_with_time_zone_null(Campaigns::LastRunAt),
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
        // Claiming looks for due work of one campaign by state.
        manager
            .create_index(
                Index::create()
                    .name("idx_deliveries_campaign_state_next")
                    .table(Deliveries::Table)
                    .col(Deliveries::CampaignId)
                    .col(Deliveries::State)
                    .col(Deliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_deliveries_campaign_state_next")
                    .table(Deliveries::Table)
                    .to_owned(),
            )
            .await?;
        for col in [
            Deliveries::LeaseOwner,
            Deliveries::LeaseUntil,
            Deliveries::NextAttemptAt,
            Deliveries::FirstAttemptAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deliveries::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        for col in [
            Campaigns::SendAt,
            Campaigns::Cron,
            Campaigns::Tz,
            Campaigns::WindowStart,
            Campaigns::WindowEnd,
            Campaigns::ParentId,
            Campaigns::LastRunAt,
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
