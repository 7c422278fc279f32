//! `campaigns.skip_dns_check` (issue #18): `campaign start NAME
//! --no-dns-check` marks a campaign running for `serve` to send, and the
//! choice has to reach the `serve` process, which checks the recipients'
//! domains before each pass unless the campaign says to skip it. Default
//! `false` for new and existing campaigns: the check runs.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    SkipDnsCheck,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Campaigns::Table)
                    .add_column(boolean(Campaigns::SkipDnsCheck).default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Campaigns::Table)
                    .drop_column(Campaigns::SkipDnsCheck)
                    .to_owned(),
            )
            .await
    }
}
