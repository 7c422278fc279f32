//! Shaping per provider and the reputation circuit breaker over real SMTP
//! to the sink on loopback, on SQLite and (when `RUNDBRIEF_TEST_POSTGRES`
//! is set) PostgreSQL: a provider that starts blocking is suspended while
//! another provider's mail still goes out, the suspension survives a
//! restart, `resume --provider` lifts it, and complaints pause the whole
//! campaign until `resume`.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use rundbrief_app::App;
use rundbrief_app::endpoint::{EndpointOptions, start_endpoint};
use rundbrief_app::sending::SendOptions;
use rundbrief_core::config::ProviderConfig;
use rundbrief_core::{CampaignState, Config, Secret};
use rundbrief_scheduler::{Clock, Ended, ManualClock};
use rundbrief_smtpd::sink::{Rule, Sink, SinkConfig, SinkStats, SinkTls};
use rundbrief_smtpd::{CancellationToken, Limits};
use rundbrief_store::Store;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config() -> Config {
    let mut cfg = Config {
        secret: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        ..Config::default()
    };
    cfg.sending.from = Some("News <news@example.org>".into());
    cfg.sending.bounce_domain = Some("bounce.example.org".into());
    cfg.sending.public_url = Some("https://news.example.org".into());
    cfg.sending.rate = 100_000;
    cfg.sending.domain_rate = 100_000;
    cfg.sending.domain_concurrency = 16;
    // No domain check: these tests never ask a resolver.
    cfg.dns.check = false;
    // Two domains of one provider group, known by name (no DNS asked).
    cfg.shaping.providers.insert(
        "blocky".into(),
        ProviderConfig {
            domains: vec!["blocky.example".into(), "blocky2.example".into()],
            ..ProviderConfig::default()
        },
    );
    cfg.breaker.window = 50;
    cfg.breaker.min_sample = 10;
    cfg.breaker.block_ratio = 0.2;
    cfg.breaker.complaint_ratio = 0.05;
    cfg
}

/// Counts the breaker's reports, as the CLI's metrics do.
#[derive(Default)]
struct Trips(Mutex<Vec<(String, Option<String>)>>);
impl rundbrief_app::Observer for Trips {
    fn breaker_tripped(&self, campaign: &str, provider: Option<&str>) {
        self.0
            .lock()
            .unwrap()
            .push((campaign.to_string(), provider.map(str::to_string)));
    }
}

fn app_on(store: &Store, clock: Arc<dyn Clock>, observer: Arc<dyn rundbrief_app::Observer>) -> App {
    App::new(config(), store.clone(), clock, observer)
}

