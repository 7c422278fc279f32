//! The recipient-domain check at import and before a campaign sends, on
//! real stores (SQLite, and PostgreSQL when `RUNDBRIEF_TEST_POSTGRES` is
//! set), every lookup going to `rundbrief-dns`'s responder on a loopback
//! port the test picks; never the system's resolver.

#[path = "../../store/tests/common/mod.rs"]
mod common;

use rundbrief_app::App;
use rundbrief_app::domains::{DomainChecker, UndeliverableRow};
use rundbrief_core::csvin::ImportRow;
use rundbrief_core::{
    Actor, Address, AuditAction, CampaignState, Config, DeliveryState, Secret, StatusFilter,
    SubscriberStatus,
};
use rundbrief_dns::responder::{Fault, Responder};
use rundbrief_sender::StubTransport;
use rundbrief_store::{ImportOptions, Store, SubscriberQuery, UndeliverableMark};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

/// A responder that knows: `good.example` (MX), `direct.example` (A only),
/// `nomail.example` (null MX), `empty.example` (exists, no records),
/// `broken.example` (SERVFAIL); every other name is NXDOMAIN.
async fn responder() -> Responder {
    let dns = Responder::start().await.unwrap();
    dns.mx("good.example", 300, &[(10, "mx.good.example")]);
    dns.a("direct.example", 300, &[Ipv4Addr::new(192, 0, 2, 1)]);
    dns.mx("nomail.example", 300, &[(0, ".")]);
    dns.exists("empty.example");
    dns.exists("broken.example");
    dns.fault("broken.example", Some(Fault::ServFail));
    dns
}

fn config(dns: &Responder, check: bool) -> Config {
    let mut cfg = Config {
        secret: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        ..Config::default()
    };
    cfg.sending.from = Some("News <news@example.org>".into());
    cfg.sending.bounce_domain = Some("bounce.example.org".into());
    cfg.sending.public_url = Some("https://news.example.org".into());
    cfg.dns.servers = vec![dns.addr().to_string()];
    cfg.dns.timeout_secs = 1;
    cfg.dns.attempts = 1;
    cfg.dns.check = check;
    cfg.validate().unwrap();
    cfg
}

fn row(line: u64, email: &str) -> ImportRow {
    ImportRow {
        line,
        address: Address::parse(email).unwrap(),
        name: None,
        attributes: Default::default(),
    }
}

