//! Test databases: every test gets a fresh SQLite file and, when
//! `RUNDBRIEF_TEST_POSTGRES` holds a URL, a fresh schema in that PostgreSQL
//! database too. A configured PostgreSQL that cannot be reached fails the
//! test: it is never skipped.

use rundbrief_store::{ConnectConfig, Store};

pub struct TestDb {
    pub store: Store,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// Fresh, migrated stores: SQLite always, PostgreSQL when configured.
pub async fn stores() -> Vec<TestDb> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let store = Store::connect(&ConnectConfig::new(url))
        .await
        .expect("open SQLite");
    store.migrate().await.expect("migrate SQLite");
    out.push(TestDb {
        store,
        backend: "sqlite",
        _dir: Some(dir),
    });
    if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let cfg = ConnectConfig {
            url: url.clone(),
            max_connections: 4,
            pg_schema: Some(schema),
        };
        let store = Store::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("RUNDBRIEF_TEST_POSTGRES={url} is set but unusable: {e}"));
        store.migrate().await.expect("migrate PostgreSQL");
        out.push(TestDb {
            store,
            backend: "postgres",
            _dir: None,
        });
    }
    out
}

/// A draft campaign `name` to the list `list` (created when missing) whose
/// members are `emails` (added when missing): the setup the scheduler's and
/// the application layer's tests share.
#[allow(dead_code)] // each test crate that includes this file uses its own part
pub async fn campaign_to(
    store: &Store,
    name: &str,
    list: &str,
    emails: &[&str],
) -> rundbrief_store::Campaign {
    use rundbrief_core::{Actor, Address, Attributes};
    if store.find_list(list).await.unwrap().is_none() {
        store.create_list(list, None).await.unwrap();
    }
    for e in emails {
        store
            .add_subscriber(
                &Address::parse(e).unwrap(),
                list,
                None,
                Attributes::new(),
                false,
                Actor::Cli,
                "test",
            )
            .await
            .unwrap();
    }
    store
        .create_campaign(&rundbrief_store::NewCampaign {
            name: name.into(),
            lists: vec![list.into()],
            subject: "Hello {{subscriber.name}}".into(),
            content: "# News\n\nHello.".into(),
            content_kind: rundbrief_core::ContentKind::Markdown,
            layout: None,
            from: None,
            relay: None,
        })
        .await
        .unwrap()
}
