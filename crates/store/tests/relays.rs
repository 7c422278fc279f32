//! Relay quotas in the database (issue #18), on SQLite and PostgreSQL: many
//! concurrent takes (PostgreSQL: over several connections, as several
//! workers would) never grant more than the quota together; giving back
//! frees it again; the hour and the day are counted apart.

mod common;

use chrono::{TimeZone, Utc};
use rundbrief_store::{RelayQuota, hour_bucket};

#[tokio::test]
async fn concurrent_takes_never_overshoot_a_quota() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 10, 20, 0).unwrap();
        let quota = RelayQuota {
            max_per_hour: Some(50),
            max_per_day: Some(70),
        };
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = 0;
                // Bounded: at most 50 grants of 3 can succeed.
                for _ in 0..40 {
                    let t = s.take_relay_quota("ses", now, 3, quota).await.unwrap();
                    got += t.n;
                    if t.n == 0 && t.full_until.is_some() {
                        break;
                    }
                }
                got
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        assert_eq!(total, 50, "{b}: exactly the hourly quota");
        let u = s.relay_usage("ses", now).await.unwrap();
        assert_eq!((u.sent_hour, u.sent_day), (50, 50), "{b}");
        let full = s.take_relay_quota("ses", now, 1, quota).await.unwrap();
        assert_eq!(full.n, 0, "{b}");
        assert_eq!(
            full.full_until,
            Some(hour_bucket(now) + chrono::Duration::hours(1)),
            "{b}: frees at the next hour"
        );
        // Given back (never handed to the relay): free again.
        s.give_back_relay_quota("ses", full.hour, full.day, 4)
            .await
            .unwrap();
        assert_eq!(
            s.take_relay_quota("ses", now, 10, quota).await.unwrap().n,
            4,
            "{b}"
        );
        // The next hour has its own count; the day's 70 still caps it.
        let later = now + chrono::Duration::hours(1);
        let t = s.take_relay_quota("ses", later, 40, quota).await.unwrap();
        assert_eq!(t.n, 20, "{b}: the day's quota is what is left");
        assert_eq!(
            t.full_until,
            Some(Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).unwrap()),
            "{b}: frees tomorrow"
        );
        // Another relay is counted apart, without limits.
        let free = s
            .take_relay_quota("other", now, 1000, RelayQuota::default())
            .await
            .unwrap();
        assert_eq!((free.n, free.full_until), (1000, None), "{b}");
    }
}

#[tokio::test]
async fn a_rest_is_stored_until_it_ends() {
    for db in common::stores().await {
        let (s, b) = (&db.store, db.backend);
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap();
        let until = now + chrono::Duration::minutes(5);
        s.rest_relay("down", until, "CONNECT to 127.0.0.1:1 failed", now)
            .await
            .unwrap();
        let rests = s.relay_rests(&["down", "up"], now).await.unwrap();
        assert_eq!(rests.len(), 1, "{b}");
        assert_eq!((rests[0].relay.as_str(), rests[0].until), ("down", until));
        // Rested again later: replaced, not doubled.
        s.rest_relay("down", until + chrono::Duration::minutes(5), "again", until)
            .await
            .unwrap();
        let rests = s.relay_rests(&["down"], until).await.unwrap();
        assert_eq!(rests[0].reason, "again", "{b}");
        assert!(
            s.relay_rests(&["down"], until + chrono::Duration::minutes(5))
                .await
                .unwrap()
                .is_empty(),
            "{b}: over"
        );
    }
}
