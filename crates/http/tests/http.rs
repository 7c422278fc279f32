//! The endpoint through real HTTP/1.1 on loopback (raw requests over a
//! `TcpStream`, no client library), against a SQLite store, with the
//! confirmation mail going to an in-process sink.

use base64::Engine;
use rundbrief_app::members::Members;
use rundbrief_core::config::HttpConfig;
use rundbrief_core::{
    Actor, Address, Attributes, AuditAction, MembershipStatus, Purpose, Secret, Signer, Verp,
};
use rundbrief_http::{AppState, Mailer};
use rundbrief_smtpd::sink::{Sink, SinkConfig, SinkStats, SinkTls};
use rundbrief_store::{ConnectConfig, NewCampaign, Store};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

fn signer() -> Signer {
    Signer::new(Secret::new("s".repeat(40)), None)
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One request on its own connection (`Connection: close`), read to EOF.
async fn request(port: u16, method: &str, path: &str, body: &str) -> Reply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: news.example.org\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("the server answers within 20 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

struct Server {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(store: &Store, cfg: HttpConfig, mailer: Option<Mailer>) -> Server {
        let state = AppState::new(Members::new(store.clone(), signer()), cfg, mailer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(rundbrief_http::serve(listener, state, async {
            let _ = rx.await;
        }));
        Server {
            port,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

struct Fixture {
    store: Store,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&ConnectConfig::new(url)).await.unwrap();
    store.migrate().await.unwrap();
    Fixture { store, _dir: dir }
}

/// Creates `list` and subscribes `email` to it; returns (subscriber, list).
async fn member(store: &Store, list: &str, email: &str) -> (Uuid, Uuid) {
    if store.find_list(list).await.unwrap().is_none() {
        store.create_list(list, None).await.unwrap();
    }
    store
        .add_subscriber(
            &addr(email),
            list,
            None,
            Attributes::new(),
            false,
            Actor::Cli,
            "test",
        )
        .await
        .unwrap();
    let sub = store
        .subscriber_detail(&addr(email))
        .await
        .unwrap()
        .subscriber
        .id;
    (sub, store.list(list).await.unwrap().id)
}

fn token(purpose: Purpose, ids: &[Uuid]) -> String {
    let payload: Vec<u8> = ids.iter().flat_map(|u| *u.as_bytes()).collect();
    signer().sign(purpose, &payload)
}

async fn membership(store: &Store, email: &str, list: &str) -> MembershipStatus {
    store
        .subscriber_detail(&addr(email))
        .await
        .unwrap()
        .memberships
        .into_iter()
        .find(|m| m.list == list)
        .unwrap()
        .status
}

async fn audit_count(store: &Store, email: &str) -> usize {
    store
        .subscriber_detail(&addr(email))
        .await
        .unwrap()
        .audit
        .len()
}

/// The newest audit entry of `email`.
async fn last_audit(store: &Store, email: &str) -> rundbrief_core::AuditEntry {
    store
        .subscriber_detail(&addr(email))
        .await
        .unwrap()
        .audit
        .pop()
        .unwrap()
}

/// The value of the first `action="…"` in a page.
fn form_action(body: &str) -> String {
    body.split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn one_click_post_unsubscribes_at_once_and_is_idempotent() {
    let f = fixture().await;
    let (sub, list) = member(&f.store, "news", "ann@example.org").await;
    let srv = Server::start(&f.store, HttpConfig::default(), None).await;
    let t = token(Purpose::UnsubscribeLink, &[sub, list]);

    let r = request(
        srv.port,
        "POST",
        &format!("/u/{t}"),
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.headers.contains_key("location"), "no redirect");
    assert!(r.body.contains("You are unsubscribed"), "{}", r.body);
    assert_eq!(
        membership(&f.store, "ann@example.org", "news").await,
        MembershipStatus::Unsubscribed
    );
    let last = last_audit(&f.store, "ann@example.org").await;
    assert_eq!(
        (last.action, last.actor),
        (AuditAction::Unsubscribed, Actor::Http)
    );
    assert!(last.reason.contains("RFC 8058"), "{}", last.reason);

    // Again: 200, nothing new in the audit trail.
    let before = audit_count(&f.store, "ann@example.org").await;
    let r = request(
        srv.port,
        "POST",
        &format!("/u/{t}"),
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(audit_count(&f.store, "ann@example.org").await, before);

    // A 48-byte link (with the campaign id) works too and names the campaign.
    let (sub2, _) = member(&f.store, "news", "bob@example.org").await;
    let campaign = Uuid::now_v7();
    let t48 = token(Purpose::UnsubscribeLink, &[sub2, list, campaign]);
    let r = request(
        srv.port,
        "POST",
        &format!("/u/{t48}"),
        "List-Unsubscribe=One-Click",
    )
    .await;
    assert_eq!(r.status, 200);
    let d = f
        .store
        .subscriber_detail(&addr("bob@example.org"))
        .await
        .unwrap();
    assert!(
        d.audit
            .last()
            .unwrap()
            .reason
            .contains(&campaign.to_string())
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_page_asks_first_its_button_unsubscribes_and_resubscribe_works() {
    let f = fixture().await;
    let (sub, list) = member(&f.store, "Tom & Jerry's <news>", "ann@example.org").await;
    let srv = Server::start(&f.store, HttpConfig::default(), None).await;
    let t = token(Purpose::UnsubscribeLink, &[sub, list]);

    let page = request(srv.port, "GET", &format!("/u/{t}"), "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("ann@example.org"), "{}", page.body);
    assert!(
        page.body.contains("Tom &amp; Jerry&#39;s &lt;news&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<news>") && !page.body.contains("<script"));
    assert!(page.body.contains("<form method=\"post\"") && page.body.contains("<button"));
    for (h, want) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'",
        ),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        assert!(
            page.headers.get(h).is_some_and(|v| v.starts_with(want)),
            "{h}: {:?}",
            page.headers
        );
    }
    // Looking is not unsubscribing (link scanners GET every link).
    let list_name = "Tom & Jerry's <news>";
    assert_eq!(
        membership(&f.store, "ann@example.org", list_name).await,
        MembershipStatus::Subscribed
    );

    // The button posts the form to the same URL.
    assert_eq!(form_action(&page.body), t);
    let done = request(srv.port, "POST", &format!("/u/{t}"), "confirm=yes").await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("You are unsubscribed"));
    assert_eq!(
        membership(&f.store, "ann@example.org", list_name).await,
        MembershipStatus::Unsubscribed
    );
    assert_eq!(
        last_audit(&f.store, "ann@example.org").await.reason,
        "unsubscribe page"
    );

    // The confirmation page's re-subscribe button: a page first, then the POST.
    let action = form_action(&done.body);
    let rtoken = action
        .strip_prefix("../r/")
        .expect("relative re-subscribe link");
    let ask = request(srv.port, "GET", &format!("/r/{rtoken}"), "").await;
    assert_eq!(ask.status, 200);
    assert_eq!(
        membership(&f.store, "ann@example.org", list_name).await,
        MembershipStatus::Unsubscribed
    );
    let again = request(srv.port, "POST", &format!("/r/{rtoken}"), "confirm=yes").await;
    assert_eq!(again.status, 200);
    assert!(again.body.contains("You are subscribed"), "{}", again.body);
    assert_eq!(
        membership(&f.store, "ann@example.org", list_name).await,
        MembershipStatus::Subscribed
    );
    let last = last_audit(&f.store, "ann@example.org").await;
    assert_eq!(
        (last.action, last.actor),
        (AuditAction::Subscribed, Actor::Http)
    );
    assert!(last.reason.contains("re-subscribed"));
    srv.stop().await;
}

#[tokio::test]
async fn forged_or_altered_tokens_get_404_and_change_nothing() {
    let f = fixture().await;
    let (sub, list) = member(&f.store, "news", "ann@example.org").await;
    let srv = Server::start(&f.store, HttpConfig::default(), None).await;
    let good = token(Purpose::UnsubscribeLink, &[sub, list]);
    let before = audit_count(&f.store, "ann@example.org").await;

    let mut altered = good.clone().into_bytes();
    altered[3] = if altered[3] == b'a' { b'b' } else { b'a' };
    let altered = String::from_utf8(altered).unwrap();
    let other_key = Signer::new(Secret::new("x".repeat(40)), None).sign(
        Purpose::UnsubscribeLink,
        &[sub.as_bytes().as_slice(), list.as_bytes()].concat(),
    );
    let wrong_purpose = token(Purpose::Confirm, &[sub, list]);
    let cut = good[..good.len() - 4].to_string();
    for bad in [
        altered.as_str(),
        &other_key,
        &wrong_purpose,
        &cut,
        "x",
        "%00",
    ] {
        for method in ["GET", "POST"] {
            let r = request(
                srv.port,
                method,
                &format!("/u/{bad}"),
                "List-Unsubscribe=One-Click",
            )
            .await;
            assert_eq!(r.status, 404, "{method} {bad}: {}", r.body);
            assert!(r.headers.contains_key("content-security-policy"));
        }
        for path in ["r", "c"] {
            if path == "c" && bad == wrong_purpose {
                continue; // a confirm token is valid there (and changes nothing: already subscribed)
            }
            let r = request(srv.port, "POST", &format!("/{path}/{bad}"), "").await;
            assert_eq!(r.status, 404, "{path} {bad}");
        }
    }
    // An unsubscribe token is no confirmation token either.
    let r = request(srv.port, "POST", &format!("/c/{good}"), "").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        membership(&f.store, "ann@example.org", "news").await,
        MembershipStatus::Subscribed
    );
    assert_eq!(audit_count(&f.store, "ann@example.org").await, before);

    // Unknown routes, and /s without a mailer, are 404 too; bodies are limited.
    assert_eq!(request(srv.port, "GET", "/admin", "").await.status, 404);
    assert_eq!(
        request(srv.port, "POST", "/s/news", "email=a%40example.org")
            .await
            .status,
        404
    );
    let big = "x".repeat(20_000);
    assert_eq!(
        request(srv.port, "POST", &format!("/u/{good}"), &big)
            .await
            .status,
        413
    );
    assert_eq!(
        membership(&f.store, "ann@example.org", "news").await,
        MembershipStatus::Subscribed
    );
    srv.stop().await;
}

struct MailSink {
    port: u16,
    stats: Arc<SinkStats>,
    dir: tempfile::TempDir,
    stop: rundbrief_smtpd::CancellationToken,
}

async fn mail_sink() -> MailSink {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::new(SinkConfig {
        dir: Some(dir.path().to_path_buf()),
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .unwrap();
    let stats = sink.stats();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = rundbrief_smtpd::CancellationToken::new();
    tokio::spawn(sink.run(listener, rundbrief_smtpd::Limits::default(), stop.clone()));
    MailSink {
        port,
        stats,
        dir,
        stop,
    }
}

impl MailSink {
    fn mailer(&self) -> Mailer {
        let relay =
            rundbrief_sender::Relay::parse(&format!("smtp://127.0.0.1:{}", self.port)).unwrap();
        let verp = Verp::new(signer(), "b", "bounce.example.org");
        Mailer::new(
            rundbrief_sender::Sender::new(relay, verp).unwrap(),
            signer(),
            "News <news@example.org>",
            "https://news.example.org/",
            None,
        )
        .unwrap()
    }

    async fn wait_for(&self, n: u64) {
        self.stats
            .wait_for(Duration::from_secs(20), |c| c.messages >= n)
            .await
            .unwrap_or_else(|| {
                panic!("{n} message(s) did not arrive: {:?}", self.stats.snapshot())
            });
    }

    /// Every stored message as text.
    fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

/// The recipient and the decoded body of a confirmation mail.
fn decode(message: &str) -> (String, String) {
    let to = message
        .lines()
        .find_map(|l| l.strip_prefix("To: "))
        .unwrap()
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    let b64: String = message
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    let body = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    (to, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn subscribe_mail_confirm_end_to_end_without_enumeration() {
    let f = fixture().await;
    member(&f.store, "news", "old@example.org").await;
    // The subscribe form takes requests for public lists only (#21).
    f.store.set_list_public("news", true).await.unwrap();
    let sink = mail_sink().await;
    let srv = Server::start(&f.store, HttpConfig::default(), Some(sink.mailer())).await;

    // Already subscribed first, then a new address: the same answer, byte for byte.
    let known = request(
        srv.port,
        "POST",
        "/s/news",
        "email=old%40example.org&name=Mallory",
    )
    .await;
    let new = request(
        srv.port,
        "POST",
        "/s/news",
        "email=New%40Example.org&name=Nina+N",
    )
    .await;
    assert_eq!((known.status, new.status), (200, 200));
    assert_eq!(known.body, new.body);
    assert!(new.body.contains("Check your inbox"));
    // The form cannot rename an existing subscriber.
    let old = f
        .store
        .subscriber_detail(&addr("old@example.org"))
        .await
        .unwrap();
    assert_eq!(old.subscriber.name, None);

    // One mail (the queue is FIFO: a mail for the known address would come first).
    sink.wait_for(1).await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("Auto-Submitted: auto-generated"));
    assert!(
        mails[0].contains("Return-Path: <b-"),
        "VERP return path: {}",
        mails[0]
    );
    let (to, body) = decode(&mails[0]);
    assert_eq!(to, "New@example.org");
    let url = body
        .split_whitespace()
        .find(|w| w.starts_with("https://news.example.org/c/"))
        .unwrap_or_else(|| panic!("{body}"));
    let path = url.trim_start_matches("https://news.example.org");

    // Unconfirmed: on the list, but gets no campaign.
    assert_eq!(
        membership(&f.store, "new@example.org", "news").await,
        MembershipStatus::Unconfirmed
    );
    let sub = f
        .store
        .subscriber_detail(&addr("new@example.org"))
        .await
        .unwrap();
    assert_eq!(sub.subscriber.name.as_deref(), Some("Nina N"));
    let campaign = |name: &str| NewCampaign {
        name: name.into(),
        lists: vec!["news".into()],
        subject: "s".into(),
        content: "c".into(),
        content_kind: rundbrief_core::ContentKind::Markdown,
        layout: None,
        from: None,
        relay: None,
    };
    let c1 = f.store.create_campaign(&campaign("before")).await.unwrap();
    f.store.materialise_deliveries(c1.id).await.unwrap();
    let emails: Vec<_> = f
        .store
        .deliveries(c1.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.email)
        .collect();
    assert_eq!(emails, ["old@example.org"]);

    // The link shows a page; only its button confirms.
    let page = request(srv.port, "GET", path, "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("New@example.org") && page.body.contains("news"));
    assert_eq!(
        membership(&f.store, "new@example.org", "news").await,
        MembershipStatus::Unconfirmed
    );
    let done = request(srv.port, "POST", path, "confirm=yes").await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("You are subscribed"));
    assert_eq!(
        membership(&f.store, "new@example.org", "news").await,
        MembershipStatus::Subscribed
    );
    let last = last_audit(&f.store, "new@example.org").await;
    assert_eq!(
        (last.action, last.actor),
        (AuditAction::Subscribed, Actor::Http)
    );
    assert!(last.reason.contains("double opt-in"));
    let c2 = f.store.create_campaign(&campaign("after")).await.unwrap();
    assert_eq!(f.store.materialise_deliveries(c2.id).await.unwrap(), 2);

    // Unknown list: 404; not an address: 400; nothing stored.
    let unknown = request(srv.port, "POST", "/s/nope", "email=x%40example.org").await;
    assert_eq!(unknown.status, 404);
    // #21.12: a list that is not public answers exactly as an unknown one,
    // with a good address or a bad one, and stores nothing.
    f.store.create_list("secret", None).await.unwrap();
    for body in ["email=x%40example.org", "email=not-an-address", "name=only"] {
        let private = request(srv.port, "POST", "/s/secret", body).await;
        assert_eq!(
            (private.status, &private.body),
            (404, &unknown.body),
            "{body}"
        );
    }
    assert_eq!(
        request(srv.port, "POST", "/s/news", "email=not-an-address")
            .await
            .status,
        400
    );
    assert_eq!(
        request(srv.port, "POST", "/s/news", "name=only")
            .await
            .status,
        400
    );
    assert!(
        f.store
            .subscriber_detail(&addr("x@example.org"))
            .await
            .is_err()
    );
    srv.stop().await;
    sink.stop.cancel();
}

#[tokio::test]
async fn subscribe_is_rate_limited_per_ip_and_per_address() {
    let f = fixture().await;
    f.store.create_list("news", None).await.unwrap();
    f.store.set_list_public("news", true).await.unwrap();
    let sink = mail_sink().await;
    let cfg = HttpConfig {
        subscribe_per_ip_per_hour: 3,
        ..HttpConfig::default()
    };
    let srv = Server::start(&f.store, cfg, Some(sink.mailer())).await;
    for i in 0..3 {
        let r = request(
            srv.port,
            "POST",
            "/s/news",
            &format!("email=ip{i}%40example.org"),
        )
        .await;
        assert_eq!(r.status, 200, "request {i}");
    }
    let r = request(srv.port, "POST", "/s/news", "email=ip3%40example.org").await;
    assert_eq!(r.status, 429);
    assert!(
        r.headers
            .get("retry-after")
            .is_some_and(|s| s.parse::<u64>().unwrap() > 0)
    );
    assert!(
        f.store
            .subscriber_detail(&addr("ip3@example.org"))
            .await
            .is_err(),
        "nothing stored over the limit"
    );
    sink.wait_for(3).await;
    srv.stop().await;

    // Per address: the same answer every time, at most 3 mails an hour.
    let cfg = HttpConfig {
        subscribe_per_address_per_hour: 3,
        ..HttpConfig::default()
    };
    let srv = Server::start(&f.store, cfg, Some(sink.mailer())).await;
    let first = request(srv.port, "POST", "/s/news", "email=victim%40example.org").await;
    for _ in 0..5 {
        let r = request(srv.port, "POST", "/s/news", "email=victim%40example.org").await;
        assert_eq!((r.status, &r.body), (200, &first.body));
    }
    // A last, different address: once its mail is there, every earlier one is (FIFO).
    request(srv.port, "POST", "/s/news", "email=last%40example.org").await;
    sink.wait_for(3 + 3 + 1).await;
    srv.stop().await;
    let to: Vec<String> = sink.messages().iter().map(|m| decode(m).0).collect();
    assert_eq!(
        to.iter().filter(|t| *t == "victim@example.org").count(),
        3,
        "{to:?}"
    );
    assert!(to.iter().any(|t| t == "last@example.org"), "{to:?}");
    assert_eq!(sink.stats.snapshot().messages, 7);
    sink.stop.cancel();
}
