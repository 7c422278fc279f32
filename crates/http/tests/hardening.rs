//! Issue #21 (points 1, 11, 12) and #20 point 7, through real HTTP/1.1 on
//! loopback, on SQLite and (when `RUNDBRIEF_TEST_POSTGRES` is set) on
//! PostgreSQL.

use rundbrief_core::config::HttpConfig;
use rundbrief_core::{
    Actor, Address, Attributes, AuditAction, MembershipStatus, Purpose, Secret, Signer,
    SubscriberStatus,
};
use rundbrief_http::AppState;
use rundbrief_store::{ConnectConfig, Store};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

fn signer() -> Signer {
    Signer::new(Secret::new("s".repeat(40)), None)
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

struct Db {
    store: Store,
    backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// Fresh, migrated stores: SQLite always, PostgreSQL when configured (a set
/// URL that cannot be reached fails the test).
async fn stores() -> Vec<Db> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::connect(&ConnectConfig::new(url)).await.unwrap();
    store.migrate().await.unwrap();
    let mut out = vec![Db {
        store,
        backend: "sqlite",
        _dir: Some(dir),
    }];
    if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
        let cfg = ConnectConfig {
            url: url.clone(),
            max_connections: 4,
            pg_schema: Some(format!("t_{}", Uuid::now_v7().simple())),
        };
        let store = Store::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("RUNDBRIEF_TEST_POSTGRES={url} is set but unusable: {e}"));
        store.migrate().await.unwrap();
        out.push(Db {
            store,
            backend: "postgres",
            _dir: None,
        });
    }
    out
}

struct Reply {
    status: u16,
    body: String,
}

/// One request on its own connection, read to EOF.
async fn request(port: u16, method: &str, path: &str, content_type: &str, body: &str) -> Reply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: news.example.org\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
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
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        body: body.to_string(),
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

async fn post(port: u16, path: &str, body: &str) -> Reply {
    request(port, "POST", path, FORM, body).await
}

