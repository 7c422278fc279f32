//! Inbound messages at the bounce endpoint: stored raw before the 250, parsed after.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Bounces {
    Table,
    Id,
    ReceivedAt,
    /// `smtp` (the endpoint) or `ingest` (`rundbrief bounce ingest`).
    Source,
    /// SMTP client address, for `smtp`.
    Peer,
    MailFrom,
    /// The RCPT the message was accepted for (a VERP address), if any.
    Rcpt,
    /// The delivery named by the verified VERP token, if any.
    DeliveryId,
    Raw,
    Size,
    /// `pending` until parsed, then `parsed`; `failed` when parsing could not finish.
    State,
    Kind,
    Class,
    /// The parser's full result (JSON).
    Parsed,
    Error,
    ProcessedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Bounces::Table)
                    .col(pk_uuid(Bounces::Id))
                    .col(timestamp_with_time_zone(Bounces::ReceivedAt))
                    .col(string_len(Bounces::Source, 16))
                    .col(string_null(Bounces::Peer))
                    .col(text_null(Bounces::MailFrom))
                    .col(text_null(Bounces::Rcpt))
                    .col(uuid_null(Bounces::DeliveryId))
                    .col(blob(Bounces::Raw))
                    .col(big_integer(Bounces::Size))
                    .col(string_len(Bounces::State, 16))
                    .col(string_len_null(Bounces::Kind, 16))
                    .col(string_len_null(Bounces::Class, 16))
                    .col(json_binary_null(Bounces::Parsed))
                    .col(text_null(Bounces::Error))
                    .col(timestamp_with_time_zone_null(Bounces::ProcessedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_bounces_state")
                    .table(Bounces::Table)
                    .col(Bounces::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_bounces_received")
                    .table(Bounces::Table)
                    .col(Bounces::ReceivedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Bounces::Table).to_owned())
            .await
    }
}
