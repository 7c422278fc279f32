//! Issue 9 through the real binary: the `mailto:` unsubscribe at the bounce
//! endpoint over SMTP, `sub add --confirm`, and `rundbrief http serve`.
#![cfg(unix)]

mod common;

use common::*;
use rundbrief_core::{Purpose, Signer};
use serde_json::Value;
use std::io::{Read, Write};

/// `rundbrief init`, then a bounce domain, a From and a public URL;
/// returns the signer for the generated secret.
fn configure(e: &Env) -> Signer {
    let verp = endpoint_config(e);
    sending_config(e);
    verp.signer().clone()
}

/// Starts a server command that announces `listening on 127.0.0.1:PORT`.
fn start(e: &Env, args: &[&str]) -> Server {
    let (child, port) = start_server(e, args);
    Server { child, port }
}

/// (membership status on `list`, last audit entry) of `email`.
fn membership(e: &Env, email: &str, list: &str) -> (String, Value) {
    let d = e.json(&["sub", "show", email]);
    let m = d["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["list"] == list)
        .unwrap()["status"]
        .as_str()
        .unwrap()
        .to_string();
    (m, d["audit"].as_array().unwrap().last().unwrap().clone())
}

/// A server stopped with SIGINT when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: news.example.org\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// Creates a campaign on `news` through the store API and returns
/// (delivery id, email) of its deliveries.
fn deliveries(e: &Env) -> Vec<(uuid::Uuid, String)> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("sqlite://{}?mode=rwc", e.path("rundbrief.db").display());
        let store = rundbrief_store::Store::connect(&rundbrief_store::ConnectConfig::new(url))
            .await
            .unwrap();
        let c = store
            .create_campaign(&rundbrief_store::NewCampaign {
                name: "issue-1".into(),
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
        store.materialise_deliveries(c.id).await.unwrap();
        let d = store.deliveries(c.id).await.unwrap();
        store.close().await.unwrap();
        d.into_iter().map(|d| (d.delivery_id, d.email)).collect()
    })
}

#[test]
fn a_mail_to_a_signed_unsub_address_unsubscribes_and_forged_ones_are_refused() {
    let e = Env::new();
    let signer = configure(&e);
    e.json(&["list", "create", "news"]);
    e.json(&["list", "create", "other"]);
    for who in ["ann@example.org", "bob@example.org"] {
        e.json(&["sub", "add", who, "--list", "news"]);
        e.json(&["sub", "add", who, "--list", "other"]);
    }
    let ann = deliveries(&e)
        .into_iter()
        .find(|(_, email)| email == "ann@example.org")
        .unwrap()
        .0;
    let token = signer.sign(Purpose::UnsubscribeMail, ann.as_bytes());
    let good = format!("unsub-{token}@bounce.example.org");
    let endpoint = start(&e, &["bounce", "serve", "--listen", "127.0.0.1:0"]);

    // Forged, altered, other purpose: refused at RCPT, nothing stored.
    let mut altered = good.clone().into_bytes();
    altered[8] = if altered[8] == b'a' { b'b' } else { b'a' };
    let verp_token = signer.sign(Purpose::Verp, ann.as_bytes());
    for bad in [
        String::from_utf8(altered).unwrap(),
        format!("unsub-{verp_token}@bounce.example.org"),
        "unsub-abc@bounce.example.org".to_string(),
    ] {
        let replies = smtp(
            endpoint.port,
            "ann@example.org",
            &[&bad],
            "Subject: unsubscribe\r\n\r\nplease",
        );
        assert!(
            replies.iter().any(|l| l.starts_with("550 5.1.1")),
            "{bad}: {replies:?}"
        );
        assert!(
            !replies.iter().any(|l| l.starts_with("250 2.0.0")),
            "{bad}: {replies:?}"
        );
    }
    assert_eq!(membership(&e, "ann@example.org", "news").0, "subscribed");

    // The real one, upper-cased by some MTA on the way: stored, then unsubscribed, before 250.
    let replies = smtp(
        endpoint.port,
        "ann@example.org",
        &[&good.to_uppercase()],
        "Subject: unsubscribe\r\n\r\nplease",
    );
    assert!(
        replies.iter().filter(|l| l.starts_with("250")).count() >= 3,
        "{replies:?}"
    );
    let (status, last) = membership(&e, "ann@example.org", "news");
    assert_eq!(status, "unsubscribed");
    assert_eq!(last["actor"], "mailto", "{last}");
    assert_eq!(last["action"], "unsubscribed", "{last}");
    assert_eq!(
        membership(&e, "ann@example.org", "other").0,
        "subscribed",
        "only the campaign's list"
    );
    assert_eq!(
        membership(&e, "bob@example.org", "news").0,
        "subscribed",
        "nobody else"
    );
    drop(endpoint);
    let stored = e.json(&["bounce", "ls"]);
    let stored = stored.as_array().unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0]["rcpt"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(&good)
    );
}

