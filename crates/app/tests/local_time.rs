//! `campaign status` of a local-time campaign (issue #18) through the
//! application layer, on SQLite and PostgreSQL: pending deliveries grouped
//! by due hour, the settings with how many readers fell back to the default
//! zone, and an ETA bounded by the due times (a `ManualClock`, the sender's
//! `StubTransport`).

#[path = "../../store/tests/common/mod.rs"]
mod common;

use chrono::{DateTime, Utc};
use rundbrief_app::App;
use rundbrief_core::{Actor, Address, Attributes, CampaignState, Config, Secret};
use rundbrief_scheduler::ManualClock;
use rundbrief_sender::StubTransport;
use rundbrief_store::LocalTime;
use std::sync::Arc;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn config() -> Config {
    let mut cfg = Config {
        secret: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        ..Config::default()
    };
    cfg.sending.from = Some("News <news@example.org>".into());
    cfg.sending.bounce_domain = Some("bounce.example.org".into());
    cfg.sending.public_url = Some("https://news.example.org".into());
    // No domain check: these tests never ask a resolver.
    cfg.dns.check = false;
    cfg
}

#[tokio::test]
async fn status_groups_by_due_hour_and_the_eta_waits_for_the_last_zone() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("news", None).await.unwrap();
        let readers = [
            ("b1", Some("Europe/Berlin")),
            ("b2", Some("Europe/Berlin")),
            ("ny", Some("America/New_York")),
            ("x", Some("Nowhere/Atlantis")),
            ("none", None),
        ];
        for (who, tz) in readers {
            let mut attrs = Attributes::new();
            if let Some(tz) = tz {
                attrs.insert("tz".into(), tz.into());
            }
            s.add_subscriber(
                &Address::parse(&format!("{who}@example.org")).unwrap(),
                "news",
                None,
                attrs,
                false,
                Actor::Cli,
                "t",
            )
            .await
            .unwrap();
        }
        let c = common::campaign_to(s, "morning", "news", &[]).await;
        s.set_local_time(
            c.id,
            Some(&LocalTime {
                at: "09:00".into(),
                date: Some("2026-12-03".into()),
                tz_attr: "tz".into(),
                default_tz: "Europe/Berlin".into(),
            }),
        )
        .await
        .unwrap();
        let clock = Arc::new(ManualClock::new(utc("2026-12-03T06:10:00Z")));
        let app = App::new(
            config(),
            s.clone(),
            clock.clone(),
            Arc::new(rundbrief_app::NoObserver),
        );
        // Before it starts: the settings, and who would fall back.
        let v = app.campaign_status("morning").await.unwrap();
        assert_eq!(v["local_time"]["at"], "09:00", "{b}: {v}");
        assert_eq!(v["local_time"]["default_tz"], "Europe/Berlin", "{b}");
        assert_eq!(v["local_time"]["fallback"], 2, "{b}: unknown zone and none");
        s.set_campaign_state(c.id, CampaignState::Running)
            .await
            .unwrap();
        let stub = Arc::new(StubTransport::accepting());
        let content = s.campaign("morning").await.unwrap();
        let runner = app.runner_with(&content, stub.clone(), 2, false).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        runner.run(c.id, &stop, &|_| {}).await.unwrap();
        assert!(stub.sent().is_empty(), "{b}: none due at 07:10 Berlin");
        let v = app.campaign_status("morning").await.unwrap();
        assert_eq!(
            v["due"],
            serde_json::json!([
                {"at": "2026-12-03T08:00:00Z", "pending": 4},
                {"at": "2026-12-03T14:00:00Z", "pending": 1},
            ]),
            "{b}: {v}"
        );
        assert_eq!(v["pending"], 5, "{b}");
        // Nothing sent yet: the earliest finish is New York's 09:00.
        assert_eq!(v["eta"], "2026-12-03T14:00:00Z", "{b}: {v}");
        assert_eq!(v["eta_reason"], "local-time due times", "{b}");
        assert_eq!(v["eta_s"], 7 * 3600 + 50 * 60, "{b}");
        // Berlin's 09:00: four go out; the ETA still waits for New York.
        clock.set(utc("2026-12-03T08:00:10Z"));
        runner.run(c.id, &stop, &|_| {}).await.unwrap();
        assert_eq!(stub.sent().len(), 4, "{b}");
        let v = app.campaign_status("morning").await.unwrap();
        assert_eq!(
            v["due"],
            serde_json::json!([{"at": "2026-12-03T14:00:00Z", "pending": 1}]),
            "{b}"
        );
        let eta = utc(v["eta"].as_str().unwrap());
        assert!(
            eta >= utc("2026-12-03T14:00:00Z") && eta < utc("2026-12-03T14:01:00Z"),
            "{b}: {v}"
        );
        assert_eq!(v["eta_reason"], "local-time due times", "{b}");
    }
}
