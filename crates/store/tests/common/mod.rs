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
