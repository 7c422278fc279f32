//! AUTH PLAIN and LOGIN against a scripted submission relay on 127.0.0.1
//! that offers AUTH only after STARTTLS (tests/support/auth_relay.rs), and
//! `smtp check`'s AUTH step against the same relay. Refs #6.

#[path = "support/auth_relay.rs"]
mod auth_relay;

use std::collections::BTreeMap;
use std::sync::Arc;

use auth_relay::Script;
use rundbrief_core::config::{RelayConfig, RelayTls};
use rundbrief_core::{Secret, Signer, Verp};
use rundbrief_sender::check::{CheckRequest, CheckTls, check};
use rundbrief_sender::{Delivery, Outcome, Relay, Sender, SmtpStep};
use uuid::Uuid;

const PASSWORD: &str = "correct horse";

fn verp() -> Verp {
    Verp::new(
        Signer::new(Secret::new("k".repeat(40)), None),
        "b",
        "bounce.example.org",
    )
}

/// A named relay `[relays.submit]` whose password is in a file, resolved
/// the way every command resolves `--relay NAME`.
fn relay(port: u16, tls: Option<RelayTls>, password: &str) -> Relay {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{password}\n")).expect("write password");
    let mut relays = BTreeMap::new();
    relays.insert(
        "submit".to_owned(),
        RelayConfig {
            url: format!("smtp://news%40example.org@127.0.0.1:{port}"),
            password_file: Some(file),
            tls,
            pool_size: Some(1),
            command_timeout_secs: Some(5),
            ..RelayConfig::default()
        },
    );
    let mut relay = Relay::resolve("submit", &relays).expect("relay resolves");
    relay.options.dangerous_accept_invalid_certs = true;
    relay
}

async fn send_once(relay: Relay) -> Outcome {
    let sender = Sender::new(relay, verp()).expect("sender");
    let outcome = sender
        .send(Delivery {
            id: Uuid::now_v7(),
            to: "ann@example.net".into(),
            message: Arc::from(&b"Subject: hi\r\n\r\nHello\r\n"[..]),
            per_connection: None,
        })
        .await;
    sender.shutdown().await;
    outcome
}

#[tokio::test]
async fn auth_plain_after_starttls_sends() {
    let server = auth_relay::start(Script::new("news@example.org", PASSWORD));
    let outcome = send_once(relay(server.port, Some(RelayTls::Starttls), PASSWORD)).await;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    let log = server.log();
    assert_eq!(log[0], "AUTH PLAIN news@example.org ok tls", "{log:?}");
    assert!(log[1].starts_with("MAIL FROM:<b-"), "{log:?}");
    assert!(log[2].starts_with("DATA "), "{log:?}");
}

#[tokio::test]
async fn auth_login_when_the_relay_offers_only_login() {
    let server = auth_relay::start(Script {
        mechanisms: vec!["LOGIN"],
        ..Script::new("news@example.org", PASSWORD)
    });
    let outcome = send_once(relay(server.port, Some(RelayTls::Starttls), PASSWORD)).await;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    assert_eq!(server.log()[0], "AUTH LOGIN news@example.org ok tls");
}

#[tokio::test]
async fn a_wrong_password_fails_at_auth_with_the_servers_reply() {
    for mechanisms in [vec!["PLAIN"], vec!["LOGIN"]] {
        let server = auth_relay::start(Script {
            mechanisms: mechanisms.clone(),
            ..Script::new("news@example.org", PASSWORD)
        });
        let outcome = send_once(relay(server.port, Some(RelayTls::Starttls), "wrong")).await;
        let Outcome::Failed { error } = &outcome else {
            panic!("{mechanisms:?}: {outcome:?}")
        };
        assert_eq!(error.step(), SmtpStep::Auth, "{error}");
        let reply = error.reply().expect("the server's reply is kept");
        assert_eq!(reply.code, 535, "{error}");
        assert!(
            reply.to_string().contains("bad credentials"),
            "{mechanisms:?}: {reply}"
        );
        assert!(
            !error.to_string().contains("wrong"),
            "password leaked: {error}"
        );
        assert!(
            server.log().iter().all(|l| !l.starts_with("MAIL")),
            "nothing is sent after a failed AUTH: {:?}",
            server.log()
        );
    }
}

