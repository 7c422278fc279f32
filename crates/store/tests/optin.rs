//! Double opt-in and self-service unsubscribes on every configured backend.

mod common;

use rundbrief_core::{Actor, Address, Attributes, AuditAction, MembershipStatus, SubscriberStatus};
use rundbrief_store::{Confirmed, NewCampaign, OptIn, Store};

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

async fn membership(s: &Store, email: &str, list: &str) -> Option<MembershipStatus> {
    s.subscriber_detail(&addr(email))
        .await
        .unwrap()
        .memberships
        .into_iter()
        .find(|m| m.list == list)
        .map(|m| m.status)
}

fn campaign(name: &str) -> NewCampaign {
    NewCampaign {
        name: name.into(),
        lists: vec!["news".into()],
        subject: "s".into(),
        content: "c".into(),
        content_kind: rundbrief_core::ContentKind::Markdown,
        layout: None,
        from: None,
        relay: None,
    }
}

#[tokio::test]
async fn double_opt_in_keeps_unconfirmed_members_out_of_campaigns() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        s.create_list("news", None).await.unwrap();
        s.add_subscriber(
            &addr("old@example.org"),
            "news",
            Some("Old"),
            Attributes::new(),
            false,
            Actor::Cli,
            "t",
        )
        .await
        .unwrap();

        // Already subscribed: nothing to send, nothing changed (the name stays).
        let known = s
            .request_subscription(
                &addr("old@example.org"),
                "news",
                Some("Renamed"),
                Actor::Http,
                "form",
            )
            .await
            .unwrap();
        assert_eq!(known, OptIn::Nothing, "{b}");
        let old = s.subscriber_detail(&addr("old@example.org")).await.unwrap();
        assert_eq!(old.subscriber.name.as_deref(), Some("Old"), "{b}");

        // New: created active, membership unconfirmed, audited.
        let OptIn::SendConfirmation {
            subscriber_id,
            list_id,
        } = s
            .request_subscription(
                &addr("new@example.org"),
                "news",
                Some("New"),
                Actor::Http,
                "form",
            )
            .await
            .unwrap()
        else {
            panic!("{b}: a new address needs a confirmation");
        };
        assert_eq!(
            membership(s, "new@example.org", "news").await,
            Some(MembershipStatus::Unconfirmed),
            "{b}"
        );
        // Asking again re-sends, changes nothing.
        assert!(
            matches!(
                s.request_subscription(&addr("new@example.org"), "news", None, Actor::Http, "form")
                    .await
                    .unwrap(),
                OptIn::SendConfirmation { .. }
            ),
            "{b}"
        );

        // Unconfirmed members are never materialised.
        let c = s.create_campaign(&campaign("c1")).await.unwrap();
        assert_eq!(s.materialise_deliveries(c.id).await.unwrap(), 1, "{b}");
        let to: Vec<_> = s
            .deliveries(c.id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.email)
            .collect();
        assert_eq!(to, ["old@example.org"], "{b}");

        let view = s
            .membership_view(subscriber_id, list_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (view.email.as_str(), view.list.as_str(), view.status),
            ("new@example.org", "news", MembershipStatus::Unconfirmed),
            "{b}"
        );

        // Confirm: subscribed, audited; twice is a no-op.
        assert_eq!(
            s.confirm_subscription(subscriber_id, list_id, Actor::Http, "confirmed")
                .await
                .unwrap(),
            Confirmed::Subscribed,
            "{b}"
        );
        assert_eq!(
            s.confirm_subscription(subscriber_id, list_id, Actor::Http, "confirmed")
                .await
                .unwrap(),
            Confirmed::AlreadySubscribed,
            "{b}"
        );
        let d = s.subscriber_detail(&addr("new@example.org")).await.unwrap();
        let actions: Vec<_> = d.audit.iter().map(|a| (a.action, a.actor)).collect();
        assert_eq!(
            actions,
            [
                (AuditAction::Created, Actor::Http),
                (AuditAction::Subscribed, Actor::Http)
            ],
            "{b}"
        );
        assert_eq!(
            s.materialise_deliveries(c.id).await.unwrap(),
            1,
            "{b}: confirmed now receives"
        );

        // Unknown ids and lists.
        let nobody = uuid::Uuid::now_v7();
        assert_eq!(
            s.confirm_subscription(nobody, list_id, Actor::Http, "x")
                .await
                .unwrap(),
            Confirmed::Gone,
            "{b}"
        );
        assert!(
            s.membership_view(nobody, list_id).await.unwrap().is_none(),
            "{b}"
        );
        assert!(
            s.request_subscription(&addr("x@example.org"), "nope", None, Actor::Http, "form")
                .await
                .is_err(),
            "{b}"
        );

        // Blocklisted: nothing sent, and confirming an old link does nothing.
        s.blocklist(&addr("new@example.org"), Actor::Cli, "t")
            .await
            .unwrap();
        assert_eq!(
            s.request_subscription(&addr("new@example.org"), "news", None, Actor::Http, "form")
                .await
                .unwrap(),
            OptIn::Nothing,
            "{b}"
        );
        assert_eq!(
            s.confirm_subscription(subscriber_id, list_id, Actor::Http, "x")
                .await
                .unwrap(),
            Confirmed::Blocklisted,
            "{b}"
        );
    }
}