#[cfg(unix)]
#[test]
fn a_bounced_confirmation_mail_prunes_the_address_it_went_to() {
    let e = Env::new();
    configure(&e);
    e.ok(&["list", "create", "news"]);
    let (endpoint, endpoint_port) = start_endpoint(&e, &[]);
    let (sink, sink_port) = start_sink(
        &e,
        &[
            "--bounce",
            "typo*=5.1.1",
            "--bounce-to",
            &format!("127.0.0.1:{endpoint_port}"),
        ],
    );
    let relay = format!("smtp://127.0.0.1:{sink_port}");
    for who in ["typo", "fine"] {
        let out = e.json(&[
            "sub",
            "add",
            &format!("{who}@example.org"),
            "--list",
            "news",
            "--confirm",
            "--relay",
            &relay,
        ]);
        assert_eq!(out["confirmation_sent"], true, "{out}");
    }
    // The sink answers 250, then sends a DSN to the confirmation mail's
    // return path, which signs the subscriber's id.
    wait_for_parsed(&e, 1);
    stop(sink, "-INT");
    stop(endpoint, "-INT");
    let typo = e.json(&["sub", "show", "typo@example.org"]);
    assert_eq!(typo["status"], "bounced", "{typo}");
    let last = typo["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("bounced"), Some("bounce")),
        "{typo}"
    );
    assert_eq!(
        e.json(&["sub", "show", "fine@example.org"])["status"],
        "active"
    );
}

