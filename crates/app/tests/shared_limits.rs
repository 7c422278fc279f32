//! Issue #18, "Limits hold across workers": two workers — two `App`s, each
//! with its own store connection to one database — send one campaign to
//! one sink on loopback, and the provider's rate holds for both together.
//!
//! Runs on PostgreSQL when `RUNDBRIEF_TEST_POSTGRES` is set (the setting
//! for several workers), else on two handles to one SQLite file.
//!
//! Without sharing (`[sending] shared_limits = false`) the same run sends
//! about twice the rate: measured on 2026-12-03, PostgreSQL, 200 messages
//! at a provider rate of 20/s, per aligned second 21, 59, 40, 33, 20, 20, 7
//! (each worker's governor bursts, then the one whose claims ran out first
//! stops). Shared: 20 in every full second, 200 in 11 seconds (18.2/s).

#[path = "../../store/tests/common/mod.rs"]
#[allow(dead_code)] // only `campaign_to` is used here
mod common;

use rundbrief_app::sending::SendOptions;
use rundbrief_app::{App, NoObserver};
use rundbrief_core::config::ProviderConfig;
use rundbrief_core::{CampaignState, Config, Secret};
use rundbrief_scheduler::SystemClock;
use rundbrief_smtpd::{
    CancellationToken, DataDecision, Decision, Envelope, Handler, Recipient, ServerConfig,
    SessionInfo,
};
use rundbrief_store::{ConnectConfig, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The provider's rate, messages per second for all workers together.
const RATE: u32 = 20;
/// Recipients at the provider.
const RECIPIENTS: usize = 200;

fn config() -> Config {
    let mut cfg = Config {
        secret: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        ..Config::default()
    };
    cfg.sending.from = Some("News <news@example.org>".into());
    cfg.sending.bounce_domain = Some("bounce.example.org".into());
    cfg.sending.public_url = Some("https://news.example.org".into());
    cfg.sending.rate = 1_000;
    cfg.sending.domain_rate = 1_000;
    cfg.sending.domain_concurrency = 4;
    assert!(cfg.sending.shared_limits, "shared by default");
    // Two domains of one provider group, known by name (no DNS asked).
    cfg.shaping.providers.insert(
        "slowmail".into(),
        ProviderConfig {
            domains: vec!["slow.example".into(), "slow2.example".into()],
            rate_per_second: Some(RATE),
            ..ProviderConfig::default()
        },
    );
    cfg
}

/// A sink that accepts everything and notes when each message arrived
/// (ms since the Unix epoch, the clock the throttle's windows use).
#[derive(Default)]
struct Timed(Mutex<Vec<u128>>);

impl Handler for Timed {
    async fn rcpt(&self, _: &SessionInfo, _: &Envelope, _: &Recipient) -> Decision {
        Decision::Accept
    }
    async fn data(&self, _: &SessionInfo, _: &Envelope, _: Vec<u8>) -> DataDecision {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        self.0.lock().unwrap().push(ms);
        DataDecision::accept()
    }
}

/// Two handles on one fresh database: PostgreSQL when configured, else SQLite.
async fn two_stores() -> (&'static str, Store, Store, Option<tempfile::TempDir>) {
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
        return ("postgres", a, b, None);
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let a = Store::connect(&ConnectConfig::new(&url)).await.unwrap();
    a.migrate().await.unwrap();
    let b = Store::connect(&ConnectConfig::new(&url)).await.unwrap();
    ("sqlite", a, b, Some(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn issue_18_two_workers_keep_to_one_provider_rate() {
    let (backend, a, b, _dir) = two_stores().await;
    let people: Vec<String> = (0..RECIPIENTS)
        .map(|i| format!("r{i}@slow{}.example", if i % 2 == 0 { "" } else { "2" }))
        .collect();
    let refs: Vec<&str> = people.iter().map(String::as_str).collect();
    common::campaign_to(&a, "c", "news", &refs).await;

    let sink = Arc::new(Timed::default());
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = listener.local_addr().unwrap();
    let server = tokio::spawn(rundbrief_smtpd::run(
        listener,
        ServerConfig::default(),
        Arc::clone(&sink),
        None,
        stop.clone(),
    ));

    let worker = |store: Store| async move {
        let app = App::new(config(), store, Arc::new(SystemClock), Arc::new(NoObserver));
        app.send_foreground(
            "c",
            &SendOptions {
                relay: Some(format!("smtp://{relay}")),
                pool: Some(4),
                wait: true,
                no_dns_check: true,
                ..SendOptions::default()
            },
            &CancellationToken::new(),
            &|_, _| {},
        )
        .await
        .unwrap()
    };
    let (ra, rb) = tokio::time::timeout(std::time::Duration::from_secs(25), async {
        tokio::join!(
            tokio::spawn(worker(a.clone())),
            tokio::spawn(worker(b.clone()))
        )
    })
    .await
    .expect("the send finishes in time");
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    stop.cancel();
    server.await.unwrap().unwrap();

    // A worker that finds nothing left to claim may return before the
    // other has finished (its run ends `Suspended` while the rest is
    // claimed by the other worker): the campaign is judged from the store.
    let c = a.campaign("c").await.unwrap();
    assert_eq!(
        a.campaign_state(c.campaign.id).await.unwrap(),
        CampaignState::Finished,
        "{backend}: {:?} / {:?}",
        ra.ended,
        rb.ended
    );
    let counts = a.campaign_counts(c.campaign.id).await.unwrap();
    assert_eq!(counts.sent, RECIPIENTS as u64, "{backend}: {counts:?}");
    assert!(
        ra.sent_now > 0 && rb.sent_now > 0,
        "{backend}: both workers sent ({} + {})",
        ra.sent_now,
        rb.sent_now
    );
    let times = sink.0.lock().unwrap().clone();
    assert_eq!(times.len(), RECIPIENTS, "{backend}");
    // Messages per aligned second, the throttle's windows.
    let mut per_second: BTreeMap<u128, u32> = BTreeMap::new();
    for t in &times {
        *per_second.entry(t / 1000).or_default() += 1;
    }
    let busiest = per_second.values().copied().max().unwrap();
    let (first, last) = (
        *per_second.keys().next().unwrap(),
        *per_second.keys().last().unwrap(),
    );
    let seconds = (last - first + 1) as f64;
    let rate = RECIPIENTS as f64 / seconds;
    // A message granted at the end of one window may be accepted just
    // after it: at most the sends in flight (4 per worker) spill over.
    assert!(
        busiest <= RATE + 8,
        "{backend}: {busiest} messages in one second at a rate of {RATE}/s: {per_second:?}"
    );
    assert!(
        rate <= f64::from(RATE) * 1.1,
        "{backend}: {rate:.1}/s over {seconds} s at a rate of {RATE}/s: {per_second:?}"
    );
    eprintln!("{backend}: {rate:.1}/s, busiest second {busiest}: {per_second:?}");
}
