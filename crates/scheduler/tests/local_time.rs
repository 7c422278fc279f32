//! Local-time delivery (issue #18) end to end inside the crate: a real
//! store (SQLite, and PostgreSQL when `RUNDBRIEF_TEST_POSTGRES` is set),
//! the in-memory `StubTransport` and a `ManualClock`. Readers in
//! Europe/Berlin, America/New_York, an unknown zone and without a zone get
//! one message each at 09:00 on their own wall clock; nothing is claimed
//! before it is due; an unsubscribe in between is honoured.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use chrono::{DateTime, Utc};
use rundbrief_core::{Actor, Address, Attributes, CampaignState, DeliveryState};
use rundbrief_scheduler::{Ended, HookError, Hooks, ManualClock, RunConfig, Runner};
use rundbrief_sender::throttle::{Limits, Throttle};
use rundbrief_sender::{SendError, StubTransport};
use rundbrief_store::{LocalTime, PendingDelivery, Store};
use std::sync::Arc;

struct TestHooks;

#[async_trait::async_trait]
impl Hooks for TestHooks {
    fn render(&self, d: &PendingDelivery) -> Result<Vec<u8>, HookError> {
        Ok(format!("To: {}\r\nSubject: t\r\n\r\nhello\r\n", d.email).into_bytes())
    }
    async fn rejected(&self, _: &PendingDelivery, _: &SendError) -> Result<(), HookError> {
        Ok(())
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A running local-time campaign on list `news`: (local part, tz attribute).
async fn campaign(store: &Store, readers: &[(&str, Option<&str>)], lt: LocalTime) -> uuid::Uuid {
    store.create_list("news", None).await.unwrap();
    for (local, tz) in readers {
        let mut attrs = Attributes::new();
        if let Some(tz) = tz {
            attrs.insert("tz".into(), serde_json::Value::String(tz.to_string()));
        }
        store
            .add_subscriber(
                &Address::parse(&format!("{local}@example.org")).unwrap(),
                "news",
                None,
                attrs,
                false,
                Actor::Cli,
                "test",
            )
            .await
            .unwrap();
    }
    let c = common::campaign_to(store, "morning", "news", &[]).await;
    store.set_local_time(c.id, Some(&lt)).await.unwrap();
    store
        .set_campaign_state(c.id, CampaignState::Running)
        .await
        .unwrap();
    c.id
}

fn runner(store: &Store, stub: Arc<StubTransport>, clock: Arc<ManualClock>) -> Runner {
    let mut config = RunConfig::new("test-worker", 4);
    config.wait = false;
    Runner {
        store: store.clone(),
        sender: stub,
        throttle: Arc::new(Throttle::new(Limits::default())),
        hooks: Arc::new(TestHooks),
        clock,
        config,
        relays: None,
    }
}

fn sent_to(stub: &StubTransport) -> Vec<String> {
    let mut v: Vec<String> = stub.sent().into_iter().map(|(d, _)| d.to).collect();
    v.sort();
    v
}

fn nine(date: Option<&str>) -> LocalTime {
    LocalTime {
        at: "09:00".into(),
        date: date.map(str::to_string),
        tz_attr: "tz".into(),
        default_tz: "Europe/Berlin".into(),
    }
}

#[tokio::test]
async fn each_reader_gets_it_at_nine_in_their_zone_and_not_before() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let id = campaign(
            s,
            &[
                ("berlin", Some("Europe/Berlin")),
                ("ny", Some("america/new_york")),
                ("mars", Some("Mars/Olympus")),
                ("nozone", None),
            ],
            nine(Some("2026-12-03")),
        )
        .await;
        let stub = Arc::new(StubTransport::accepting());
        let clock = Arc::new(ManualClock::new(utc("2026-12-03T07:30:00Z")));
        let r = runner(s, stub.clone(), clock.clone());
        let stop = tokio_util::sync::CancellationToken::new();

        // 08:30 in Berlin: nobody is due; the next work is Berlin's 09:00.
        let first = r.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!(
            first.ended,
            Ended::RetriesLater(utc("2026-12-03T08:00:00Z")),
            "{b}"
        );
        assert_eq!((first.attempts, first.counts.pending), (0, 4), "{b}");
        assert!(stub.sent().is_empty(), "{b}: nothing before it is due");
        // Not due: the store's claim does not hand them out either.
        let claimed = s
            .claim_deliveries(
                id,
                "other",
                clock_now(&clock),
                utc("2026-12-03T08:00:00Z"),
                100,
            )
            .await
            .unwrap();
        assert!(claimed.is_empty(), "{b}: {claimed:?}");
        let due = s.pending_by_due(id).await.unwrap();
        let mut times: Vec<(Option<DateTime<Utc>>, u64)> =
            due.iter().map(|g| (g.due, g.count)).collect();
        times.sort();
        assert_eq!(
            times,
            vec![
                (Some(utc("2026-12-03T08:00:00Z")), 3), // Berlin, unknown and none: the default zone
                (Some(utc("2026-12-03T14:00:00Z")), 1), // New York, any case
            ],
            "{b}"
        );

        // Berlin's 09:00: the three in the default zone.
        clock.set(utc("2026-12-03T08:00:00Z"));
        let second = r.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!(
            second.ended,
            Ended::RetriesLater(utc("2026-12-03T14:00:00Z")),
            "{b}"
        );
        assert_eq!(
            sent_to(&stub),
            vec![
                "berlin@example.org",
                "mars@example.org",
                "nozone@example.org"
            ],
            "{b}"
        );
        assert_eq!(
            s.campaign_state(id).await.unwrap(),
            CampaignState::Running,
            "{b}"
        );

        // New York's 09:00: the last one, and the campaign finishes.
        clock.set(utc("2026-12-03T14:00:30Z"));
        let last = r.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!(last.ended, Ended::Finished, "{b}");
        assert_eq!((last.counts.sent, last.counts.total), (4, 4), "{b}");
        assert_eq!(stub.sent().len(), 4, "{b}: each once");
    }
}

