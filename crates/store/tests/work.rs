//! Work claiming: leases, outcomes, retries, schedules and runs, on SQLite
//! and (when configured) PostgreSQL.

mod common;

use chrono::{Duration, Utc};
use rundbrief_core::{Actor, Address, Attributes, CampaignState, DeliveryState};
use rundbrief_store::{DeliveryOutcome, NewCampaign, Schedule, Store};
use std::collections::HashSet;
use uuid::Uuid;

async fn campaign_with(s: &Store, name: &str, n: usize) -> Uuid {
    if s.find_list("news").await.unwrap().is_none() {
        s.create_list("news", None).await.unwrap();
    }
    for i in 0..n {
        s.add_subscriber(
            &Address::parse(&format!("{name}{i}@example.org")).unwrap(),
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
    let c = s
        .create_campaign(&NewCampaign {
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
        .unwrap();
    s.set_campaign_state(c.id, CampaignState::Running)
        .await
        .unwrap();
    s.materialise_deliveries(c.id).await.unwrap();
    c.id
}

fn outcome(campaign: Uuid, id: Uuid, state: DeliveryState) -> DeliveryOutcome {
    DeliveryOutcome {
        delivery_id: id,
        campaign_id: campaign,
        state,
        error: None,
        next_attempt_at: None,
    }
}

#[tokio::test]
async fn claims_are_disjoint_leases_expire_and_outcomes_finish_the_campaign() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign_with(s, "w", 25).await;
        let now = Utc::now();
        let lease = now + Duration::seconds(60);
        let a = s.claim_deliveries(c, "A", now, lease, 10).await.unwrap();
        let bb = s.claim_deliveries(c, "B", now, lease, 10).await.unwrap();
        assert_eq!((a.len(), bb.len()), (10, 10), "{b}");
        let ids_a: HashSet<_> = a.iter().map(|d| d.delivery_id).collect();
        assert!(
            bb.iter().all(|d| !ids_a.contains(&d.delivery_id)),
            "{b}: disjoint"
        );
        assert!(a.iter().all(|d| d.first_attempt_at.is_some()), "{b}");
        let counts = s.campaign_counts(c).await.unwrap();
        assert_eq!((counts.pending, counts.sending), (25, 20), "{b}");

        // B dies. Before its lease ends nobody gets its rows; after, they return.
        let c_rest = s.claim_deliveries(c, "C", now, lease, 100).await.unwrap();
        assert_eq!(c_rest.len(), 5, "{b}: only the unclaimed");
        assert!(
            s.claim_deliveries(c, "C", now, lease, 100)
                .await
                .unwrap()
                .is_empty()
        );
        let later = now + Duration::seconds(61);
        let reclaimed = s
            .claim_deliveries(c, "C", later, later + Duration::seconds(60), 100)
            .await
            .unwrap();
        let reclaimed: HashSet<_> = reclaimed.iter().map(|d| d.delivery_id).collect();
        // A's and C's leases ended too (same instant); what matters: B's rows are back.
        assert!(bb.iter().all(|d| reclaimed.contains(&d.delivery_id)), "{b}");

        // Record everything: A sent, a bounced one stays bounced, one deferred.
        let all: Vec<_> = a
            .iter()
            .chain(&bb)
            .chain(&c_rest)
            .map(|d| d.delivery_id)
            .collect();
        let target = s.delivery_target(all[0]).await.unwrap().unwrap();
        s.record_bounce_score(&target, None).await.unwrap();
        let retry_at = later + Duration::seconds(30);
        let mut outs: Vec<_> = all
            .iter()
            .map(|id| outcome(c, *id, DeliveryState::Sent))
            .collect();
        outs[1] = DeliveryOutcome {
            delivery_id: all[1],
            campaign_id: c,
            state: DeliveryState::Deferred,
            error: Some("451 4.7.1 later".into()),
            next_attempt_at: Some(retry_at),
        };
        s.record_outcomes(&outs).await.unwrap();
        let counts = s.campaign_counts(c).await.unwrap();
        assert_eq!(
            (
                counts.sent,
                counts.bounced,
                counts.deferred,
                counts.sending,
                counts.pending
            ),
            (23, 1, 1, 0, 0),
            "{b}: {counts:?}"
        );
        assert!(
            !s.finish_if_done(c).await.unwrap(),
            "{b}: one deferred left"
        );
        assert_eq!(
            s.next_work_at(c).await.unwrap().map(|t| t.timestamp()),
            Some(retry_at.timestamp()),
            "{b}"
        );
        // Not due before its time, due after.
        assert!(
            s.claim_deliveries(c, "A", later, lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        let due = s
            .claim_deliveries(c, "A", retry_at, retry_at + Duration::seconds(60), 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{b}");
        assert_eq!(due[0].attempts, 1, "{b}");
        s.record_outcomes(&[outcome(c, all[1], DeliveryState::Failed)])
            .await
            .unwrap();
        assert!(s.finish_if_done(c).await.unwrap(), "{b}");
        assert_eq!(s.campaign_state(c).await.unwrap(), CampaignState::Finished);

        // retry-failed: the failed one is pending again and the campaign runs.
        assert_eq!(s.retry_failed("w").await.unwrap(), 1, "{b}");
        assert_eq!(s.campaign_state(c).await.unwrap(), CampaignState::Running);
        let again = s
            .claim_deliveries(c, "A", Utc::now(), lease, 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{b}");
        assert_eq!(again[0].attempts, 0, "{b}: attempts start over");
    }
}

#[tokio::test]
async fn a_removed_subscribers_delivery_is_failed_at_claim_not_handed_out() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign_with(s, "gone", 3).await;
        s.remove_subscriber(
            &Address::parse("gone1@example.org").unwrap(),
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
        let now = Utc::now();
        let got = s
            .claim_deliveries(c, "A", now, now + Duration::seconds(60), 10)
            .await
            .unwrap();
        let mut emails: Vec<_> = got.iter().map(|d| d.email.as_str()).collect();
        emails.sort();
        assert_eq!(emails, ["gone0@example.org", "gone2@example.org"], "{b}");
        let counts = s.campaign_counts(c).await.unwrap();
        assert_eq!((counts.failed, counts.sending), (1, 2), "{b}: {counts:?}");
        // Nothing is left hanging: recording the two finishes the campaign.
        let outs: Vec<_> = got
            .iter()
            .map(|d| outcome(c, d.delivery_id, DeliveryState::Sent))
            .collect();
        s.record_outcomes(&outs).await.unwrap();
        assert!(s.finish_if_done(c).await.unwrap(), "{b}");
    }
}

#[tokio::test]
async fn released_claims_return_at_once() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign_with(s, "r", 6).await;
        let now = Utc::now();
        let got = s
            .claim_deliveries(c, "A", now, now + Duration::seconds(600), 4)
            .await
            .unwrap();
        assert_eq!(got.len(), 4, "{b}");
        assert_eq!(s.release_claims(c, "B").await.unwrap(), 0, "{b}: not B's");
        assert_eq!(s.release_claims(c, "A").await.unwrap(), 4, "{b}");
        let all = s
            .claim_deliveries(c, "B", now, now + Duration::seconds(600), 100)
            .await
            .unwrap();
        assert_eq!(all.len(), 6, "{b}");
    }
}

#[tokio::test]
async fn concurrent_claimers_never_share_a_delivery() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign_with(s, "k", 200).await;
        let mut tasks = Vec::new();
        for w in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let now = Utc::now();
                    let got = s
                        .claim_deliveries(c, &format!("w{w}"), now, now + Duration::seconds(600), 7)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        break mine;
                    }
                    mine.extend(got.into_iter().map(|d| d.delivery_id));
                }
            }));
        }
        let mut seen = HashSet::new();
        let mut total = 0;
        for t in tasks {
            for id in t.await.unwrap() {
                total += 1;
                assert!(seen.insert(id), "{b}: {id} claimed twice");
            }
        }
        assert_eq!(total, 200, "{b}");
    }
}