/// A sink with `rules` on a free loopback port.
async fn sink(
    rules: Vec<Rule>,
    bounce_to: Option<SocketAddr>,
    stop: &CancellationToken,
) -> (
    SocketAddr,
    Arc<SinkStats>,
    tokio::task::JoinHandle<Result<(), rundbrief_smtpd::sink::SinkError>>,
) {
    let sink = Sink::new(SinkConfig {
        rules,
        bounce_to,
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .unwrap();
    let stats = sink.stats();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Refusing a provider means many refusals on one connection: more than
    // the default error budget, after which the sink would hang up.
    let limits = Limits {
        max_errors: 10_000,
        ..Limits::default()
    };
    (
        addr,
        stats,
        tokio::spawn(sink.run(listener, limits, stop.clone())),
    )
}

async fn send(app: &App, relay: SocketAddr) -> rundbrief_app::sending::SendReport {
    app.send_foreground(
        "c",
        &SendOptions {
            relay: Some(format!("smtp://{relay}")),
            pool: Some(2),
            wait: false,
            ..SendOptions::default()
        },
        &CancellationToken::new(),
        &|_, _| {},
    )
    .await
    .unwrap()
}

fn provider<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no provider {name} in {status:#}"))
}

#[tokio::test]
async fn a_blocking_provider_is_suspended_while_the_others_still_get_mail() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let mut people = Vec::new();
        for i in 0..30 {
            people.push(format!("r{i}@blocky.example"));
            people.push(format!("r{i}@fine.example"));
            people.push(format!("s{i}@blocky2.example"));
            people.push(format!("s{i}@fine.example"));
        }
        let refs: Vec<&str> = people.iter().map(String::as_str).collect();
        common::campaign_to(s, "c", "news", &refs).await;
        let trips = Arc::new(Trips::default());
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let app = app_on(s, clock.clone(), trips.clone());
        let stop = CancellationToken::new();
        // The provider lets 5 messages through, then blocks us.
        let (relay, stats, task) = sink(
            vec![
                Rule::refuse_after("5:*@blocky*.example=550 5.7.1 Blocked for spam", false)
                    .unwrap(),
            ],
            None,
            &stop,
        )
        .await;
        let r = send(&app, relay).await;
        assert_eq!(
            r.ended,
            Ended::Suspended,
            "{b}: only held deliveries are left"
        );
        assert_eq!(r.state, CampaignState::Running, "{b}: not paused");
        let v = app.campaign_status("c").await.unwrap();
        let fine = provider(&v, "fine.example");
        assert_eq!(
            (fine["sent"].as_u64(), fine["pending"].as_u64()),
            (Some(60), Some(0)),
            "{b}: {v:#}"
        );
        assert_eq!(fine["state"], "waiting", "{b}: nothing left: {v:#}");
        let blocky = provider(&v, "blocky");
        assert_eq!(blocky["state"], "suspended", "{b}: {v:#}");
        assert_eq!(blocky["sent"], 5, "{b}: the five before the block");
        let reason = blocky["reason"].as_str().unwrap();
        assert!(reason.contains("refused as blocks"), "{b}: {reason}");
        let rejected = r.counts.rejected;
        assert!(
            (5..=20).contains(&rejected),
            "{b}: the breaker stopped early: {rejected} refused"
        );
        let held = blocky["pending"].as_u64().unwrap();
        assert_eq!(held, 60 - 5 - rejected, "{b}: the rest waits");
        assert!(v["paused_reason"].is_null(), "{b}");
        assert!(
            v["errors"].as_array().unwrap().iter().any(|e| e["error"]
                .as_str()
                .is_some_and(|t| t.starts_with("held: provider `blocky` is suspended"))),
            "{b}: {v:#}"
        );
        assert_eq!(
            trips.0.lock().unwrap().as_slice(),
            &[("c".to_string(), Some("blocky".to_string()))],
            "{b}: one trip reported for the metric"
        );
        // Blocks are the sender's problem: nobody was pruned.
        let counts = s.metric_counts().await.unwrap();
        assert!(
            counts
                .subscribers
                .iter()
                .all(|(st, n)| st != "bounced" || *n == 0),
            "{b}: {counts:?}"
        );

        // A restart: a new process (a new app, a new breaker in memory) an
        // hour later, when the held deliveries are due again: the stored
        // suspension still holds them; the sink sees nothing more.
        let before = stats.snapshot();
        clock.set(clock.now() + chrono::Duration::hours(1));
        let restarted = app_on(s, clock.clone(), Arc::new(rundbrief_app::NoObserver));
        let r = send(&restarted, relay).await;
        assert_eq!(r.ended, Ended::Suspended, "{b}");
        assert_eq!(
            stats.snapshot().recipients,
            before.recipients,
            "{b}: nothing sent to the suspended provider"
        );
        let v = restarted.campaign_status("c").await.unwrap();
        assert_eq!(provider(&v, "blocky")["state"], "suspended", "{b}");
        assert_eq!(
            provider(&v, "blocky")["pending"].as_u64(),
            Some(held),
            "{b}"
        );
        stop.cancel();
        task.await.unwrap().unwrap();

        // Only a suspended provider can be lifted; the error says which are.
        let e = restarted
            .lift_breaker("c", Some("fine.example"))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("not suspended") && e.to_string().contains("blocky"),
            "{b}: {e}"
        );
        // resume --provider blocky: its held deliveries go out (the
        // provider takes our mail again).
        let lifted = restarted.lift_breaker("c", Some("blocky")).await.unwrap();
        assert_eq!(lifted.providers, vec!["blocky".to_string()], "{b}");
        let v = restarted.campaign_status("c").await.unwrap();
        assert_eq!(provider(&v, "blocky")["state"], "sending", "{b}: {v:#}");
        let stop = CancellationToken::new();
        let (relay, stats, task) = sink(vec![], None, &stop).await;
        let r = send(&restarted, relay).await;
        assert_eq!(r.ended, Ended::Finished, "{b}");
        assert_eq!(
            stats.snapshot().messages,
            held,
            "{b}: every held delivery sent"
        );
        let v = restarted.campaign_status("c").await.unwrap();
        assert_eq!(
            provider(&v, "blocky")["sent"].as_u64(),
            Some(5 + held),
            "{b}"
        );
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn complaints_pause_the_whole_campaign_until_resume() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let mut people: Vec<String> = (0..30).map(|i| format!("reader{i}@fine.example")).collect();
        people.push("grumpy1@other.example".into());
        people.push("grumpy2@fine.example".into());
        // Always busy: keeps the campaign running after the first send.
        people.push("slow@fine.example".into());
        let refs: Vec<&str> = people.iter().map(String::as_str).collect();
        common::campaign_to(s, "c", "news", &refs).await;
        let trips = Arc::new(Trips::default());
        let app = app_on(s, Arc::new(rundbrief_scheduler::SystemClock), trips.clone());
        let stop = CancellationToken::new();
        let ep = start_endpoint(
            &app,
            &EndpointOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                max_size: 1 << 20,
                max_connections: 16,
                parse: false,
                starttls: false,
            },
            stop.clone(),
        )
        .await
        .unwrap();
        let (relay, stats, task) = sink(
            vec![
                Rule::defer("slow@*=451 4.2.0 Mailbox busy, try again later").unwrap(),
                Rule::complain("grumpy*@*").unwrap(),
            ],
            Some(ep.addr),
            &stop,
        )
        .await;
        let r = send(&app, relay).await;
        assert!(
            matches!(r.ended, Ended::RetriesLater(_)),
            "{b}: {:?}",
            r.ended
        );
        assert_eq!(r.counts.sent, 32, "{b}");
        stats
            .wait_for(Duration::from_secs(20), |c| c.complaints_sent == 2)
            .await
            .unwrap_or_else(|| panic!("{b}: the complaints did not arrive"));
        assert_eq!(app.bounces().process_pending().await.unwrap(), 2, "{b}");
        // The next run (serve's next tick, or `campaign send`) sees 2
        // complaints about 32 messages: 6.25 % > 5 %.
        let r = send(&app, relay).await;
        assert_eq!(r.ended, Ended::Stopped(CampaignState::Paused), "{b}");
        let v = app.campaign_status("c").await.unwrap();
        assert_eq!(v["state"], "paused", "{b}");
        let reason = v["paused_reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("2 complaints about 32 messages"),
            "{b}: {v:#}"
        );
        assert_eq!(
            trips.0.lock().unwrap().as_slice(),
            &[("c".to_string(), None)],
            "{b}: the campaign-wide trip is reported"
        );
        // `campaign resume c`: the pause is lifted, the complaint count
        // starts anew, so the campaign is not paused again at once.
        let lifted = app.lift_breaker("c", None).await.unwrap();
        assert_eq!(lifted.paused_reason.as_deref(), Some(reason), "{b}");
        assert_eq!(lifted.from, CampaignState::Paused);
        let r = send(&app, relay).await;
        assert!(
            matches!(r.ended, Ended::RetriesLater(_)),
            "{b}: {:?}",
            r.ended
        );
        let v = app.campaign_status("c").await.unwrap();
        assert_eq!(
            (v["state"].as_str(), v["paused_reason"].is_null()),
            (Some("running"), true),
            "{b}: {v:#}"
        );
        stop.cancel();
        task.await.unwrap().unwrap();
        ep.finish().await.unwrap();
    }
}

