//! `lists.label`: the part of `List-Id` before the domain (RFC 2919), so
//! that a list whose name has spaces or non-ASCII letters (`Team News`,
//! `bücher`) still gets a valid `List-Id` (issue #20). Before, the name
//! itself went into the header and every send of such a list failed.
//!
//! Existing lists get the label their name gives (`Team News` →
//! `team-news`, `rundbrief_core::ListLabel::derive`); a name that gives
//! none gets `list-` and the first 8 hex digits of its id, and a label
//! already taken gets `-2`, `-3`, … Labels are unique (index
//! `idx_lists_label`). The column is nullable only because SQLite cannot
//! add a NOT NULL column without a default; the store always sets it.

use rundbrief_core::ListLabel;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Lists {
    Table,
    Label,
}

const INDEX: &str = "idx_lists_label";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Lists::Table)
                    .add_column(ColumnDef::new(Lists::Label).string().null())
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        // The id only names a list whose name gives no label; as text on both.
        let select = match backend {
            DatabaseBackend::Postgres => {
                "SELECT CAST(id AS TEXT) AS id_text, name FROM lists ORDER BY created_at, name"
            }
            _ => "SELECT lower(hex(id)) AS id_text, name FROM lists ORDER BY created_at, name",
        };
        let rows = db
            .query_all_raw(Statement::from_string(backend, select))
            .await?;
        let mut taken = std::collections::BTreeSet::new();
        for row in rows {
            let name: String = row.try_get("", "name")?;
            let id: String = row.try_get("", "id_text")?;
            let hex: String = id.chars().filter(char::is_ascii_hexdigit).take(8).collect();
            let base = ListLabel::derive(&name)
                .map(|l| l.as_str().to_owned())
                .unwrap_or_else(|_| format!("list-{hex}"));
            let mut label = base.clone();
            let mut n = 2;
            while !taken.insert(label.clone()) {
                label = format!("{base}-{n}");
                n += 1;
            }
            let sql = match backend {
                DatabaseBackend::Postgres => "UPDATE lists SET label = $1 WHERE name = $2",
                _ => "UPDATE lists SET label = ? WHERE name = ?",
            };
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [label.into(), name.into()],
            ))
            .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Lists::Table)
                    .col(Lists::Label)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Lists::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Lists::Table)
                    .drop_column(Lists::Label)
                    .to_owned(),
            )
            .await
    }
}