#[tokio::test]
async fn recurring_runs_are_created_once_per_occurrence() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let parent = campaign_with(s, "weekly", 3).await;
        s.set_campaign_state(parent, CampaignState::Draft)
            .await
            .unwrap();
        s.schedule_campaign(
            "weekly",
            &Schedule {
                cron: Some("0 9 * * TUE".into()),
                tz: Some("Europe/Berlin".into()),
                window_start: Some("08:00".into()),
                window_end: Some("20:00".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let sc = s.campaign_schedule(parent).await.unwrap();
        assert_eq!(sc.state, CampaignState::Scheduled, "{b}");
        assert_eq!(sc.schedule.cron.as_deref(), Some("0 9 * * TUE"));
        let occ = Utc::now();
        let run = s.create_run(parent, None, occ, "weekly@1").await.unwrap();
        let run = run.expect("first");
        // A second worker with the same view loses the compare-and-set.
        assert_eq!(
            s.create_run(parent, None, occ, "weekly@1b").await.unwrap(),
            None,
            "{b}"
        );
        assert_eq!(s.campaign_state(run).await.unwrap(), CampaignState::Running);
        assert_eq!(
            s.materialise_deliveries(run).await.unwrap(),
            3,
            "{b}: own snapshot"
        );
        let rs = s.campaign_schedule(run).await.unwrap();
        assert_eq!(
            rs.schedule.window_start.as_deref(),
            Some("08:00"),
            "{b}: window copied"
        );
        assert_eq!(s.campaign_runs(parent).await.unwrap().len(), 1, "{b}");
        let p = s.campaign_schedule(parent).await.unwrap();
        assert_eq!(
            p.state,
            CampaignState::Scheduled,
            "{b}: the parent stays scheduled"
        );
        assert_eq!(
            p.last_run_at.map(|t| t.timestamp()),
            Some(occ.timestamp()),
            "{b}"
        );
    }
}

#[tokio::test]
async fn campaign_errors_group_reasons_most_frequent_first() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign_with(s, "why", 6).await;
        let now = Utc::now();
        let got = s
            .claim_deliveries(c, "A", now, now + Duration::seconds(60), 10)
            .await
            .unwrap();
        assert_eq!(got.len(), 6, "{b}");
        let with = |i: usize, state, error: &str| DeliveryOutcome {
            error: Some(error.into()),
            next_attempt_at: (state == DeliveryState::Deferred).then(|| now + Duration::hours(1)),
            ..outcome(c, got[i].delivery_id, state)
        };
        let render = "render: html:3:1: missing `subscriber.attributes.zip`";
        let refused = "CONNECT to 127.0.0.1:1 failed: Connection refused";
        s.record_outcomes(&[
            with(0, DeliveryState::Failed, render),
            with(1, DeliveryState::Failed, render),
            with(2, DeliveryState::Failed, render),
            with(3, DeliveryState::Deferred, refused),
            with(
                4,
                DeliveryState::Rejected,
                "RCPT refused: 550 5.1.1 no such user",
            ),
            outcome(c, got[5].delivery_id, DeliveryState::Sent),
        ])
        .await
        .unwrap();
        let all = s.campaign_errors(c, 10).await.unwrap();
        let flat: Vec<_> = all
            .iter()
            .map(|e| (e.state, e.error.as_deref().unwrap_or("-"), e.count))
            .collect();
        assert_eq!(
            flat,
            [
                (DeliveryState::Failed, render, 3),
                (DeliveryState::Deferred, refused, 1),
                (
                    DeliveryState::Rejected,
                    "RCPT refused: 550 5.1.1 no such user",
                    1
                ),
            ],
            "{b}"
        );
        let top = s.campaign_errors(c, 1).await.unwrap();
        assert_eq!(top, all[..1], "{b}: limited");
        // A sent delivery is not a reason; an unrelated campaign has none.
        let other = campaign_with(s, "fine", 0).await;
        assert!(
            s.campaign_errors(other, 10).await.unwrap().is_empty(),
            "{b}"
        );
    }
}

