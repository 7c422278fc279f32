//! `rundbrief sink` over real TCP on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::{Peer, WAIT, ehlo};
use mail_parser::{MessageParser, MimeHeaders};
use rundbrief_smtpd::sink::{Rule, Sink, SinkConfig, SinkError, SinkStats, SinkTls};
use rundbrief_smtpd::{CancellationToken, Limits};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

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
            .expect("sink did not stop")
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

fn eml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn stores_message_with_envelope_prepended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = start_sink(SinkConfig {
        dir: Some(dir.path().to_path_buf()),
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .await;
    let mut p = Peer::connect(sink.addr).await;
    p.expect("220").await;
    let caps = ehlo(&mut p).await;
    assert!(caps.contains("DSN"), "the sink advertises DSN: {caps}");
    p.cmd("MAIL FROM:<b-abc@bounce.example>", "250").await;
    p.cmd("RCPT TO:<one@x.example>", "250").await;
    p.cmd("RCPT TO:<two@y.example>", "250").await;
    p.cmd("DATA", "354").await;
    p.send(b"From: a@b\r\nSubject: spool\r\n\r\nHello\r\n..dot\r\n.\r\n")
        .await;
    p.expect("250 2.0.0 Ok: queued as").await;
    p.cmd("QUIT", "221").await;
    sink.stats
        .wait_for(WAIT, |c| c.messages >= 1)
        .await
        .expect("message counted");

    let files = eml_files(dir.path());
    assert_eq!(
        files.len(),
        1,
        "exactly one file, no temporaries: {files:?}"
    );
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let stored = std::fs::read(&files[0]).expect("read");
    assert_eq!(
        String::from_utf8_lossy(&stored),
        "Return-Path: <b-abc@bounce.example>\r\nDelivered-To: <one@x.example>\r\nDelivered-To: <two@y.example>\r\n\
         From: a@b\r\nSubject: spool\r\n\r\nHello\r\n.dot\r\n"
    );
    let c = sink.stats.snapshot();
    assert_eq!((c.messages, c.recipients), (1, 2));
    sink.shutdown().await;
}

#[tokio::test]
async fn reject_and_defer_rules() {
    let rules = vec![
        Rule::reject("*@dead.example=550 5.1.1 User unknown").expect("rule"),
        Rule::defer("user1*@*=451 4.7.1 Try later").expect("rule"),
    ];
    let sink = start_sink(SinkConfig {
        rules,
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .await;
    let mut p = Peer::connect(sink.addr).await;
    p.expect("220").await;
    ehlo(&mut p).await;
    p.cmd("MAIL FROM:<s@x>", "250").await;
    p.cmd("RCPT TO:<bob@dead.example>", "550 5.1.1 User unknown")
        .await;
    p.cmd("RCPT TO:<user17@live.example>", "451 4.7.1 Try later")
        .await;
    p.cmd("RCPT TO:<user2@live.example>", "250").await;
    p.cmd("DATA", "354").await;
    p.send(b"Subject: x\r\n\r\nx\r\n.\r\n").await;
    p.expect("250").await;
    let c = sink
        .stats
        .wait_for(WAIT, |c| c.messages >= 1)
        .await
        .expect("counted");
    assert_eq!((c.rejected, c.deferred, c.recipients), (1, 1, 1));
    sink.shutdown().await;
}

#[tokio::test]
async fn bounce_rule_delivers_rfc3464_dsn_to_return_path() {
    let bounces = tempfile::tempdir().expect("tempdir");
    let receiver = start_sink(SinkConfig {
        dir: Some(bounces.path().to_path_buf()),
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .await;
    let sender_facing = start_sink(SinkConfig {
        rules: vec![Rule::bounce("*@dead.example=5.1.1").expect("rule")],
        bounce_to: Some(receiver.addr),
        hostname: "mx.sink.test".into(),
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .await;

    let mut p = Peer::connect(sender_facing.addr).await;
    p.expect("220").await;
    ehlo(&mut p).await;
    p.cmd(
        "MAIL FROM:<b-tok123@bounce.example> RET=HDRS ENVID=delivery-42",
        "250",
    )
    .await;
    p.cmd(
        "RCPT TO:<gone@dead.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;gone@dead.example",
        "250",
    )
    .await;
    p.cmd("RCPT TO:<alive@live.example>", "250").await;
    p.cmd("DATA", "354").await;
    p.send(b"From: News <news@list.example>\r\nSubject: Issue 7\r\nMessage-ID: <m1@list.example>\r\n\r\nsecret body\r\n.\r\n").await;
    p.expect("250").await;
    p.cmd("QUIT", "221").await;

    sender_facing
        .stats
        .wait_for(WAIT, |c| c.bounces_sent >= 1 || c.bounces_failed >= 1)
        .await
        .expect("dsn attempted");
    assert_eq!(sender_facing.stats.snapshot().bounces_failed, 0);
    receiver
        .stats
        .wait_for(WAIT, |c| c.messages >= 1)
        .await
        .expect("dsn received");

    let files = eml_files(bounces.path());
    assert_eq!(files.len(), 1);
    let raw = std::fs::read(&files[0]).expect("read");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("Return-Path: <>\r\nDelivered-To: <b-tok123@bounce.example>\r\n"),
        "{text}"
    );

    let msg = MessageParser::default()
        .parse(&raw)
        .expect("parses as MIME");
    let ct = msg.content_type().expect("content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let part = |t: &str, s: &str| {
        msg.parts
            .iter()
            .find(|p| {
                p.content_type()
                    .is_some_and(|c| c.ctype() == t && c.subtype() == Some(s))
            })
            .unwrap_or_else(|| panic!("no {t}/{s} part in {text}"))
    };
    let _ = part("text", "plain");
    let status =
        String::from_utf8_lossy(part("message", "delivery-status").contents()).into_owned();
    for needle in [
        "Reporting-MTA: dns; mx.sink.test",
        "Original-Envelope-Id: delivery-42",
        "Final-Recipient: rfc822; gone@dead.example",
        "Original-Recipient: rfc822; gone@dead.example",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown",
    ] {
        assert!(status.contains(needle), "{needle:?} missing in {status}");
    }
    assert!(
        !status.contains("alive@live.example"),
        "only the bounced recipient is reported"
    );
    let headers = String::from_utf8_lossy(part("text", "rfc822-headers").contents()).into_owned();
    assert!(
        headers.contains("Message-ID: <m1@list.example>"),
        "{headers}"
    );
    assert!(!text.contains("secret body"), "headers only are returned");

    sender_facing.shutdown().await;
    receiver.shutdown().await;
}

#[tokio::test]
async fn drop_after_closes_connection() {
    let sink = start_sink(SinkConfig {
        drop_after: Some(2),
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .await;
    let mut p = Peer::connect(sink.addr).await;
    p.expect("220").await;
    ehlo(&mut p).await;
    for i in 0..2 {
        p.cmd("MAIL FROM:<s@x>", "250").await;
        p.cmd("RCPT TO:<r@x>", "250").await;
        p.cmd("DATA", "354").await;
        p.send(format!("Subject: {i}\r\n\r\nx\r\n.\r\n").as_bytes())
            .await;
        p.expect("250").await;
    }
    p.expect_eof().await;
    assert_eq!(sink.stats.snapshot().messages, 2);
    sink.shutdown().await;
}

#[tokio::test]
async fn latency_and_default_starttls() {
    let sink = start_sink(SinkConfig {
        latency: Some(std::time::Duration::from_millis(5)),
        ..SinkConfig::default()
    })
    .await;
    let mut p = Peer::connect(sink.addr).await;
    p.expect("220").await;
    assert!(
        ehlo(&mut p).await.contains("STARTTLS"),
        "self-signed STARTTLS by default"
    );
    p.cmd("QUIT", "221").await;
    sink.shutdown().await;
}

#[tokio::test]
async fn config_errors_are_clear() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cfg = SinkConfig {
        rules: vec![Rule::bounce("*@x=5.1.1").expect("rule")],
        ..SinkConfig::default()
    };
    let err =
        rundbrief_smtpd::sink::run_sink(listener, cfg, Limits::default(), CancellationToken::new())
            .await
            .expect_err("bounce needs --bounce-to");
    assert!(err.to_string().contains("--bounce-to"), "{err}");
    let err = Sink::new(SinkConfig {
        dir: Some("/nonexistent/rundbrief".into()),
        ..SinkConfig::default()
    })
    .err()
    .expect("missing dir");
    assert!(err.to_string().contains("--dir"), "{err}");
}

#[tokio::test]
async fn greylisting_auto_replies_and_complaints() {
    let reports = tempfile::tempdir().expect("tempdir");
    let receiver = start_sink(SinkConfig {
        dir: Some(reports.path().to_path_buf()),
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .await;
    let sink = start_sink(SinkConfig {
        rules: vec![
            Rule::defer_first("grey*@*=450 4.2.0 Greylisted", 2).expect("rule"),
            Rule::auto_reply("away*@*").expect("rule"),
            Rule::complain("grumpy*@*").expect("rule"),
        ],
        bounce_to: Some(receiver.addr),
        hostname: "mx.sink.test".into(),
        tls: SinkTls::Off,
        ..SinkConfig::default()
    })
    .await;

    let mut p = Peer::connect(sink.addr).await;
    p.expect("220").await;
    ehlo(&mut p).await;
    // Deferred the first two times (per address, whatever its case), then accepted.
    for _ in 0..2 {
        p.cmd("MAIL FROM:<b-t1@bounce.example>", "250").await;
        p.cmd("RCPT TO:<GREY1@x.example>", "450 4.2.0 Greylisted")
            .await;
        p.cmd("RSET", "250").await;
    }
    p.cmd("MAIL FROM:<b-t1@bounce.example>", "250").await;
    p.cmd("RCPT TO:<grey1@x.example>", "250").await;
    p.cmd("RCPT TO:<grey2@x.example>", "450 4.2.0").await;
    p.cmd("DATA", "354").await;
    p.send(b"Subject: once\r\n\r\nx\r\n.\r\n").await;
    p.expect("250").await;
    // One message to a vacationer, a complainer and a quiet reader.
    p.cmd("MAIL FROM:<b-t2@bounce.example>", "250").await;
    p.cmd("RCPT TO:<away1@x.example>", "250").await;
    p.cmd("RCPT TO:<grumpy1@y.example>", "250").await;
    p.cmd("RCPT TO:<quiet@y.example>", "250").await;
    p.cmd("DATA", "354").await;
    p.send(b"From: News <news@list.example>\r\nSubject: Issue 8\r\nMessage-ID: <m8@list.example>\r\n\r\nbody\r\n.\r\n").await;
    p.expect("250").await;
    // Nothing is sent back for the null sender.
    p.cmd("MAIL FROM:<>", "250").await;
    p.cmd("RCPT TO:<away2@x.example>", "250").await;
    p.cmd("DATA", "354").await;
    p.send(b"Subject: from nobody\r\n\r\nx\r\n.\r\n").await;
    p.expect("250").await;
    p.cmd("QUIT", "221").await;

    let c = sink
        .stats
        .wait_for(WAIT, |c| {
            c.replies_sent + c.complaints_sent + c.bounces_failed >= 2
        })
        .await
        .expect("reports sent");
    assert_eq!(
        (
            c.deferred,
            c.messages,
            c.replies_sent,
            c.complaints_sent,
            c.bounces_failed
        ),
        (3, 3, 1, 1, 0),
        "{c:?}"
    );
    receiver
        .stats
        .wait_for(WAIT, |c| c.messages >= 2)
        .await
        .expect("reports received");

    let mut kinds = Vec::new();
    for f in eml_files(reports.path()) {
        let raw = std::fs::read(&f).expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let parsed = rundbrief_bounce::parse(&raw);
        let who: Vec<_> = parsed
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        match parsed.kind {
            rundbrief_bounce::BounceKind::AutoReply => {
                assert!(
                    text.starts_with("Return-Path: <>\r\nDelivered-To: <b-t2@bounce.example>\r\n"),
                    "{text}"
                );
                assert!(text.contains("Auto-Submitted: auto-replied\r\n"), "{text}");
                assert!(
                    text.contains("In-Reply-To: <m8@list.example>\r\n"),
                    "{text}"
                );
                assert_eq!(parsed.class, rundbrief_bounce::BounceClass::Ignore);
                assert_eq!(who, ["away1@x.example"]);
            }
            rundbrief_bounce::BounceKind::Arf => {
                assert!(
                    text.starts_with(
                        "Return-Path: <fbl@mx.sink.test>\r\nDelivered-To: <b-t2@bounce.example>\r\n"
                    ),
                    "{text}"
                );
                assert_eq!(parsed.class, rundbrief_bounce::BounceClass::Complaint);
                assert_eq!(parsed.feedback_type.as_deref(), Some("abuse"));
                assert_eq!(who, ["grumpy1@y.example"]);
                assert_eq!(
                    parsed
                        .original_message_id
                        .as_deref()
                        .map(|m| m.trim_matches(['<', '>'])),
                    Some("m8@list.example")
                );
                assert!(!text.contains("\r\nbody\r\n"), "headers only: {text}");
            }
            other => panic!("unexpected {other:?}: {text}"),
        }
        kinds.push(parsed.kind);
    }
    assert_eq!(kinds.len(), 2, "{kinds:?}");

    sink.shutdown().await;
    receiver.shutdown().await;
}

#[tokio::test]
async fn replies_and_complaints_need_a_target() {
    for rule in [
        Rule::auto_reply("a*@*").expect("rule"),
        Rule::complain("c*@*").expect("rule"),
    ] {
        let err = Sink::new(SinkConfig {
            rules: vec![rule],
            ..SinkConfig::default()
        })
        .err()
        .expect("needs --bounce-to");
        assert!(err.to_string().contains("--bounce-to"), "{err}");
    }
}
