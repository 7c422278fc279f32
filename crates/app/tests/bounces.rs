//! The bounce policy inside its crate: one policy for the sending path, the
//! endpoint and `clean`, the day taken from the injected clock. Real stores
//! (SQLite, and PostgreSQL when `RUNDBRIEF_TEST_POSTGRES` is set), the
//! sender's `StubTransport` for synchronous bounces, a `ManualClock`.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use chrono::{Duration, TimeZone, Utc};
use rundbrief_app::App;
use rundbrief_app::bounces::{Applied, BounceSource, ClassifiedBounce};
use rundbrief_bounce::BounceClass;
use rundbrief_core::{Address, CampaignState, Config, Secret, SubscriberStatus};
use rundbrief_scheduler::ManualClock;
use rundbrief_sender::{SmtpStep, StubTransport};
use rundbrief_store::{DeliveryTarget, Store};
use std::sync::Arc;

fn config(auto_prune: bool) -> Config {
    let mut cfg = Config {
        secret: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        ..Config::default()
    };
    cfg.sending.from = Some("News <news@example.org>".into());
    cfg.sending.bounce_domain = Some("bounce.example.org".into());
    cfg.sending.public_url = Some("https://news.example.org".into());
    cfg.bounce.auto_prune = auto_prune;
    // No DNS: this test is not about the domain check (tests never ask
    // the system's resolver).
    cfg.dns.check = false;
    cfg
}

fn app(store: &Store, auto_prune: bool, clock: Arc<ManualClock>) -> App {
    App::new(
        config(auto_prune),
        store.clone(),
        clock,
        Arc::new(rundbrief_app::NoObserver),
    )
}

