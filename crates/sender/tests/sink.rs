//! The sender against `rundbrief_smtpd::sink` on 127.0.0.1, real SMTP.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rundbrief_core::{Secret, Signer, Verp};
use rundbrief_sender::{Delivery, Outcome, Relay, RelayOptions, Sender, SmtpStep, Worker};
use rundbrief_smtpd::sink::{Rule, Sink, SinkConfig, SinkError, SinkStats, SinkTls};
use rundbrief_smtpd::{CancellationToken, Limits};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

struct RunningSink {
    addr: SocketAddr,
    stats: Arc<SinkStats>,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), SinkError>>,
}

impl RunningSink {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("sink stops")
            .expect("join")
            .expect("run");
    }
}

async fn start_sink(cfg: SinkConfig) -> RunningSink {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = Sink::new(cfg).expect("valid sink config");
    let stats = sink.stats();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(sink.run(listener, Limits::default(), stop.clone()));
    RunningSink {
        addr,
        stats,
        stop,
        handle,
    }
}

fn plain(cfg: SinkConfig) -> SinkConfig {
    SinkConfig {
        tls: SinkTls::Off,
        ..cfg
    }
}

fn verp() -> Verp {
    Verp::new(
        Signer::new(Secret::new("k".repeat(40)), None),
        "b",
        "bounce.example.org",
    )
}

fn sender(url: &str, opts: impl FnOnce(&mut RelayOptions)) -> Sender {
    let mut relay = Relay::parse(url).expect("relay url");
    relay.options.connect_timeout = Duration::from_secs(5);
    relay.options.command_timeout = Duration::from_secs(10);
    opts(&mut relay.options);
    Sender::new(relay, verp()).expect("sender")
}

fn message(i: usize) -> Arc<[u8]> {
    Arc::from(format!("From: News <news@example.org>\r\nSubject: Issue {i}\r\n\r\nHello {i}\r\n.leading dot\r\n").into_bytes())
}

fn delivery(to: &str, i: usize) -> Delivery {
    Delivery {
        id: Uuid::now_v7(),
        to: to.to_owned(),
        message: message(i),
        per_connection: None,
    }
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_carries_its_own_verp_return_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = start_sink(plain(SinkConfig {
        dir: Some(dir.path().to_path_buf()),
        ..SinkConfig::default()
    }))
    .await;
    let sender = Arc::new(sender(&format!("smtp://{}", sink.addr), |o| {
        o.pool_size = 4
    }));
    let n = 24;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = Arc::clone(&sender);
        let d = delivery(&format!("user{i}@example.net"), i);
        tasks.push(tokio::spawn(async move {
            let id = d.id;
            (id, i, s.send(d).await)
        }));
    }
    let mut sent = HashSet::new();
    for t in tasks {
        let (id, i, outcome) = t.await.expect("join");
        match outcome {
            Outcome::Sent { reply } => assert_eq!(reply.code, 250, "{reply}"),
            other => panic!("message {i}: {other:?}"),
        }
        sent.insert(id);
    }
    sink.stats
        .wait_for(WAIT, |c| c.messages >= n as u64)
        .await
        .expect("all stored");

    let files = eml_files(dir.path());
    assert_eq!(files.len(), n);
    let verp = verp();
    let mut seen = HashSet::new();
    for f in files {
        let text = String::from_utf8(std::fs::read(&f).expect("read")).expect("utf-8");
        let mut lines = text.split("\r\n");
        let return_path = lines
            .next()
            .and_then(|l| l.strip_prefix("Return-Path: "))
            .expect("Return-Path first");
        let id = verp
            .delivery(return_path)
            .expect("the return path verifies");
        let rcpt = lines
            .next()
            .and_then(|l| l.strip_prefix("Delivered-To: "))
            .expect("Delivered-To second");
        let i: usize = rcpt
            .trim_start_matches("<user")
            .split('@')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("recipient number");
        let body = text
            .split_once(&format!("Delivered-To: {rcpt}\r\n"))
            .map(|(_, b)| b)
            .expect("body");
        assert_eq!(
            body.as_bytes(),
            &message(i)[..],
            "message stored byte for byte (dot-stuffing undone, no extra line)"
        );
        seen.insert(id);
    }
    assert_eq!(
        seen, sent,
        "every delivery id decodes back from its own return path"
    );
    sender.shutdown().await;
    sink.shutdown().await;
}

