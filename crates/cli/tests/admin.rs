//! `rundbrief admin`: users, keys and the dashboard server, as an operator
//! runs them (the dashboard itself is tested in crates/admin).

mod common;

use common::Env;

const PASSWORD: &str = "correct horse battery staple";

fn user_add(e: &Env, name: &str, stdin: &str) -> std::process::Output {
    e.cmd()
        .args(["admin", "user", "add", name, "--password-stdin"])
        .write_stdin(stdin)
        .output()
        .unwrap()
}

#[test]
fn users_and_keys_are_created_once_and_keys_are_shown_once() {
    let e = Env::new();
    let err = e.fails(&["admin", "user", "add", "ann"]);
    assert!(err.contains("--password-stdin"), "{err}");
    let out = user_add(&e, "ann", "short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too short"));
    let out = user_add(&e, "ann", &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = user_add(&e, "ann", &format!("{PASSWORD}\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let k = e.json(&["admin", "key", "create", "ci", "--scope", "write"]);
    assert_eq!(
        (k["name"].as_str(), k["scope"].as_str()),
        (Some("ci"), Some("write"))
    );
    let key = k["key"].as_str().unwrap();
    assert!(key.starts_with("rbk_") && key.len() == 68, "{key}");
    let err = e.fails(&["admin", "key", "create", "ci", "--scope", "read"]);
    assert!(err.contains("already exists"), "{err}");
    let err = e.fails(&["admin", "key", "create", "x", "--scope", "admin"]);
    assert!(err.contains("read") && err.contains("write"), "{err}");
    let plain = e.ok(&["admin", "key", "create", "ro", "--scope", "read"]);
    assert!(plain.trim().starts_with("rbk_"), "{plain}");
}

#[test]
fn serve_refuses_other_addresses_than_loopback() {
    let e = Env::new();
    let err = e.fails(&["admin", "serve", "--listen", "0.0.0.0:0"]);
    assert!(
        err.contains("loopback") && err.contains("--insecure-admin"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn serve_on_port_0_says_where_and_answers_keys_and_strangers() {
    use std::io::{Read, Write};
    let e = Env::new();
    let k = e.json(&["admin", "key", "create", "ci", "--scope", "read"]);
    let key = k["key"].as_str().unwrap().to_string();
    let (child, port) = common::start_server(&e, &["admin", "serve", "--listen", "127.0.0.1:0"]);
    let get = |path: &str, auth: Option<&str>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let auth = auth.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/login", None).contains("name=\"username\""));
    assert!(get("/api/v1/campaigns", None).starts_with("HTTP/1.1 401"));
    let r = get("/api/v1/campaigns", Some(&key));
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("[]"), "{r}");
    common::stop(child, "-TERM");
}

/// #19: `serve --admin-listen` runs the dashboard inside `serve`, on its own
/// port, loopback unless told otherwise; SIGTERM stops it with the rest.
#[cfg(unix)]
#[test]
fn serve_runs_the_dashboard_on_its_own_loopback_port() {
    let e = Env::new();
    e.cmd().arg("init").assert().success();
    let refused = e.fails(&[
        "serve",
        "--admin-listen",
        "0.0.0.0:0",
        "--bounce-listen",
        "off",
        "--http-listen",
        "off",
        "--metrics-listen",
        "off",
    ]);
    assert!(refused.contains("not a loopback address"), "{refused}");
    let same = e.fails(&[
        "serve",
        "--admin-listen",
        "127.0.0.1:8080",
        "--http-listen",
        "127.0.0.1:8080",
    ]);
    assert!(same.contains("never shares"), "{same}");
    let (serve, port) = common::start_server(
        &e,
        &[
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--bounce-listen",
            "off",
            "--http-listen",
            "off",
            "--metrics-listen",
            "off",
        ],
    );
    let login = common::http_get(port, "/login");
    assert!(
        login.contains("name=\"username\"") && login.contains("name=\"password\""),
        "{login}"
    );
    common::stop(serve, "-TERM");
}
