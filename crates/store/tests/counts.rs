//! The delivery counts kept by triggers (migration 18) against a direct
//! count of the deliveries, after real work of every kind, on SQLite and
//! (when configured) PostgreSQL; and two concurrent workers on PostgreSQL
//! (issue 19).

mod common;

use chrono::{Duration, Utc};
use rundbrief_core::{Actor, CampaignState, DeliveryState};
use rundbrief_store::{DeliveryOutcome, Store};
use uuid::Uuid;

/// A running campaign `name` on list `list` with `n` subscribers spread
/// over three domains (more at a.example than b.example than c.example),
/// its deliveries materialised.
async fn campaign(s: &Store, name: &str, list: &str, n: usize) -> Uuid {
    let emails: Vec<String> = (0..n)
        .map(|i| {
            let domain = [
                "a.example",
                "a.example",
                "a.example",
                "b.example",
                "b.example",
                "c.example",
            ][i % 6];
            format!("{name}{i}@{domain}")
        })
        .collect();
    let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
    let c = common::campaign_to(s, name, list, &emails).await;
    s.set_campaign_state(c.id, CampaignState::Running)
        .await
        .unwrap();
    s.materialise_deliveries(c.id).await.unwrap();
    c.id
}

/// The maintained counts equal a scan of the deliveries.
async fn assert_counts(s: &Store, c: Uuid, step: &str) {
    let (scanned, domains) = s.scan_delivery_counts(c).await.unwrap();
    let kept = s.campaign_counts(c).await.unwrap();
    assert_eq!(kept, scanned, "{step}: counts by state");
    let kept = s.campaign_domain_counts(c, 100).await.unwrap();
    assert_eq!(kept, domains, "{step}: counts by domain");
    let top = s.campaign_domain_counts(c, 1).await.unwrap();
    assert_eq!(top[..], domains[..domains.len().min(1)], "{step}: limit");
}

fn out(campaign: Uuid, id: Uuid, state: DeliveryState, error: Option<&str>) -> DeliveryOutcome {
    DeliveryOutcome {
        delivery_id: id,
        campaign_id: campaign,
        state,
        error: error.map(str::to_string),
        next_attempt_at: (state == DeliveryState::Deferred)
            .then(|| Utc::now() + Duration::hours(1)),
    }
}