fn clock_now(c: &ManualClock) -> DateTime<Utc> {
    use rundbrief_scheduler::Clock;
    c.now()
}

#[tokio::test]
async fn a_zone_past_nine_at_the_start_gets_the_next_day_and_dst_days_hold() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        // No day given, started at 10:00Z on the 3rd: Berlin's 09:00 is
        // over (next day), New York's is still ahead (today).
        let id = campaign(
            s,
            &[
                ("berlin", Some("Europe/Berlin")),
                ("ny", Some("America/New_York")),
            ],
            nine(None),
        )
        .await;
        let clock = Arc::new(ManualClock::new(utc("2026-12-03T10:00:00Z")));
        let r = runner(s, Arc::new(StubTransport::accepting()), clock);
        let first = r
            .run(id, &tokio_util::sync::CancellationToken::new(), &|_| {})
            .await
            .unwrap();
        assert_eq!(
            first.ended,
            Ended::RetriesLater(utc("2026-12-03T14:00:00Z")),
            "{b}"
        );
        let mut times: Vec<_> = s
            .pending_by_due(id)
            .await
            .unwrap()
            .into_iter()
            .map(|g| g.due)
            .collect();
        times.sort();
        assert_eq!(
            times,
            vec![
                Some(utc("2026-12-03T14:00:00Z")),
                Some(utc("2026-12-04T08:00:00Z"))
            ],
            "{b}"
        );
    }
    // The spring gap and the autumn overlap, both zones.
    for (day, at, now, berlin, ny) in [
        // 02:30 does not exist in either zone that day: 03:00 after the jump.
        (
            "2026-03-08",
            "02:30",
            "2026-03-07T00:00:00Z",
            "2026-03-08T01:30:00Z",
            "2026-03-08T07:00:00Z",
        ),
        (
            "2026-03-29",
            "02:30",
            "2026-03-28T00:00:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T06:30:00Z",
        ),
        // 02:30 / 01:30 happen twice: the earlier.
        (
            "2026-10-25",
            "02:30",
            "2026-10-24T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T06:30:00Z",
        ),
        (
            "2026-11-01",
            "01:30",
            "2026-10-31T00:00:00Z",
            "2026-11-01T00:30:00Z",
            "2026-11-01T05:30:00Z",
        ),
    ] {
        for db in common::stores().await {
            let s = &db.store;
            let id = campaign(
                s,
                &[
                    ("berlin", Some("Europe/Berlin")),
                    ("ny", Some("America/New_York")),
                ],
                LocalTime {
                    at: at.into(),
                    ..nine(Some(day))
                },
            )
            .await;
            let stub = Arc::new(StubTransport::accepting());
            let clock = Arc::new(ManualClock::new(utc(now)));
            let r = runner(s, stub.clone(), clock.clone());
            let stop = tokio_util::sync::CancellationToken::new();
            r.run(id, &stop, &|_| {}).await.unwrap();
            let mut times: Vec<_> = s
                .pending_by_due(id)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|g| g.due)
                .collect();
            times.sort();
            assert_eq!(
                times,
                vec![utc(berlin), utc(ny)],
                "{} {day} {at}",
                db.backend
            );
            // Sent once each, at those instants.
            clock.set(utc(berlin));
            r.run(id, &stop, &|_| {}).await.unwrap();
            assert_eq!(sent_to(&stub), vec!["berlin@example.org"], "{day}");
            clock.set(utc(ny) + chrono::Duration::hours(2));
            assert_eq!(
                r.run(id, &stop, &|_| {}).await.unwrap().ended,
                Ended::Finished
            );
            assert_eq!(
                sent_to(&stub),
                vec!["berlin@example.org", "ny@example.org"],
                "{day}"
            );
        }
    }
}

