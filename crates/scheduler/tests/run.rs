//! The campaign runner inside its own crate: a real store (SQLite, and
//! PostgreSQL when `RUNDBRIEF_TEST_POSTGRES` is set), the sender's in-memory
//! `StubTransport` instead of SMTP, and a `ManualClock`, so retries, windows,
//! pause and synchronous bounces are tested without sockets or sleeping.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use chrono::{Duration, TimeZone, Utc};
use rundbrief_core::CampaignState;
use rundbrief_scheduler::{Clock, Ended, HookError, Hooks, ManualClock, RunConfig, Runner};
use rundbrief_sender::throttle::{Limits, Throttle};
use rundbrief_sender::{SendError, SmtpStep, StubTransport, Transport};
use rundbrief_store::{PendingDelivery, Schedule, Store};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Renders a fixed message; remembers the synchronous bounces handed to it.
#[derive(Default)]
struct TestHooks {
    rejected: Mutex<Vec<(String, u16)>>,
}

#[async_trait::async_trait]
impl Hooks for TestHooks {
    fn render(&self, d: &PendingDelivery) -> Result<Vec<u8>, HookError> {
        Ok(format!("To: {}\r\nSubject: t\r\n\r\nhello\r\n", d.email).into_bytes())
    }
    async fn rejected(&self, d: &PendingDelivery, error: &SendError) -> Result<(), HookError> {
        let code = error.reply().map_or(0, |r| r.code);
        self.rejected.lock().unwrap().push((d.email.clone(), code));
        Ok(())
    }
}