#[tokio::test]
async fn issue_19_kept_counts_equal_a_scan_after_every_kind_of_work() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign(s, "kc", "news", 36).await;
        // Another campaign over the same subscribers: counted apart.
        let other = campaign(s, "kc2", "news", 0).await;
        assert_counts(s, c, &format!("{b}: materialised")).await;
        assert_eq!(s.campaign_counts(c).await.unwrap().pending, 36, "{b}");
        let domains = s.campaign_domain_counts(c, 10).await.unwrap();
        assert_eq!(
            domains
                .iter()
                .map(|d| (d.domain.as_str(), d.pending))
                .collect::<Vec<_>>(),
            [("a.example", 18), ("b.example", 12), ("c.example", 6)],
            "{b}"
        );

        let now = Utc::now();
        let lease = now + Duration::seconds(60);
        let a = s.claim_deliveries(c, "A", now, lease, 24).await.unwrap();
        assert_counts(s, c, &format!("{b}: claimed")).await;
        assert_eq!(s.campaign_counts(c).await.unwrap().sending, 24, "{b}");

        // Outcomes of every kind; two plain 250s in one statement.
        let ids: Vec<Uuid> = a.iter().map(|d| d.delivery_id).collect();
        s.record_outcomes(&[
            out(c, ids[0], DeliveryState::Sent, None),
            out(c, ids[1], DeliveryState::Sent, None),
            out(c, ids[2], DeliveryState::Sent, None),
            out(c, ids[3], DeliveryState::Deferred, Some("451 4.7.1 later")),
            out(
                c,
                ids[4],
                DeliveryState::Failed,
                Some("RCPT: 550 5.1.1 unknown"),
            ),
            out(
                c,
                ids[5],
                DeliveryState::Rejected,
                Some("DATA: 554 5.7.1 spam"),
            ),
            out(
                c,
                ids[6],
                DeliveryState::Failed,
                Some("RCPT: 550 5.1.1 unknown"),
            ),
        ])
        .await
        .unwrap();
        assert_counts(s, c, &format!("{b}: outcomes")).await;
        // Two readers join the list while it runs: materialising again
        // counts only the rows it adds (on SQLite by rowid, migration 19).
        for e in ["late1@d.example", "late2@a.example"] {
            s.add_subscriber(
                &rundbrief_core::Address::parse(e).unwrap(),
                "news",
                None,
                rundbrief_core::Attributes::new(),
                false,
                Actor::Cli,
                "test",
            )
            .await
            .unwrap();
        }
        assert_eq!(s.materialise_deliveries(c).await.unwrap(), 2, "{b}");
        assert_eq!(s.materialise_deliveries(c).await.unwrap(), 0, "{b}");
        assert_counts(s, c, &format!("{b}: materialised again")).await;
        assert_counts(
            s,
            other,
            &format!("{b}: the other, before it rematerialises"),
        )
        .await;
        assert_eq!(s.campaign_counts(c).await.unwrap().total, 38, "{b}");
        // A sent one bounces later; one of the same state again changes nothing.
        let t = s.delivery_target(ids[0]).await.unwrap().unwrap();
        s.record_bounce_score(&t, None).await.unwrap();
        s.record_outcomes(&[out(c, ids[0], DeliveryState::Sent, None)])
            .await
            .unwrap();
        s.record_delivery(ids[7], DeliveryState::Sent, None)
            .await
            .unwrap();
        assert_counts(s, c, &format!("{b}: bounce")).await;
        assert_eq!(
            s.campaign_counts(c).await.unwrap().bounced,
            2,
            "{b}: async + rejected"
        );

        // The provider is held, the relay requeues, the domain check skips.
        s.hold_deliveries(
            &ids[8..10],
            &rundbrief_store::hold_prefix("a"),
            now + Duration::hours(1),
        )
        .await
        .unwrap();
        s.requeue_deliveries(&ids[10..12], now + Duration::minutes(5))
            .await
            .unwrap();
        s.skip_undeliverable(c, &[(a[12].subscriber_id, "no MX".into())], Actor::Cli)
            .await
            .unwrap();
        assert_counts(s, c, &format!("{b}: held, requeued, skipped")).await;

        // The worker stops cleanly, another one's lease runs out and is taken over.
        s.release_claims(c, "A").await.unwrap();
        let bb = s.claim_deliveries(c, "B", now, lease, 5).await.unwrap();
        assert!(!bb.is_empty(), "{b}");
        let later = lease + Duration::seconds(1);
        let cc = s
            .claim_deliveries(c, "C", later, later + Duration::seconds(60), 100)
            .await
            .unwrap();
        assert!(cc.len() >= bb.len(), "{b}: B's expired claims come back");
        assert_counts(s, c, &format!("{b}: released, expired")).await;
        let rest: Vec<_> = cc
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let st = [
                    DeliveryState::Sent,
                    DeliveryState::Failed,
                    DeliveryState::Sent,
                ][i % 3];
                out(
                    c,
                    d.delivery_id,
                    st,
                    (st == DeliveryState::Failed).then_some("timeout"),
                )
            })
            .collect();
        s.record_outcomes(&rest).await.unwrap();
        assert_counts(s, c, &format!("{b}: recorded")).await;

        // retry-failed, cancel, then the campaign is deleted (cascade).
        assert!(s.retry_failed("kc").await.unwrap() > 0, "{b}");
        assert_counts(s, c, &format!("{b}: retry-failed")).await;
        s.transition_campaign("kc", CampaignState::Cancelled)
            .await
            .unwrap();
        assert_counts(s, c, &format!("{b}: cancelled")).await;
        let before_other = s.campaign_counts(other).await.unwrap();
        assert_eq!(before_other.total, 36, "{b}: its own rows only");
        s.fold_delivery_counts(c).await.unwrap();
        assert_counts(s, c, &format!("{b}: folded")).await;
        s.execute_for_tests("DELETE FROM campaigns WHERE name = 'kc'")
            .await
            .unwrap();
        assert_eq!(
            s.scan_delivery_counts(c).await.unwrap().0.total,
            0,
            "{b}: cascaded"
        );
        assert_counts(s, c, &format!("{b}: deleted")).await;
        assert_eq!(s.campaign_counts(c).await.unwrap().total, 0, "{b}");
        assert_eq!(
            s.campaign_counts(other).await.unwrap(),
            before_other,
            "{b}: the other campaign"
        );
        assert_counts(s, other, &format!("{b}: the other campaign")).await;
    }
}

