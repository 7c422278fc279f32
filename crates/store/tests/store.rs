//! The store API on every configured backend.

mod common;

use rundbrief_core::csvin::ImportRow;
use rundbrief_core::{
    Actor, Address, Attributes, AuditAction, ListCounts, MembershipStatus, StatusFilter,
    SubscriberStatus,
};
use rundbrief_store::{BatchReport, ImportOptions, StoreError, SubscriberQuery};

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect()
}

fn row(line: u64, email: &str, name: Option<&str>, a: &[(&str, &str)]) -> ImportRow {
    ImportRow {
        line,
        address: addr(email),
        name: name.map(str::to_string),
        attributes: attrs(a),
    }
}

#[tokio::test]
async fn migrations_are_applied_once() {
    for db in common::stores().await {
        let status = db.store.migration_status().await.unwrap();
        assert!(
            !status.is_empty() && status.iter().all(|m| m.applied),
            "{}: {status:?}",
            db.backend
        );
        assert!(
            db.store.migrate().await.unwrap().is_empty(),
            "{}: second migrate applied something",
            db.backend
        );
    }
}

#[tokio::test]
async fn lists_are_created_counted_and_removed_safely() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("news", Some("Monthly news")).await.unwrap();
        assert!(
            matches!(
                s.create_list("news", None).await,
                Err(StoreError::ListExists(_))
            ),
            "{b}"
        );
        s.create_list("empty", None).await.unwrap();
        for (i, e) in [
            "a@example.org",
            "b@example.org",
            "c@example.org",
            "d@example.org",
        ]
        .iter()
        .enumerate()
        {
            s.add_subscriber(
                &addr(e),
                "news",
                Some(&format!("N{i}")),
                Attributes::new(),
                false,
                Actor::Cli,
                "test",
            )
            .await
            .unwrap();
        }
        s.unsubscribe(&addr("b@example.org"), Some("news"), Actor::Cli, "test")
            .await
            .unwrap();
        s.blocklist(&addr("c@example.org"), Actor::Cli, "test")
            .await
            .unwrap();
        s.mark_bounced(&addr("d@example.org"), Actor::Bounce, "test")
            .await
            .unwrap();
        let summary = s.list_summary("news").await.unwrap();
        assert_eq!(
            summary.counts,
            ListCounts {
                subscribed: 1,
                unconfirmed: 0,
                unsubscribed: 1,
                bounced: 1,
                blocklisted: 1,
                undeliverable: 0
            },
            "{b}"
        );
        let all = s.list_summaries().await.unwrap();
        assert_eq!(
            all.iter().map(|l| l.list.name.as_str()).collect::<Vec<_>>(),
            ["empty", "news"],
            "{b}"
        );
        assert!(
            matches!(
                s.list_summary("nope").await,
                Err(StoreError::ListNotFound(_))
            ),
            "{b}"
        );

        match s.delete_list("news", false, Actor::Cli).await {
            Err(StoreError::ListNotEmpty { members: 4, .. }) => {}
            other => panic!("{b}: expected ListNotEmpty, got {other:?}"),
        }
        assert_eq!(
            s.delete_list("empty", false, Actor::Cli).await.unwrap(),
            0,
            "{b}"
        );
        assert_eq!(
            s.delete_list("news", true, Actor::Cli).await.unwrap(),
            4,
            "{b}"
        );
        let detail = s.subscriber_detail(&addr("a@example.org")).await.unwrap();
        assert!(detail.memberships.is_empty(), "{b}");
        assert_eq!(
            detail.audit.last().unwrap().action,
            AuditAction::ListRemoved,
            "{b}"
        );
    }
}

