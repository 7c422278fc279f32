//! The reputation circuit breaker's state, so that it survives a restart:
//!
//! - `provider_states`: per campaign and provider group, `suspended` (the
//!   breaker stopped sending to it: its deliveries wait until `campaign
//!   resume NAME [--provider P]`) or `slowed` (a 421/4.7.x halved its rate
//!   until `until`; `rate` is the rate then in force), with the reason the
//!   operator sees in `campaign status`. One row per (campaign, provider).
//! - `campaigns.paused_reason`: why the breaker paused the whole campaign
//!   (too many complaints, or blocks from every provider); `NULL` for a
//!   pause by the operator and after a resume.
//! - `campaigns.breaker_since`: set by `campaign resume`; the complaint
//!   ratio counts only complaints and sent messages after it, so a resumed
//!   campaign is not paused again at once for the complaints it had.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    PausedReason,
    BreakerSince,
}

#[derive(DeriveIden)]
enum ProviderStates {
    Table,
    CampaignId,
    Provider,
    State,
    Reason,
    Rate,
    Since,
    Until,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Campaigns::Table)
                    .add_column(text_null(Campaigns::PausedReason))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Campaigns::Table)
                    .add_column(timestamp_with_time_zone_null(Campaigns::BreakerSince))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProviderStates::Table)
                    .if_not_exists()
                    .col(uuid(ProviderStates::CampaignId))
                    .col(string(ProviderStates::Provider))
                    .col(string(ProviderStates::State))
                    .col(text(ProviderStates::Reason))
                    .col(integer_null(ProviderStates::Rate))
                    .col(timestamp_with_time_zone(ProviderStates::Since))
                    .col(timestamp_with_time_zone_null(ProviderStates::Until))
                    .primary_key(
                        Index::create()
                            .col(ProviderStates::CampaignId)
                            .col(ProviderStates::Provider),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ProviderStates::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Campaigns::Table)
                    .drop_column(Campaigns::PausedReason)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Campaigns::Table)
                    .drop_column(Campaigns::BreakerSince)
                    .to_owned(),
            )
            .await
    }
}