#[tokio::test]
async fn issue_19_postgres_folds_delta_rows_and_keeps_the_sums() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign(s, "fold", "news", 300).await;
        let now = Utc::now();
        // One statement per delivery: many small deltas.
        for d in s
            .claim_deliveries(c, "A", now, now + Duration::seconds(60), 300)
            .await
            .unwrap()
        {
            s.record_delivery(d.delivery_id, DeliveryState::Sent, None)
                .await
                .unwrap();
        }
        let (domains, rows) = s.delivery_count_rows(c).await.unwrap();
        assert_eq!(domains, 3, "{b}");
        if b == "postgres" {
            assert!(rows > 256 + 2 * 3, "{b}: {rows} delta rows before reading");
        } else {
            assert_eq!(rows, 3, "{b}: one row per domain, updated in place");
        }
        assert_counts(s, c, b).await;
        let (_, rows) = s.delivery_count_rows(c).await.unwrap();
        assert!(rows <= 3, "{b}: folded by the reader to {rows}");
        assert_counts(s, c, b).await;
    }
}

/// Two workers claim and record the same campaign at once while a reader
/// folds: no deadlock, exact counts (the reason for the append-only deltas).
#[tokio::test]
async fn issue_19_concurrent_workers_do_not_deadlock_on_counts() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign(s, "conc", "news", 600).await;
        let worker = |owner: &'static str| async move {
            let mut rounds = 0;
            loop {
                rounds += 1;
                assert!(rounds < 1000, "{owner}: no end");
                let now = Utc::now();
                let got = s
                    .claim_deliveries(c, owner, now, now + Duration::seconds(60), 20)
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                let outs: Vec<_> = got
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let st = [
                            DeliveryState::Sent,
                            DeliveryState::Sent,
                            DeliveryState::Deferred,
                            DeliveryState::Failed,
                        ][i % 4];
                        out(
                            c,
                            d.delivery_id,
                            st,
                            (st != DeliveryState::Sent).then_some("4xx/5xx"),
                        )
                    })
                    .collect();
                s.record_outcomes(&outs).await.unwrap();
            }
        };
        let reader = async {
            for _ in 0..50 {
                s.campaign_counts(c).await.unwrap();
                s.campaign_domain_counts(c, 10).await.unwrap();
                tokio::task::yield_now().await;
            }
        };
        tokio::join!(worker("A"), worker("B"), reader);
        assert_counts(s, c, b).await;
        let counts = s.campaign_counts(c).await.unwrap();
        assert_eq!((counts.total, counts.pending), (600, 0), "{b}");
        assert_eq!(counts.sent, 300, "{b}");
    }
}

/// A reply too long for a btree entry (PostgreSQL) is cut to fit the
/// failure-reason index instead of failing the outcome; SQLite keeps it.
#[tokio::test]
async fn issue_19_a_huge_error_is_recorded_and_grouped() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign(s, "huge", "news", 2).await;
        let now = Utc::now();
        let got = s
            .claim_deliveries(c, "A", now, now + Duration::seconds(60), 2)
            .await
            .unwrap();
        // Random hex does not compress to fit either.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let huge: String = (0..8000)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                char::from(b"0123456789abcdef"[(x >> 60) as usize])
            })
            .collect();
        s.record_outcomes(&[
            out(c, got[0].delivery_id, DeliveryState::Failed, Some(&huge)),
            out(c, got[1].delivery_id, DeliveryState::Failed, Some(&huge)),
        ])
        .await
        .unwrap();
        let errors = s.campaign_errors(c, 10).await.unwrap();
        assert_eq!(errors.len(), 1, "{b}: one reason");
        assert_eq!(errors[0].count, 2, "{b}");
        let e = errors[0].error.as_deref().unwrap();
        if b == "postgres" {
            assert!(e.starts_with(&huge[..500]), "{b}");
            assert!(e.ends_with("[cut from 8000 bytes]"), "{b}: {}", &e[490..]);
        } else {
            assert_eq!(e, huge, "{b}");
        }
    }
}