#[tokio::test]
async fn a_domain_hosted_by_a_provider_is_shaped_with_it_through_its_mx() {
    use rundbrief_app::shaping::{Shaping, throttle};
    use rundbrief_dns::responder::{Fault, Responder};
    let dns = Responder::start().await.unwrap();
    dns.mx("corp.example", 300, &[(10, "aspmx.l.google.com")]);
    dns.mx("own.example", 300, &[(10, "mx.own.example")]);
    dns.fault("broken.example", Some(Fault::ServFail));
    let mut cfg = config();
    cfg.dns.servers = vec![dns.addr().to_string()];
    cfg.dns.timeout_secs = 1;
    cfg.dns.attempts = 1;
    cfg.shaping.providers.insert(
        "google".into(),
        ProviderConfig {
            rate_per_second: Some(3),
            connections: Some(2),
            rate_per_hour: Some(1000),
            ..ProviderConfig::default()
        },
    );
    let shaping = Arc::new(Shaping::from_config(&cfg).unwrap());
    // By name: no query.
    assert_eq!(
        shaping.group_of("gmail.com").await.as_deref(),
        Some("google")
    );
    assert_eq!(dns.queries(), 0);
    // By MX (Google Workspace), by nothing, and a lookup that fails.
    assert_eq!(
        shaping.group_of("corp.example").await.as_deref(),
        Some("google")
    );
    assert_eq!(shaping.group_of("own.example").await, None);
    assert_eq!(shaping.group_of("broken.example").await, None);
    assert!(dns.queries() >= 3);
    // Status reads the cache: the looked-up domain is counted with Google.
    assert_eq!(&*shaping.provider_name("corp.example"), "google");
    assert_eq!(&*shaping.provider_name("own.example"), "own.example");
    // The throttle: one key and the group's limits for all of Google's domains.
    let t = throttle(&cfg, Arc::clone(&shaping));
    let (a, b) = (t.key_of("corp.example").await, t.key_of("GMAIL.com").await);
    assert_eq!((&*a.name, a.group), ("google", true));
    assert_eq!(a, b);
    let l = t.limits_of("google");
    assert_eq!((l.rate, l.concurrency, l.rate_per_hour), (3, 2, Some(1000)));
    assert_eq!(&*t.key_of("own.example").await.name, "own.example");
    assert_eq!(t.limits_of("own.example").rate, cfg.sending.domain_rate);
    let burst = (0..10).filter(|_| t.try_now("google")).count();
    assert_eq!(burst, 3, "Google's rate, for every Google domain together");

    // Without `[dns] servers` nothing is asked: names alone decide.
    let before = dns.queries();
    let mut quiet = cfg.clone();
    quiet.dns.servers.clear();
    let by_name = Shaping::from_config(&quiet).unwrap();
    assert_eq!(by_name.group_of("corp.example").await, None);
    assert_eq!(
        by_name.group_of("gmail.com").await.as_deref(),
        Some("google")
    );
    assert_eq!(dns.queries(), before, "no lookup without [dns] servers");
}