#[tokio::test]
async fn subscribers_lifecycle_is_audited() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("news", None).await.unwrap();
        s.create_list("deals", None).await.unwrap();
        let out = s
            .add_subscriber(
                &addr("Anna@Example.ORG"),
                "news",
                Some("Anna"),
                attrs(&[("city", "Köln")]),
                false,
                Actor::Cli,
                "by hand",
            )
            .await
            .unwrap();
        assert!(out.created && out.joined, "{b}");
        // Same person, other case: merged, not duplicated.
        let out = s
            .add_subscriber(
                &addr("anna@example.org"),
                "deals",
                None,
                attrs(&[("plan", "pro")]),
                false,
                Actor::Cli,
                "by hand",
            )
            .await
            .unwrap();
        assert!(!out.created && out.joined, "{b}");
        let d = s
            .subscriber_detail(&addr("ANNA@example.org"))
            .await
            .unwrap();
        assert_eq!(
            d.subscriber.email, "Anna@example.org",
            "{b}: local part kept as first given"
        );
        assert_eq!(d.subscriber.name.as_deref(), Some("Anna"), "{b}");
        assert_eq!(
            d.subscriber.attributes,
            attrs(&[("city", "Köln"), ("plan", "pro")]),
            "{b}"
        );
        assert_eq!(d.memberships.len(), 2, "{b}");

        assert!(
            s.unsubscribe(&addr("anna@example.org"), Some("news"), Actor::Cli, "asked")
                .await
                .unwrap(),
            "{b}"
        );
        assert!(
            !s.unsubscribe(&addr("anna@example.org"), Some("news"), Actor::Cli, "asked")
                .await
                .unwrap(),
            "{b}: idempotent"
        );
        assert!(
            s.unsubscribe(&addr("anna@example.org"), None, Actor::Cli, "asked")
                .await
                .unwrap(),
            "{b}"
        );
        let d = s
            .subscriber_detail(&addr("anna@example.org"))
            .await
            .unwrap();
        assert_eq!(d.subscriber.status, SubscriberStatus::Unsubscribed, "{b}");
        assert!(
            d.memberships
                .iter()
                .all(|m| m.status == MembershipStatus::Unsubscribed),
            "{b}"
        );
        let actions: Vec<_> = d.audit.iter().map(|a| a.action).collect();
        assert_eq!(
            actions,
            [
                AuditAction::Created,
                AuditAction::Subscribed,
                AuditAction::Subscribed,
                AuditAction::Unsubscribed,
                AuditAction::Unsubscribed
            ],
            "{b}"
        );
        assert_eq!(d.audit[1].list.as_deref(), Some("news"), "{b}");

        // An unsubscribed subscriber is not silently re-added.
        let err = s
            .add_subscriber(
                &addr("anna@example.org"),
                "news",
                None,
                Attributes::new(),
                false,
                Actor::Cli,
                "x",
            )
            .await;
        assert!(
            matches!(
                err,
                Err(StoreError::Inactive {
                    status: SubscriberStatus::Unsubscribed,
                    ..
                })
            ),
            "{b}: {err:?}"
        );
        let out = s
            .add_subscriber(
                &addr("anna@example.org"),
                "news",
                None,
                Attributes::new(),
                true,
                Actor::Cli,
                "x",
            )
            .await
            .unwrap();
        assert!(out.restored && out.joined, "{b}");

        // Blocklisting an unknown address keeps it out for good.
        assert!(
            s.blocklist(&addr("spam@example.net"), Actor::Cli, "abuse")
                .await
                .unwrap(),
            "{b}"
        );
        let err = s
            .add_subscriber(
                &addr("Spam@Example.net"),
                "news",
                None,
                Attributes::new(),
                true,
                Actor::Cli,
                "x",
            )
            .await;
        assert!(
            matches!(err, Err(StoreError::Blocklisted(_))),
            "{b}: {err:?}"
        );

        s.remove_subscriber(&addr("anna@example.org"), Actor::Cli, "erase")
            .await
            .unwrap();
        assert!(
            matches!(
                s.subscriber_detail(&addr("anna@example.org")).await,
                Err(StoreError::SubscriberNotFound(_))
            ),
            "{b}"
        );
        assert!(matches!(
            s.remove_subscriber(&addr("anna@example.org"), Actor::Cli, "x")
                .await,
            Err(StoreError::SubscriberNotFound(_))
        ));
    }
}

