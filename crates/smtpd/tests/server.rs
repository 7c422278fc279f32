//! The server core over real TCP on 127.0.0.1, with raw protocol bytes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Peer, Recorder, WAIT, ehlo, start};
use rundbrief_smtpd::{Limits, ServerConfig};

fn cfg(limits: Limits) -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        limits,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn full_conversation() {
    let rec = Recorder::new();
    let srv = start(cfg(Limits::default()), Arc::clone(&rec), None).await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220 mx.test").await;
    let caps = ehlo(&mut p).await;
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 26214400",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(caps.contains(ext), "{ext} missing in {caps}");
    }
    assert!(!caps.contains("STARTTLS"), "no TLS configured: {caps}");
    assert!(!caps.contains("AUTH"));
    p.cmd(
        "MAIL FROM:<b-tok@bounce.example> BODY=8BITMIME SMTPUTF8",
        "250 2.1.0",
    )
    .await;
    p.cmd("RCPT TO:<reject@x.example>", "550 5.1.1 User unknown")
        .await;
    p.cmd("RCPT TO:<a@x.example>", "250 2.1.5").await;
    p.cmd("DATA", "354").await;
    p.send(b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
        .await;
    p.expect("250 2.0.0").await;
    p.cmd("NOOP", "250").await;
    p.cmd("QUIT", "221 2.0.0").await;
    p.expect_eof().await;

    let msgs = rec.taken();
    assert_eq!(msgs.len(), 1);
    let (info, env, body) = &msgs[0];
    assert_eq!(info.helo.as_deref(), Some("client.test"));
    assert_eq!(env.mail_from.address, "b-tok@bounce.example");
    assert!(env.mail_from.smtputf8);
    assert_eq!(env.recipients.len(), 1);
    assert_eq!(env.recipients[0].address, "a@x.example");
    assert_eq!(body, b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n");
    srv.shutdown().await;
}

#[tokio::test]
async fn pipelining_replies_in_order() {
    let rec = Recorder::new();
    let srv = start(cfg(Limits::default()), Arc::clone(&rec), None).await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    // Everything in one write, including two whole transactions.
    p.send(
        b"EHLO c.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<reject@x>\r\nDATA\r\nSubject: 1\r\n\r\none\r\n.\r\n\
          MAIL FROM:<a@x>\r\nRCPT TO:<c@x>\r\nDATA\r\nSubject: 2\r\n\r\ntwo\r\n.\r\nQUIT\r\n",
    )
    .await;
    for want in [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "550 5.1.1",
        "354",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "221",
    ] {
        p.expect(want).await;
    }
    p.expect_eof().await;
    let msgs = rec.taken();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].2, b"Subject: 1\r\n\r\none\r\n");
    assert_eq!(msgs[1].1.recipients[0].address, "c@x");
    srv.shutdown().await;
}

/// SMTP smuggling: a bare LF (or a lone CR/LF mix) around the dot must not end
/// DATA, so the "smuggled" commands stay message content.
#[tokio::test]
async fn smuggling_bare_lf_dot_does_not_end_data() {
    let rec = Recorder::new();
    let srv = start(cfg(Limits::default()), Arc::clone(&rec), None).await;
    let variants: [&[u8]; 3] = [b"\n.\r\n", b"\r\n.\n", b"\n.\n"];
    for (i, end) in variants.iter().enumerate() {
        let mut p = Peer::connect(srv.addr).await;
        p.expect("220").await;
        ehlo(&mut p).await;
        p.cmd("MAIL FROM:<a@x>", "250").await;
        p.cmd("RCPT TO:<b@x>", "250").await;
        p.cmd("DATA", "354").await;
        let mut body = b"Subject: s\r\n\r\nhello".to_vec();
        body.extend_from_slice(end);
        body.extend_from_slice(
            b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@x>\r\nDATA\r\nsmuggled\r\n.\r\n",
        );
        p.send(&body).await;
        // Exactly one 250 for the whole thing, then the session is idle.
        p.expect("250 2.0.0").await;
        p.cmd("NOOP", "250").await;
        p.cmd("QUIT", "221").await;
        rec.wait_messages(i + 1).await;
        let msgs = rec.taken();
        let (_, env, msg) = &msgs[i];
        assert_eq!(env.recipients.len(), 1, "variant {i}");
        assert_eq!(env.recipients[0].address, "b@x");
        let text = String::from_utf8_lossy(msg);
        assert!(
            text.contains("MAIL FROM:<evil@x>") && text.contains("smuggled"),
            "variant {i}: {text:?}"
        );
    }
    assert_eq!(rec.taken().len(), 3);
    srv.shutdown().await;
}

