//! Two changes for trusting the bounce endpoint:
//!
//! - `bounces.raw_from`: a message addressed to several of our recipients is
//!   stored once. Its first row keeps the bytes; the rows of the other
//!   recipients name that row here and keep none (they used to hold a full
//!   copy each, so one message with ten recipients was stored ten times).
//! - `domain_prunes`: every hard-bounce prune of a campaign delivery, per
//!   receiving domain, so that a burst of hard bounces from one domain in
//!   one campaign (a block in disguise) can be held for the operator
//!   instead of applied. `state` is `applied` (the subscriber was pruned),
//!   `held` (the prune waits for `bounce held release` or `discard`),
//!   `released` or `discarded`; `reason` is the audit text the prune has
//!   or will have.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Bounces {
    Table,
    RawFrom,
}

#[derive(DeriveIden)]
enum DomainPrunes {
    Table,
    Id,
    CampaignId,
    Domain,
    SubscriberId,
    Email,
    Reason,
    State,
    CreatedAt,
    DecidedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Bounces::Table)
                    .add_column(uuid_null(Bounces::RawFrom))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DomainPrunes::Table)
                    .if_not_exists()
                    .col(pk_uuid(DomainPrunes::Id))
                    .col(uuid(DomainPrunes::CampaignId))
                    .col(string(DomainPrunes::Domain))
                    .col(uuid(DomainPrunes::SubscriberId))
                    .col(string(DomainPrunes::Email))
                    .col(text(DomainPrunes::Reason))
                    .col(string(DomainPrunes::State))
                    .col(timestamp_with_time_zone(DomainPrunes::CreatedAt))
                    .col(timestamp_with_time_zone_null(DomainPrunes::DecidedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_domain_prunes_campaign_domain")
                    .table(DomainPrunes::Table)
                    .col(DomainPrunes::CampaignId)
                    .col(DomainPrunes::Domain)
                    .col(DomainPrunes::State)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DomainPrunes::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Bounces::Table)
                    .drop_column(Bounces::RawFrom)
                    .to_owned(),
            )
            .await
    }
}
