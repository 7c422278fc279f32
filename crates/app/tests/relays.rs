//! Relay quotas, weights and failover (issue #18) over real SMTP to sinks on
//! loopback, on SQLite and (when `RUNDBRIEF_TEST_POSTGRES` is set)
//! PostgreSQL: two relays share a campaign by weight; a relay with an
//! hourly quota stops at it, the rest waits for the next hour (the quota
//! survives reopening the database and is shared by campaigns), and
//! `campaign status` says why and when; a relay that refuses connections or
//! fails AUTH is rested and the other relay takes everything.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use chrono::{TimeZone, Utc};
use rundbrief_app::App;
use rundbrief_app::sending::{SendOptions, SendReport};
use rundbrief_core::config::RelayConfig;
use rundbrief_core::{CampaignState, Config, Secret};
use rundbrief_scheduler::{Ended, ManualClock};
use rundbrief_smtpd::sink::{Sink, SinkConfig, SinkStats, SinkTls};
use rundbrief_smtpd::{CancellationToken, Limits};
use rundbrief_store::{ConnectConfig, Store};
use std::net::SocketAddr;
use std::sync::Arc;

/// `relays` configured, the default relay (what `campaign status` shows)
/// their names in order.
fn config(relays: &[(&str, RelayConfig)]) -> Config {
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
    cfg.dns.check = false;
    for (name, r) in relays {
        cfg.relays.insert((*name).to_string(), r.clone());
    }
    let names: Vec<&str> = relays.iter().map(|(n, _)| *n).collect();
    cfg.relay = Some(names.join(","));
    cfg.validate().unwrap();
    cfg
}

fn relay_at(addr: SocketAddr) -> RelayConfig {
    RelayConfig {
        url: format!("smtp://{addr}"),
        ..RelayConfig::default()
    }
}

/// A sink on a free loopback port.
async fn sink(
    stop: &CancellationToken,
) -> (
    SocketAddr,
    Arc<SinkStats>,
    tokio::task::JoinHandle<Result<(), rundbrief_smtpd::sink::SinkError>>,
) {
    let sink = Sink::new(SinkConfig {
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .unwrap();
    let stats = sink.stats();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (
        addr,
        stats,
        tokio::spawn(sink.run(listener, Limits::default(), stop.clone())),
    )
}

/// A loopback port nobody listens on: bound, then closed.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn send(app: &App, campaign: &str, relay: &str) -> SendReport {
    app.send_foreground(
        campaign,
        &SendOptions {
            relay: Some(relay.into()),
            pool: Some(2),
            wait: false,
            no_dns_check: true,
            ..SendOptions::default()
        },
        &CancellationToken::new(),
        &|_, _| {},
    )
    .await
    .unwrap()
}

fn people(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i}@fine.example"))
        .collect()
}

async fn campaign(s: &Store, name: &str, emails: &[String]) {
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    common::campaign_to(s, name, name, &refs).await;
}

fn relay<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no relay {name} in {status:#}"))
}

#[tokio::test]
async fn two_relays_share_a_campaign_by_their_weights() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        campaign(s, "c", &people("r", 40)).await;
        let stop = CancellationToken::new();
        let (a_addr, a_stats, a_task) = sink(&stop).await;
        let (b_addr, b_stats, b_task) = sink(&stop).await;
        let cfg = config(&[
            (
                "heavy",
                RelayConfig {
                    weight: Some(3),
                    ..relay_at(a_addr)
                },
            ),
            ("light", relay_at(b_addr)),
        ]);
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = App::new(cfg, s.clone(), clock, Arc::new(rundbrief_app::NoObserver));
        let r = send(&app, "c", "heavy,light").await;
        assert_eq!(r.ended, Ended::Finished, "{b}");
        assert_eq!((r.counts.sent, r.counts.failed), (40, 0), "{b}");
        let (heavy, light) = (a_stats.snapshot().messages, b_stats.snapshot().messages);
        assert_eq!(heavy + light, 40, "{b}: each message once");
        // Weighted round robin: 3 of every 4 to the heavy relay.
        assert!(
            (27..=33).contains(&heavy),
            "{b}: heavy got {heavy}, light {light}"
        );
        // The usage is counted per relay (what was handed over, no more).
        let v = app.campaign_status("c").await.unwrap();
        assert_eq!(
            relay(&v, "heavy")["sent_hour"].as_u64(),
            Some(heavy),
            "{b}: {v:#}"
        );
        assert_eq!(relay(&v, "light")["sent_day"].as_u64(), Some(light), "{b}");
        assert_eq!(relay(&v, "heavy")["state"], "ok");
        assert!(relay(&v, "heavy")["max_per_hour"].is_null(), "{b}");
        stop.cancel();
        a_task.await.unwrap().unwrap();
        b_task.await.unwrap().unwrap();
    }
}