/// A running campaign on list `news` to `local`@example.org for each local part.
async fn campaign(store: &Store, name: &str, locals: &[&str]) -> uuid::Uuid {
    let emails: Vec<String> = locals.iter().map(|l| format!("{l}@example.org")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let c = common::campaign_to(store, name, "news", &refs).await;
    store
        .set_campaign_state(c.id, CampaignState::Running)
        .await
        .unwrap();
    c.id
}

fn runner(
    store: &Store,
    transport: Arc<dyn Transport>,
    hooks: Arc<TestHooks>,
    clock: Arc<ManualClock>,
) -> Runner {
    let mut config = RunConfig::new("test-worker", 4);
    config.wait = false;
    config.retry.base = std::time::Duration::from_secs(60);
    config.retry.max = std::time::Duration::from_secs(600);
    config.retry.max_age = std::time::Duration::from_secs(3600);
    Runner {
        store: store.clone(),
        sender: transport,
        throttle: Arc::new(Throttle::new(Limits::default())),
        hooks,
        clock,
        config,
        relays: None,
    }
}

fn stop() -> tokio_util::sync::CancellationToken {
    tokio_util::sync::CancellationToken::new()
}

#[tokio::test]
async fn every_recipient_gets_one_message_and_the_campaign_finishes() {
    for db in common::stores().await {
        let s = &db.store;
        let locals: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = locals.iter().map(String::as_str).collect();
        let id = campaign(s, "all", &refs).await;
        let stub = Arc::new(StubTransport::accepting());
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let r = runner(s, stub.clone(), Arc::default(), clock);
        let report = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(report.ended, Ended::Finished, "{}", db.backend);
        assert_eq!((report.counts.sent, report.counts.total), (25, 25));
        let seen: HashSet<String> = stub.sent().into_iter().map(|(d, _)| d.to).collect();
        assert_eq!(seen.len(), 25, "{}: each recipient once", db.backend);
        assert_eq!(s.campaign_state(id).await.unwrap(), CampaignState::Finished);
    }
}

#[tokio::test]
async fn a_deferral_waits_for_the_clock_then_is_retried() {
    for db in common::stores().await {
        let s = &db.store;
        let id = campaign(s, "grey", &["grey", "fine"]).await;
        // Greylisting: the first attempt to grey@ is deferred, later ones pass.
        let tried = Arc::new(Mutex::new(HashSet::new()));
        let t2 = Arc::clone(&tried);
        let stub = Arc::new(StubTransport::with_rule(move |d| {
            if d.to.starts_with("grey") && t2.lock().unwrap().insert(d.to.clone()) {
                StubTransport::refusal(SmtpStep::Rcpt, 450, "4.2.0 Greylisted")
            } else {
                sent()
            }
        }));
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let r = runner(s, stub.clone(), Arc::default(), Arc::clone(&clock));
        let first = r.run(id, &stop(), &|_| {}).await.unwrap();
        let Ended::RetriesLater(at) = first.ended else {
            panic!("{}: {:?}", db.backend, first.ended);
        };
        assert!(at > t0, "{}: the retry is in the future", db.backend);
        assert_eq!((first.counts.sent, first.counts.deferred), (1, 1));
        // Nothing is due before `at`: a second pass sends nothing.
        let again = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert!(matches!(again.ended, Ended::RetriesLater(_)));
        assert_eq!(again.attempts, 0, "{}", db.backend);
        clock.set(at + Duration::seconds(1));
        let last = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(last.ended, Ended::Finished, "{}", db.backend);
        assert_eq!((last.counts.sent, last.counts.deferred), (2, 0));
        assert_eq!(
            stub.sent()
                .iter()
                .filter(|(d, _)| d.to.starts_with("grey"))
                .count(),
            2,
            "{}: deferred once, then sent",
            db.backend
        );
    }
}

fn sent() -> rundbrief_sender::Outcome {
    rundbrief_sender::Outcome::Sent {
        reply: rundbrief_sender::Reply::new(250, "2.0.0 ok"),
    }
}

#[tokio::test]
async fn past_the_maximum_age_a_deferral_fails_with_its_reason() {
    for db in common::stores().await {
        let s = &db.store;
        let id = campaign(s, "old", &["full"]).await;
        let stub = Arc::new(StubTransport::with_rule(|_| {
            StubTransport::refusal(SmtpStep::Rcpt, 452, "4.2.2 Mailbox full")
        }));
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let r = runner(s, stub, Arc::default(), Arc::clone(&clock));
        let first = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert!(
            matches!(first.ended, Ended::RetriesLater(_)),
            "{}",
            db.backend
        );
        // Past max_age (one hour) since the first attempt: the next one is final.
        clock.set(t0 + Duration::hours(2));
        let last = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(last.ended, Ended::Finished, "{}", db.backend);
        assert_eq!(last.counts.failed, 1, "{}", db.backend);
        let errors = s.campaign_errors(id, 5).await.unwrap();
        let e = serde_json::to_string(&errors).unwrap();
        assert!(
            e.contains("4.2.2"),
            "{}: the reason is kept: {e}",
            db.backend
        );
    }
}

#[tokio::test]
async fn a_5xx_at_rcpt_is_rejected_and_handed_to_the_hooks() {
    for db in common::stores().await {
        let s = &db.store;
        let id = campaign(s, "dead", &["dead", "alive"]).await;
        let stub = Arc::new(StubTransport::with_rule(|d| {
            if d.to.starts_with("dead") {
                StubTransport::refusal(SmtpStep::Rcpt, 550, "5.1.1 User unknown")
            } else {
                sent()
            }
        }));
        let hooks = Arc::new(TestHooks::default());
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let r = runner(s, stub, Arc::clone(&hooks), clock);
        let report = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(report.ended, Ended::Finished);
        assert_eq!(
            (
                report.counts.sent,
                report.counts.rejected,
                report.counts.bounced
            ),
            (1, 1, 1),
            "{}",
            db.backend
        );
        assert_eq!(
            *hooks.rejected.lock().unwrap(),
            vec![("dead@example.org".to_string(), 550)]
        );
    }
}

#[tokio::test]
async fn a_paused_campaign_sends_nothing_until_it_runs_again() {
    for db in common::stores().await {
        let s = &db.store;
        let id = campaign(s, "p", &["a", "b", "c"]).await;
        s.set_campaign_state(id, CampaignState::Paused)
            .await
            .unwrap();
        let stub = Arc::new(StubTransport::accepting());
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let r = runner(s, stub.clone(), Arc::default(), clock);
        let paused = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(
            paused.ended,
            Ended::Stopped(CampaignState::Paused),
            "{}",
            db.backend
        );
        assert!(
            stub.sent().is_empty(),
            "{}: nothing sent while paused",
            db.backend
        );
        s.set_campaign_state(id, CampaignState::Running)
            .await
            .unwrap();
        let resumed = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(resumed.ended, Ended::Finished);
        assert_eq!(stub.sent().len(), 3, "{}", db.backend);
    }
}

#[tokio::test]
async fn outside_the_send_window_a_run_returns_with_the_opening_time() {
    for db in common::stores().await {
        let s = &db.store;
        let id = campaign(s, "w", &["a"]).await;
        s.set_campaign_state(id, CampaignState::Draft)
            .await
            .unwrap();
        s.schedule_campaign(
            "w",
            &Schedule {
                send_at: None,
                cron: None,
                tz: Some("Europe/Berlin".into()),
                window_start: Some("08:00".into()),
                window_end: Some("20:00".into()),
            },
        )
        .await
        .unwrap();
        s.set_campaign_state(id, CampaignState::Running)
            .await
            .unwrap();
        // 22:00 in Berlin (21:00 UTC in December): closed until 08:00 Berlin.
        let late = Utc.with_ymd_and_hms(2026, 12, 1, 21, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(late));
        let stub = Arc::new(StubTransport::accepting());
        let r = runner(s, stub.clone(), Arc::default(), Arc::clone(&clock));
        let closed = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(
            closed.ended,
            Ended::WindowClosed(Utc.with_ymd_and_hms(2026, 12, 2, 7, 0, 0).unwrap()),
            "{}",
            db.backend
        );
        assert!(stub.sent().is_empty());
        clock.set(Utc.with_ymd_and_hms(2026, 12, 2, 7, 0, 1).unwrap());
        assert_eq!(clock.now().timestamp() % 60, 1);
        let open = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(open.ended, Ended::Finished, "{}", db.backend);
        assert_eq!(stub.sent().len(), 1);
    }
}

/// After a crash the dead worker's claims are neither lost nor "deferred":
/// a run without waiting says until when they are leased, and a run after
/// the lease has ended sends them (#21: `send` exited 0 too early).
#[tokio::test]
async fn a_dead_workers_claims_are_reported_then_taken_over_when_their_lease_ends() {
    for db in common::stores().await {
        let s = &db.store;
        let id = campaign(s, "crash", &["a", "b", "c"]).await;
        s.materialise_deliveries(id).await.unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let lease_end = t0 + Duration::seconds(120);
        let dead = s
            .claim_deliveries(id, "dead-worker", t0, lease_end, 2)
            .await
            .unwrap();
        assert_eq!(dead.len(), 2);
        let clock = Arc::new(ManualClock::new(t0 + Duration::seconds(5)));
        let stub = Arc::new(StubTransport::accepting());
        let r = runner(s, stub.clone(), Arc::default(), Arc::clone(&clock));
        let first = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(
            first.ended,
            Ended::RetriesLater(lease_end),
            "{}",
            db.backend
        );
        assert_eq!(first.counts.sent, 1);
        let (leased, until) = s.campaign_leases(id).await.unwrap();
        assert_eq!((leased, until), (2, Some(lease_end)), "{}", db.backend);
        clock.set(lease_end + Duration::seconds(1));
        let last = r.run(id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(last.ended, Ended::Finished, "{}", db.backend);
        assert_eq!(last.counts.sent, 3);
        assert_eq!(s.campaign_leases(id).await.unwrap().0, 0);
        assert_eq!(stub.sent().len(), 3, "{}: each once", db.backend);
    }
}

/// `blocky.example` and `blocky2.example` are one provider group.
struct Groups;
#[async_trait::async_trait]
impl rundbrief_sender::throttle::Grouping for Groups {
    async fn group_of(&self, domain: &str) -> Option<Arc<str>> {
        domain.starts_with("blocky").then(|| Arc::from("blocky"))
    }
}

#[tokio::test]
async fn a_provider_answering_421_4_7_0_is_suspended_and_the_others_are_sent() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let mut emails = Vec::new();
        for i in 0..20 {
            emails.push(format!("a{i}@blocky.example"));
            emails.push(format!("b{i}@blocky2.example"));
            emails.push(format!("c{i}@fine.example"));
        }
        let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
        let c = common::campaign_to(s, "shaped", "news", &refs).await;
        s.set_campaign_state(c.id, CampaignState::Running)
            .await
            .unwrap();
        // The provider refuses us until it is told otherwise.
        let blocking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let still = Arc::clone(&blocking);
        let stub = Arc::new(StubTransport::with_rule(move |d| {
            if d.to.contains("@blocky") && still.load(std::sync::atomic::Ordering::SeqCst) {
                StubTransport::refusal(SmtpStep::Rcpt, 421, "4.7.0 Too many complaints, try later")
            } else {
                sent()
            }
        }));
        let t0 = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap();
        let clock = Arc::new(ManualClock::new(t0));
        let mut r = runner(s, stub.clone(), Arc::default(), Arc::clone(&clock));
        // Fast enough that the slow-downs (each 421 halves the group's
        // rate) never make the test wait.
        let limits = Limits {
            default_domain: rundbrief_sender::throttle::DomainLimits::new(1_000_000_000, 4),
            global_rate: 1_000_000_000,
            ..Limits::default()
        };
        r.throttle = Arc::new(Throttle::with_grouping(limits, Arc::new(Groups)));
        r.config.breaker = Some(rundbrief_scheduler::BreakerLimits {
            window: 20,
            block_ratio: 0.2,
            complaint_ratio: 0.003,
            min_sample: 10,
        });
        let first = r.run(c.id, &stop(), &|_| {}).await.unwrap();
        assert!(
            matches!(first.ended, Ended::RetriesLater(_)),
            "{b}: {:?}",
            first.ended
        );
        assert_eq!(
            first.counts.sent, 20,
            "{b}: the other provider got everything"
        );
        let tried = |stub: &StubTransport| {
            stub.sent()
                .iter()
                .filter(|(d, _)| d.to.contains("@blocky"))
                .count()
        };
        let attempts = tried(&stub);
        // Suspended at the 10th outcome; at most the sends in flight after.
        assert!((10..=18).contains(&attempts), "{b}: {attempts} tried");
        let states = s.provider_states(c.id).await.unwrap();
        assert_eq!(states.len(), 1, "{b}: {states:?}");
        assert_eq!(states[0].provider, "blocky");
        assert_eq!(
            states[0].state,
            rundbrief_store::ProviderCondition::Suspended
        );
        assert!(
            states[0]
                .reason
                .contains("to blocky were refused as blocks"),
            "{b}"
        );
        // Both domains of the group were slowed and stopped together.
        assert!(r.throttle.state("blocky").slowed, "{b}");
        // Everything is due again later: a new run holds it all, tries none.
        clock.set(t0 + Duration::hours(2));
        let again = r.run(c.id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(again.ended, Ended::Suspended, "{b}");
        assert_eq!(
            tried(&stub),
            attempts,
            "{b}: nothing more to the suspended provider"
        );
        assert_eq!(again.counts.deferred, 40, "{b}: all of blocky waits");
        // Lifted (as `campaign resume --provider` does): due at once, tried again.
        let lifted = s
            .lift_providers(c.id, Some("blocky"), clock.now())
            .await
            .unwrap();
        assert_eq!(lifted, vec!["blocky".to_string()]);
        blocking.store(false, std::sync::atomic::Ordering::SeqCst);
        let last = r.run(c.id, &stop(), &|_| {}).await.unwrap();
        assert_eq!(
            tried(&stub),
            attempts + 40,
            "{b}: every held delivery tried"
        );
        assert_eq!(last.ended, Ended::Finished, "{b}");
        assert_eq!(last.counts.sent, 60, "{b}");
    }
}
