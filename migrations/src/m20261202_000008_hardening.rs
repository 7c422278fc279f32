//! Hardening from the outside audit (issue #21):
//!
//! - `lists.public`: whether the list's subscribe form (`POST /s/NAME`) takes
//!   requests. Default `false` for new *and existing* lists: a form that
//!   answers only for public lists cannot be used to find out which lists
//!   exist, and no list is opened to anonymous sign-ups by an upgrade. The
//!   operator opens a list with `rundbrief list edit NAME --public`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Lists {
    Table,
    Public,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Lists::Table)
                    .add_column(boolean(Lists::Public).default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Lists::Table)
                    .drop_column(Lists::Public)
                    .to_owned(),
            )
            .await
    }
}
