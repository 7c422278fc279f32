//! One index fewer on the delivery ledger. `idx_deliveries_campaign_state`
//! (campaign, state) is a prefix of `idx_deliveries_campaign_state_next`
//! (campaign, state, next attempt), which serves every query the first one
//! did; but every state change of a delivery (two per message sent: claimed,
//! then recorded) had to update both. Dropping it takes that upkeep off the
//! send path on both backends.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    CampaignId,
    State,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_deliveries_campaign_state")
                    .table(Deliveries::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_deliveries_campaign_state")
                    .table(Deliveries::Table)
                    .col(Deliveries::CampaignId)
                    .col(Deliveries::State)
                    .to_owned(),
            )
            .await
    }
}