#[test]
fn sub_add_confirm_mails_a_link_that_http_serve_confirms_and_one_click_undoes() {
    let e = Env::new();
    let signer = configure(&e);
    let list = e.json(&["list", "create", "news"]);
    std::fs::create_dir(e.path("mail")).unwrap();
    let sink = start(
        &e,
        &[
            "sink",
            "--listen",
            "127.0.0.1:0",
            "--dir",
            "mail",
            "--no-tls",
        ],
    );
    let relay = format!("smtp://127.0.0.1:{}", sink.port);
    // Confirmation mails are DKIM-signed like campaigns.
    e.ok(&[
        "dkim",
        "keygen",
        "--algorithm",
        "ed25519",
        "--out",
        "dkim.pem",
    ]);
    let cfg = std::fs::read_to_string(e.path("rundbrief.toml"))
        .unwrap()
        .replace("# key_file = \"dkim.pem\"", "key_file = \"dkim.pem\"")
        .replace("# selector = \"rb2026\"", "selector = \"rb2026\"")
        .replace("# domain = \"example.org\"", "domain = \"example.org\"");
    e.write("rundbrief.toml", cfg.as_bytes());

    let out = e.json(&[
        "sub",
        "add",
        "nina@example.org",
        "--list",
        "news",
        "--confirm",
        "--relay",
        &relay,
    ]);
    assert_eq!(out["confirmation_sent"], true, "{out}");
    assert_eq!(membership(&e, "nina@example.org", "news").0, "unconfirmed");
    // The relay said 250, so the sink has stored it.
    let mails: Vec<_> = std::fs::read_dir(e.path("mail"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(mails.len(), 1);
    let mail = std::fs::read_to_string(&mails[0]).unwrap();
    assert!(mail.contains("Delivered-To: <nina@example.org>"), "{mail}");
    assert!(
        mail.contains("DKIM-Signature:") && mail.contains("d=example.org"),
        "{mail}"
    );
    let b64: String = mail
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    use base64::Engine;
    let body = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
    let path = body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("https://news.example.org"))
        .unwrap_or_else(|| panic!("{body}"))
        .to_string();
    assert!(path.starts_with("/c/"), "{path}");

    let web = start(&e, &["http", "serve", "--listen", "127.0.0.1:0"]);
    let (status, page) = http(web.port, "GET", &path, "");
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        membership(&e, "nina@example.org", "news").0,
        "unconfirmed",
        "GET changes nothing"
    );
    let (status, page) = http(web.port, "POST", &path, "confirm=yes");
    assert_eq!(status, 200, "{page}");
    assert_eq!(membership(&e, "nina@example.org", "news").0, "subscribed");

    // The one-click link our campaigns carry.
    let sub: uuid::Uuid = e.json(&["sub", "show", "nina@example.org"])["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let list: uuid::Uuid = list["id"].as_str().unwrap().parse().unwrap();
    let token = signer.sign(
        Purpose::UnsubscribeLink,
        &[sub.as_bytes().as_slice(), list.as_bytes()].concat(),
    );
    let (status, _) = http(
        web.port,
        "POST",
        &format!("/u/{token}x"),
        "List-Unsubscribe=One-Click",
    );
    assert_eq!(status, 404);
    assert_eq!(membership(&e, "nina@example.org", "news").0, "subscribed");
    let (status, page) = http(
        web.port,
        "POST",
        &format!("/u/{token}"),
        "List-Unsubscribe=One-Click",
    );
    assert_eq!(status, 200, "{page}");
    let (state, last) = membership(&e, "nina@example.org", "news");
    assert_eq!(state, "unsubscribed");
    assert_eq!(last["actor"], "http");
}

/// A campaign to several lists: each message names a list of the campaign
/// that its recipient is subscribed to (List-Id, footer, unsubscribe link),
/// so the one-click link in it unsubscribes from the list that mailed it.
/// Before, every message named the campaign's first list, and for somebody
/// who had left that list the link changed nothing.
#[test]
fn a_campaign_to_several_lists_links_each_recipient_to_a_list_they_are_on() {
    let e = Env::new();
    configure(&e);
    for list in ["news", "sm"] {
        e.ok(&["list", "create", list]);
        e.ok(&["sub", "add", "eve@example.org", "--list", list]);
    }
    e.ok(&["sub", "add", "bob@example.org", "--list", "news"]);
    e.ok(&["sub", "unsubscribe", "eve@example.org", "--list", "news"]);
    e.write("issue.md", b"Hello\n");
    e.ok(&[
        "campaign",
        "create",
        "ml",
        "--list",
        "news",
        "--list",
        "sm",
        "--subject",
        "Hi",
        "--content",
        "issue.md",
    ]);
    let (sink, port) = start_sink(&e, &["--dir", "spool"]);
    let relay = format!("smtp://127.0.0.1:{port}");
    let sent = e.json(&["campaign", "send", "ml", "--relay", &relay, "--wait"]);
    assert_eq!(sent["sent"], 2, "{sent}");
    stop(sink, "-INT");
    let mut heads = std::collections::BTreeMap::new();
    for f in std::fs::read_dir(e.path("spool")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let to = text
            .lines()
            .find_map(|l| l.strip_prefix("Delivered-To: "))
            .unwrap()
            .to_string();
        let head = text.split("\r\n\r\n").next().unwrap().to_string();
        heads.insert(to, head);
    }
    let header = |to: &str, name: &str| {
        heads[to]
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in {}", heads[to]))
            .to_string()
    };
    assert!(
        header("<eve@example.org>", "List-Id").contains("sm"),
        "{heads:?}"
    );
    assert!(
        header("<bob@example.org>", "List-Id").contains("news"),
        "{heads:?}"
    );
    let unsub = header("<eve@example.org>", "List-Unsubscribe");
    let path = unsub
        .split(['<', '>', ','])
        .find_map(|w| w.trim().strip_prefix("https://news.example.org"))
        .unwrap_or_else(|| panic!("{unsub}"))
        .to_string();
    let web = start(&e, &["http", "serve", "--listen", "127.0.0.1:0"]);
    let (status, page) = http(web.port, "POST", &path, "List-Unsubscribe=One-Click");
    assert_eq!(status, 200, "{page}");
    assert_eq!(membership(&e, "eve@example.org", "sm").0, "unsubscribed");
}

/// `date` in a campaign's templates is in the time zone of its schedule.
#[test]
fn a_campaigns_date_is_in_its_schedules_time_zone() {
    let e = Env::new();
    configure(&e);
    e.ok(&["list", "create", "news"]);
    e.ok(&["sub", "add", "eve@example.org", "--list", "news"]);
    e.write("issue.md", b"Hello\n");
    e.ok(&[
        "campaign",
        "create",
        "tz",
        "--list",
        "news",
        "--subject",
        "Offset {{format_date date \"%z\"}}",
        "--content",
        "issue.md",
    ]);
    e.ok(&[
        "campaign",
        "schedule",
        "tz",
        "--at",
        "2031-01-15 09:00",
        "--tz",
        "Asia/Tokyo",
    ]);
    e.ok(&[
        "campaign",
        "preview",
        "tz",
        "--to",
        "eve@example.org",
        "--out",
        "p.eml",
    ]);
    let eml = std::fs::read_to_string(e.path("p.eml")).unwrap();
    assert!(eml.contains("Subject: Offset +0900"), "{eml}");
}
