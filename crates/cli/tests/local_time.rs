//! `campaign schedule --local-time` end to end with the real binary
//! (issue #18): readers in Asia/Tokyo get the message at the scheduled
//! wall-clock time a few seconds from now, a reader in America/Sao_Paulo
//! (12 hours behind) waits for hers, readers with an unknown or empty zone
//! fall back to --default-tz, a reader who unsubscribes between the start
//! and the due time gets nothing. Mail goes to the project's sink on
//! loopback; nothing here looks up DNS (sending does not).

mod common;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::Value;

#[cfg(unix)]
#[test]
fn local_time_sends_when_it_is_time_in_each_zone_and_status_says_what_waits() {
    sends_by_local_time(None);
    // And on PostgreSQL when configured (an unreachable one fails).
    if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
        sends_by_local_time(Some(&url));
    }
}

#[cfg(unix)]
fn sends_by_local_time(postgres: Option<&str>) {
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    if let Some(url) = postgres {
        let cfg = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
        let cfg = cfg
            .replace(
                "url = \"sqlite://rundbrief.db?mode=rwc\"",
                &format!("url = \"{url}\""),
            )
            .replace(
                "# schema = \"rundbrief\"",
                &format!("schema = \"t_{}\"", uuid::Uuid::now_v7().simple()),
            );
        assert!(cfg.contains(url) && cfg.contains("schema = \"t_"), "{cfg}");
        e.write("rundbrief.toml", cfg.as_bytes());
    }
    e.ok(&["list", "create", "news"]);
    e.write(
        "people.csv",
        b"email,name,tz\n\
          tokyo@example.org,Aki,Asia/Tokyo\n\
          leaver@example.org,Lea,Asia/Tokyo\n\
          saopaulo@example.org,Sol,America/Sao_Paulo\n\
          mars@example.org,Max,Mars/Olympus\n\
          nozone@example.org,Nia,\n",
    );
    e.ok(&["import", "people.csv", "--list", "news"]);
    e.write("issue.md", b"# Good morning {{subscriber.name}}\n");
    e.ok(&[
        "campaign",
        "create",
        "morning",
        "--list",
        "news",
        "--subject",
        "Morning",
        "--content",
        "issue.md",
    ]);

    // Bad flags say what is wrong.
    let err = e.fails(&[
        "campaign",
        "schedule",
        "morning",
        "--cron",
        "0 9 * * *",
        "--local-time",
    ]);
    assert!(
        err.contains("--local-time") && err.contains("--cron"),
        "{err}"
    );
    let err = e.fails(&[
        "campaign",
        "schedule",
        "morning",
        "--at",
        "09:00",
        "--tz-attr",
        "zone",
    ]);
    assert!(err.contains("--local-time"), "{err}");
    let err = e.fails(&[
        "campaign",
        "schedule",
        "morning",
        "--at",
        "2026-12-01T09:00:00+00:00",
        "--local-time",
    ]);
    assert!(err.contains("wall-clock time"), "{err}");
    let err = e.fails(&[
        "campaign",
        "schedule",
        "morning",
        "--at",
        "09:00",
        "--local-time",
        "--tz-attr",
        "a.b",
    ]);
    assert!(err.contains("--tz-attr `a.b`"), "{err}");
    let err = e.fails(&[
        "campaign",
        "schedule",
        "morning",
        "--at",
        "09:00",
        "--local-time",
        "--default-tz",
        "Mars/Olympus",
    ]);
    assert!(
        err.contains("--default-tz") && err.contains("IANA"),
        "{err}"
    );

    // Due in Tokyo a few seconds from now; Sao Paulo's same wall-clock
    // time is 12 hours later.
    let due = Utc::now() + chrono::Duration::seconds(8);
    let due = chrono::Timelike::with_nanosecond(&due, 0).unwrap();
    let at = due
        .with_timezone(&chrono_tz_tokyo())
        .format("%H:%M:%S")
        .to_string();
    let v = e.json(&[
        "campaign",
        "schedule",
        "morning",
        "--at",
        &at,
        "--local-time",
        "--default-tz",
        "Asia/Tokyo",
    ]);
    assert_eq!(v["state"], "scheduled", "{v}");
    let lt = &v["local_time"];
    assert_eq!(
        (
            lt["at"].as_str(),
            lt["tz_attr"].as_str(),
            lt["default_tz"].as_str()
        ),
        (Some(at.as_str()), Some("tz"), Some("Asia/Tokyo")),
        "{v}"
    );
    assert_eq!(
        (lt["recipients"].as_u64(), lt["fallback"].as_u64()),
        (Some(5), Some(2)),
        "{v}"
    );
    let text = e.ok(&["campaign", "status", "morning"]);
    assert!(
        text.contains("local time:") && text.contains("2 reader(s) without a known zone"),
        "{text}"
    );

    let (sink, port) = start_sink(&e, &["--dir", "spool"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    // Starts it: materialised, nothing due yet.
    let first = e.json(&["campaign", "send", "morning", "--relay", &relay]);
    assert_eq!(
        (first["state"].as_str(), first["sent"].as_u64()),
        (Some("running"), Some(0)),
        "{first}"
    );
    e.ok(&["sub", "unsubscribe", "leaver@example.org", "--list", "news"]);
    // Each pass sends what is due; poll until Tokyo's time has come.
    let mut last = Value::Null;
    for _ in 0..60 {
        last = e.json(&["campaign", "send", "morning", "--relay", &relay]);
        if last["sent"].as_u64() == Some(3) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        (
            last["sent"].as_u64(),
            last["failed"].as_u64(),
            last["pending"].as_u64(),
            last["state"].as_str()
        ),
        (Some(3), Some(1), Some(1), Some("running")),
        "{last}"
    );
    assert!(Utc::now() >= due, "nothing went out before its time");
    stop(sink, "-INT");
    let mut to: Vec<String> = std::fs::read_dir(e.path("spool"))
        .unwrap()
        .map(|f| {
            let t = std::fs::read_to_string(f.unwrap().path()).unwrap();
            t.lines().nth(1).unwrap().to_string()
        })
        .collect();
    to.sort();
    assert_eq!(
        to,
        vec![
            "Delivered-To: <mars@example.org>",
            "Delivered-To: <nozone@example.org>",
            "Delivered-To: <tokyo@example.org>",
        ]
    );

    // Status: Sao Paulo waits; the ETA is bounded by her due time.
    let s = e.json(&["campaign", "status", "morning"]);
    let sp_due = due + chrono::Duration::hours(12);
    let hour = sp_due.format("%Y-%m-%dT%H:00:00Z").to_string();
    assert_eq!(
        s["due"],
        serde_json::json!([{"at": hour, "pending": 1}]),
        "{s}"
    );
    assert_eq!(s["local_time"]["fallback"], 2, "{s}");
    let eta: DateTime<Utc> = DateTime::parse_from_rfc3339(s["eta"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(eta >= sp_due - chrono::Duration::seconds(1), "{s}");
    assert_eq!(s["eta_reason"], "local-time due times", "{s}");
    assert!(s["eta_s"].as_u64().unwrap() > 11 * 3600, "{s}");
    let errors = s["errors"].to_string();
    assert!(errors.contains("left the campaign's lists"), "{s}");
}

fn chrono_tz_tokyo() -> chrono::FixedOffset {
    // Asia/Tokyo has no daylight saving time: always UTC+9.
    chrono::FixedOffset::east_opt(9 * 3600).unwrap()
}