/// `sub restore` must reset the bounce score, or `rundbrief clean` prunes
/// the restored subscriber again at once; the stored bounces stay.
#[tokio::test]
async fn restoring_a_bounced_subscriber_resets_the_bounce_score() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("news", None).await.unwrap();
        s.add_subscriber(
            &addr("anna@example.org"),
            "news",
            None,
            Attributes::new(),
            false,
            Actor::Cli,
            "x",
        )
        .await
        .unwrap();
        let id = s
            .subscriber_detail(&addr("anna@example.org"))
            .await
            .unwrap()
            .subscriber
            .id;
        let target = rundbrief_store::DeliveryTarget {
            delivery_id: uuid::Uuid::now_v7(),
            campaign_id: uuid::Uuid::nil(),
            subscriber_id: id,
            email: "anna@example.org".into(),
        };
        s.record_bounce_score(&target, Some(((5.0, 20_000, 5.0), "bounce 1: hard 5.1.1")))
            .await
            .unwrap();
        assert!(
            s.mark_bounced(&addr("anna@example.org"), Actor::Bounce, "pruned")
                .await
                .unwrap(),
            "{b}"
        );
        assert_eq!(s.bounce_reset_at(id).await.unwrap(), None, "{b}");

        let before = chrono::Utc::now();
        s.restore_subscriber(&addr("anna@example.org"), Actor::Cli, "asked")
            .await
            .unwrap();
        let d = s
            .subscriber_detail(&addr("anna@example.org"))
            .await
            .unwrap();
        assert_eq!(d.subscriber.status, SubscriberStatus::Active, "{b}");
        assert_eq!(s.bounce_score(id).await.unwrap(), None, "{b}: score reset");
        assert!(
            s.scored_subscribers().await.unwrap().is_empty(),
            "{b}: clean has nobody to prune"
        );
        let reset = s.bounce_reset_at(id).await.unwrap().expect("reset time");
        assert!(
            reset >= before - chrono::Duration::seconds(1),
            "{b}: {reset} vs {before}"
        );
        let last = d.audit.last().unwrap();
        assert_eq!(
            (last.action, last.reason.as_str()),
            (
                AuditAction::Restored,
                "asked; bounce score 5.0 reset: bounces received before this restore no longer count (they stay stored)"
            ),
            "{b}"
        );
        // Only bounced subscribers are restored; the error says what it is.
        assert!(
            matches!(
                s.restore_subscriber(&addr("anna@example.org"), Actor::Cli, "again")
                    .await,
                Err(StoreError::NotBounced { .. })
            ),
            "{b}"
        );
    }
}

/// `sub restore` is not the only way back from `bounced`: `sub add
/// --resubscribe`, `import --resubscribe-bounced` and a confirmed opt-in
/// bring a subscriber back too, and each must reset the bounce score, or the
/// next `rundbrief clean` prunes the subscriber again at once.
#[tokio::test]
async fn every_way_back_from_bounced_resets_the_bounce_score() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let list = s.create_list("news", None).await.unwrap();
        let ways = ["add", "import", "optin"];
        for way in ways {
            let email = format!("{way}@example.org");
            s.add_subscriber(
                &addr(&email),
                "news",
                None,
                Attributes::new(),
                false,
                Actor::Cli,
                "x",
            )
            .await
            .unwrap();
            let id = s
                .subscriber_detail(&addr(&email))
                .await
                .unwrap()
                .subscriber
                .id;
            let target = rundbrief_store::DeliveryTarget {
                delivery_id: uuid::Uuid::now_v7(),
                campaign_id: uuid::Uuid::nil(),
                subscriber_id: id,
                email: email.clone(),
            };
            s.record_bounce_score(&target, Some(((5.0, 20_000, 5.0), "bounce 1: hard 5.1.1")))
                .await
                .unwrap();
            assert!(
                s.mark_bounced(&addr(&email), Actor::Bounce, "pruned")
                    .await
                    .unwrap(),
                "{b} {way}"
            );
        }
        s.add_subscriber(
            &addr("add@example.org"),
            "news",
            None,
            Attributes::new(),
            true,
            Actor::Cli,
            "back",
        )
        .await
        .unwrap();
        let mut back = s
            .begin_import(
                "news",
                ImportOptions {
                    resubscribe_bounced: true,
                    source: "t.csv".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        back.write_batch(vec![row(2, "import@example.org", None, &[])])
            .await
            .unwrap();
        back.finish().await.unwrap();
        let optin = s
            .subscriber_detail(&addr("optin@example.org"))
            .await
            .unwrap();
        s.confirm_subscription(optin.subscriber.id, list.id, Actor::Http, "confirmed")
            .await
            .unwrap();

        for way in ways {
            let d = s
                .subscriber_detail(&addr(&format!("{way}@example.org")))
                .await
                .unwrap();
            let id = d.subscriber.id;
            assert_eq!(d.subscriber.status, SubscriberStatus::Active, "{b} {way}");
            assert_eq!(
                s.bounce_score(id).await.unwrap(),
                None,
                "{b} {way}: score reset"
            );
            assert!(
                s.bounce_reset_at(id).await.unwrap().is_some(),
                "{b} {way}: old bounces no longer count"
            );
        }
        assert!(
            s.scored_subscribers().await.unwrap().is_empty(),
            "{b}: clean has nobody to prune"
        );
    }
}

