//! Edge cases the sink does not produce, against a scripted fake relay on
//! 127.0.0.1: a relay that never greets, a 5xx at MAIL, and a relay that
//! answers DATA with 354 after refusing the only recipient (pipelined).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rundbrief_core::{Secret, Signer, Verp};
use rundbrief_sender::{Delivery, Outcome, Relay, RelayOptions, Sender, SmtpStep};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use uuid::Uuid;

/// Replies to one command line; `None` closes the connection.
type Script = fn(&str) -> Option<&'static str>;

struct Fake {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

/// Serves `script` on 127.0.0.1:0. With `greet == false` it accepts and
/// says nothing. Every loop is bounded by the peer closing.
async fn fake(greet: bool, script: Script) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                if !greet {
                    let mut r = BufReader::new(r);
                    let mut sink = String::new();
                    let _ = r.read_line(&mut sink).await;
                    return;
                }
                let _ = w.write_all(b"220 fake.test ESMTP\r\n").await;
                let mut r = BufReader::new(r);
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end();
                    let reply = if cmd.to_ascii_uppercase().starts_with("EHLO") {
                        Some("250-fake.test\r\n250-PIPELINING\r\n250 DSN")
                    } else if cmd.eq_ignore_ascii_case("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        script(cmd)
                    };
                    let Some(reply) = reply else { return };
                    if w.write_all(format!("{reply}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if reply.starts_with("354") {
                        // Read the body up to the final dot.
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                        }
                        let _ = w.write_all(b"250 2.0.0 Ok\r\n").await;
                    }
                }
            });
        }
    });
    Fake { addr, connections }
}

fn sender(addr: SocketAddr, opts: impl FnOnce(&mut RelayOptions)) -> Sender {
    let mut relay = Relay::parse(&format!("smtp://{addr}")).expect("url");
    relay.options.pool_size = 1;
    relay.options.command_timeout = Duration::from_millis(500);
    opts(&mut relay.options);
    Sender::new(
        relay,
        Verp::new(
            Signer::new(Secret::new("k".repeat(40)), None),
            "b",
            "bounce.example.org",
        ),
    )
    .expect("sender")
}

fn delivery(to: &str) -> Delivery {
    Delivery {
        id: Uuid::now_v7(),
        to: to.into(),
        message: Arc::from(&b"Subject: x\r\n\r\nx\r\n"[..]),
        per_connection: None,
    }
}

#[tokio::test]
async fn a_relay_that_never_greets_times_out_at_greeting() {
    let fake = fake(false, |_| None).await;
    let s = sender(fake.addr, |_| {});
    let outcome = s.send(delivery("a@example.net")).await;
    let Outcome::Deferred { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Greeting);
    assert!(
        error.to_string().contains("timed out after 500ms"),
        "{error}"
    );
}

#[tokio::test]
async fn a_5xx_at_mail_is_our_problem() {
    for pipelining in [true, false] {
        let fake = fake(true, |cmd| match cmd.split(':').next() {
            Some("MAIL FROM") => Some("553 5.7.1 Sender address rejected: not owned by user"),
            Some("RCPT TO") => Some("503 5.5.1 Error: need MAIL command"),
            Some("DATA") => Some("503 5.5.1 Error: need RCPT command"),
            _ => Some("250 Ok"),
        })
        .await;
        let s = sender(fake.addr, |o| o.pipelining = pipelining);
        let outcome = s.send(delivery("a@example.net")).await;
        let Outcome::Failed { error } = &outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            error.step(),
            SmtpStep::Mail,
            "pipelining {pipelining}: the first refusal decides"
        );
        assert_eq!(error.reply().map(|r| r.code), Some(553));
        // The replies were all read: the connection is still in step.
        let outcome = s.send(delivery("b@example.net")).await;
        assert_eq!(
            outcome.error().map(|e| e.step()),
            Some(SmtpStep::Mail),
            "{outcome:?}"
        );
        assert_eq!(
            fake.connections.load(Ordering::SeqCst),
            1,
            "one connection, kept"
        );
    }
}

#[tokio::test]
async fn data_accepted_after_a_refused_recipient_closes_the_connection() {
    let fake = fake(true, |cmd| match cmd.split(':').next() {
        Some("RCPT TO") if cmd.contains("gone@") => Some("550 5.1.1 User unknown"),
        // A sloppy relay: 354 although no recipient was accepted.
        Some("DATA") => Some("354 go ahead"),
        _ => Some("250 Ok"),
    })
    .await;
    let s = sender(fake.addr, |_| {});
    let outcome = s.send(delivery("gone@example.net")).await;
    let Outcome::Rejected { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Rcpt);
    // Not reused: the relay waits for a body.
    let outcome = s.send(delivery("alive@example.net")).await;
    assert!(outcome.is_sent(), "{outcome:?}");
    assert_eq!(fake.connections.load(Ordering::SeqCst), 2);
}

/// A provider's `messages_per_connection` (issue 18): after that many
/// messages to the provider the relay connection is renewed; messages to
/// other recipients do not count, and without a limit the connection stays.
#[tokio::test]
async fn a_providers_messages_per_connection_renews_the_relay_connection() {
    let fake = fake(true, |_| Some("250 Ok")).await;
    let s = sender(fake.addr, |o| o.max_messages_per_connection = 1000);
    let google: Arc<str> = Arc::from("google");
    let to = |addr: &str, limit: Option<u32>| Delivery {
        per_connection: limit.map(|n| (Arc::clone(&google), n)),
        ..delivery(addr)
    };
    // Five to google (2 per connection), one unlimited between them.
    for (i, addr) in [
        "a@gmail.com",
        "b@gmail.com",
        "x@example.net",
        "c@gmail.com",
        "d@gmail.com",
        "e@gmail.com",
    ]
    .iter()
    .enumerate()
    {
        let limit = addr.ends_with("gmail.com").then_some(2);
        let outcome = s.send(to(addr, limit)).await;
        assert!(outcome.is_sent(), "{i}: {outcome:?}");
    }
    // a b x | c d | e: the third and the fifth to google open new ones.
    assert_eq!(fake.connections.load(Ordering::SeqCst), 3);
    for _ in 0..3 {
        assert!(s.send(to("y@example.net", None)).await.is_sent());
    }
    assert_eq!(fake.connections.load(Ordering::SeqCst), 3, "no limit, kept");
}
