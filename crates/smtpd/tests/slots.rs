//! Issue #21 point 3: SMTP slots cannot be held indefinitely. Over real TCP
//! on loopback with small limits and short durations.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Peer, Recorder, WAIT, start};
use rundbrief_smtpd::{Limits, ServerConfig};
use tokio::net::{TcpSocket, TcpStream};

fn cfg(limits: Limits) -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        limits,
        ..ServerConfig::default()
    }
}

/// A connection from `from` (any 127.0.0.0/8 address works on loopback).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> Peer<TcpStream> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    let stream = tokio::time::timeout(WAIT, sock.connect(to))
        .await
        .expect("connect timeout")
        .expect("connect");
    Peer::new(stream)
}

/// 500 refused recipients in a row used to be fine: now each refusal
/// counts against the error budget, and the session is closed past it.
#[tokio::test]
async fn issue_21_refused_recipients_count_as_errors() {
    let srv = start(
        cfg(Limits {
            max_errors: 3,
            ..Limits::default()
        }),
        Recorder::new(),
        None,
    )
    .await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    p.cmd("EHLO peer.test", "250").await;
    p.cmd("MAIL FROM:<a@peer.test>", "250").await;
    for i in 0..3 {
        p.cmd(&format!("RCPT TO:<reject{i}@mx.test>"), "550 5.1.1")
            .await;
    }
    p.cmd("RCPT TO:<reject9@mx.test>", "421 4.7.0").await;
    p.expect_eof().await;

    // An accepted message starts the count again: a real sender with the
    // odd dead recipient is never cut off.
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    p.cmd("EHLO peer.test", "250").await;
    for round in 0..3 {
        p.cmd("MAIL FROM:<a@peer.test>", "250").await;
        p.cmd("RCPT TO:<reject@mx.test>", "550").await;
        p.cmd("RCPT TO:<reject2@mx.test>", "550").await;
        p.cmd("RCPT TO:<ok@mx.test>", "250").await;
        p.cmd("DATA", "354").await;
        p.send(format!("Subject: {round}\r\n\r\nx\r\n.\r\n").as_bytes())
            .await;
        p.expect("250").await;
    }
    p.cmd("QUIT", "221").await;
    srv.shutdown().await;
}

/// A NOOP now and then restarts the idle timeout, but not the session's
/// lifetime: the peer is told 421 once it is over.
#[tokio::test]
async fn issue_21_a_session_lifetime_is_bounded() {
    let srv = start(
        cfg(Limits {
            idle_timeout: Duration::from_secs(5),
            max_session_duration: Duration::from_millis(600),
            ..Limits::default()
        }),
        Recorder::new(),
        None,
    )
    .await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    p.cmd("EHLO peer.test", "250").await;
    let mut closed = None;
    // At most 40 × 50 ms of NOOPs (2 s), well inside the idle timeout.
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        p.send(b"NOOP\r\n").await;
        let r = p.reply().await;
        if r.starts_with("421") {
            closed = Some((i, r));
            break;
        }
        assert!(r.starts_with("250"), "{r}");
    }
    let (i, r) = closed.expect("the session ends within its lifetime");
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(i >= 3, "not before its lifetime: after {i} NOOPs");
    p.expect_eof().await;
    srv.shutdown().await;
}

/// Commands without a transaction are bounded: NOOP, RSET, VRFY and a
/// repeated EHLO all count.
#[tokio::test]
async fn issue_21_commands_without_mail_are_bounded() {
    let srv = start(
        cfg(Limits {
            max_junk_commands: 4,
            ..Limits::default()
        }),
        Recorder::new(),
        None,
    )
    .await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    p.cmd("EHLO peer.test", "250").await;
    p.cmd("NOOP", "250").await;
    p.cmd("RSET", "250").await;
    p.cmd("VRFY x", "252").await;
    p.cmd("EHLO peer.test", "250").await;
    p.cmd("EHLO peer.test", "421 4.7.0").await;
    p.expect_eof().await;
    srv.shutdown().await;
}

/// Two addresses holding sessions cannot take every slot: the last ones are
/// kept for addresses that hold none.
#[tokio::test]
async fn issue_21_slots_are_kept_for_new_peers() {
    let srv = start(
        cfg(Limits {
            max_connections: 8,
            reserved_slots: 2,
            max_connections_per_ip: 0,
            ..Limits::default()
        }),
        Recorder::new(),
        None,
    )
    .await;
    let mut held = Vec::new();
    let mut refused = 0;
    // Two hostile addresses try for 12 sessions between them.
    for i in 0..12 {
        let from = if i % 2 == 0 {
            [127, 0, 0, 2]
        } else {
            [127, 0, 0, 3]
        };
        let mut p = connect_from(from, srv.addr).await;
        let r = p.reply().await;
        if r.starts_with("220") {
            held.push(p);
        } else {
            assert!(r.starts_with("421 4.7.0"), "{r}");
            p.expect_eof().await;
            refused += 1;
        }
    }
    assert_eq!(held.len(), 8 - 2, "all but the reserve");
    assert_eq!(refused, 12 - 6);
    // A real sender from a new address still gets in, and delivers.
    let mut real = connect_from([127, 0, 0, 4], srv.addr).await;
    real.expect("220").await;
    real.cmd("EHLO real.test", "250").await;
    real.cmd("MAIL FROM:<a@real.test>", "250").await;
    real.cmd("RCPT TO:<ok@mx.test>", "250").await;
    real.cmd("DATA", "354").await;
    real.send(b"Subject: hi\r\n\r\nx\r\n.\r\n").await;
    real.expect("250").await;
    // ... and one more new address takes the last slot.
    let mut other = connect_from([127, 0, 0, 5], srv.addr).await;
    other.expect("220").await;
    real.cmd("QUIT", "221").await;
    other.cmd("QUIT", "221").await;
    drop(held);
    srv.shutdown().await;
}
