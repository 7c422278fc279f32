//! `rundbrief demo` end to end: the real binary, a small list, its JSON
//! contract, and the database it leaves behind.

mod common;

use common::*;
use serde_json::Value;

/// The demo's shares, computed here on their own (see `rundbrief demo
/// --help`): 3 % unknown at RCPT, 2 % bounced by DSN, 1 % greylisted, 1 %
/// refused by policy at RCPT, at least one each; one auto-reply, one
/// complaint, one spam-filter DSN, one mailbox-full DSN; two addresses on
/// a domain that does not exist and one on a null-MX domain (undeliverable,
/// never sent).
struct Expected {
    sent: u64,
    bounced: u64,
    pruned: u64,
    greylisted: u64,
    undeliverable: u64,
}

fn expected(n: u64) -> Expected {
    let unknown = (n * 3 / 100).max(1);
    let by_dsn = (n * 2 / 100).max(1);
    let refused = (n / 100).max(1);
    let (filtered, full) = (1, 1);
    let undeliverable = 3;
    Expected {
        sent: n - unknown - refused - undeliverable,
        bounced: unknown + by_dsn + refused + filtered + full,
        pruned: unknown + by_dsn,
        greylisted: (n / 100).max(1),
        undeliverable,
    }
}

#[test]
fn the_demo_prunes_exactly_the_dead_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let d = dir.to_str().unwrap();
    let n = 60;
    let s = json_in(
        tmp.path(),
        &["demo", "--subscribers", "60", "--json", "--dir", d],
    );
    let want = expected(n);
    let num = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("`{k}` missing or not a count in {s}"))
    };
    assert_eq!(
        (num("sent"), num("bounced"), num("pruned")),
        (want.sent, want.bounced, want.pruned),
        "{s}"
    );
    for k in ["seconds", "msgs_per_s"] {
        assert!(s[k].as_f64().is_some_and(|v| v >= 0.0), "`{k}` in {s}");
    }
    // The rate is of `sent`, the figure printed next to it.
    let (secs, rate) = (
        s["seconds"].as_f64().unwrap(),
        s["msgs_per_s"].as_f64().unwrap(),
    );
    assert!(
        (rate * secs - want.sent as f64).abs() < 0.5,
        "msgs_per_s × seconds should be `sent` ({}): {s}",
        want.sent
    );
    assert_eq!(num("deferred_then_delivered"), want.greylisted, "{s}");
    assert_eq!(
        (num("undeliverable"), num("skipped")),
        (want.undeliverable, want.undeliverable),
        "{s}"
    );
    assert_eq!(
        (num("complained"), num("auto_replies_ignored")),
        (1, 1),
        "{s}"
    );

    // The database in DIR says the same, through the commands the demo suggests.
    let bounced = json_in(
        &dir,
        &[
            "sub", "ls", "--status", "bounced", "--list", "demo", "--limit", "0", "--json",
        ],
    );
    let emails: Vec<&str> = bounced
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails.len() as u64, want.pruned, "{bounced}");
    assert!(
        emails
            .iter()
            .all(|e| e.starts_with("nobody") || e.starts_with("moved")),
        "only the dead ones are bounced: {emails:?}"
    );
    let all = json_in(
        &dir,
        &["sub", "ls", "--list", "demo", "--limit", "0", "--json"],
    );
    let status_of = |prefix: &str| -> Vec<String> {
        all.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["email"].as_str().unwrap().starts_with(prefix))
            .map(|r| r["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(all.as_array().unwrap().len() as u64, n);
    assert_eq!(num("pruned_by_block_or_soft"), 0, "{s}");
    assert_eq!(
        (
            s["bounced_by_class"]["block"].as_u64(),
            s["bounced_by_class"]["soft"].as_u64()
        ),
        (Some(2), Some(1)),
        "{s}"
    );
    for live in [
        "reader",
        "greylisted",
        "away",
        "refused",
        "filtered",
        "full",
    ] {
        let st = status_of(live);
        assert!(
            !st.is_empty() && st.iter().all(|s| s == "active"),
            "{live}: {st:?}"
        );
    }
    assert_eq!(status_of("grumpy"), ["unsubscribed"]);
    // The domain check's: undeliverable, not bounced, with the reason.
    assert_eq!(status_of("lost"), ["undeliverable", "undeliverable"]);
    assert_eq!(status_of("nomx"), ["undeliverable"]);
    let marked = json_in(
        &dir,
        &[
            "sub",
            "ls",
            "--status",
            "undeliverable",
            "--list",
            "demo",
            "--json",
        ],
    );
    assert_eq!(marked.as_array().unwrap().len() as u64, want.undeliverable);
    let nomx = status_of_email(&all, "nomx");
    let shown = json_in(&dir, &["sub", "show", &nomx, "--json"]);
    let last = shown["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["reason"], "nomail.example: null MX (RFC 7505)",
        "{last}"
    );
    // The second campaign: one provider starts blocking, the circuit
    // breaker suspends it, the other provider gets all of its mail.
    assert_eq!(s["suspended_provider"], "blockmail", "{s}");
    assert!(
        s["suspension_reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused as blocks")),
        "{s}"
    );
    assert!(num("held_by_breaker") > 0, "{s}");
    assert_eq!(num("sent_to_healthy_provider"), 200, "{s}");
    let st = json_in(
        &dir,
        &["campaign", "status", "demo-issue-1-providers", "--json"],
    );
    let blockmail = st["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "blockmail")
        .unwrap_or_else(|| panic!("no blockmail in {st}"))
        .clone();
    assert_eq!(blockmail["state"], "suspended", "{st}");
    assert_eq!(blockmail["pending"], s["held_by_breaker"], "{st}");
    assert!(st["paused_reason"].is_null(), "{st}");
    for k in [
        "state", "total", "sent", "deferred", "failed", "bounced", "pending",
    ] {
        assert!(!st[k].is_null(), "`{k}` kept in {st}");
    }
    // The text status says it, with the command that lifts it.
    let out = rundbrief_in(&dir)
        .args(["campaign", "status", "demo-issue-1-providers"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("provider blockmail:")
            && text.contains("SUSPENDED")
            && text.contains("campaign resume demo-issue-1-providers --provider blockmail"),
        "{text}"
    );
    // Only a suspended provider can be lifted; the error names the ones that are.
    let relay = ["--relay", "smtp://127.0.0.1:1"];
    let out = rundbrief_in(&dir)
        .args([
            "campaign",
            "resume",
            "demo-issue-1-providers",
            "--provider",
            "nope",
        ])
        .args(relay)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not suspended") && err.contains("suspended: blockmail"),
        "{err}"
    );
    // resume --provider lifts it (the held deliveries are tried again: to a
    // closed loopback port here, so they are deferred, not sent).
    let out = rundbrief_in(&dir)
        .args([
            "campaign",
            "resume",
            "demo-issue-1-providers",
            "--provider",
            "blockmail",
        ])
        .args(relay)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = json_in(
        &dir,
        &["campaign", "status", "demo-issue-1-providers", "--json"],
    );
    let blockmail = st["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "blockmail")
        .unwrap()
        .clone();
    assert_eq!(blockmail["state"], "sending", "{st}");
    // Why an address was pruned is on record.
    let pruned = json_in(&dir, &["sub", "show", emails[0], "--json"]);
    let last = pruned["audit"].as_array().unwrap().last().unwrap().clone();
    assert!(last["reason"].as_str().unwrap().contains("5.1.1"), "{last}");

    // A second run in the same directory is refused: it needs a fresh one.
    let again = rundbrief_in(tmp.path())
        .args(["demo", "--subscribers", "12", "--dir", d])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("fresh directory"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[cfg(unix)]
#[test]
fn sink_greylists_auto_replies_and_complains_and_bounce_parse_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (receiver, receiver_port) = start_server_in(
        dir,
        &[
            "sink",
            "--listen",
            "127.0.0.1:0",
            "--no-tls",
            "--dir",
            "reports",
        ],
    );
    let (sink, port) = start_server_in(
        dir,
        &[
            "sink",
            "--listen",
            "127.0.0.1:0",
            "--json",
            "--no-tls",
            "--defer-once",
            "grey*@*=450 4.2.0 Greylisted",
            "--defer-times",
            "2",
            "--auto-reply",
            "away*@*",
            "--complain",
            "grumpy*@*",
            "--bounce-to",
            &format!("127.0.0.1:{receiver_port}"),
        ],
    );
    for attempt in 0..3 {
        let replies = smtp(
            port,
            "b-1@bounce.example",
            &["grey@x.example"],
            "Subject: g\r\n\r\ng",
        );
        let deferred = replies
            .iter()
            .any(|l| l.starts_with("450 4.2.0 Greylisted"));
        assert_eq!(deferred, attempt < 2, "attempt {attempt}: {replies:?}");
    }
    smtp(
        port,
        "b-2@bounce.example",
        &["away@x.example", "grumpy@y.example"],
        "From: News <news@list.example>\r\nSubject: Issue 9\r\nMessage-ID: <m9@list.example>\r\n\r\nhello",
    );
    let reports = dir.join("reports");
    let emls = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&reports)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while emls().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let counts: Value = serde_json::from_str(&stop_output(sink)).unwrap();
    stop_output(receiver);
    assert_eq!(
        (
            &counts["messages"],
            &counts["deferred"],
            &counts["replies_sent"],
            &counts["complaints_sent"],
            &counts["bounces_failed"]
        ),
        (&2.into(), &2.into(), &1.into(), &1.into(), &0.into()),
        "{counts}"
    );
    let mut seen: Vec<(String, String, String)> = emls()
        .iter()
        .map(|f| {
            let v = json_in(dir, &["bounce", "parse", f.to_str().unwrap(), "--json"]);
            (
                v["kind"].as_str().unwrap().to_string(),
                v["class"].as_str().unwrap().to_string(),
                v["recipients"][0]["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("arf".into(), "complaint".into(), "grumpy@y.example".into()),
            (
                "auto-reply".into(),
                "ignore".into(),
                "away@x.example".into()
            ),
        ]
    );
}

/// The address of the first subscriber whose address starts with `prefix`.
fn status_of_email(all: &Value, prefix: &str) -> String {
    all.as_array()
        .unwrap()
        .iter()
        .map(|r| r["email"].as_str().unwrap())
        .find(|e| e.starts_with(prefix))
        .unwrap()
        .to_string()
}