#[tokio::test]
async fn an_unsubscribe_before_the_due_time_is_honoured() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let id = campaign(
            s,
            &[
                ("stays", Some("Europe/Berlin")),
                ("leaves", Some("Europe/Berlin")),
                ("pruned", Some("Europe/Berlin")),
            ],
            nine(Some("2026-12-03")),
        )
        .await;
        let stub = Arc::new(StubTransport::accepting());
        let clock = Arc::new(ManualClock::new(utc("2026-12-03T07:00:00Z")));
        let r = runner(s, stub.clone(), clock.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        r.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!(s.campaign_counts(id).await.unwrap().pending, 3, "{b}");
        // Between materialisation and the due time: one leaves the list,
        // one leaves everything.
        s.unsubscribe(
            &Address::parse("leaves@example.org").unwrap(),
            Some("news"),
            Actor::Http,
            "t",
        )
        .await
        .unwrap();
        s.unsubscribe(
            &Address::parse("pruned@example.org").unwrap(),
            None,
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
        clock.set(utc("2026-12-03T08:00:00Z"));
        let report = r.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!(report.ended, Ended::Finished, "{b}");
        assert_eq!(sent_to(&stub), vec!["stays@example.org"], "{b}");
        let c = s.campaign_counts(id).await.unwrap();
        assert_eq!((c.sent, c.failed, c.pending), (1, 2, 0), "{b}");
        let errors = s.campaign_errors(id, 10).await.unwrap();
        let text = format!("{errors:?}");
        assert!(
            text.contains("left the campaign's lists") && text.contains("became unsubscribed"),
            "{b}: {text}"
        );
        assert!(
            errors.iter().all(|e| e.state == DeliveryState::Failed),
            "{b}: {text}"
        );
    }
}

/// `campaign retry-failed` of a local-time campaign: the retried reader
/// gets it at the next 09:00 on their own clock, not at once.
#[tokio::test]
async fn a_retried_delivery_waits_for_the_readers_next_local_time() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let id = campaign(s, &[("berlin", Some("Europe/Berlin"))], nine(None)).await;
        let stub = Arc::new(StubTransport::accepting());
        let clock = Arc::new(ManualClock::new(utc("2026-12-03T07:59:00Z")));
        let r = runner(s, stub.clone(), clock.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let first = r.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!(
            first.ended,
            Ended::RetriesLater(utc("2026-12-03T08:00:00Z")),
            "{b}"
        );
        clock.set(utc("2026-12-03T08:00:10Z"));
        assert_eq!(
            r.run(id, &stop, &|_| {}).await.unwrap().ended,
            Ended::Finished,
            "{b}"
        );
        // Say the relay had refused it for good.
        let d = s.deliveries(id).await.unwrap()[0].delivery_id;
        s.record_outcomes(&[rundbrief_store::DeliveryOutcome {
            delivery_id: d,
            campaign_id: id,
            state: DeliveryState::Failed,
            error: Some("RCPT: 550 mailbox full".into()),
            next_attempt_at: None,
        }])
        .await
        .unwrap();
        assert_eq!(s.retry_failed("morning").await.unwrap(), 1, "{b}");
        // 16:00 in Berlin: the retry waits for tomorrow's 09:00 there.
        clock.set(utc("2026-12-03T15:00:00Z"));
        let wait = r.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!(
            wait.ended,
            Ended::RetriesLater(utc("2026-12-04T08:00:00Z")),
            "{b}"
        );
        assert_eq!(stub.sent().len(), 1, "{b}: not sent again at once");
        clock.set(utc("2026-12-04T08:00:30Z"));
        let again = r.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!(again.ended, Ended::Finished, "{b}");
        assert_eq!((again.counts.sent, again.counts.failed), (1, 0), "{b}");
        assert_eq!(stub.sent().len(), 2, "{b}: the retry went at 09:00");
    }
}