struct Server {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(store: &Store, cfg: HttpConfig) -> Server {
        let state = AppState::new(
            rundbrief_app::members::Members::new(store.clone(), signer()),
            cfg,
            None,
        );
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

/// Creates `list` (if needed) and subscribes `email`; returns (subscriber, list).
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

fn form_action(body: &str) -> Option<String> {
    Some(
        body.split("action=\"")
            .nth(1)?
            .split('"')
            .next()?
            .to_string(),
    )
}

async fn state_of(store: &Store, email: &str, list: &str) -> (SubscriberStatus, MembershipStatus) {
    let d = store.subscriber_detail(&addr(email)).await.unwrap();
    let m = d.memberships.into_iter().find(|m| m.list == list).unwrap();
    (d.subscriber.status, m.status)
}

/// How each way out is recorded today: the bounce processor's prune, the
/// complaint handler's global unsubscribe (actor `bounce`, as
/// `apply_class` does for an ARF report), an operator's blocklisting.
async fn knock_out(store: &Store, email: &str, how: &str) {
    let a = addr(email);
    match how {
        "bounced" => assert!(
            store
                .mark_bounced(&a, Actor::Bounce, "bounce x: hard 5.1.1")
                .await
                .unwrap()
        ),
        "complained" => assert!(
            store
                .unsubscribe(&a, None, Actor::Bounce, "complaint: bounce x: complaint")
                .await
                .unwrap()
        ),
        "blocklisted" => assert!(store.blocklist(&a, Actor::Cli, "test").await.unwrap()),
        _ => unreachable!(),
    }
}

/// #21.1: the re-subscribe button on the unsubscribe page must not undo a
/// bounce prune, a spam complaint or a blocklisting; a complainer comes
/// back only through a fresh double opt-in confirmation, and the audit
/// says so.
#[tokio::test]
async fn issue_21_resubscribe_does_not_undo_prunes_complaints_or_blocklists() {
    for db in stores().await {
        let s = &db.store;
        let srv = Server::start(s, HttpConfig::default()).await;
        for how in ["bounced", "complained", "blocklisted"] {
            let email = format!("{how}@example.org");
            let (sub, list) = member(s, "news", &email).await;
            // The attacker's material: an unsubscribe link from an old mail,
            // and the re-subscribe button its page showed back then.
            let u = token(Purpose::UnsubscribeLink, &[sub, list]);
            let done = post(srv.port, &format!("/u/{u}"), "List-Unsubscribe=One-Click").await;
            assert_eq!(done.status, 200, "{}: {}", db.backend, done.body);
            let r = form_action(&done.body).expect("a re-subscribe button while active");
            let r = r.strip_prefix("../r/").unwrap().to_string();

            knock_out(s, &email, how).await;
            let before = state_of(s, &email, "news").await;
            let audit_before = s
                .subscriber_detail(&addr(&email))
                .await
                .unwrap()
                .audit
                .len();

            let page = request(srv.port, "GET", &format!("/r/{r}"), FORM, "").await;
            let again = post(srv.port, &format!("/r/{r}"), "confirm=yes").await;
            let want = if how == "blocklisted" { 404 } else { 403 };
            assert_eq!(
                (page.status, again.status),
                (want, want),
                "{} {how}: {}",
                db.backend,
                again.body
            );
            assert!(!again.body.contains("You are subscribed"), "{}", again.body);
            if how != "blocklisted" {
                assert!(
                    again.body.contains("subscription form") && page.body.contains("confirm"),
                    "the page says the way back: {}",
                    again.body
                );
                assert!(
                    form_action(&page.body).is_none(),
                    "no button: {}",
                    page.body
                );
            }
            assert_eq!(
                state_of(s, &email, "news").await,
                before,
                "{} {how}: nothing changed",
                db.backend
            );
            assert_eq!(
                s.subscriber_detail(&addr(&email))
                    .await
                    .unwrap()
                    .audit
                    .len(),
                audit_before
            );
            // The unsubscribe page no longer offers the button either.
            let shown = request(srv.port, "GET", &format!("/u/{u}"), FORM, "").await;
            assert!(form_action(&shown.body).is_none(), "{how}: {}", shown.body);
        }

        // A complainer comes back through a fresh confirmation (the /s + /c
        // flow's token), and the audit says so.
        let email = "complained@example.org";
        let d = s.subscriber_detail(&addr(email)).await.unwrap();
        let list = s.list("news").await.unwrap().id;
        let c = token(Purpose::Confirm, &[d.subscriber.id, list]);
        let ok = post(srv.port, &format!("/c/{c}"), "confirm=yes").await;
        assert_eq!(ok.status, 200, "{}: {}", db.backend, ok.body);
        assert_eq!(
            state_of(s, email, "news").await,
            (SubscriberStatus::Active, MembershipStatus::Subscribed)
        );
        let audit = s.subscriber_detail(&addr(email)).await.unwrap().audit;
        let restored = audit
            .iter()
            .rev()
            .find(|a| a.action == AuditAction::Restored)
            .expect("a restore entry");
        assert!(
            restored.reason.contains("spam complaint") && restored.reason.contains("double opt-in"),
            "{}",
            restored.reason
        );
        // Once back, an ordinary one-list unsubscribe may be undone again.
        let u = token(Purpose::UnsubscribeLink, &[d.subscriber.id, list]);
        let done = post(srv.port, &format!("/u/{u}"), "confirm=yes").await;
        let r = form_action(&done.body).expect("the button is back");
        let again = post(srv.port, &format!("/{}", r.trim_start_matches("../")), "").await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(
            state_of(s, email, "news").await,
            (SubscriberStatus::Active, MembershipStatus::Subscribed)
        );
        srv.stop().await;
    }
}

/// #20.7: `curl -F 'List-Unsubscribe=One-Click'` is one-click too.
#[tokio::test]
async fn issue_20_multipart_one_click_is_labelled_one_click() {
    for db in stores().await {
        let s = &db.store;
        let (sub, list) = member(s, "news", "ann@example.org").await;
        let srv = Server::start(s, HttpConfig::default()).await;
        let t = token(Purpose::UnsubscribeLink, &[sub, list]);
        let body = "--------------------------d74496d66958873e\r\n\
                    Content-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n\
                    One-Click\r\n\
                    --------------------------d74496d66958873e--\r\n";
        let r = request(
            srv.port,
            "POST",
            &format!("/u/{t}"),
            "multipart/form-data; boundary=------------------------d74496d66958873e",
            body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let last = s
            .subscriber_detail(&addr("ann@example.org"))
            .await
            .unwrap()
            .audit
            .pop()
            .unwrap();
        assert_eq!(last.action, AuditAction::Unsubscribed);
        assert_eq!(
            last.reason, "one-click unsubscribe (RFC 8058)",
            "{}",
            db.backend
        );
        srv.stop().await;
    }
}

/// A connection from `from` (any 127.0.0.0/8 address works on loopback).
async fn connect_from(from: [u8; 4], port: u16) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        sock.connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
    )
    .await
    .expect("connect within 10 s")
    .unwrap()
}

/// #21.11: 300 idle connections delayed a real request by 10 s (the header
/// timeout of the idle ones). Idle connections now make room: the real
/// request is answered long before any header timeout.
#[tokio::test]
async fn issue_21_idle_connections_cannot_keep_a_request_out() {
    let dbs = stores().await;
    let s = &dbs[0].store;
    let (sub, list) = member(s, "news", "ann@example.org").await;
    let cfg = HttpConfig {
        max_connections: 8,
        max_connections_per_ip: 0,
        request_timeout_secs: 30,
        ..HttpConfig::default()
    };
    let srv = Server::start(s, cfg).await;
    let t = token(Purpose::UnsubscribeLink, &[sub, list]);
    // A keep-alive connection that had its answer and now sits idle ...
    let mut kept = connect_from([127, 0, 0, 2], srv.port).await;
    kept.write_all(format!("GET /u/{t} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // ... and 40 that never send anything, from two addresses.
    let mut idle = Vec::new();
    for i in 0..40u8 {
        idle.push(connect_from([127, 0, 0, 2 + i % 2], srv.port).await);
    }
    // The header timeout is 30 s: without eviction this waits for it.
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        request(srv.port, "GET", &format!("/u/{t}"), FORM, ""),
    )
    .await
    .expect("answered while 41 idle connections are open");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(idle);
    drop(kept);
    srv.stop().await;
}

/// #21.11: one address holds at most `max_connections_per_ip`; the next
/// gets 503, other addresses are served.
#[tokio::test]
async fn issue_21_connections_per_ip_are_capped() {
    let dbs = stores().await;
    let s = &dbs[0].store;
    let cfg = HttpConfig {
        max_connections_per_ip: 3,
        ..HttpConfig::default()
    };
    let srv = Server::start(s, cfg).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 2], srv.port).await);
    }
    // The server registers connections in accept order: wait until the
    // fourth is refused (bounded).
    let mut over = connect_from([127, 0, 0, 2], srv.port).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), over.read_to_end(&mut raw))
        .await
        .expect("refused at once")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        request(srv.port, "GET", "/nothing", FORM, ""),
    )
    .await
    .expect("another address is served");
    assert_eq!(r.status, 404);
    drop(held);
    srv.stop().await;
}