#[tokio::test]
async fn reject_is_a_synchronous_bounce_at_rcpt_and_the_connection_goes_on() {
    for pipelining in [true, false] {
        reject_then_send(pipelining).await;
    }
}

async fn reject_then_send(pipelining: bool) {
    let sink = start_sink(plain(SinkConfig {
        rules: vec![Rule::reject("*@dead.example=550 5.1.1 User unknown").expect("rule")],
        ..SinkConfig::default()
    }))
    .await;
    let sender = sender(&format!("smtp://{}", sink.addr), |o| {
        o.pool_size = 1;
        o.pipelining = pipelining;
    });
    let outcome = sender.send(delivery("gone@dead.example", 1)).await;
    let Outcome::Rejected { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Rcpt);
    let reply = error.reply().expect("reply kept");
    assert_eq!(reply.code, 550);
    assert_eq!(
        reply.enhanced.map(|e| e.to_string()).as_deref(),
        Some("5.1.1")
    );
    assert_eq!(reply.text, "User unknown");
    assert!(!error.is_transient());
    assert!(
        error
            .to_string()
            .contains("RCPT refused by 127.0.0.1: 550 5.1.1 User unknown"),
        "{error}"
    );
    // The same connection (pool of one) is reset and used again.
    for i in 0..3 {
        let outcome = sender.send(delivery("alive@live.example", i)).await;
        assert!(outcome.is_sent(), "{outcome:?}");
    }
    let c = sink
        .stats
        .wait_for(WAIT, |c| c.messages >= 3)
        .await
        .expect("3 stored");
    assert_eq!((c.messages, c.rejected), (3, 1));
    sender.shutdown().await;
    sink.shutdown().await;
}

#[tokio::test]
async fn defer_is_deferred_at_rcpt() {
    let sink = start_sink(plain(SinkConfig {
        rules: vec![Rule::defer("slow*@*=451 4.7.1 Try later").expect("rule")],
        ..SinkConfig::default()
    }))
    .await;
    let sender = sender(&format!("smtp://{}", sink.addr), |o| o.pool_size = 1);
    let outcome = sender.send(delivery("slowpoke@example.net", 1)).await;
    let Outcome::Deferred { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Rcpt);
    assert!(error.is_transient());
    let reply = error.reply().expect("reply kept");
    assert_eq!(
        (reply.code, reply.enhanced.map(|e| e.to_string())),
        (451, Some("4.7.1".into()))
    );
    assert!(
        sender
            .send(delivery("quick@example.net", 2))
            .await
            .is_sent()
    );
    sender.shutdown().await;
    let step_by_step = self::sender(&format!("smtp://{}", sink.addr), |o| o.pipelining = false);
    let outcome = step_by_step.send(delivery("slowpoke@example.net", 3)).await;
    assert!(
        matches!(&outcome, Outcome::Deferred { error } if error.step() == SmtpStep::Rcpt),
        "{outcome:?}"
    );
    sink.shutdown().await;
}

#[tokio::test]
async fn closed_port_is_deferred_at_connect() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let sender = sender(&format!("smtp://127.0.0.1:{port}"), |_| {});
    let outcome = sender.send(delivery("a@example.net", 1)).await;
    let Outcome::Deferred { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Connect);
    assert!(
        error
            .to_string()
            .starts_with(&format!("CONNECT to 127.0.0.1:{port} failed")),
        "{error}"
    );
    // The address is said once: the host already is it.
    assert_eq!(error.to_string().matches("127.0.0.1").count(), 1, "{error}");
}

#[tokio::test]
async fn dropped_connections_are_replaced_and_later_messages_sent() {
    for pipelining in [true, false] {
        drop_after(pipelining).await;
    }
}

async fn drop_after(pipelining: bool) {
    let sink = start_sink(plain(SinkConfig {
        drop_after: Some(3),
        ..SinkConfig::default()
    }))
    .await;
    let sender = sender(&format!("smtp://{}", sink.addr), |o| {
        o.pool_size = 1;
        o.pipelining = pipelining;
    });
    for i in 0..10 {
        let outcome = sender.send(delivery("r@example.net", i)).await;
        assert!(outcome.is_sent(), "message {i}: {outcome:?}");
    }
    let c = sink
        .stats
        .wait_for(WAIT, |c| c.messages >= 10)
        .await
        .expect("10 stored");
    assert_eq!(c.messages, 10);
    sender.shutdown().await;
    sink.shutdown().await;
}