async fn detail(s: &Store, email: &str) -> rundbrief_core::SubscriberDetail {
    s.subscriber_detail(&Address::parse(email).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn import_rows_on_dead_domains_become_undeliverable_with_the_reason_and_come_back() {
    let dns = responder().await;
    let checker = DomainChecker::from_config(&config(&dns, true))
        .unwrap()
        .expect("check is on");
    assert!(
        DomainChecker::from_config(&config(&dns, false))
            .unwrap()
            .is_none(),
        "check = false builds no checker"
    );
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("news", None).await.unwrap();
        // A blocklisted address keeps its stronger status.
        s.blocklist(&Address::parse("x@gone.example").unwrap(), Actor::Cli, "t")
            .await
            .unwrap();
        let rows = vec![
            row(2, "ann@good.example"),
            row(3, "bob@gone.example"),
            row(4, "cid@nomail.example"),
            row(5, "dan@direct.example"),
            row(6, "eve@empty.example"),
            row(7, "fay@broken.example"),
            row(8, "x@gone.example"),
            row(9, "gus@Gone.Example"),
        ];
        let found = checker.check_rows(&rows).await;
        let want = |line, email: &str, reason: &str, domain: &str| UndeliverableRow {
            line,
            email: email.into(),
            reason: reason.into(),
            domain: domain.into(),
        };
        assert_eq!(
            found,
            vec![
                want(
                    3,
                    "bob@gone.example",
                    "no MX or A (NXDOMAIN)",
                    "gone.example"
                ),
                want(
                    4,
                    "cid@nomail.example",
                    "null MX (RFC 7505)",
                    "nomail.example"
                ),
                want(6, "eve@empty.example", "no MX or A", "empty.example"),
                want(8, "x@gone.example", "no MX or A (NXDOMAIN)", "gone.example"),
                want(
                    9,
                    "gus@gone.example",
                    "no MX or A (NXDOMAIN)",
                    "gone.example"
                ),
            ],
            "{b}: SERVFAIL (broken.example) is unknown and never listed"
        );
        let mut imp = s
            .begin_import(
                "news",
                ImportOptions {
                    source: "t.csv".into(),
                    ..ImportOptions::default()
                },
            )
            .await
            .unwrap();
        let report = imp.write_batch(rows.clone()).await.unwrap();
        imp.finish().await.unwrap();
        assert_eq!((report.imported, report.skipped), (7, 1), "{b}");
        assert_eq!(checker.mark_rows(s, &found).await.unwrap(), 4, "{b}");
        // Marking again changes nothing (an import run twice converges).
        assert_eq!(checker.mark_rows(s, &found).await.unwrap(), 0, "{b}");

        for (email, status) in [
            ("ann@good.example", SubscriberStatus::Active),
            ("bob@gone.example", SubscriberStatus::Undeliverable),
            ("cid@nomail.example", SubscriberStatus::Undeliverable),
            ("dan@direct.example", SubscriberStatus::Active),
            ("eve@empty.example", SubscriberStatus::Undeliverable),
            ("fay@broken.example", SubscriberStatus::Active),
            ("x@gone.example", SubscriberStatus::Blocklisted),
            ("gus@gone.example", SubscriberStatus::Undeliverable),
        ] {
            assert_eq!(
                detail(s, email).await.subscriber.status,
                status,
                "{b}: {email}"
            );
        }
        let cid = detail(s, "cid@nomail.example").await;
        let last = cid.audit.last().unwrap();
        assert_eq!(
            (last.action, last.actor, last.reason.as_str()),
            (
                AuditAction::Undeliverable,
                Actor::Import,
                "nomail.example: null MX (RFC 7505)"
            ),
            "{b}"
        );
        let listed = s
            .subscribers(&SubscriberQuery {
                status: Some("undeliverable".parse::<StatusFilter>().unwrap()),
                ..SubscriberQuery::default()
            })
            .await
            .unwrap();
        let mut emails: Vec<_> = listed.iter().map(|r| r.subscriber.email.as_str()).collect();
        emails.sort();
        assert_eq!(
            emails,
            [
                "bob@gone.example",
                "cid@nomail.example",
                "eve@empty.example",
                "gus@gone.example"
            ],
            "{b}"
        );
        assert_eq!(
            s.list_summary("news").await.unwrap().counts.undeliverable,
            4,
            "{b}"
        );

        // Reversible: restore makes the address active again, audited.
        s.restore_subscriber(
            &Address::parse("bob@gone.example").unwrap(),
            Actor::Cli,
            "sub restore",
        )
        .await
        .unwrap();
        let bob = detail(s, "bob@gone.example").await;
        assert_eq!(bob.subscriber.status, SubscriberStatus::Active, "{b}");
        let last = bob.audit.last().unwrap();
        assert_eq!(last.action, AuditAction::Restored, "{b}");
        assert!(
            last.reason.contains("was undeliverable"),
            "{b}: {}",
            last.reason
        );
    }
}

#[tokio::test]
async fn a_campaign_skips_undeliverable_recipients_and_sends_to_the_rest() {
    let dns = responder().await;
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let c = common::campaign_to(
            s,
            "issue-1",
            "news",
            &[
                "ann@good.example",
                "bob@gone.example",
                "cid@nomail.example",
                "fay@broken.example",
                "old@good.example",
            ],
        )
        .await;
        // Marked before the campaign (an import's check): DNS changed since,
        // but the mark stands until `sub restore`.
        s.mark_undeliverable(
            &[UndeliverableMark {
                key: Address::parse("old@good.example").unwrap().key(),
                reason: "good.example: null MX (RFC 7505)".into(),
            }],
            Actor::Import,
        )
        .await
        .unwrap();
        s.set_campaign_state(c.id, CampaignState::Running)
            .await
            .unwrap();
        assert_eq!(s.materialise_deliveries(c.id).await.unwrap(), 4, "{b}");

        // With the check off nothing is looked up or skipped.
        let off = App::new(
            config(&dns, false),
            s.clone(),
            Arc::new(rundbrief_scheduler::SystemClock),
            Arc::new(rundbrief_app::NoObserver),
        );
        let queries = dns.queries();
        assert_eq!(off.check_campaign_domains(c.id).await.unwrap(), None, "{b}");
        assert_eq!(dns.queries(), queries, "{b}: check off asks nothing");

        let app = App::new(
            config(&dns, true),
            s.clone(),
            Arc::new(rundbrief_scheduler::SystemClock),
            Arc::new(rundbrief_app::NoObserver),
        );
        let check = app
            .check_campaign_domains(c.id)
            .await
            .unwrap()
            .expect("check is on");
        assert_eq!(
            (
                check.domains,
                check.undeliverable_domains,
                check.unknown_domains,
                check.marked,
                check.skipped
            ),
            (4, 2, 1, 2, 2),
            "{b}"
        );
        let counts = s.campaign_counts(c.id).await.unwrap();
        assert_eq!(
            (counts.total, counts.skipped, counts.pending),
            (5, 3, 2),
            "{b}"
        );

        let sent_to = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sent_to);
        let stub = Arc::new(StubTransport::with_rule(move |d| {
            seen.lock().unwrap().push(d.to.clone());
            rundbrief_sender::Outcome::Sent {
                reply: rundbrief_sender::Reply::new(250, "ok"),
            }
        }));
        let content = s.campaign("issue-1").await.unwrap();
        let mut runner = app.runner_with(&content, stub, 2, false).unwrap();
        runner.config.materialise = false;
        let stop = tokio_util::sync::CancellationToken::new();
        let report = runner.run(c.id, &stop, &|_| {}).await.unwrap();
        let mut got = sent_to.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, ["ann@good.example", "fay@broken.example"], "{b}");
        assert_eq!((report.counts.sent, report.counts.skipped), (2, 3), "{b}");
        assert_eq!(
            s.campaign_state(c.id).await.unwrap(),
            CampaignState::Finished,
            "{b}: skipped deliveries are final"
        );
        let errors = s.campaign_errors(c.id, 10).await.unwrap();
        let skipped: Vec<_> = errors
            .iter()
            .filter(|e| e.state == DeliveryState::Skipped)
            .map(|e| (e.error.as_deref().unwrap_or(""), e.count))
            .collect();
        assert_eq!(
            skipped,
            [
                ("gone.example: no MX or A (NXDOMAIN)", 1),
                ("good.example: null MX (RFC 7505)", 1),
                ("nomail.example: null MX (RFC 7505)", 1),
            ],
            "{b}"
        );
        let bob = detail(s, "bob@gone.example").await;
        assert_eq!(
            bob.subscriber.status,
            SubscriberStatus::Undeliverable,
            "{b}"
        );
        let last = bob.audit.last().unwrap();
        assert_eq!(
            (last.action, last.actor),
            (AuditAction::Undeliverable, Actor::Scheduler),
            "{b}"
        );
        // Not a bounce: the bounced count and status are untouched.
        assert_eq!(report.counts.bounced, 0, "{b}");

        // `campaign start --no-dns-check` keeps its choice for `serve`.
        assert!(!s.campaign_skips_dns_check(c.id).await.unwrap(), "{b}");
        s.set_campaign_skips_dns_check(c.id, true).await.unwrap();
        assert!(s.campaign_skips_dns_check(c.id).await.unwrap(), "{b}");
    }
}
