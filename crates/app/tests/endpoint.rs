//! The bounce endpoint and the held-prune safety net over real SMTP on
//! loopback, on SQLite and (when `RUNDBRIEF_TEST_POSTGRES` is set)
//! PostgreSQL: one stored copy per message, capped storage, per-address
//! rate limits, mail to postmaster, and a domain whose every address
//! answers 550 5.1.1 being held instead of pruned.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use rundbrief_app::App;
use rundbrief_app::endpoint::{EndpointOptions, start_endpoint};
use rundbrief_app::sending::SendOptions;
use rundbrief_core::{Address, Config, Secret, SubscriberStatus};
use rundbrief_smtpd::client::{Client, ClientStep};
use rundbrief_smtpd::sink::{Rule, Sink, SinkConfig, SinkTls};
use rundbrief_smtpd::{CancellationToken, Limits};
use rundbrief_store::{BounceQuery, POSTMASTER_KIND, Store};
use std::sync::Arc;
use std::time::Duration;

const DOMAIN: &str = "bounce.example.org";

fn config() -> Config {
    let mut cfg = Config {
        secret: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        ..Config::default()
    };
    cfg.sending.from = Some("News <news@example.org>".into());
    cfg.sending.bounce_domain = Some(DOMAIN.into());
    cfg.sending.public_url = Some("https://news.example.org".into());
    cfg.sending.rate = 100_000;
    cfg.sending.domain_rate = 100_000;
    cfg.sending.domain_concurrency = 16;
    // No DNS: this test is not about the domain check (tests never ask
    // the system's resolver).
    cfg.dns.check = false;
    cfg
}

fn app_on(store: &Store, cfg: Config) -> App {
    App::new(
        cfg,
        store.clone(),
        Arc::new(rundbrief_scheduler::SystemClock),
        Arc::new(rundbrief_app::NoObserver),
    )
}