#[tokio::test]
async fn auth_is_offered_only_after_starttls() {
    let server = auth_relay::start(Script::new("news@example.org", PASSWORD));
    // Without TLS the relay offers no AUTH: the sender does not send the
    // password in clear and says why.
    let outcome = send_once(relay(server.port, Some(RelayTls::None), PASSWORD)).await;
    let Outcome::Failed { error } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.step(), SmtpStep::Auth);
    assert!(
        error.to_string().contains("AUTH only after STARTTLS"),
        "{error}"
    );
    assert!(
        server.log().is_empty(),
        "no AUTH was tried: {:?}",
        server.log()
    );
    // Opportunistic STARTTLS finds it.
    let outcome = send_once(relay(
        server.port,
        Some(RelayTls::StarttlsOpportunistic),
        PASSWORD,
    ))
    .await;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    assert_eq!(server.log()[0], "AUTH PLAIN news@example.org ok tls");
}

fn check_request(port: u16, tls: CheckTls, password: &str) -> CheckRequest {
    CheckRequest {
        host: "127.0.0.1".into(),
        port,
        tls,
        auth: Some(("news@example.org".into(), password.into())),
        from: "b-test@bounce.example.org".into(),
        to: None,
        ehlo_name: "localhost".into(),
        step_timeout: std::time::Duration::from_secs(5),
        dangerous_accept_invalid_certs: true,
    }
}

fn step<'a>(
    report: &'a rundbrief_sender::check::CheckReport,
    name: &str,
) -> &'a rundbrief_sender::check::CheckStep {
    report
        .steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no {name} step: {report:?}"))
}

#[tokio::test]
async fn smtp_check_authenticates_after_starttls_and_explains_failures() {
    let server = auth_relay::start(Script::new("news@example.org", PASSWORD));
    let ok = check(&check_request(server.port, CheckTls::StartTls, PASSWORD)).await;
    assert!(ok.ok, "{ok:?}");
    let auth = step(&ok, "auth");
    assert!(auth.reply.starts_with("235 2.7.0"), "{auth:?}");
    assert!(auth.reply.contains("AUTH PLAIN"), "{auth:?}");
    assert!(!format!("{ok:?}").contains(PASSWORD));
    // The certificate is summarised: rcgen's, for localhost, not 127.0.0.1.
    let tls = step(&ok, "starttls");
    let cert = tls.cert.as_ref().expect("cert summary");
    assert!(cert.self_signed && !cert.matches_host, "{cert:?}");
    assert!(tls.hint.contains("self-signed"), "{tls:?}");

    let bad = check(&check_request(server.port, CheckTls::StartTls, "wrong")).await;
    assert!(!bad.ok);
    let auth = step(&bad, "auth");
    assert!(
        !auth.ok && auth.reply.starts_with("535 5.7.8") && auth.hint.contains("password"),
        "{auth:?}"
    );
    assert_eq!(bad.steps.last().map(|s| s.step), Some("quit"));

    let plain = check(&check_request(server.port, CheckTls::None, PASSWORD)).await;
    let auth = step(&plain, "auth");
    assert!(
        !auth.ok && auth.hint.contains("only after STARTTLS"),
        "{auth:?}"
    );
    assert_eq!(
        server
            .log()
            .iter()
            .filter(|l| l.starts_with("AUTH"))
            .cloned()
            .collect::<Vec<_>>(),
        [
            "AUTH PLAIN news@example.org ok tls",
            "AUTH PLAIN news@example.org failed tls"
        ],
        "the password never went over the plain connection"
    );

    let login = auth_relay::start(Script {
        mechanisms: vec!["LOGIN"],
        ..Script::new("news@example.org", PASSWORD)
    });
    let ok = check(&check_request(login.port, CheckTls::StartTls, PASSWORD)).await;
    assert!(ok.ok, "{ok:?}");
    assert!(step(&ok, "auth").reply.contains("AUTH LOGIN"));
}