#[tokio::test]
async fn a_provider_answering_421_is_shown_slowed_with_its_rate() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let mut people = Vec::new();
        for i in 0..10 {
            people.push(format!("r{i}@blocky.example"));
            people.push(format!("r{i}@fine.example"));
        }
        let refs: Vec<&str> = people.iter().map(String::as_str).collect();
        common::campaign_to(s, "c", "news", &refs).await;
        let mut cfg = config();
        // Only the slow-down here: the breaker never trips (not above 100 %).
        cfg.breaker.block_ratio = 1.0;
        if let Some(p) = cfg.shaping.providers.get_mut("blocky") {
            p.rate_per_second = Some(1_000_000);
        }
        let app = App::new(
            cfg,
            s.clone(),
            Arc::new(rundbrief_scheduler::SystemClock),
            Arc::new(rundbrief_app::NoObserver),
        );
        let stop = CancellationToken::new();
        let (relay, _stats, task) = sink(
            vec![
                Rule::refuse_after(
                    "2:*@blocky*.example=421 4.7.0 Too many messages, slow down",
                    true,
                )
                .unwrap(),
            ],
            None,
            &stop,
        )
        .await;
        let r = send(&app, relay).await;
        assert!(
            matches!(r.ended, Ended::RetriesLater(_)),
            "{b}: {:?}",
            r.ended
        );
        assert_eq!((r.counts.sent, r.counts.deferred), (12, 8), "{b}");
        let v = app.campaign_status("c").await.unwrap();
        let blocky = provider(&v, "blocky");
        assert_eq!(blocky["state"], "slowed", "{b}: {v:#}");
        let rate = blocky["rate"].as_f64().unwrap();
        assert_eq!(blocky["rate_per_s"], blocky["rate"], "{b}");
        assert!(
            (1.0..=500_000.0).contains(&rate),
            "{b}: halved at least once: {rate}"
        );
        assert!(
            blocky["reason"].as_str().unwrap().contains("421 4.7.0"),
            "{b}: {v:#}"
        );
        assert_ne!(provider(&v, "fine.example")["state"], "slowed", "{b}");
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
