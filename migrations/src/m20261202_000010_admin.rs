//! The web dashboard's own tables (`rundbrief admin`):
//!
//! - `admin_users`: who may log in; `password_hash` is an argon2id PHC
//!   string (salt and parameters included), never the password.
//! - `admin_keys`: API keys; only the SHA-256 of a key is stored (hex), so a
//!   database dump does not give them away; `scope` is `read` or `write`.
//! - `admin_audit`: every state-changing action taken through the
//!   dashboard or the API, with the admin (or key) that took it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AdminUsers {
    Table,
    Id,
    Name,
    PasswordHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AdminKeys {
    Table,
    Id,
    Name,
    Scope,
    KeyHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AdminAudit {
    Table,
    Id,
    At,
    Actor,
    Action,
    Target,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AdminUsers::Table)
                    .if_not_exists()
                    .col(pk_uuid(AdminUsers::Id))
                    .col(string_uniq(AdminUsers::Name))
                    .col(text(AdminUsers::PasswordHash))
                    .col(timestamp_with_time_zone(AdminUsers::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdminKeys::Table)
                    .if_not_exists()
                    .col(pk_uuid(AdminKeys::Id))
                    .col(string_uniq(AdminKeys::Name))
                    .col(string(AdminKeys::Scope))
                    .col(string_uniq(AdminKeys::KeyHash))
                    .col(timestamp_with_time_zone(AdminKeys::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AdminAudit::Table)
                    .if_not_exists()
                    .col(pk_uuid(AdminAudit::Id))
                    .col(timestamp_with_time_zone(AdminAudit::At))
                    .col(string(AdminAudit::Actor))
                    .col(string(AdminAudit::Action))
                    .col(string(AdminAudit::Target))
                    .col(text(AdminAudit::Detail))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_admin_audit_at")
                    .table(AdminAudit::Table)
                    .col(AdminAudit::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AdminAudit::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AdminKeys::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(AdminUsers::Table).to_owned())
            .await
    }
}