#[tokio::test]
async fn oversize_gets_552_and_session_goes_on() {
    let rec = Recorder::new();
    let srv = start(
        cfg(Limits {
            max_message_size: 1000,
            ..Limits::default()
        }),
        Arc::clone(&rec),
        None,
    )
    .await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    assert!(ehlo(&mut p).await.contains("SIZE 1000"));
    p.cmd("MAIL FROM:<a@x> SIZE=5000", "552 5.3.4").await;
    // No SIZE given: DATA grows past the limit.
    p.cmd("MAIL FROM:<a@x>", "250").await;
    p.cmd("RCPT TO:<b@x>", "250").await;
    p.cmd("DATA", "354").await;
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for _ in 0..200 {
        body.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    body.extend_from_slice(b".\r\n");
    p.send(&body).await;
    p.expect("552 5.3.4").await;
    // The transaction is over, the session is not.
    p.cmd("RCPT TO:<b@x>", "503").await;
    p.cmd("MAIL FROM:<a@x>", "250").await;
    p.cmd("RCPT TO:<b@x>", "250").await;
    p.cmd("DATA", "354").await;
    p.send(b"Subject: small\r\n\r\nok\r\n.\r\n").await;
    p.expect("250").await;
    assert_eq!(rec.taken().len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn too_many_recipients_452() {
    let srv = start(
        cfg(Limits {
            max_recipients: 2,
            ..Limits::default()
        }),
        Recorder::new(),
        None,
    )
    .await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    ehlo(&mut p).await;
    p.cmd("MAIL FROM:<a@x>", "250").await;
    p.cmd("RCPT TO:<1@x>", "250").await;
    p.cmd("RCPT TO:<2@x>", "250").await;
    p.cmd("RCPT TO:<3@x>", "452 4.5.3").await;
    p.cmd("DATA", "354").await;
    srv.stop.cancel();
    p.send(b"x\r\n.\r\n").await;
    p.expect("250").await;
}

#[tokio::test]
async fn too_many_connections_421() {
    let srv = start(
        cfg(Limits {
            max_connections: 1,
            ..Limits::default()
        }),
        Recorder::new(),
        None,
    )
    .await;
    let mut first = Peer::connect(srv.addr).await;
    first.expect("220").await;
    let mut second = Peer::connect(srv.addr).await;
    second.expect("421 4.3.2").await;
    second.expect_eof().await;
    first.cmd("QUIT", "221").await;
    first.expect_eof().await;
    // The slot comes back once the first session's task has ended: poll the
    // visible condition, bounded.
    let mut served = false;
    for _ in 0..200 {
        let mut p = Peer::connect(srv.addr).await;
        if p.reply().await.starts_with("220") {
            served = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(served, "a freed slot must serve the next connection");
    srv.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_421() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let srv = start(cfg(limits), Recorder::new(), None).await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    p.expect("421 4.4.2").await;
    p.expect_eof().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn long_line_500_then_recovers() {
    let srv = start(cfg(Limits::default()), Recorder::new(), None).await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    let mut line = b"NOOP ".to_vec();
    line.extend(std::iter::repeat_n(b'A', 10_000));
    line.extend_from_slice(b"\r\n");
    p.send(&line).await;
    p.expect("500 5.5.2").await;
    p.cmd("NOOP", "250").await;
    // The same over-long line dripped in small pieces.
    for chunk in line.chunks(700) {
        p.send(chunk).await;
    }
    p.expect("500 5.5.2").await;
    p.cmd("NOOP", "250").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn error_budget_closes_session() {
    let srv = start(
        cfg(Limits {
            max_errors: 2,
            ..Limits::default()
        }),
        Recorder::new(),
        None,
    )
    .await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    p.cmd("BOGUS", "500").await;
    p.cmd("DATA", "503").await;
    p.cmd("BOGUS", "421 4.7.0").await;
    p.expect_eof().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_message_in_flight() {
    let rec = Recorder::new();
    let srv = start(cfg(Limits::default()), Arc::clone(&rec), None).await;
    let mut busy = Peer::connect(srv.addr).await;
    busy.expect("220").await;
    ehlo(&mut busy).await;
    busy.cmd("MAIL FROM:<a@x>", "250").await;
    busy.cmd("RCPT TO:<b@x>", "250").await;
    busy.cmd("DATA", "354").await;
    busy.send(b"Subject: mid-flight\r\n\r\nfirst half\r\n")
        .await;

    let mut idle = Peer::connect(srv.addr).await;
    idle.expect("220").await;
    ehlo(&mut idle).await;

    srv.stop.cancel();
    // The idle session is told at once: that is our signal shutdown began.
    idle.expect("421 4.3.2").await;
    idle.expect_eof().await;

    busy.send(b"second half\r\n.\r\n").await;
    busy.expect("250 2.0.0").await;
    busy.expect("421 4.3.2").await;
    busy.expect_eof().await;

    tokio::time::timeout(WAIT, srv.handle)
        .await
        .expect("run ends")
        .expect("join")
        .expect("ok");
    let msgs = rec.taken();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0].2,
        b"Subject: mid-flight\r\n\r\nfirst half\r\nsecond half\r\n"
    );
    assert!(
        tokio::net::TcpStream::connect(srv.addr).await.is_err(),
        "listener must be closed"
    );
}

#[tokio::test]
async fn drain_deadline_cuts_stalled_message() {
    let limits = Limits {
        drain_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let rec = Recorder::new();
    let srv = start(cfg(limits), Arc::clone(&rec), None).await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    ehlo(&mut p).await;
    p.cmd("MAIL FROM:<a@x>", "250").await;
    p.cmd("RCPT TO:<b@x>", "250").await;
    p.cmd("DATA", "354").await;
    p.send(b"Subject: never finished\r\n").await;
    srv.stop.cancel();
    p.expect("421 4.3.2").await;
    p.expect_eof().await;
    tokio::time::timeout(WAIT, srv.handle)
        .await
        .expect("run ends")
        .expect("join")
        .expect("ok");
    assert!(rec.taken().is_empty());
}

#[tokio::test]
async fn starttls_with_generated_certificate() {
    let (acceptor, cert) = rundbrief_smtpd::tls::self_signed(&["localhost"]).expect("cert");
    let rec = Recorder::new();
    let srv = start(cfg(Limits::default()), Arc::clone(&rec), Some(acceptor)).await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    assert!(ehlo(&mut p).await.contains("STARTTLS"));
    p.cmd("STARTTLS", "220 2.0.0").await;

    let tls = tls_connect(p.into_inner(), cert).await;
    let mut p = Peer::new(tls);
    // RFC 3207: state is reset, EHLO again; STARTTLS no longer offered.
    p.cmd("MAIL FROM:<a@x>", "503").await;
    let caps = ehlo(&mut p).await;
    assert!(!caps.contains("STARTTLS"), "{caps}");
    p.cmd("STARTTLS", "503").await;
    p.cmd("MAIL FROM:<a@x>", "250").await;
    p.cmd("RCPT TO:<b@x>", "250").await;
    p.cmd("DATA", "354").await;
    p.send(b"Subject: secret\r\n\r\nover tls\r\n.\r\n").await;
    p.expect("250").await;
    p.cmd("QUIT", "221").await;
    let msgs = rec.taken();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].0.tls, "handler must see the session as TLS");
    srv.shutdown().await;
}

#[tokio::test]
async fn starttls_drops_plaintext_pipelined_after_it() {
    let (acceptor, cert) = rundbrief_smtpd::tls::self_signed(&["localhost"]).expect("cert");
    let srv = start(cfg(Limits::default()), Recorder::new(), Some(acceptor)).await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    ehlo(&mut p).await;
    // Command injection attempt (CVE-2011-0411 style): plaintext after STARTTLS.
    p.send(b"STARTTLS\r\nMAIL FROM:<injected@x>\r\n").await;
    p.expect("220 2.0.0").await;
    let mut p = Peer::new(tls_connect(p.into_inner(), cert).await);
    ehlo(&mut p).await;
    // Had the injected MAIL been run, this would be "503 Nested MAIL".
    p.cmd("MAIL FROM:<a@x>", "250 2.1.0").await;
    p.cmd("QUIT", "221").await;
    srv.shutdown().await;
}

async fn tls_connect(
    tcp: tokio::net::TcpStream,
    cert: rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("trust the generated cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake timeout")
        .expect("handshake")
}

#[tokio::test]
async fn per_address_cap_421() {
    let limits = Limits {
        max_connections_per_ip: 1,
        ..Limits::default()
    };
    let srv = start(cfg(limits), Recorder::new(), None).await;
    let mut first = Peer::connect(srv.addr).await;
    first.expect("220").await;
    let mut second = Peer::connect(srv.addr).await;
    second.expect("421 4.7.0").await;
    second.expect_eof().await;
    first.cmd("QUIT", "221").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn unsolicited_bdat_chunk_is_skipped() {
    let srv = start(cfg(Limits::default()), Recorder::new(), None).await;
    let mut p = Peer::connect(srv.addr).await;
    p.expect("220").await;
    ehlo(&mut p).await;
    // The chunk holds what looks like a command; it must not be run.
    p.send(b"BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n").await;
    p.expect("502 5.5.1").await;
    p.expect("250").await;
    srv.shutdown().await;
}