async fn endpoint(app: &App, stop: &CancellationToken) -> rundbrief_app::endpoint::RunningEndpoint {
    start_endpoint(
        app,
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
    .unwrap()
}

/// One SMTP transaction to `rcpts`; the reply code of each RCPT, then of
/// the final dot (0 when no RCPT was accepted).
async fn transaction(addr: std::net::SocketAddr, rcpts: &[String], body: &[u8]) -> (Vec<u16>, u16) {
    let mut c = Client::connect(addr, Duration::from_secs(5)).await.unwrap();
    c.command(ClientStep::Ehlo, "EHLO test.example", 250)
        .await
        .unwrap();
    c.command(ClientStep::Mail, "MAIL FROM:<>", 250)
        .await
        .unwrap();
    let mut codes = Vec::new();
    for r in rcpts {
        c.send(ClientStep::Rcpt, format!("RCPT TO:<{r}>\r\n").as_bytes())
            .await
            .unwrap();
        codes.push(c.read_reply(ClientStep::Rcpt).await.unwrap().code);
    }
    if !codes.contains(&250) {
        return (codes, 0);
    }
    c.command(ClientStep::Data, "DATA", 354).await.unwrap();
    c.send(
        ClientStep::Message,
        &rundbrief_smtpd::client::dot_stuff(body),
    )
    .await
    .unwrap();
    let done = c.read_reply(ClientStep::Message).await.unwrap().code;
    let _ = c.command(ClientStep::Quit, "QUIT", 221).await;
    (codes, done)
}

fn dsn(size: usize) -> Vec<u8> {
    let mut m = b"From: MAILER-DAEMON@mx.example.net\r\nTo: x\r\nSubject: Undelivered Mail\r\n\r\n"
        .to_vec();
    while m.len() < size {
        m.extend_from_slice(b"The original message follows, line after line of it.\r\n");
    }
    m
}

#[tokio::test]
async fn one_message_is_stored_once_for_repeated_and_several_recipients() {
    for db in common::stores().await {
        let s = &db.store;
        let app = app_on(s, config());
        let stop = CancellationToken::new();
        let ep = endpoint(&app, &stop).await;
        let verp = app.verp().unwrap();
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        // The same return path ten times: one row.
        let ten: Vec<String> = (0..10).map(|_| verp.address(a)).collect();
        let (codes, done) = transaction(ep.addr, &ten, &dsn(2000)).await;
        assert!(codes.iter().all(|c| *c == 250), "{codes:?}");
        assert_eq!(done, 250);
        let rows = s.bounces(&BounceQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 1, "{}: repeated RCPTs stored once", db.backend);
        // Two return paths: a row each, the bytes kept once and read by both.
        let body = dsn(3000);
        let (_, done) = transaction(ep.addr, &[verp.address(a), verp.address(b)], &body).await;
        assert_eq!(done, 250);
        let rows = s.bounces(&BounceQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 3, "{}", db.backend);
        for r in &rows[..2] {
            let full = s.bounce(r.id).await.unwrap();
            assert_eq!(full.raw.len(), full.size as usize, "{}", db.backend);
            assert!(full.raw.ends_with(b"line after line of it.\r\n"));
        }
        stop.cancel();
        ep.finish().await.unwrap();
    }
}

#[tokio::test]
async fn what_is_kept_of_a_large_message_is_capped() {
    for db in common::stores().await {
        let s = &db.store;
        let mut cfg = config();
        cfg.bounce.max_stored_bytes = 8192;
        let app = app_on(s, cfg);
        let stop = CancellationToken::new();
        let ep = endpoint(&app, &stop).await;
        let rcpt = app.verp().unwrap().address(uuid::Uuid::now_v7());
        let (_, done) = transaction(ep.addr, &[rcpt], &dsn(200_000)).await;
        assert_eq!(done, 250);
        let row = &s.bounces(&BounceQuery::default()).await.unwrap()[0];
        let full = s.bounce(row.id).await.unwrap();
        assert_eq!(full.raw.len(), 8192, "{}", db.backend);
        assert!(
            full.size >= 200_000,
            "{}: the size received is kept",
            db.backend
        );
        stop.cancel();
        ep.finish().await.unwrap();
    }
}

#[tokio::test]
async fn one_return_path_flooded_gets_450_after_its_burst() {
    for db in common::stores().await {
        let s = &db.store;
        let mut cfg = config();
        cfg.bounce.token_burst = 3;
        cfg.bounce.token_per_hour = 1;
        let app = app_on(s, cfg);
        let stop = CancellationToken::new();
        let ep = endpoint(&app, &stop).await;
        let verp = app.verp().unwrap();
        let mine = verp.address(uuid::Uuid::now_v7());
        let mut codes = Vec::new();
        for _ in 0..5 {
            codes.push(
                transaction(ep.addr, std::slice::from_ref(&mine), &dsn(500))
                    .await
                    .0[0],
            );
        }
        assert_eq!(codes, vec![250, 250, 250, 450, 450], "{}", db.backend);
        // Another subscriber's return path is not affected.
        let other = verp.address(uuid::Uuid::now_v7());
        assert_eq!(transaction(ep.addr, &[other], &dsn(500)).await.1, 250);
        assert_eq!(s.bounces(&BounceQuery::default()).await.unwrap().len(), 4);
        stop.cancel();
        ep.finish().await.unwrap();
    }
}

#[tokio::test]
async fn mail_to_postmaster_is_accepted_kept_and_never_parsed() {
    for db in common::stores().await {
        let s = &db.store;
        let app = app_on(s, config());
        let stop = CancellationToken::new();
        let ep = endpoint(&app, &stop).await;
        for rcpt in [format!("Postmaster@{DOMAIN}"), "postmaster".to_string()] {
            let (codes, done) = transaction(ep.addr, std::slice::from_ref(&rcpt), &dsn(400)).await;
            assert_eq!((codes[0], done), (250, 250), "{}: {rcpt}", db.backend);
        }
        // postmaster at another domain is still no relay.
        let (codes, _) =
            transaction(ep.addr, &["postmaster@elsewhere.example".to_string()], b"x").await;
        assert_eq!(codes[0], 550);
        let pm = s
            .bounces(&BounceQuery {
                kind: Some(POSTMASTER_KIND.into()),
                ..BounceQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(pm.len(), 2, "{}", db.backend);
        assert!(pm.iter().all(|b| b.class.is_none()));
        // Neither the worker nor a reprocess parses them as bounces.
        assert_eq!(app.bounces().process_pending().await.unwrap(), 0);
        s.requeue_bounces(None).await.unwrap();
        assert_eq!(
            app.bounces().process_pending().await.unwrap(),
            0,
            "{}",
            db.backend
        );
        stop.cancel();
        ep.finish().await.unwrap();
    }
}

/// The safety net: a receiving domain that answers 550 5.1.1 for every
/// address (a block in disguise) has its prunes held, while a few dead
/// addresses elsewhere are pruned as usual; the operator then decides.
#[tokio::test]
async fn a_domain_refusing_everyone_is_held_not_pruned() {
    for db in common::stores().await {
        let s = &db.store;
        let mut cfg = config();
        cfg.bounce.hold_min = 5;
        cfg.bounce.hold_ratio = 0.2;
        let app = app_on(s, cfg);
        let mut people = Vec::new();
        for i in 0..30 {
            people.push(format!("reader{i}@blocked.example"));
            people.push(format!("reader{i}@fine.example"));
        }
        people.push("dead1@fine.example".into());
        people.push("dead2@fine.example".into());
        let refs: Vec<&str> = people.iter().map(String::as_str).collect();
        common::campaign_to(s, "issue", "news", &refs).await;
        let sink = Sink::new(SinkConfig {
            rules: vec![
                Rule::reject("*@blocked.example=550 5.1.1 User unknown").unwrap(),
                Rule::reject("dead*@*=550 5.1.1 No such user").unwrap(),
            ],
            tls: SinkTls::Off,
            ..SinkConfig::default()
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink_addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        // Refusing a whole domain means many refusals in a row on one
        // connection: more than the default error budget (10), after which
        // the sink, like Postfix, would close it and the sends be deferred.
        let limits = Limits {
            max_errors: 1000,
            ..Limits::default()
        };
        let sink_task = tokio::spawn(sink.run(listener, limits, stop.clone()));
        let report = app
            .send_foreground(
                "issue",
                &SendOptions {
                    relay: Some(format!("smtp://{sink_addr}")),
                    pool: Some(4),
                    wait: true,
                    ..SendOptions::default()
                },
                &CancellationToken::new(),
                &|_, _| {},
            )
            .await
            .unwrap();
        stop.cancel();
        sink_task.await.unwrap().unwrap();
        assert_eq!(report.counts.rejected, 32, "{}", db.backend);
        let status = |e: &str| {
            let e = e.to_string();
            async move {
                s.subscriber_detail(&Address::parse(&e).unwrap())
                    .await
                    .unwrap()
                    .subscriber
                    .status
            }
        };
        // The blocked domain: nobody pruned, every prune held.
        for i in 0..30 {
            assert_eq!(
                status(&format!("reader{i}@blocked.example")).await,
                SubscriberStatus::Active,
                "{}: reader{i}@blocked.example",
                db.backend
            );
        }
        let held = app.bounces().held(None).await.unwrap();
        assert_eq!(held.len(), 30, "{}", db.backend);
        assert!(held.iter().all(|p| p.domain == "blocked.example"));
        // Dead addresses of a healthy domain are pruned as before.
        assert_eq!(
            status("dead1@fine.example").await,
            SubscriberStatus::Bounced
        );
        assert_eq!(
            status("dead2@fine.example").await,
            SubscriberStatus::Bounced
        );
        let v = app.campaign_status("issue").await.unwrap();
        assert_eq!(v["held_prunes"], 30, "{}", db.backend);
        // The operator decides: release prunes them, with the bounce quoted.
        let released = app
            .bounces()
            .release_held(
                Some("blocked.example"),
                rundbrief_core::Actor::Cli,
                "the operator",
            )
            .await
            .unwrap();
        assert_eq!(released.len(), 30);
        assert_eq!(
            status("reader7@blocked.example").await,
            SubscriberStatus::Bounced
        );
        let audit = s
            .subscriber_detail(&Address::parse("reader7@blocked.example").unwrap())
            .await
            .unwrap()
            .audit;
        let last = &audit.last().unwrap().reason;
        assert!(
            last.contains("rcpt while sending: hard 5.1.1")
                && last.contains("released by the operator"),
            "{}: {last}",
            db.backend
        );
        assert!(app.bounces().held(None).await.unwrap().is_empty());
        assert_eq!(
            app.campaign_status("issue").await.unwrap()["held_prunes"],
            0
        );
    }
}

#[tokio::test]
async fn discarding_held_prunes_keeps_the_subscribers() {
    for db in common::stores().await {
        let s = &db.store;
        let app = app_on(s, config());
        let c = common::campaign_to(s, "c", "news", &["someone@held.example"]).await;
        let addr = Address::parse("someone@held.example").unwrap();
        let sub = s.subscriber_detail(&addr).await.unwrap().subscriber.id;
        s.record_domain_prune(&rundbrief_store::NewDomainPrune {
            campaign_id: c.id,
            domain: "held.example",
            subscriber_id: sub,
            email: addr.as_str(),
            reason: "bounce x: hard 5.1.1 (rule r, score 5.0); hard-bounce",
            state: rundbrief_store::PruneState::Held,
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
        let gone = app
            .bounces()
            .discard_held(Some("other.example"))
            .await
            .unwrap();
        assert!(gone.is_empty(), "{}: only the domain asked for", db.backend);
        let gone = app
            .bounces()
            .discard_held(Some("HELD.example"))
            .await
            .unwrap();
        assert_eq!(gone.len(), 1, "{}", db.backend);
        assert_eq!(
            s.subscriber_detail(&addr).await.unwrap().subscriber.status,
            SubscriberStatus::Active
        );
        assert!(app.bounces().held(None).await.unwrap().is_empty());
    }
}
