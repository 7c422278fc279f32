//! The store's side of local-time delivery (issue #18), on SQLite and
//! PostgreSQL: a local-time campaign's deliveries are materialised held
//! (never claimed), get due times by their zone attribute, and a pending
//! delivery is claimed only once its due time has come.

mod common;

use chrono::{DateTime, Duration, Utc};
use rundbrief_core::{Actor, Address, Attributes, CampaignState};
use rundbrief_store::{AttrGroup, DueMap, LocalTime};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn held_deliveries_are_not_claimed_until_due() {
    for db in common::stores().await {
        let s = &db.store;
        let b = db.backend;
        s.create_list("news", None).await.unwrap();
        for (who, tz) in [
            ("a", Some("Europe/Berlin")),
            ("b", Some("Asia/Tokyo")),
            ("c", None),
        ] {
            let mut attrs = Attributes::new();
            if let Some(tz) = tz {
                attrs.insert("zone".into(), tz.into());
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
        let c = common::campaign_to(s, "lt", "news", &[]).await;
        let lt = LocalTime {
            at: "09:00".into(),
            date: None,
            tz_attr: "zone".into(),
            default_tz: "UTC".into(),
        };
        s.set_local_time(c.id, Some(&lt)).await.unwrap();
        assert_eq!(s.local_time(c.id).await.unwrap(), Some(lt), "{b}");
        s.set_campaign_state(c.id, CampaignState::Running)
            .await
            .unwrap();
        assert_eq!(s.materialise_deliveries(c.id).await.unwrap(), 3, "{b}");
        let far = utc("2100-01-01T00:00:00Z");
        // Held: not claimable even far in the future, not counted as due.
        assert!(
            s.claim_deliveries(c.id, "w", far, far, 10)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        assert!(s.pending_by_due(c.id).await.unwrap().is_empty(), "{b}");
        assert_eq!(s.next_work_at(c.id).await.unwrap(), None, "{b}");
        let mut groups = s.held_by_attr(c.id, "zone").await.unwrap();
        groups.sort_by(|x, y| x.value.cmp(&y.value));
        assert_eq!(
            groups,
            vec![
                AttrGroup {
                    value: None,
                    count: 1
                },
                AttrGroup {
                    value: Some("Asia/Tokyo".into()),
                    count: 1
                },
                AttrGroup {
                    value: Some("Europe/Berlin".into()),
                    count: 1
                },
            ],
            "{b}"
        );
        let t0 = utc("2026-12-03T08:00:00Z");
        let map = DueMap {
            by_value: vec![("Europe/Berlin".into(), t0)],
            missing: t0 + Duration::hours(1),
            // Tokyo is not in the map: stays held.
            otherwise: None,
        };
        s.set_due(c.id, "zone", &map).await.unwrap();
        assert_eq!(
            s.held_by_attr(c.id, "zone").await.unwrap().len(),
            1,
            "{b}: Tokyo held"
        );
        assert_eq!(s.next_work_at(c.id).await.unwrap(), Some(t0), "{b}");
        // Before the due time: nothing; at it: Berlin only; an hour later: the one without a zone.
        let lease = t0 + Duration::hours(5);
        assert!(
            s.claim_deliveries(c.id, "w", t0 - Duration::seconds(1), lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        let got = s.claim_deliveries(c.id, "w", t0, lease, 10).await.unwrap();
        assert_eq!(
            got.iter().map(|d| d.email.as_str()).collect::<Vec<_>>(),
            vec!["a@example.org"],
            "{b}"
        );
        let got = s
            .claim_deliveries(c.id, "w", t0 + Duration::hours(1), lease, 10)
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|d| d.email.as_str()).collect::<Vec<_>>(),
            vec!["c@example.org"],
            "{b}"
        );
        let mut all = s.deliveries_by_attr(c.id, "zone").await.unwrap();
        all.sort_by(|x, y| x.value.cmp(&y.value));
        assert_eq!(all.iter().map(|g| g.count).sum::<u64>(), 3, "{b}");
        assert_eq!(
            s.recipients_by_attr(c.id, "zone").await.unwrap().len(),
            3,
            "{b}"
        );
        // A campaign without local time is not held: claimable at once.
        let plain = common::campaign_to(s, "plain", "news", &[]).await;
        s.set_campaign_state(plain.id, CampaignState::Running)
            .await
            .unwrap();
        s.materialise_deliveries(plain.id).await.unwrap();
        assert_eq!(
            s.claim_deliveries(plain.id, "w", t0, lease, 10)
                .await
                .unwrap()
                .len(),
            3,
            "{b}"
        );
    }
}
