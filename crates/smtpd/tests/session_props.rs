//! Property tests of the session state machine over arbitrary input: the
//! same parsing path as a connection (smtp-proto's request receiver, then
//! `Session`), with any mix of valid commands, garbage and long lines.
//! Nothing may panic, every reply is a real SMTP reply, and the limits hold.

use proptest::prelude::*;
use rundbrief_smtpd::{
    DataDecision, Decision, Limits, Reply, ServerConfig, Session, SessionInfo, Step,
};
use smtp_proto::request::receiver::RequestReceiver;

const MAX_RECIPIENTS: usize = 3;

fn session() -> Session {
    let info = SessionInfo {
        id: 1,
        peer: "127.0.0.1:1".parse().expect("literal"),
        local: "127.0.0.1:2".parse().expect("literal"),
        helo: None,
        tls: false,
        messages: 0,
    };
    let cfg = ServerConfig {
        limits: Limits {
            max_recipients: MAX_RECIPIENTS,
            max_errors: 1000,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    Session::new(info, &cfg, true)
}

fn check(reply: &Reply) {
    assert!(
        (200..=599).contains(&reply.code()),
        "not an SMTP reply code: {}",
        reply.code()
    );
    assert!(!reply.to_wire().is_empty());
}

/// Feeds `input` line by line; returns whether the session asked to close.
fn run(input: &[u8], accept: &[bool]) -> bool {
    let mut s = session();
    let mut receiver = RequestReceiver::default();
    let mut decisions = accept.iter().cycle();
    for line in input.split_inclusive(|&b| b == b'\n').take(200) {
        let mut iter = line.iter();
        let step = match receiver
            .ingest(&mut iter)
            .map(smtp_proto::Request::into_owned)
        {
            Ok(req) => s.on_request(req),
            Err(smtp_proto::Error::NeedsMoreData { .. }) => continue,
            Err(e) => {
                receiver = RequestReceiver::default();
                s.on_parse_error(&e)
            }
        };
        let mut step = step;
        loop {
            step = match step {
                Step::Reply(r) => {
                    check(&r);
                    break;
                }
                Step::Close(r) => {
                    check(&r);
                    return true;
                }
                Step::AskMail(from) => {
                    let yes = *decisions.next().unwrap_or(&true);
                    s.mail_decided(
                        from,
                        if yes {
                            Decision::Accept
                        } else {
                            Decision::Reject(Reply::new(550, None, "no"))
                        },
                    )
                }
                Step::AskRcpt(rcpt) => {
                    let yes = *decisions.next().unwrap_or(&true);
                    let next = s.rcpt_decided(
                        rcpt,
                        if yes {
                            Decision::Accept
                        } else {
                            Decision::Reject(Reply::new(550, None, "no"))
                        },
                    );
                    assert!(
                        s.envelope().recipients.len() <= MAX_RECIPIENTS,
                        "recipient limit exceeded"
                    );
                    next
                }
                Step::ReceiveData(r) => {
                    check(&r);
                    s.data_received(DataDecision::accept())
                }
                Step::StartTls(r) => {
                    check(&r);
                    s.tls_started();
                    receiver = RequestReceiver::default();
                    break;
                }
                Step::SkipChunk { reply, .. } => {
                    check(&reply);
                    break;
                }
            };
        }
    }
    false
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO client.example\r\n".to_vec()),
        Just(b"HELO client.example\r\n".to_vec()),
        "[a-z0-9.]{0,20}@[a-z0-9.]{0,20}"
            .prop_map(|a| format!("MAIL FROM:<{a}> SIZE=1000 BODY=8BITMIME\r\n").into_bytes()),
        Just(b"MAIL FROM:<>\r\n".to_vec()),
        "[a-z0-9.+-]{0,20}@[a-z0-9.]{0,20}"
            .prop_map(
                |a| format!("RCPT TO:<{a}> NOTIFY=FAILURE ORCPT=rfc822;{a}\r\n").into_bytes()
            ),
        Just(b"DATA\r\n".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"NOOP\r\n".to_vec()),
        Just(b"STARTTLS\r\n".to_vec()),
        Just(b"BDAT 10 LAST\r\n".to_vec()),
        Just(b"VRFY x\r\n".to_vec()),
        Just(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n".to_vec()),
        Just(b"QUIT\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..200),
        "[ -~]{0,600}".prop_map(|l| format!("{l}\r\n").into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_command_sequence_is_answered_and_bounded(
        cmds in proptest::collection::vec(command(), 0..40),
        accept in proptest::collection::vec(any::<bool>(), 1..8),
    ) {
        let input: Vec<u8> = cmds.concat();
        run(&input, &accept);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2000)) {
        run(&input, &[true]);
    }
}

#[test]
fn quit_closes_and_recipient_limit_holds() {
    let input = b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<1@c.example>\r\nRCPT TO:<2@c.example>\r\nRCPT TO:<3@c.example>\r\nRCPT TO:<4@c.example>\r\nQUIT\r\n";
    assert!(run(input, &[true]), "QUIT must close");
}