/// A running campaign to `locals`@example.org with its deliveries
/// materialised; returns its id and the deliveries.
async fn campaign(store: &Store, locals: &[&str]) -> (uuid::Uuid, Vec<DeliveryTarget>) {
    let emails: Vec<String> = locals.iter().map(|l| format!("{l}@example.org")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let c = common::campaign_to(store, "issue-1", "news", &refs).await;
    store
        .set_campaign_state(c.id, CampaignState::Running)
        .await
        .unwrap();
    store.materialise_deliveries(c.id).await.unwrap();
    (c.id, store.deliveries(c.id).await.unwrap())
}

async fn status(store: &Store, email: &str) -> SubscriberStatus {
    store
        .subscriber_detail(&Address::parse(email).unwrap())
        .await
        .unwrap()
        .subscriber
        .status
}

async fn last_reason(store: &Store, email: &str) -> String {
    store
        .subscriber_detail(&Address::parse(email).unwrap())
        .await
        .unwrap()
        .audit
        .last()
        .map(|a| a.reason.clone())
        .unwrap_or_default()
}

fn bounce(class: BounceClass, status: &'static str) -> ClassifiedBounce<'static> {
    ClassifiedBounce {
        class,
        status,
        rule: "test-rule",
        evidence: None,
        source: BounceSource::Stored(uuid::Uuid::nil()),
    }
}

#[tokio::test]
async fn a_5xx_while_sending_prunes_through_the_same_policy_and_says_why() {
    for db in common::stores().await {
        let s = &db.store;
        let (id, _) = campaign(s, &["dead", "alive"]).await;
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = app(s, true, clock);
        let stub = Arc::new(StubTransport::with_rule(|d| {
            if d.to.starts_with("dead") {
                StubTransport::refusal(SmtpStep::Rcpt, 550, "5.1.1 User unknown")
            } else {
                rundbrief_sender::Outcome::Sent {
                    reply: rundbrief_sender::Reply::new(250, "ok"),
                }
            }
        }));
        let c = s.campaign("issue-1").await.unwrap();
        let mut runner = app.runner_with(&c, stub.clone(), 2, false).unwrap();
        runner.config.materialise = false;
        let stop = tokio_util::sync::CancellationToken::new();
        let report = runner.run(id, &stop, &|_| {}).await.unwrap();
        assert_eq!((report.counts.sent, report.counts.rejected), (1, 1));
        assert_eq!(
            status(s, "dead@example.org").await,
            SubscriberStatus::Bounced,
            "{}",
            db.backend
        );
        assert_eq!(
            status(s, "alive@example.org").await,
            SubscriberStatus::Active
        );
        let why = last_reason(s, "dead@example.org").await;
        assert!(
            why.contains("rcpt while sending: hard 5.1.1") && why.contains("hard-bounce"),
            "{}: {why}",
            db.backend
        );
        // The reply's deciding words are quoted.
        assert!(
            why.contains("\"User unknown\"") || why.contains("\"user unknown\""),
            "{}: {why}",
            db.backend
        );
        // What the stub received is a real rendered, signed-link message.
        let (d, _) = &stub.sent()[0];
        let text = String::from_utf8_lossy(&d.message);
        assert!(
            text.contains("List-Unsubscribe: <https://news.example.org/u/"),
            "{text}"
        );
        assert!(text.contains("mailto:unsub-"), "{text}");
    }
}

#[tokio::test]
async fn soft_bounces_count_once_a_day_by_the_injected_clock() {
    for db in common::stores().await {
        let s = &db.store;
        let (_, ds) = campaign(s, &["full"]).await;
        let day1 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(day1));
        let app = app(s, true, Arc::clone(&clock));
        let b = app.bounces();
        let soft = bounce(BounceClass::Soft, "4.2.2");
        assert_eq!(b.apply(&ds[0], &soft).await.unwrap(), Applied::Scored);
        // The same day again: counted once.
        clock.set(day1 + Duration::hours(3));
        assert_eq!(b.apply(&ds[0], &soft).await.unwrap(), Applied::Nothing);
        let (v1, d1, _) = s.bounce_score(ds[0].subscriber_id).await.unwrap().unwrap();
        assert_eq!(d1, day1.timestamp().div_euclid(86_400), "{}", db.backend);
        // The next day adds weight.
        clock.set(day1 + Duration::days(1));
        assert_eq!(b.apply(&ds[0], &soft).await.unwrap(), Applied::Scored);
        let (v2, d2, _) = s.bounce_score(ds[0].subscriber_id).await.unwrap().unwrap();
        assert_eq!(d2, d1 + 1);
        assert!(v2 > v1, "{}: {v1} then {v2}", db.backend);
        assert_eq!(
            status(s, "full@example.org").await,
            SubscriberStatus::Active
        );
    }
}

#[tokio::test]
async fn a_block_never_prunes_however_often() {
    for db in common::stores().await {
        let s = &db.store;
        let (_, ds) = campaign(s, &["reader"]).await;
        let day1 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(day1));
        let app = app(s, true, Arc::clone(&clock));
        for day in 0..10 {
            clock.set(day1 + Duration::days(day));
            let applied = app
                .bounces()
                .apply(&ds[0], &bounce(BounceClass::Block, "5.7.1"))
                .await
                .unwrap();
            assert_eq!(applied, Applied::Nothing, "{}", db.backend);
        }
        assert_eq!(
            status(s, "reader@example.org").await,
            SubscriberStatus::Active
        );
        assert!(s.bounce_score(ds[0].subscriber_id).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn clean_prunes_by_the_same_policy_and_a_dry_run_prunes_nobody() {
    for db in common::stores().await {
        let s = &db.store;
        let (_, ds) = campaign(s, &["gone"]).await;
        let day1 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(day1));
        // auto_prune off: the endpoint only scores, `clean` prunes.
        let app = app(s, false, Arc::clone(&clock));
        let applied = app
            .bounces()
            .apply(&ds[0], &bounce(BounceClass::Hard, "5.1.1"))
            .await
            .unwrap();
        assert_eq!(applied, Applied::OverThreshold, "{}", db.backend);
        assert_eq!(
            status(s, "gone@example.org").await,
            SubscriberStatus::Active
        );
        let dry = app.bounces().clean(true).await.unwrap();
        assert_eq!(dry.len(), 1);
        assert_eq!(
            status(s, "gone@example.org").await,
            SubscriberStatus::Active
        );
        // Scores decay by the clock: a month later it is under the threshold.
        clock.set(day1 + Duration::days(30));
        assert!(
            app.bounces().clean(true).await.unwrap().is_empty(),
            "{}",
            db.backend
        );
        clock.set(day1);
        let pruned = app.bounces().clean(false).await.unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!(
            status(s, "gone@example.org").await,
            SubscriberStatus::Bounced
        );
        let why = last_reason(s, "gone@example.org").await;
        assert!(
            why.starts_with("clean: bounce score 5.0 >= threshold 5.0; last counted: bounce ")
                && why.contains("hard 5.1.1 (rule test-rule"),
            "{}: {why}",
            db.backend
        );
        // Pruned once: a second clean finds nothing to change.
        assert!(app.bounces().clean(false).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_complaint_unsubscribes_and_leaves_the_score_alone() {
    for db in common::stores().await {
        let s = &db.store;
        let (_, ds) = campaign(s, &["grumpy"]).await;
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let app = app(s, true, clock);
        let applied = app
            .bounces()
            .apply(&ds[0], &bounce(BounceClass::Complaint, ""))
            .await
            .unwrap();
        assert_eq!(applied, Applied::Unsubscribed, "{}", db.backend);
        assert_eq!(
            status(s, "grumpy@example.org").await,
            SubscriberStatus::Unsubscribed
        );
        assert!(s.bounce_score(ds[0].subscriber_id).await.unwrap().is_none());
    }
}

/// A stored DSN for `delivery` with `status`, as the endpoint keeps it.
async fn store_dsn(store: &Store, d: &DeliveryTarget, email: &str, status: &str) -> uuid::Uuid {
    let raw = format!(
        "From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
         Final-Recipient: rfc822; {email}\r\nAction: failed\r\nStatus: {status}\r\n\r\n--b--\r\n"
    );
    store
        .insert_bounce(&rundbrief_store::NewBounce {
            source: rundbrief_core::BounceSource::Smtp,
            peer: Some("127.0.0.1".into()),
            mail_from: None,
            rcpt: None,
            delivery_id: Some(d.delivery_id),
            raw: raw.as_bytes(),
        })
        .await
        .unwrap()
}

/// `bounce reprocess` parses stored messages again (after a parser
/// upgrade), but a bounce that already counted does not count again: a
/// soft bounce counted yesterday would otherwise add to the score a second
/// time today, and repeated reprocessing would prune a live address.
#[tokio::test]
async fn reprocessing_does_not_count_a_bounce_twice() {
    for db in common::stores().await {
        let s = &db.store;
        let (_, ds) = campaign(s, &["full"]).await;
        let day1 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(day1));
        let app = app(s, true, Arc::clone(&clock));
        let b = app.bounces();
        store_dsn(s, &ds[0], "full@example.org", "4.2.2").await;
        assert_eq!(b.process_pending().await.unwrap(), 1);
        let counted = s.bounce_score(ds[0].subscriber_id).await.unwrap();
        assert!(counted.is_some(), "{}: the soft bounce counted", db.backend);
        for day in 1..=3 {
            clock.set(day1 + Duration::days(day));
            assert_eq!(s.requeue_bounces(None).await.unwrap(), 1);
            assert_eq!(b.process_pending().await.unwrap(), 1);
            assert_eq!(
                s.bounce_score(ds[0].subscriber_id).await.unwrap(),
                counted,
                "{}: reprocessed on day {day}, the bounce counted again",
                db.backend
            );
        }
        // A new bounce does count.
        store_dsn(s, &ds[0], "full@example.org", "4.2.2").await;
        assert_eq!(b.process_pending().await.unwrap(), 1);
        assert_ne!(
            s.bounce_score(ds[0].subscriber_id).await.unwrap(),
            counted,
            "{}: a new bounce counts",
            db.backend
        );
    }
}

/// `sub restore` resets the score: the old bounces stay stored as evidence
/// but no longer count, even when parsed again; a bounce received after
/// the restore counts as any other.
#[tokio::test]
async fn a_restored_subscriber_is_not_pruned_again_for_old_bounces() {
    for db in common::stores().await {
        let s = &db.store;
        let (_, ds) = campaign(s, &["anna"]).await;
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(now));
        let app = app(s, false, Arc::clone(&clock));
        let b = app.bounces();
        store_dsn(s, &ds[0], "anna@example.org", "5.1.1").await;
        assert_eq!(b.process_pending().await.unwrap(), 1);
        assert_eq!(b.clean(false).await.unwrap().len(), 1, "{}", db.backend);
        assert_eq!(
            status(s, "anna@example.org").await,
            SubscriberStatus::Bounced
        );

        let anna = Address::parse("anna@example.org").unwrap();
        s.restore_subscriber(&anna, rundbrief_core::Actor::Cli, "the mailbox works again")
            .await
            .unwrap();
        assert_eq!(
            status(s, "anna@example.org").await,
            SubscriberStatus::Active
        );
        let why = last_reason(s, "anna@example.org").await;
        assert!(
            why.contains("bounce score 5.0 reset") && why.contains("no longer count"),
            "{}: {why}",
            db.backend
        );
        assert!(b.clean(true).await.unwrap().is_empty(), "{}", db.backend);

        // Parsing it again does not bring it back into the score.
        clock.set(now + Duration::days(1));
        assert_eq!(s.requeue_bounces(None).await.unwrap(), 1);
        assert_eq!(b.process_pending().await.unwrap(), 1);
        assert!(b.clean(true).await.unwrap().is_empty(), "{}", db.backend);

        // A bounce received after the restore counts as any other.
        let new = store_dsn(s, &ds[0], "anna@example.org", "5.1.1").await;
        assert_eq!(b.process_pending().await.unwrap(), 1);
        let would = b.clean(true).await.unwrap();
        assert_eq!(would.len(), 1, "{}", db.backend);
        let last = would[0].last_bounce.clone().unwrap_or_default();
        assert!(
            last.starts_with(&format!("bounce {new}: hard 5.1.1")),
            "{}: {last}",
            db.backend
        );
    }
}