#[tokio::test]
async fn max_messages_per_connection_reconnects_cleanly() {
    let sink = start_sink(plain(SinkConfig::default())).await;
    let sender = sender(&format!("smtp://{}", sink.addr), |o| {
        o.pool_size = 1;
        o.max_messages_per_connection = 2;
    });
    for i in 0..5 {
        assert!(sender.send(delivery("r@example.net", i)).await.is_sent());
    }
    assert_eq!(
        sink.stats
            .wait_for(WAIT, |c| c.messages >= 5)
            .await
            .expect("stored")
            .messages,
        5
    );
    sender.shutdown().await;
    sink.shutdown().await;
}

/// The sink advertises DSN, so MAIL carries RET=HDRS ENVID=<id> and RCPT
/// NOTIFY=FAILURE,DELAY ORCPT=rfc822;<addr>. The stored .eml does not show
/// parameters, but the sink's `--bounce` rule builds its RFC 3464 DSN from
/// them: Original-Envelope-Id is our ENVID, Original-Recipient our ORCPT,
/// headers only (RET=HDRS), sent because NOTIFY includes FAILURE, and it
/// goes to our VERP return path.
#[tokio::test]
async fn dsn_parameters_reach_the_relay() {
    let bounces = tempfile::tempdir().expect("tempdir");
    let receiver = start_sink(plain(SinkConfig {
        dir: Some(bounces.path().to_path_buf()),
        ..SinkConfig::default()
    }))
    .await;
    let relay = start_sink(plain(SinkConfig {
        rules: vec![Rule::bounce("*@dead.example=5.1.1").expect("rule")],
        bounce_to: Some(receiver.addr),
        hostname: "mx.sink.test".into(),
        ..SinkConfig::default()
    }))
    .await;
    let sender = sender(&format!("smtp://{}", relay.addr), |o| o.pool_size = 1);
    let d = Delivery {
        id: Uuid::now_v7(),
        to: "gone+tag@dead.example".into(),
        message: Arc::from(&b"From: n@example.org\r\nSubject: s\r\n\r\nsecret body\r\n"[..]),
        per_connection: None,
    };
    let id = d.id;
    assert!(sender.send(d).await.is_sent());
    relay
        .stats
        .wait_for(WAIT, |c| c.bounces_sent + c.bounces_failed >= 1)
        .await
        .expect("DSN attempted");
    receiver
        .stats
        .wait_for(WAIT, |c| c.messages >= 1)
        .await
        .expect("DSN received");
    let files = eml_files(bounces.path());
    assert_eq!(files.len(), 1);
    let text = String::from_utf8_lossy(&std::fs::read(&files[0]).expect("read")).into_owned();
    let to = text
        .lines()
        .find_map(|l| l.strip_prefix("Delivered-To: "))
        .expect("Delivered-To");
    assert_eq!(
        verp()
            .delivery(to)
            .expect("the DSN went to our VERP address"),
        id
    );
    for needle in [
        format!("Original-Envelope-Id: {id}"),
        "Original-Recipient: rfc822; gone+tag@dead.example".to_owned(),
        "Status: 5.1.1".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing in {text}");
    }
    assert!(!text.contains("secret body"), "RET=HDRS: headers only");
    sender.shutdown().await;
    relay.shutdown().await;
    receiver.shutdown().await;
}

#[tokio::test]
async fn starttls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = start_sink(SinkConfig {
        dir: Some(dir.path().to_path_buf()),
        ..SinkConfig::default()
    })
    .await;
    let url = format!("smtp://localhost:{}?tls=required", sink.addr.port());

    // Verified by default: the self-signed certificate is refused.
    let strict = sender(&url, |_| {});
    let outcome = strict.send(delivery("a@example.net", 1)).await;
    let Outcome::Failed { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Tls);
    // The cause, said once (lettre nests one connection error in another).
    let text = error.to_string();
    assert!(
        text.starts_with("TLS with localhost failed: ")
            && text.contains("invalid peer certificate")
            && text.matches("Connection error").count() <= 1,
        "{text}"
    );

    let lax = sender(&url, |o| o.dangerous_accept_invalid_certs = true);
    for i in 0..3 {
        let outcome = lax.send(delivery("a@example.net", i)).await;
        assert!(outcome.is_sent(), "{outcome:?}");
    }
    sink.stats
        .wait_for(WAIT, |c| c.messages >= 3)
        .await
        .expect("stored");
    lax.shutdown().await;
    sink.shutdown().await;
}