#[tokio::test]
async fn listing_filters_and_pages() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("news", None).await.unwrap();
        s.create_list("other", None).await.unwrap();
        for i in 0..25 {
            s.add_subscriber(
                &addr(&format!("u{i:02}@example.org")),
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
        s.add_subscriber(
            &addr("solo@example.org"),
            "other",
            None,
            Attributes::new(),
            false,
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
        s.mark_bounced(&addr("u03@example.org"), Actor::Bounce, "dead")
            .await
            .unwrap();
        s.unsubscribe(&addr("u04@example.org"), Some("news"), Actor::Cli, "t")
            .await
            .unwrap();

        let q = |status: Option<&str>, list: Option<&str>| SubscriberQuery {
            list: list.map(str::to_string),
            status: status.map(|x| x.parse::<StatusFilter>().unwrap()),
            after: None,
            limit: 0,
        };
        assert_eq!(
            s.count_subscribers(&q(None, None)).await.unwrap(),
            26,
            "{b}"
        );
        assert_eq!(
            s.count_subscribers(&q(None, Some("news"))).await.unwrap(),
            25,
            "{b}"
        );
        assert_eq!(
            s.count_subscribers(&q(Some("subscribed"), Some("news")))
                .await
                .unwrap(),
            23,
            "{b}"
        );
        assert_eq!(
            s.count_subscribers(&q(Some("active"), Some("news")))
                .await
                .unwrap(),
            24,
            "{b}"
        );
        let bounced = s
            .subscribers(&q(Some("bounced"), Some("news")))
            .await
            .unwrap();
        assert_eq!(
            bounced
                .iter()
                .map(|r| r.subscriber.email.as_str())
                .collect::<Vec<_>>(),
            ["u03@example.org"],
            "{b}"
        );
        let unsub = s
            .subscribers(&q(Some("unsubscribed"), Some("news")))
            .await
            .unwrap();
        assert_eq!(unsub.len(), 1, "{b}");
        assert_eq!(
            unsub[0].membership,
            Some(MembershipStatus::Unsubscribed),
            "{b}"
        );
        assert!(
            matches!(
                s.count_subscribers(&q(Some("subscribed"), None)).await,
                Err(StoreError::StatusNeedsList(_))
            ),
            "{b}"
        );

        // Keyset pages visit everybody exactly once, in order.
        let mut seen = Vec::new();
        let mut page = SubscriberQuery {
            list: Some("news".into()),
            status: None,
            after: None,
            limit: 10,
        };
        for _ in 0..10 {
            let rows = s.subscribers(&page).await.unwrap();
            if rows.is_empty() {
                break;
            }
            page.after = Some(rows.last().unwrap().subscriber.email.to_lowercase());
            seen.extend(rows.into_iter().map(|r| r.subscriber.email));
        }
        let expected: Vec<String> = (0..25).map(|i| format!("u{i:02}@example.org")).collect();
        assert_eq!(seen, expected, "{b}");
    }
}

#[tokio::test]
async fn import_merges_skips_and_is_idempotent() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("news", None).await.unwrap();
        s.create_list("other", None).await.unwrap();
        // Pre-existing state the import must respect.
        s.add_subscriber(
            &addr("old@example.org"),
            "other",
            Some("Old"),
            attrs(&[("a", "1")]),
            false,
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
        s.add_subscriber(
            &addr("left@example.org"),
            "news",
            None,
            Attributes::new(),
            false,
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
        s.unsubscribe(&addr("left@example.org"), Some("news"), Actor::Cli, "t")
            .await
            .unwrap();
        s.blocklist(&addr("blocked@example.org"), Actor::Cli, "t")
            .await
            .unwrap();
        s.add_subscriber(
            &addr("dead@example.org"),
            "other",
            None,
            Attributes::new(),
            false,
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
        s.mark_bounced(&addr("dead@example.org"), Actor::Bounce, "t")
            .await
            .unwrap();

        let rows = || {
            vec![
                row(2, "new1@example.org", Some("New One"), &[("city", "Wien")]),
                row(3, "OLD@example.org", None, &[("b", "2")]),
                row(4, "left@example.org", Some("X"), &[]),
                row(5, "blocked@example.org", None, &[]),
                row(6, "dead@example.org", None, &[]),
                row(7, "new1@Example.org", None, &[("plan", "pro")]),
            ]
        };
        let opts = ImportOptions {
            source: "t.csv".into(),
            ..Default::default()
        };

        // A dry run reports what would happen and writes nothing.
        let mut dry = s
            .begin_import(
                "news",
                ImportOptions {
                    dry_run: true,
                    ..opts.clone()
                },
            )
            .await
            .unwrap();
        let dry_report = dry.write_batch(rows()).await.unwrap();
        dry.finish().await.unwrap();
        assert_eq!(
            dry_report,
            BatchReport {
                imported: 1,
                updated: 2,
                skipped: 3
            },
            "{b}"
        );
        assert!(
            s.subscriber_detail(&addr("new1@example.org"))
                .await
                .is_err(),
            "{b}: dry run wrote"
        );

        let mut imp = s.begin_import("news", opts.clone()).await.unwrap();
        assert_eq!(imp.write_batch(rows()).await.unwrap(), dry_report, "{b}");
        imp.finish().await.unwrap();

        let new1 = s
            .subscriber_detail(&addr("new1@example.org"))
            .await
            .unwrap();
        assert_eq!(new1.subscriber.name.as_deref(), Some("New One"), "{b}");
        assert_eq!(
            new1.subscriber.attributes,
            attrs(&[("city", "Wien"), ("plan", "pro")]),
            "{b}"
        );
        assert_eq!(new1.audit.len(), 1, "{b}");
        assert_eq!(new1.audit[0].reason, "import: t.csv:2", "{b}");
        let old = s.subscriber_detail(&addr("old@example.org")).await.unwrap();
        assert_eq!(
            old.subscriber.name.as_deref(),
            Some("Old"),
            "{b}: empty name must not erase"
        );
        assert_eq!(
            old.subscriber.attributes,
            attrs(&[("a", "1"), ("b", "2")]),
            "{b}"
        );
        assert_eq!(old.memberships.len(), 2, "{b}");
        let left = s
            .subscriber_detail(&addr("left@example.org"))
            .await
            .unwrap();
        assert_eq!(
            left.memberships[0].status,
            MembershipStatus::Unsubscribed,
            "{b}"
        );
        assert_eq!(
            left.subscriber.name, None,
            "{b}: skipped rows are untouched"
        );
        let counts_after_first = s.list_summary("news").await.unwrap().counts;

        // Running it again changes nothing.
        let mut again = s.begin_import("news", opts.clone()).await.unwrap();
        assert_eq!(
            again.write_batch(rows()).await.unwrap(),
            BatchReport {
                imported: 0,
                updated: 3,
                skipped: 3
            },
            "{b}"
        );
        again.finish().await.unwrap();
        assert_eq!(
            s.list_summary("news").await.unwrap().counts,
            counts_after_first,
            "{b}"
        );
        assert_eq!(
            s.subscriber_detail(&addr("new1@example.org"))
                .await
                .unwrap()
                .audit
                .len(),
            1,
            "{b}"
        );

        // The operator who means it brings back bounced, never blocklisted.
        let mut back = s
            .begin_import(
                "news",
                ImportOptions {
                    resubscribe_bounced: true,
                    ..opts
                },
            )
            .await
            .unwrap();
        let r = back
            .write_batch(vec![
                row(2, "dead@example.org", None, &[]),
                row(3, "blocked@example.org", None, &[]),
            ])
            .await
            .unwrap();
        back.finish().await.unwrap();
        assert_eq!(
            r,
            BatchReport {
                imported: 0,
                updated: 1,
                skipped: 1
            },
            "{b}"
        );
        let dead = s
            .subscriber_detail(&addr("dead@example.org"))
            .await
            .unwrap();
        assert_eq!(dead.subscriber.status, SubscriberStatus::Active, "{b}");
        assert!(
            dead.audit.iter().any(|a| a.action == AuditAction::Restored),
            "{b}"
        );
    }
}

#[tokio::test]
async fn import_of_many_rows_spans_statements() {
    for db in common::stores().await {
        let s = &db.store;
        s.create_list("big", None).await.unwrap();
        let mut imp = s
            .begin_import("big", ImportOptions::default())
            .await
            .unwrap();
        let rows: Vec<ImportRow> = (0..5000)
            .map(|i| row(i + 2, &format!("p{i}@example.org"), None, &[("n", "x")]))
            .collect();
        assert_eq!(
            imp.write_batch(rows).await.unwrap(),
            BatchReport {
                imported: 5000,
                updated: 0,
                skipped: 0
            },
            "{}",
            db.backend
        );
        imp.finish().await.unwrap();
        assert_eq!(
            s.list_summary("big").await.unwrap().counts.subscribed,
            5000,
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn bounces_are_stored_parsed_listed_and_requeued() {
    use rundbrief_core::{BounceSource, BounceState};
    use rundbrief_store::{BounceQuery, NewBounce};
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        let raw = b"From: MAILER-DAEMON@example.net\r\n\r\n\x00binary\xffbytes".to_vec();
        let delivery = uuid::Uuid::now_v7();
        let id = s
            .insert_bounce(&NewBounce {
                source: BounceSource::Smtp,
                peer: Some("127.0.0.1:1".into()),
                mail_from: Some(String::new()),
                rcpt: Some("b-x@bounce.example.org".into()),
                delivery_id: Some(delivery),
                raw: &raw,
            })
            .await
            .unwrap();
        let pending = s.pending_bounces(10).await.unwrap();
        assert_eq!(pending.len(), 1, "{b}");
        assert_eq!(pending[0].raw, raw, "{b}: raw bytes kept exactly");
        assert_eq!(pending[0].delivery_id, Some(delivery), "{b}");
        s.record_bounce_parse(
            id,
            "dsn",
            "hard",
            serde_json::json!({"kind": "dsn", "recipients": []}),
        )
        .await
        .unwrap();
        assert!(s.pending_bounces(10).await.unwrap().is_empty(), "{b}");
        let listed = s
            .bounces(&BounceQuery {
                class: Some("hard".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{b}");
        assert_eq!(listed[0].state, BounceState::Parsed, "{b}");
        assert_eq!(listed[0].parsed.as_ref().unwrap()["kind"], "dsn", "{b}");
        assert!(
            listed[0].raw.is_empty(),
            "{b}: listings leave the raw message out"
        );
        assert_eq!(s.bounce(id).await.unwrap().raw, raw, "{b}");
        assert!(
            s.bounces(&BounceQuery {
                class: Some("soft".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
        );
        assert_eq!(s.requeue_bounces(None).await.unwrap(), 1, "{b}");
        assert_eq!(s.pending_bounces(10).await.unwrap().len(), 1, "{b}");
        s.record_bounce_failure(id, "boom").await.unwrap();
        assert_eq!(
            s.bounce(id).await.unwrap().error.as_deref(),
            Some("boom"),
            "{b}"
        );
        assert!(
            matches!(
                s.bounce(uuid::Uuid::now_v7()).await,
                Err(StoreError::BounceNotFound(_))
            ),
            "{b}"
        );
    }
}

#[tokio::test]
async fn campaigns_materialise_each_eligible_recipient_once() {
    use rundbrief_store::NewCampaign;
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("a", None).await.unwrap();
        s.create_list("b", None).await.unwrap();
        for (email, lists) in [
            ("both@example.org", &["a", "b"][..]),
            ("a@example.org", &["a"]),
            ("b@example.org", &["b"]),
            ("gone@example.org", &["a"]),
            ("left@example.org", &["a"]),
        ] {
            for l in lists {
                s.add_subscriber(
                    &addr(email),
                    l,
                    None,
                    Attributes::new(),
                    false,
                    Actor::Cli,
                    "t",
                )
                .await
                .unwrap();
            }
        }
        s.mark_bounced(&addr("gone@example.org"), Actor::Bounce, "t")
            .await
            .unwrap();
        s.unsubscribe(&addr("left@example.org"), Some("a"), Actor::Cli, "t")
            .await
            .unwrap();
        let new = |name: &str, lists: &[&str]| NewCampaign {
            name: name.into(),
            lists: lists.iter().map(|l| l.to_string()).collect(),
            subject: "s".into(),
            content: "c".into(),
            content_kind: rundbrief_core::ContentKind::Markdown,
            layout: None,
            from: None,
            relay: None,
        };
        let c = s.create_campaign(&new("c1", &["a", "b"])).await.unwrap();
        assert!(
            matches!(
                s.create_campaign(&new("c1", &["a"])).await,
                Err(StoreError::CampaignExists(_))
            ),
            "{b}"
        );
        assert!(
            matches!(
                s.create_campaign(&new("c2", &["nope"])).await,
                Err(StoreError::ListNotFound(_))
            ),
            "{b}"
        );
        assert_eq!(
            s.materialise_deliveries(c.id).await.unwrap(),
            3,
            "{b}: both, a, b; not gone, not left"
        );
        assert_eq!(
            s.materialise_deliveries(c.id).await.unwrap(),
            0,
            "{b}: running it again adds nobody"
        );
        s.add_subscriber(
            &addr("late@example.org"),
            "b",
            None,
            Attributes::new(),
            false,
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();
        assert_eq!(
            s.materialise_deliveries(c.id).await.unwrap(),
            1,
            "{b}: only the newcomer"
        );
        let deliveries = s.deliveries(c.id).await.unwrap();
        let mut emails: Vec<_> = deliveries.iter().map(|d| d.email.as_str()).collect();
        emails.sort();
        assert_eq!(
            emails,
            [
                "a@example.org",
                "b@example.org",
                "both@example.org",
                "late@example.org"
            ],
            "{b}"
        );
        let first = &deliveries[0];
        assert_eq!(
            s.delivery_target(first.delivery_id).await.unwrap().as_ref(),
            Some(first),
            "{b}"
        );
        assert_eq!(
            s.delivery_target(uuid::Uuid::now_v7()).await.unwrap(),
            None,
            "{b}"
        );
        // Scores round-trip; a list in use is not deleted without --force.
        assert_eq!(
            s.bounce_score(first.subscriber_id).await.unwrap(),
            None,
            "{b}"
        );
        let words = "bounce 1: soft 4.2.2 (rule mailbox-full, score 0.5)";
        s.record_bounce_score(first, Some(((0.5, 20_000, 0.5), words)))
            .await
            .unwrap();
        assert_eq!(
            s.bounce_score(first.subscriber_id).await.unwrap(),
            Some((0.5, 20_000, 0.5)),
            "{b}"
        );
        // A bounce that did not count (a block) leaves score and words alone.
        s.record_bounce_score(first, None).await.unwrap();
        let scored = s.scored_subscribers().await.unwrap();
        assert_eq!(
            scored
                .iter()
                .map(|x| (x.email.as_str(), x.score, x.last_bounce.as_deref()))
                .collect::<Vec<_>>(),
            [(first.email.as_str(), 0.5, Some(words))],
            "{b}: clean gets the bounce behind the score"
        );
        assert!(
            matches!(
                s.delete_list("a", false, Actor::Cli).await,
                Err(StoreError::ListInUse { .. })
            ),
            "{b}"
        );
        s.delete_list("a", true, Actor::Cli).await.unwrap();
        assert!(
            s.campaigns_for_list(s.list("b").await.unwrap().id)
                .await
                .unwrap()
                == ["c1"],
            "{b}"
        );
    }
}
