//! Issue #20 point 6: every list has a List-Id label. New lists derive it
//! from their name or are refused with what to do; migration
//! m20261202_000007 gives existing lists one.

mod common;

use rundbrief_core::ListLabel;
use rundbrief_migrations::{Migrator, MigratorTrait};
use rundbrief_store::{ConnectConfig, Store, StoreError};
use sea_orm::{ConnectionTrait, Database, DatabaseBackend, Statement};

#[tokio::test]
async fn issue_20_lists_get_a_valid_label_or_a_reason() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let l = s.create_list("Team News", None).await.unwrap();
        assert_eq!(l.label.as_str(), "team-news", "{b}");
        assert_eq!(s.list("Team News").await.unwrap().label, l.label, "{b}");

        let e = s.create_list("bücher", None).await.unwrap_err();
        assert!(matches!(e, StoreError::ListLabel(_)), "{b}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("--label buecher"), "{b}: {msg}");
        assert!(s.find_list("bücher").await.unwrap().is_none(), "{b}");

        let label = ListLabel::parse("buecher").unwrap();
        let l = s
            .create_list_labelled("bücher", Some(&label), None)
            .await
            .unwrap();
        assert_eq!(l.label.as_str(), "buecher", "{b}");

        // Another name that gives a label already taken.
        let e = s.create_list("team news", None).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::ListLabelTaken { other, .. } if other == "Team News"),
            "{b}: {e}"
        );
        let summaries = s.list_summaries().await.unwrap();
        let labels: Vec<&str> = summaries.iter().map(|x| x.list.label.as_str()).collect();
        assert_eq!(labels, ["team-news", "buecher"], "{b}");
    }
}

#[tokio::test]
async fn issue_20_migration_gives_existing_lists_labels() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let db = Database::connect(&url).await.unwrap();
    // The schema as it was before the label column.
    Migrator::up(&db, Some(6)).await.unwrap();
    for (i, name) in ["Team News", "bücher", "team-news", "news"]
        .iter()
        .enumerate()
    {
        let id = uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 + i as u128);
        db.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            "INSERT INTO lists (id, name, description, created_at, updated_at) VALUES (?, ?, NULL, ?, ?)",
            [
                id.into(),
                (*name).into(),
                chrono::Utc::now().into(),
                chrono::Utc::now().into(),
            ],
        ))
        .await
        .unwrap();
    }
    drop(db);
    let store = Store::connect(&ConnectConfig::new(url)).await.unwrap();
    let applied = store.migrate().await.unwrap();
    assert_eq!(
        applied.first().map(String::as_str),
        Some("m20261202_000007_list_ids")
    );
    let label = |name: &'static str| {
        let store = store.clone();
        async move { store.list(name).await.unwrap().label.as_str().to_owned() }
    };
    assert_eq!(label("Team News").await, "team-news");
    assert_eq!(label("bücher").await, "list-01930000");
    assert_eq!(label("team-news").await, "team-news-2");
    assert_eq!(label("news").await, "news");
    // Labels are unique from now on.
    let e = store.create_list("News!", None).await.unwrap_err();
    assert!(matches!(e, StoreError::ListLabelTaken { .. }), "{e}");
}