#[tokio::test]
async fn tls_required_but_not_offered_fails() {
    let sink = start_sink(plain(SinkConfig::default())).await;
    let s = sender(
        &format!("smtp://127.0.0.1:{}?tls=required", sink.addr.port()),
        |_| {},
    );
    let outcome = s.send(delivery("a@example.net", 1)).await;
    let Outcome::Failed { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Tls);
    assert!(
        error.to_string().contains("does not offer STARTTLS"),
        "{error}"
    );
    // Opportunistic goes on in plain text.
    let s = sender(
        &format!("smtp://127.0.0.1:{}?tls=opportunistic", sink.addr.port()),
        |_| {},
    );
    assert!(s.send(delivery("a@example.net", 2)).await.is_sent());
    sink.shutdown().await;
}

#[tokio::test]
async fn credentials_without_auth_offered_fail_at_auth() {
    let sink = start_sink(plain(SinkConfig::default())).await;
    let relay = Relay::parse(&format!("smtp://news@127.0.0.1:{}", sink.addr.port()))
        .expect("url")
        .with_secret(Secret::new("pw-not-shown"));
    let s = Sender::new(relay, verp()).expect("sender");
    let outcome = s.send(delivery("a@example.net", 1)).await;
    let Outcome::Failed { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Auth);
    assert!(
        error.to_string().contains("STARTTLS"),
        "hint about TLS first: {error}"
    );
    assert!(!format!("{outcome:?}{s:?}").contains("pw-not-shown"));
    sink.shutdown().await;
}

#[tokio::test]
async fn bad_recipient_address_is_rejected_without_a_connection() {
    let s = sender("smtp://127.0.0.1:9", |_| {});
    let outcome = s.send(delivery("not an address", 1)).await;
    let Outcome::Rejected { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Rcpt);
}

#[tokio::test]
async fn shutdown_refuses_new_sends() {
    let sink = start_sink(plain(SinkConfig::default())).await;
    let s = sender(&format!("smtp://{}", sink.addr), |_| {});
    assert!(s.send(delivery("a@example.net", 1)).await.is_sent());
    s.shutdown().await;
    assert!(matches!(
        s.send(delivery("a@example.net", 2)).await,
        Outcome::Failed { .. }
    ));
    sink.shutdown().await;
}

/// A TLS-terminating front for a plain sink: implicit TLS (`smtps://`).
async fn tls_front(backend: SocketAddr) -> SocketAddr {
    let (acceptor, _cert) = rundbrief_smtpd::tls::self_signed(&["localhost"]).expect("certificate");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn implicit_tls_smtps() {
    let sink = start_sink(plain(SinkConfig::default())).await;
    let front = tls_front(sink.addr).await;
    let url = format!("smtps://localhost:{}", front.port());

    let strict = sender(&url, |_| {});
    let outcome = strict.send(delivery("a@example.net", 1)).await;
    let Outcome::Failed { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Tls);
    assert!(
        error.to_string().contains("TLS with localhost failed"),
        "{error}"
    );

    let lax = sender(&url, |o| o.dangerous_accept_invalid_certs = true);
    for i in 0..3 {
        let outcome = lax.send(delivery("a@example.net", i)).await;
        assert!(outcome.is_sent(), "{outcome:?}");
    }
    assert_eq!(
        sink.stats
            .wait_for(WAIT, |c| c.messages >= 3)
            .await
            .expect("stored")
            .messages,
        3
    );
    lax.shutdown().await;
    sink.shutdown().await;
}

#[tokio::test]
async fn a_standalone_worker_sends_in_sequence() {
    let sink = start_sink(plain(SinkConfig::default())).await;
    let relay = Relay::parse(&format!("smtp://{}", sink.addr)).expect("url");
    let mut worker = Worker::new(relay, verp()).expect("worker");
    for i in 0..3 {
        let outcome = worker.send(&delivery("a@example.net", i)).await;
        assert!(outcome.is_sent(), "{outcome:?}");
    }
    worker.close().await;
    assert_eq!(
        sink.stats
            .wait_for(WAIT, |c| c.messages >= 3)
            .await
            .expect("stored")
            .messages,
        3
    );
    sink.shutdown().await;
}
