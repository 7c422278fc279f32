//! Lists, subscribers, memberships and the audit trail.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Lists {
    Table,
    Id,
    Name,
    Description,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Subscribers {
    Table,
    Id,
    /// Normal form: local part as given, domain lower-case IDNA.
    Email,
    /// `lower(email)`: the uniqueness key.
    EmailKey,
    Name,
    Attributes,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    SubscriberId,
    ListId,
    Status,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Audit {
    Table,
    Id,
    /// Not a foreign key on purpose: the trail outlives `sub rm`.
    SubscriberId,
    ListId,
    Action,
    Actor,
    Reason,
    Detail,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Lists::Table)
                    .col(pk_uuid(Lists::Id))
                    .col(string_uniq(Lists::Name))
                    .col(text_null(Lists::Description))
                    .col(timestamp_with_time_zone(Lists::CreatedAt))
                    .col(timestamp_with_time_zone(Lists::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Subscribers::Table)
                    .col(pk_uuid(Subscribers::Id))
                    .col(string(Subscribers::Email))
                    .col(string_uniq(Subscribers::EmailKey))
                    .col(string_null(Subscribers::Name))
                    .col(json_binary(Subscribers::Attributes))
                    .col(string_len(Subscribers::Status, 16))
                    .col(timestamp_with_time_zone(Subscribers::CreatedAt))
                    .col(timestamp_with_time_zone(Subscribers::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .col(uuid(Memberships::SubscriberId))
                    .col(uuid(Memberships::ListId))
                    .col(string_len(Memberships::Status, 16))
                    .col(timestamp_with_time_zone(Memberships::CreatedAt))
                    .col(timestamp_with_time_zone(Memberships::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Memberships::SubscriberId)
                            .col(Memberships::ListId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_memberships_subscriber")
                            .from(Memberships::Table, Memberships::SubscriberId)
                            .to(Subscribers::Table, Subscribers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_memberships_list")
                            .from(Memberships::Table, Memberships::ListId)
                            .to(Lists::Table, Lists::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_memberships_list_status")
                    .table(Memberships::Table)
                    .col(Memberships::ListId)
                    .col(Memberships::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Audit::Table)
                    .col(pk_uuid(Audit::Id))
                    .col(uuid(Audit::SubscriberId))
                    .col(uuid_null(Audit::ListId))
                    .col(string_len(Audit::Action, 32))
                    .col(string_len(Audit::Actor, 16))
                    .col(text(Audit::Reason))
                    .col(json_binary_null(Audit::Detail))
                    .col(timestamp_with_time_zone(Audit::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_subscriber")
                    .table(Audit::Table)
                    .col(Audit::SubscriberId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Audit::Table.into_iden(),
            Memberships::Table.into_iden(),
            Subscribers::Table.into_iden(),
            Lists::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