/// A claimed delivery of a campaign to several lists names the first (by
/// name) of them that its subscriber is subscribed to; with one list, none
/// (the caller uses that list).
#[tokio::test]
async fn a_claim_names_the_list_each_message_is_for() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let one = campaign_with(s, "solo", 2).await;
        let now = Utc::now();
        let lease = now + Duration::minutes(5);
        for d in s.claim_deliveries(one, "w", now, lease, 10).await.unwrap() {
            assert_eq!(d.list_id, None, "{b}: one list");
        }
        let a = s.create_list("a", None).await.unwrap();
        let bl = s.create_list("b", None).await.unwrap();
        let add = |email: &'static str, list: &'static str| async move {
            s.add_subscriber(
                &Address::parse(email).unwrap(),
                list,
                None,
                Attributes::new(),
                false,
                Actor::Cli,
                "t",
            )
            .await
            .unwrap();
        };
        add("x@example.org", "a").await;
        add("x@example.org", "b").await;
        add("y@example.org", "b").await;
        add("z@example.org", "a").await;
        s.unsubscribe(
            &Address::parse("x@example.org").unwrap(),
            Some("a"),
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
        let c = s
            .create_campaign(&NewCampaign {
                name: "multi".into(),
                lists: vec!["b".into(), "a".into()],
                subject: "s".into(),
                content: "c".into(),
                content_kind: rundbrief_core::ContentKind::Markdown,
                layout: None,
                from: None,
                relay: None,
            })
            .await
            .unwrap();
        s.set_campaign_state(c.id, CampaignState::Running)
            .await
            .unwrap();
        assert_eq!(s.materialise_deliveries(c.id).await.unwrap(), 3, "{b}");
        let mut got: Vec<(String, Option<Uuid>)> = s
            .claim_deliveries(c.id, "w", now, lease, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.email, d.list_id))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("x@example.org".to_string(), Some(bl.id)),
                ("y@example.org".to_string(), Some(bl.id)),
                ("z@example.org".to_string(), Some(a.id)),
            ],
            "{b}"
        );
    }
}

