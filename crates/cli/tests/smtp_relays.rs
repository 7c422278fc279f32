//! `smtp check` with AUTH and named relays (`[relays.NAME]`, `--relay
//! NAME`), and its certificate summary against `rundbrief sink`. The AUTH
//! server is the sender crate's scripted submission relay (AUTH only after
//! STARTTLS), included by path so there is one copy. Refs #6.
#![cfg(unix)]

#[path = "../../sender/tests/support/auth_relay.rs"]
mod auth_relay;

mod common;

use common::*;
use serde_json::Value;

const PASSWORD: &str = "correct horse";

/// A fresh working directory whose rundbrief.toml is `config`.
fn env_with(config: &str) -> Env {
    let e = Env::new();
    e.write("rundbrief.toml", config.as_bytes());
    e
}

/// Runs `smtp check ARGS --json`; the exit status and the report.
fn check(e: &Env, args: &[&str], env: &[(&str, &str)]) -> (bool, Value) {
    let mut c = e.cmd();
    c.args(["smtp", "check"]).args(args).arg("--json");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "{args:?}: not JSON ({err}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn step<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no {name} step: {v}"))
}

#[test]
fn smtp_check_auth_with_the_password_from_the_environment() {
    let relay = auth_relay::start(auth_relay::Script::new("news@example.org", PASSWORD));
    let e = env_with("");
    let target = format!("127.0.0.1:{}", relay.port);
    let args = [
        target.as_str(),
        "--starttls",
        "--insecure",
        "--auth",
        "news@example.org",
    ];

    let (ok, v) = check(&e, &args, &[("RUNDBRIEF_SMTP_PASSWORD", PASSWORD)]);
    assert!(ok, "{v}");
    let auth = step(&v, "auth");
    assert!(
        auth["ok"] == true && auth["reply"].as_str().unwrap().starts_with("235"),
        "{v}"
    );
    assert!(!v.to_string().contains(PASSWORD), "password leaked: {v}");

    let (ok, v) = check(&e, &args, &[("RUNDBRIEF_SMTP_PASSWORD", "wrong")]);
    assert!(!ok);
    let auth = step(&v, "auth");
    assert_eq!(auth["ok"], false, "{v}");
    assert!(
        auth["reply"].as_str().unwrap().starts_with("535 5.7.8"),
        "{v}"
    );
    assert!(auth["hint"].as_str().unwrap().contains("password"), "{v}");

    // Without STARTTLS the relay offers no AUTH: the hint says so and the
    // password is not sent.
    let (ok, v) = check(
        &e,
        &[target.as_str(), "--auth", "news@example.org"],
        &[("RUNDBRIEF_SMTP_PASSWORD", PASSWORD)],
    );
    assert!(!ok);
    assert!(
        step(&v, "auth")["hint"]
            .as_str()
            .unwrap()
            .contains("only after STARTTLS"),
        "{v}"
    );
    let auths = relay
        .log()
        .into_iter()
        .filter(|l| l.starts_with("AUTH"))
        .collect::<Vec<_>>();
    assert_eq!(
        auths,
        [
            "AUTH PLAIN news@example.org ok tls",
            "AUTH PLAIN news@example.org failed tls"
        ]
    );
}