/// Stores that can be opened again (as another process would): SQLite
/// files, and a PostgreSQL schema when `RUNDBRIEF_TEST_POSTGRES` is set.
async fn reopenable() -> Vec<(ConnectConfig, &'static str, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("q.db").display());
    out.push((ConnectConfig::new(url), "sqlite", Some(dir)));
    if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
        out.push((
            ConnectConfig {
                url,
                max_connections: 4,
                pg_schema: Some(format!("t_{}", uuid::Uuid::now_v7().simple())),
            },
            "postgres",
            None,
        ));
    }
    out
}

#[tokio::test]
async fn a_relay_at_its_hourly_quota_stops_and_the_rest_waits_for_the_next_hour() {
    for (cc, b, _dir) in reopenable().await {
        let s = Store::connect(&cc).await.unwrap();
        s.migrate().await.unwrap();
        campaign(&s, "c", &people("r", 12)).await;
        let stop = CancellationToken::new();
        let (addr, stats, task) = sink(&stop).await;
        let cfg = config(&[(
            "ses",
            RelayConfig {
                max_per_hour: Some(5),
                ..relay_at(addr)
            },
        )]);
        let t0 = Utc.with_ymd_and_hms(2026, 12, 3, 10, 20, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let app = App::new(
            cfg.clone(),
            s.clone(),
            clock.clone(),
            Arc::new(rundbrief_app::NoObserver),
        );
        let r = send(&app, "c", "ses").await;
        let eleven = Utc.with_ymd_and_hms(2026, 12, 3, 11, 0, 0).unwrap();
        assert_eq!(r.ended, Ended::RetriesLater(eleven), "{b}");
        assert_eq!(stats.snapshot().messages, 5, "{b}: the quota, no more");
        assert_eq!(
            (
                r.counts.sent,
                r.counts.pending,
                r.counts.failed,
                r.counts.deferred
            ),
            (5, 7, 0, 0),
            "{b}: the rest waits, nothing failed"
        );
        assert_eq!(r.state, CampaignState::Running, "{b}");
        // Status: the relay is at its quota until 11:00, and so is the ETA.
        let v = app.campaign_status("c").await.unwrap();
        let ses = relay(&v, "ses");
        assert_eq!(ses["state"], "at quota", "{b}: {v:#}");
        assert_eq!(
            (ses["sent_hour"].as_u64(), ses["max_per_hour"].as_u64()),
            (Some(5), Some(5))
        );
        assert_eq!(ses["until"], "2026-12-03T11:00:00Z", "{b}");
        assert_eq!(v["eta_reason"], "relay quota", "{b}: {v:#}");
        // 7 left at 5 an hour: 5 at 11:00, 2 at 12:00.
        assert_eq!(v["eta"], "2026-12-03T12:00:00Z", "{b}: {v:#}");
        assert!(v["eta_s"].as_u64().unwrap() >= 40 * 60, "{b}");
        s.close().await.unwrap();

        // Another process, another campaign, the same hour: the quota read
        // from the reopened database still holds.
        let s = Store::connect(&cc).await.unwrap();
        campaign(&s, "d", &people("d", 3)).await;
        let app = App::new(
            cfg.clone(),
            s.clone(),
            clock.clone(),
            Arc::new(rundbrief_app::NoObserver),
        );
        let r = send(&app, "d", "ses").await;
        assert_eq!(r.ended, Ended::RetriesLater(eleven), "{b}");
        assert_eq!((r.counts.sent, r.counts.pending), (0, 3), "{b}");
        assert_eq!(stats.snapshot().messages, 5, "{b}: nothing over the quota");

        // 11:00: five more (three of d, two of c), the others wait for 12:00.
        clock.set(eleven + chrono::Duration::seconds(1));
        let r = send(&app, "d", "ses").await;
        assert_eq!((r.ended, r.counts.sent), (Ended::Finished, 3), "{b}");
        let r = send(&app, "c", "ses").await;
        assert_eq!(r.counts.sent, 7, "{b}");
        assert_eq!(stats.snapshot().messages, 10, "{b}");
        clock.set(eleven + chrono::Duration::hours(1) + chrono::Duration::seconds(1));
        let r = send(&app, "c", "ses").await;
        assert_eq!(r.ended, Ended::Finished, "{b}");
        assert_eq!((r.counts.sent, r.counts.failed), (12, 0), "{b}");
        assert_eq!(stats.snapshot().messages, 15, "{b}: every recipient once");
        let v = app.campaign_status("c").await.unwrap();
        assert_eq!(relay(&v, "ses")["sent_hour"], 5, "{b}");
        assert_eq!(relay(&v, "ses")["sent_day"], 15, "{b}");
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn every_relay_at_its_quota_makes_the_campaign_wait_with_an_eta() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        campaign(s, "c", &people("r", 20)).await;
        let stop = CancellationToken::new();
        let (a, a_stats, a_task) = sink(&stop).await;
        let (c, c_stats, c_task) = sink(&stop).await;
        let cfg = config(&[
            (
                "ses",
                RelayConfig {
                    max_per_hour: Some(4),
                    ..relay_at(a)
                },
            ),
            (
                "mailgun",
                RelayConfig {
                    max_per_day: Some(3),
                    ..relay_at(c)
                },
            ),
        ]);
        let t0 = Utc.with_ymd_and_hms(2026, 12, 3, 22, 30, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let app = App::new(
            cfg,
            s.clone(),
            clock.clone(),
            Arc::new(rundbrief_app::NoObserver),
        );
        let r = send(&app, "c", "ses,mailgun").await;
        let next = Utc.with_ymd_and_hms(2026, 12, 3, 23, 0, 0).unwrap();
        assert_eq!(
            r.ended,
            Ended::RetriesLater(next),
            "{b}: the earliest relay to free up"
        );
        assert_eq!(
            (a_stats.snapshot().messages, c_stats.snapshot().messages),
            (4, 3),
            "{b}"
        );
        assert_eq!(
            (r.counts.sent, r.counts.pending, r.counts.failed),
            (7, 13, 0),
            "{b}"
        );
        let v = app.campaign_status("c").await.unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(relay(&v, "ses")["state"], "at quota", "{b}: {v:#}");
        assert_eq!(relay(&v, "ses")["until"], "2026-12-03T23:00:00Z");
        assert_eq!(relay(&v, "mailgun")["state"], "at quota");
        assert_eq!(
            relay(&v, "mailgun")["until"],
            "2026-12-04T00:00:00Z",
            "{b}: the next day"
        );
        assert_eq!(v["eta_reason"], "relay quota", "{b}: {v:#}");
        // 13 left: 4 at 23:00, then 4 (ses) + 3 (mailgun, a new day) at
        // 00:00, and the last 2 at 01:00.
        assert_eq!(v["eta"], "2026-12-04T01:00:00Z", "{b}: {v:#}");
        stop.cancel();
        a_task.await.unwrap().unwrap();
        c_task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_relay_that_refuses_connections_or_fails_auth_is_rested_and_the_other_takes_over() {
    let pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw.path(), "secret\n").unwrap();
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        campaign(s, "c", &people("r", 30)).await;
        let stop = CancellationToken::new();
        let (up, up_stats, up_task) = sink(&stop).await;
        // The sink offers no AUTH: a relay that needs it fails at AUTH.
        let (noauth, noauth_stats, noauth_task) = sink(&stop).await;
        let down = closed_port().await;
        let cfg = config(&[
            ("down", relay_at(down)),
            (
                "authfail",
                RelayConfig {
                    url: format!("smtp://news@{noauth}"),
                    password_file: Some(pw.path().to_path_buf()),
                    ..RelayConfig::default()
                },
            ),
            ("up", relay_at(up)),
        ]);
        let t0 = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let app = App::new(
            cfg,
            s.clone(),
            clock.clone(),
            Arc::new(rundbrief_app::NoObserver),
        );
        let r = send(&app, "c", "down,authfail,up").await;
        assert_eq!(r.ended, Ended::Finished, "{b}");
        assert_eq!(
            (r.counts.sent, r.counts.failed, r.counts.deferred),
            (30, 0, 0),
            "{b}: every failed attempt went to another relay"
        );
        assert_eq!(up_stats.snapshot().messages, 30, "{b}");
        assert_eq!(noauth_stats.snapshot().messages, 0, "{b}");
        let v = app.campaign_status("c").await.unwrap();
        let d = relay(&v, "down");
        assert_eq!(d["state"], "rested", "{b}: {v:#}");
        assert_eq!(d["until"], "2026-12-03T10:05:00Z", "{b}: five minutes");
        assert!(
            d["reason"].as_str().unwrap().contains("CONNECT"),
            "{b}: {d}"
        );
        assert_eq!(d["sent_hour"], 0, "{b}: failed attempts do not count");
        let a = relay(&v, "authfail");
        assert_eq!(a["state"], "rested", "{b}: {v:#}");
        assert!(a["reason"].as_str().unwrap().contains("AUTH"), "{b}: {a}");
        assert_eq!(relay(&v, "up")["sent_hour"], 30, "{b}");
        stop.cancel();
        up_task.await.unwrap().unwrap();
        noauth_task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_standby_relay_of_weight_zero_takes_mail_only_when_the_others_cannot() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        campaign(s, "c", &people("r", 30)).await;
        let stop = CancellationToken::new();
        let (main_addr, main_stats, main_task) = sink(&stop).await;
        let (spare_addr, spare_stats, spare_task) = sink(&stop).await;
        let cfg = config(&[
            (
                "main",
                RelayConfig {
                    max_per_hour: Some(10),
                    ..relay_at(main_addr)
                },
            ),
            (
                "spare",
                RelayConfig {
                    weight: Some(0),
                    ..relay_at(spare_addr)
                },
            ),
        ]);
        let t0 = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let app = App::new(cfg, s.clone(), clock, Arc::new(rundbrief_app::NoObserver));
        let r = send(&app, "c", "main,spare").await;
        assert_eq!(r.ended, Ended::Finished, "{b}");
        assert_eq!((r.counts.sent, r.counts.failed), (30, 0), "{b}");
        // The weighted relay first, up to its quota; only then the standby.
        assert_eq!(main_stats.snapshot().messages, 10, "{b}");
        assert_eq!(spare_stats.snapshot().messages, 20, "{b}");
        let v = app.campaign_status("c").await.unwrap();
        assert_eq!(relay(&v, "spare")["weight"], 0, "{b}: {v:#}");
        assert_eq!(relay(&v, "main")["state"], "at quota", "{b}: {v:#}");
        stop.cancel();
        main_task.await.unwrap().unwrap();
        spare_task.await.unwrap().unwrap();
    }
}
