//! Campaigns, the lists they go to, the delivery ledger (one row per
//! recipient; its id is what the VERP token carries), and each subscriber's
//! bounce score.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    Id,
    Name,
    Subject,
    Content,
    ContentKind,
    Layout,
    FromAddr,
    Relay,
    State,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CampaignLists {
    Table,
    CampaignId,
    ListId,
}

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Id,
    CampaignId,
    SubscriberId,
    Email,
    State,
    Attempts,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Subscribers {
    Table,
    Id,
    BounceScore,
    BounceDay,
    BounceDayWeight,
}

#[derive(DeriveIden)]
enum Lists {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Campaigns::Table)
                    .col(pk_uuid(Campaigns::Id))
                    .col(string_uniq(Campaigns::Name))
                    .col(text(Campaigns::Subject))
                    .col(text(Campaigns::Content))
                    .col(string_len(Campaigns::ContentKind, 16))
                    .col(text_null(Campaigns::Layout))
                    .col(text_null(Campaigns::FromAddr))
                    .col(text_null(Campaigns::Relay))
                    .col(string_len(Campaigns::State, 16))
                    .col(timestamp_with_time_zone(Campaigns::CreatedAt))
                    .col(timestamp_with_time_zone(Campaigns::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CampaignLists::Table)
                    .col(uuid(CampaignLists::CampaignId))
                    .col(uuid(CampaignLists::ListId))
                    .primary_key(
                        Index::create()
                            .col(CampaignLists::CampaignId)
                            .col(CampaignLists::ListId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_campaign_lists_campaign")
                            .from(CampaignLists::Table, CampaignLists::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_campaign_lists_list")
                            .from(CampaignLists::Table, CampaignLists::ListId)
                            .to(Lists::Table, Lists::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .col(pk_uuid(Deliveries::Id))
                    .col(uuid(Deliveries::CampaignId))
                    .col(uuid(Deliveries::SubscriberId))
                    .col(text(Deliveries::Email))
                    .col(string_len(Deliveries::State, 16))
                    .col(integer(Deliveries::Attempts))
                    .col(text_null(Deliveries::LastError))
                    .col(timestamp_with_time_zone(Deliveries::CreatedAt))
                    .col(timestamp_with_time_zone(Deliveries::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_deliveries_campaign")
                            .from(Deliveries::Table, Deliveries::CampaignId)
                            .to(Campaigns::Table, Campaigns::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_deliveries_campaign_subscriber")
                    .table(Deliveries::Table)
                    .col(Deliveries::CampaignId)
                    .col(Deliveries::SubscriberId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_deliveries_campaign_state")
                    .table(Deliveries::Table)
                    .col(Deliveries::CampaignId)
                    .col(Deliveries::State)
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        for col in [
            double_null(Subscribers::BounceScore),
            big_integer_null(Subscribers::BounceDay),
            double_null(Subscribers::BounceDayWeight),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Subscribers::Table)
                        .add_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [
            Subscribers::BounceScore,
            Subscribers::BounceDay,
            Subscribers::BounceDayWeight,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Subscribers::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        let _ = Subscribers::Id;
        for t in [
            Deliveries::Table.into_iden(),
            CampaignLists::Table.into_iden(),
            Campaigns::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        Ok(())
    }
}
