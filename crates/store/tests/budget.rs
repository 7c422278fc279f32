//! Shared send grants (issue #18): the grant statement never hands out more
//! than a window's limit, however many handles ask at once — two `Store`
//! handles (two connection pools, as two workers have) on one SQLite file,
//! and on PostgreSQL when `RUNDBRIEF_TEST_POSTGRES` is set.

use rundbrief_store::{ConnectConfig, Store};

/// Two handles on one fresh database per backend.
async fn pairs() -> Vec<(&'static str, Store, Store, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let a = Store::connect(&ConnectConfig::new(&url)).await.unwrap();
    a.migrate().await.unwrap();
    let b = Store::connect(&ConnectConfig::new(&url)).await.unwrap();
    out.push(("sqlite", a, b, Some(dir)));
    if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
        let cfg = ConnectConfig {
            url: url.clone(),
            max_connections: 4,
            pg_schema: Some(format!("t_{}", uuid::Uuid::now_v7().simple())),
        };
        let a = Store::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("RUNDBRIEF_TEST_POSTGRES={url} is set but unusable: {e}"));
        a.migrate().await.unwrap();
        let b = Store::connect(&cfg).await.unwrap();
        out.push(("postgres", a, b, None));
    }
    out
}

#[tokio::test]
async fn issue_18_concurrent_takes_never_exceed_the_window_limit() {
    for (backend, a, b, _dir) in pairs().await {
        // 40 takers of 3 on two handles race for a window of 50.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move { s.take_grants("google", 1_000, 50, 3).await.unwrap() });
        }
        let mut total = 0;
        let mut refused = 0;
        while let Some(g) = tasks.join_next().await {
            let g = g.unwrap();
            assert!(g.granted <= 3, "{backend}: {g:?}");
            assert_eq!(g.window_start, 1_000, "{backend}");
            total += g.granted;
            refused += u32::from(g.granted == 0);
        }
        assert_eq!(total, 50, "{backend}: exactly the limit, no more");
        assert!(refused >= 1, "{backend}: the last takers got nothing");
        // The rest of a window is handed out, not refused whole.
        let g = a.take_grants("yahoo", 1_000, 5, 4).await.unwrap();
        assert_eq!(g.granted, 4, "{backend}");
        assert_eq!(
            b.take_grants("yahoo", 1_000, 5, 4).await.unwrap().granted,
            1,
            "{backend}"
        );
        assert_eq!(
            a.take_grants("yahoo", 1_000, 5, 4).await.unwrap().granted,
            0,
            "{backend}"
        );
        // Keys are separate; a new window starts from zero.
        assert_eq!(
            b.take_grants("*", 1_000, 10, 10).await.unwrap().granted,
            10,
            "{backend}"
        );
        let g = b.take_grants("google", 2_000, 50, 3).await.unwrap();
        assert_eq!((g.granted, g.window_start), (3, 2_000), "{backend}");
        // A worker whose clock is behind gets nothing and learns the window.
        let g = a.take_grants("google", 1_000, 50, 3).await.unwrap();
        assert_eq!((g.granted, g.window_start), (0, 2_000), "{backend}");
        // A lower limit (a slowed worker) stops earlier in the same window.
        assert_eq!(
            a.take_grants("google", 2_000, 4, 3).await.unwrap().granted,
            1,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn issue_18_a_slow_down_reaches_the_other_handle() {
    for (backend, a, b, _dir) in pairs().await {
        assert_eq!(
            a.take_grants("google", 1_000, 20, 5).await.unwrap().cap,
            None
        );
        a.cap_grants("google", 10, 60_000, 1_000).await.unwrap();
        let g = b.take_grants("google", 1_000, 20, 5).await.unwrap();
        assert_eq!(g.cap, Some((10, 60_000)), "{backend}");
        // A higher cap does not replace a lower one still in force ...
        b.cap_grants("google", 15, 90_000, 2_000).await.unwrap();
        let g = a.take_grants("google", 2_000, 20, 1).await.unwrap();
        assert_eq!(g.cap, Some((10, 60_000)), "{backend}");
        // ... but replaces one that has run out.
        b.cap_grants("google", 15, 190_000, 70_000).await.unwrap();
        let g = a.take_grants("google", 70_000, 20, 1).await.unwrap();
        assert_eq!(g.cap, Some((15, 190_000)), "{backend}");
        // A key first seen in a slow-down gets its grants as usual.
        b.cap_grants("new.example", 2, 5_000, 1_000).await.unwrap();
        let g = a.take_grants("new.example", 1_000, 20, 5).await.unwrap();
        assert_eq!((g.granted, g.cap), (5, Some((2, 5_000))), "{backend}");
    }
}