/// Recorded outcomes feed the hourly counters and the five-second pace
/// (summed in memory, written with one upsert each): what the dashboard's
/// charts and `campaign status`'s rate read instead of the deliveries.
#[tokio::test]
async fn recorded_outcomes_are_counted_per_hour_and_per_five_seconds() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let c = campaign_with(s, "pace", 6).await;
        let other = campaign_with(s, "other", 2).await;
        let before = Utc::now();
        let got = s
            .claim_deliveries(c, "A", before, before + Duration::seconds(60), 10)
            .await
            .unwrap();
        let mine = s
            .claim_deliveries(other, "A", before, before + Duration::seconds(60), 10)
            .await
            .unwrap();
        let deferred = DeliveryOutcome {
            error: Some("451 later".into()),
            next_attempt_at: Some(before + Duration::hours(1)),
            ..outcome(c, got[4].delivery_id, DeliveryState::Deferred)
        };
        let mut outs: Vec<_> = got[..3]
            .iter()
            .map(|d| outcome(c, d.delivery_id, DeliveryState::Sent))
            .collect();
        outs.push(DeliveryOutcome {
            error: Some("550 no".into()),
            ..outcome(c, got[3].delivery_id, DeliveryState::Rejected)
        });
        outs.push(deferred);
        outs.push(outcome(other, mine[0].delivery_id, DeliveryState::Sent));
        s.record_outcomes(&outs).await.unwrap();
        s.record_outcomes(&[outcome(c, got[5].delivery_id, DeliveryState::Failed)])
            .await
            .unwrap();
        let after = Utc::now();

        let hourly = s
            .send_stats(Some(c), before - Duration::hours(1))
            .await
            .unwrap();
        let sum = |f: fn(&rundbrief_store::SendBucket) -> u64| hourly.iter().map(f).sum::<u64>();
        assert_eq!(
            (sum(|h| h.sent), sum(|h| h.failed), sum(|h| h.deferred)),
            (3, 2, 1),
            "{b}: failed counts rejected too: {hourly:?}"
        );
        // The pace counts final outcomes only, per campaign.
        let (n, first) = s
            .outcomes_since(c, before - Duration::seconds(60))
            .await
            .unwrap();
        assert_eq!(n, 5, "{b}: 3 sent, 1 rejected, 1 failed; not the deferral");
        let first = first.expect("a first outcome");
        assert!(
            first >= before - Duration::seconds(1) && first <= after + Duration::seconds(1),
            "{b}: {first} not within {before}..{after}"
        );
        assert_eq!(s.outcomes_since(other, before).await.unwrap().0, 1, "{b}");
        // Buckets before `since` are not counted.
        assert_eq!(
            s.outcomes_since(c, after + Duration::seconds(10))
                .await
                .unwrap()
                .0,
            0,
            "{b}"
        );
    }
}