#[tokio::test]
async fn unsubscribe_by_link_and_by_delivery_are_idempotent_and_audited() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        s.create_list("news", None).await.unwrap();
        s.create_list("other", None).await.unwrap();
        for e in ["ann@example.org", "bob@example.org"] {
            for l in ["news", "other"] {
                s.add_subscriber(&addr(e), l, None, Attributes::new(), false, Actor::Cli, "t")
                    .await
                    .unwrap();
            }
        }
        let ann = s
            .subscriber_detail(&addr("ann@example.org"))
            .await
            .unwrap()
            .subscriber
            .id;
        let news = s.list("news").await.unwrap().id;

        assert_eq!(
            s.unsubscribe_member(ann, news, Actor::Http, "one-click")
                .await
                .unwrap(),
            Some(true),
            "{b}"
        );
        assert_eq!(
            s.unsubscribe_member(ann, news, Actor::Http, "one-click")
                .await
                .unwrap(),
            Some(false),
            "{b}"
        );
        assert_eq!(
            membership(s, "ann@example.org", "news").await,
            Some(MembershipStatus::Unsubscribed),
            "{b}"
        );
        assert_eq!(
            membership(s, "ann@example.org", "other").await,
            Some(MembershipStatus::Subscribed),
            "{b}"
        );
        let d = s.subscriber_detail(&addr("ann@example.org")).await.unwrap();
        assert_eq!(
            d.audit
                .iter()
                .filter(|a| a.action == AuditAction::Unsubscribed)
                .count(),
            1,
            "{b}"
        );
        assert_eq!(
            d.subscriber.status,
            SubscriberStatus::Active,
            "{b}: only the list"
        );
        assert_eq!(
            s.unsubscribe_member(uuid::Uuid::now_v7(), news, Actor::Http, "x")
                .await
                .unwrap(),
            None,
            "{b}"
        );

        // Re-subscribe (the same store call as a confirmation).
        assert_eq!(
            s.confirm_subscription(ann, news, Actor::Http, "re-subscribed")
                .await
                .unwrap(),
            Confirmed::Subscribed,
            "{b}"
        );
        assert_eq!(
            membership(s, "ann@example.org", "news").await,
            Some(MembershipStatus::Subscribed),
            "{b}"
        );

        // mailto: the delivery's subscriber leaves the campaign's lists only.
        let c = s.create_campaign(&campaign("c")).await.unwrap();
        s.materialise_deliveries(c.id).await.unwrap();
        let bob = s
            .deliveries(c.id)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.email == "bob@example.org")
            .unwrap();
        let (email, n) = s
            .unsubscribe_delivery(bob.delivery_id, Actor::Mailto, "mailto")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((email.as_str(), n), ("bob@example.org", 1), "{b}");
        assert_eq!(
            membership(s, "bob@example.org", "news").await,
            Some(MembershipStatus::Unsubscribed),
            "{b}"
        );
        assert_eq!(
            membership(s, "bob@example.org", "other").await,
            Some(MembershipStatus::Subscribed),
            "{b}"
        );
        assert_eq!(
            s.unsubscribe_delivery(bob.delivery_id, Actor::Mailto, "mailto")
                .await
                .unwrap()
                .unwrap()
                .1,
            0,
            "{b}"
        );
        assert!(
            s.unsubscribe_delivery(uuid::Uuid::now_v7(), Actor::Mailto, "x")
                .await
                .unwrap()
                .is_none(),
            "{b}"
        );
        let d = s.subscriber_detail(&addr("bob@example.org")).await.unwrap();
        let last = d.audit.last().unwrap();
        assert_eq!(
            (last.action, last.actor, last.list.as_deref()),
            (AuditAction::Unsubscribed, Actor::Mailto, Some("news")),
            "{b}"
        );
    }
}

/// #21.12: lists are private until opened; the flag round-trips.
#[tokio::test]
async fn issue_21_lists_are_private_until_made_public() {
    for db in common::stores().await {
        let s = &db.store;
        let created = s.create_list("news", None).await.unwrap();
        assert!(!created.public, "{}", db.backend);
        assert!(!s.list("news").await.unwrap().public);
        assert!(s.set_list_public("news", true).await.unwrap());
        assert!(
            !s.set_list_public("news", true).await.unwrap(),
            "idempotent"
        );
        assert!(s.list("news").await.unwrap().public, "{}", db.backend);
        assert!(s.list_summaries().await.unwrap()[0].list.public);
        assert!(s.set_list_public("news", false).await.unwrap());
        assert!(!s.list("news").await.unwrap().public);
        assert!(matches!(
            s.set_list_public("nope", true).await,
            Err(rundbrief_store::StoreError::ListNotFound(_))
        ));
    }
}
