//! Schedules against a real (SQLite) store with an injected clock: no sleeping.

use chrono::{Duration, Utc};
use rundbrief_core::{Actor, Address, Attributes, CampaignState};
use rundbrief_scheduler::{ManualClock, tick::tick};
use rundbrief_store::{ConnectConfig, NewCampaign, Schedule, Store};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let s = Store::connect(&ConnectConfig::new(url)).await.unwrap();
    s.migrate().await.unwrap();
    s.create_list("news", None).await.unwrap();
    for i in 0..3 {
        s.add_subscriber(
            &Address::parse(&format!("s{i}@example.org")).unwrap(),
            "news",
            None,
            Attributes::new(),
            false,
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
    }
    (s, dir)
}

async fn draft(s: &Store, name: &str) -> uuid::Uuid {
    s.create_campaign(&NewCampaign {
        name: name.into(),
        lists: vec!["news".into()],
        subject: "s".into(),
        content: "c".into(),
        content_kind: rundbrief_core::ContentKind::Markdown,
        layout: None,
        from: None,
        relay: None,
    })
    .await
    .unwrap()
    .id
}

#[tokio::test]
async fn a_one_off_starts_when_due_and_only_once() {
    let (s, _d) = store().await;
    let id = draft(&s, "once").await;
    let at = Utc::now() + Duration::hours(1);
    s.schedule_campaign(
        "once",
        &Schedule {
            send_at: Some(at),
            tz: Some("Europe/Berlin".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let clock = ManualClock::new(at - Duration::seconds(1));
    assert!(tick(&s, &clock).await.unwrap().is_empty(), "not yet");
    assert_eq!(
        s.campaign_state(id).await.unwrap(),
        CampaignState::Scheduled
    );
    clock.set(at);
    let started = tick(&s, &clock).await.unwrap();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].name, "once");
    assert_eq!(s.campaign_state(id).await.unwrap(), CampaignState::Running);
    assert!(tick(&s, &clock).await.unwrap().is_empty(), "started once");
}

#[tokio::test]
async fn a_recurring_campaign_runs_once_per_occurrence_and_once_after_downtime() {
    let (s, _d) = store().await;
    let parent = draft(&s, "daily").await;
    s.schedule_campaign(
        "daily",
        &Schedule {
            cron: Some("0 9 * * *".into()),
            tz: Some("Europe/Berlin".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Three days pass with no scheduler running: one run, for the latest 09:00.
    let clock = ManualClock::new(Utc::now() + Duration::days(3));
    let started = tick(&s, &clock).await.unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    let occurrence = started[0].occurrence.unwrap();
    assert!(occurrence <= clock_now(&clock) && clock_now(&clock) - occurrence < Duration::days(1));
    assert!(started[0].name.starts_with("daily@"), "{}", started[0].name);
    assert!(
        tick(&s, &clock).await.unwrap().is_empty(),
        "same occurrence never twice"
    );
    // Each run has its own recipients.
    assert_eq!(s.materialise_deliveries(started[0].id).await.unwrap(), 3);
    // The next day: the next run.
    clock.set(occurrence + Duration::days(1));
    let next = tick(&s, &clock).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].occurrence, Some(occurrence + Duration::days(1)));
    let runs = s.campaign_runs(parent).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|(_, st)| *st == CampaignState::Running));
    assert_eq!(
        s.campaign_state(parent).await.unwrap(),
        CampaignState::Scheduled
    );
}

fn clock_now(c: &ManualClock) -> chrono::DateTime<Utc> {
    use rundbrief_scheduler::Clock;
    c.now()
}