#[test]
fn smtp_check_relay_name_uses_the_named_relays_settings() {
    let relay = auth_relay::start(auth_relay::Script {
        mechanisms: vec!["LOGIN"],
        ..auth_relay::Script::new("news@example.org", PASSWORD)
    });
    let e = env_with(&format!(
        "[relays.submit]\n\
         url = \"smtp://news%40example.org@127.0.0.1:{}\"\n\
         tls = \"starttls\"\n\
         password_env = \"RUNDBRIEF_SUBMIT_PASSWORD\"\n\
         ehlo_name = \"news.example.org\"\n",
        relay.port
    ));
    let (ok, v) = check(
        &e,
        &["--relay", "submit", "--insecure"],
        &[("RUNDBRIEF_SUBMIT_PASSWORD", PASSWORD)],
    );
    assert!(ok, "{v}");
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "dns", "connect", "banner", "ehlo", "starttls", "ehlo", "auth", "mail", "quit"
        ],
        "{v}"
    );
    assert!(
        step(&v, "auth")["reply"]
            .as_str()
            .unwrap()
            .contains("AUTH LOGIN"),
        "{v}"
    );

    // An unknown name lists the configured ones; an unset password variable is named.
    let out = e
        .cmd()
        .args(["smtp", "check", "--relay", "submt"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("submit"), "{err}");
    let out = e
        .cmd()
        .args(["smtp", "check", "--relay", "submit"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("RUNDBRIEF_SUBMIT_PASSWORD"),
        "{err}"
    );
}

#[test]
fn smtp_check_summarises_the_sinks_self_signed_certificate() {
    let e = env_with("");
    let (mut sink, port) = start_server(&e, &["sink", "--listen", "127.0.0.1:0"]);
    let target = format!("localhost:{port}");

    // Verified: refused, but the certificate is still summarised.
    let (ok, v) = check(&e, &[&target, "--starttls"], &[]);
    assert!(!ok);
    let tls = step(&v, "starttls");
    assert_eq!(tls["ok"], false, "{v}");
    let cert = &tls["cert"];
    assert_eq!(cert["self_signed"], true, "{v}");
    assert_eq!(cert["matches_host"], true, "issued for localhost: {v}");
    assert!(
        cert["subject"].is_string() && cert["issuer"].is_string(),
        "{v}"
    );
    assert!(
        cert["not_after"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC: {v}"
    );
    assert!(tls["hint"].as_str().unwrap().contains("self-signed"), "{v}");

    // --insecure: accepted, summarised in the reply, and the hint still warns.
    let (ok, v) = check(&e, &[&target, "--starttls", "--insecure"], &[]);
    assert!(ok, "{v}");
    let tls = step(&v, "starttls");
    let reply = tls["reply"].as_str().unwrap();
    assert!(
        reply.contains("subject") && reply.contains("issuer") && reply.contains("expires"),
        "{v}"
    );
    assert!(tls["hint"].as_str().unwrap().contains("self-signed"), "{v}");
    assert!(step(&v, "ehlo")["cert"].is_null(), "cert only on starttls");

    // By IP address the name does not match.
    let (_, v) = check(
        &e,
        &[&format!("127.0.0.1:{port}"), "--starttls", "--insecure"],
        &[],
    );
    assert_eq!(step(&v, "starttls")["cert"]["matches_host"], false, "{v}");

    let _ = std::process::Command::new("kill")
        .args(["-INT", &sink.id().to_string()])
        .status();
    let _ = sink.wait();
}

/// A campaign names a relay; the name is resolved when it is sent, with
/// STARTTLS and AUTH from `[relays.NAME]`, the password from the variable
/// the configuration names.
#[test]
fn campaign_send_through_a_named_relay_with_auth() {
    let relay = auth_relay::start(auth_relay::Script::new("news@example.org", PASSWORD));
    let e = env_with("");
    e.cmd().args(["init", "--force"]).assert().success();
    let path = e.dir.path().join("rundbrief.toml");
    let cfg = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "# bounce_domain = \"bounce.example.org\"",
            "bounce_domain = \"bounce.example.org\"",
        )
        .replace(
            "# from = \"Newsletter <news@example.org>\"",
            "from = \"Newsletter <news@example.org>\"",
        )
        .replace(
            "# public_url = \"https://news.example.org\"",
            "public_url = \"https://news.example.org\"",
        );
    let cfg = format!(
        "{cfg}\n[relays.submit]\n\
         url = \"smtp://news%40example.org@127.0.0.1:{}?tls=required\"\n\
         password_env = \"RUNDBRIEF_SUBMIT_PASSWORD\"\n\
         pool_size = 1\n",
        relay.port
    );
    std::fs::write(&path, cfg).unwrap();
    let run = |args: &[&str]| {
        let out = e
            .cmd()
            .env("RUNDBRIEF_SUBMIT_PASSWORD", PASSWORD)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["list", "create", "news"]);
    run(&["sub", "add", "ann@example.net", "--list", "news"]);
    std::fs::write(e.dir.path().join("issue.md"), "Hello\n").unwrap();
    run(&[
        "campaign",
        "create",
        "c",
        "--list",
        "news",
        "--subject",
        "Hi",
        "--content",
        "issue.md",
        "--relay",
        "submit",
    ]);
    let sent: Value =
        serde_json::from_str(&run(&["campaign", "send", "c", "--insecure", "--json"])).unwrap();
    assert_eq!(
        (sent["state"].as_str(), sent["sent"].as_u64()),
        (Some("finished"), Some(1)),
        "{sent}"
    );
    let log = relay.log();
    assert_eq!(log[0], "AUTH PLAIN news@example.org ok tls", "{log:?}");
    assert!(
        log[1].starts_with("MAIL FROM:<b-") && log[1].contains("@bounce.example.org>"),
        "{log:?}"
    );

    // The same relay as a bare URL (DESIGN's `smtp://user@host:587?tls=required`
    // form): the password comes from RUNDBRIEF_SMTP_PASSWORD, never the URL.
    let bare = auth_relay::start(auth_relay::Script::new("news@example.org", PASSWORD));
    let url = format!(
        "smtp://news%40example.org@127.0.0.1:{}?tls=required",
        bare.port
    );
    run(&[
        "campaign",
        "create",
        "c2",
        "--list",
        "news",
        "--subject",
        "Hi",
        "--content",
        "issue.md",
    ]);
    let out = e
        .cmd()
        .env("RUNDBRIEF_SMTP_PASSWORD", PASSWORD)
        .args([
            "campaign",
            "send",
            "c2",
            "--relay",
            &url,
            "--insecure",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["sent"].as_u64(), Some(1), "{sent}");
    let log = bare.log();
    assert_eq!(log[0], "AUTH PLAIN news@example.org ok tls", "{log:?}");
}

/// A relay URL naming an AUTH user carries no password: without one in
/// RUNDBRIEF_SMTP_PASSWORD it is refused before any connection, however it
/// is given (`--relay`, `RUNDBRIEF_RELAY`, `relay = …`), instead of sending
/// without AUTH.
#[test]
fn a_relay_url_with_a_user_but_no_password_is_refused_before_connecting() {
    // A would-be relay that must never see a connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "smtp://news@127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let e = Env::new();
    endpoint_config(&e);
    sending_config(&e);
    e.ok(&["list", "create", "news"]);
    e.write("issue.md", b"Hello\n");
    e.ok(&[
        "campaign",
        "create",
        "c",
        "--list",
        "news",
        "--subject",
        "Hi",
        "--content",
        "issue.md",
    ]);
    let refused = |err: &str| {
        assert!(
            err.contains(&format!(
                "relay `{url}` names the AUTH user `news` but has no password"
            )) && err.contains("[relays.NAME]")
                && err.contains("password_env or password_file"),
            "{err}"
        );
    };
    let test = ["campaign", "test", "c", "--to", "ann@example.net", "--json"];
    refused(&e.fails(&[&test[..], &["--relay", &url]].concat()));
    let out = e
        .cmd()
        .args(test)
        .env("RUNDBRIEF_RELAY", &url)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    refused(&String::from_utf8_lossy(&out.stderr));
    refused(&e.fails(&[
        "campaign",
        "create",
        "d",
        "--list",
        "news",
        "--subject",
        "Hi",
        "--content",
        "issue.md",
        "--relay",
        &url,
    ]));
    refused(&e.fails(&["smtp", "check", "--relay", &url]));
    let cfg = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
    e.write(
        "rundbrief.toml",
        cfg.replace(
            "# relay = \"smtp://127.0.0.1:2525\"",
            &format!("relay = \"{url}\""),
        )
        .as_bytes(),
    );
    refused(&e.fails(&test));
    // The same URL as a named relay without a password: refused too, and
    // the problem is said once, not again as the error's cause.
    e.write(
        "rundbrief.toml",
        format!("{cfg}\n[relays.x]\nurl = \"{url}\"\n").as_bytes(),
    );
    let err = e.fails(&[&test[..], &["--relay", "x"]].concat());
    assert!(
        err.starts_with(&format!(
            "error: [relays.x]: relay `{url}` names the AUTH user `news`"
        )) && err.matches("no password").count() == 1,
        "{err}"
    );
    assert!(
        listener
            .accept()
            .is_err_and(|err| err.kind() == std::io::ErrorKind::WouldBlock),
        "nothing may connect to the relay"
    );

    // smtp check takes the password from --auth, its own source.
    let relay = auth_relay::start(auth_relay::Script::new("news@example.org", PASSWORD));
    let url = format!(
        "smtp://news%40example.org@127.0.0.1:{}?tls=required",
        relay.port
    );
    let (ok, v) = check(
        &e,
        &["--relay", &url, "--auth", "news@example.org", "--insecure"],
        &[("RUNDBRIEF_SMTP_PASSWORD", PASSWORD)],
    );
    assert!(ok && step(&v, "auth")["ok"] == true, "{v}");
}

/// `smtp check` without HOST or --relay checks the default relay (`relay`,
/// `RUNDBRIEF_RELAY`), and without one says what to give.
#[test]
fn smtp_check_without_a_target_checks_the_configured_relay() {
    let e = env_with("");
    let err = e.fails(&["smtp", "check"]);
    assert!(
        err.contains("give HOST[:PORT] or --relay URL|NAME") && err.contains("RUNDBRIEF_RELAY"),
        "{err}"
    );
    let (mut sink, port) = start_server(&e, &["sink", "--listen", "127.0.0.1:0", "--no-tls"]);
    let url = format!("smtp://127.0.0.1:{port}");
    let (ok, v) = check(&e, &[], &[("RUNDBRIEF_RELAY", &url)]);
    assert!(ok, "{v}");
    assert_eq!(
        step(&v, "connect")["reply"],
        format!("127.0.0.1:{port}"),
        "{v}"
    );
    // A name works the same way.
    e.write(
        "rundbrief.toml",
        format!("relay = \"local\"\n[relays.local]\nurl = \"{url}\"\n").as_bytes(),
    );
    let (ok, v) = check(&e, &[], &[]);
    assert!(ok, "{v}");
    let _ = std::process::Command::new("kill")
        .args(["-INT", &sink.id().to_string()])
        .status();
    let _ = sink.wait();
}
