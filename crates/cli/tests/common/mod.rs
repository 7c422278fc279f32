//! Helpers shared by the binary's integration tests: a temporary working
//! directory per test, the real `rundbrief` binary, servers it starts on
//! loopback ports it picks, and a minimal SMTP and HTTP client.
#![allow(dead_code)]

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

/// The binary, run in `dir`, with none of the caller's rundbrief settings
/// and the recipient-domain check off (no test may ask the system's
/// resolver): a test of the check sets `RUNDBRIEF_DNS__CHECK=true` and
/// `[dns] servers` to a responder on loopback.
pub fn rundbrief_in(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("rundbrief").unwrap();
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNDBRIEF_") || k == "DATABASE_URL" || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("RUNDBRIEF_DNS__CHECK", "false");
    c
}

/// Runs in `dir`, expects success and JSON on stdout (args as given).
pub fn json_in(dir: &Path, args: &[&str]) -> Value {
    let out = rundbrief_in(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cmd(&self) -> Command {
        rundbrief_in(self.dir.path())
    }

    /// Runs, expects success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }

    /// Runs, expects failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            !out.status.success(),
            "{args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.dir.path().join(name), bytes).unwrap();
        name.to_string()
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// Also sets sending.from and sending.public_url (after `endpoint_config`).
pub fn sending_config(e: &Env) {
    let cfg = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
    let cfg = cfg
        .replace(
            "# from = \"Newsletter <news@example.org>\"",
            "from = \"Newsletter <news@example.org>\"",
        )
        .replace(
            "# public_url = \"https://news.example.org\"",
            "public_url = \"https://news.example.org\"",
        );
    e.write("rundbrief.toml", cfg.as_bytes());
}

/// Starts a long-running `rundbrief` server command (its args must make it
/// listen on 127.0.0.1:0) and returns the child and the port it announced
/// on stderr. The rest of stderr is drained so the child never writes into a
/// closed pipe.
#[cfg(unix)]
pub fn start_server(e: &Env, args: &[&str]) -> (std::process::Child, u16) {
    start_server_in(e.dir.path(), args)
}

/// [`start_server`] in any directory.
#[cfg(unix)]
pub fn start_server_in(dir: &Path, args: &[&str]) -> (std::process::Child, u16) {
    start_server_with(dir, &[], args)
}

/// [`start_server_in`] with extra environment variables (a database, say).
#[cfg(unix)]
pub fn start_server_with(
    dir: &Path,
    envs: &[(&str, &str)],
    args: &[&str],
) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rundbrief"))
        .current_dir(dir)
        .env("RUNDBRIEF_DNS__CHECK", "false")
        .envs(envs.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut port = None;
    for _ in 0..20 {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
            port = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse().ok());
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    (
        child,
        port.unwrap_or_else(|| panic!("{args:?} did not say where it listens")),
    )
}

/// Waits (at most 400 looks, 50 ms apart) until `n` stored bounces are
/// parsed; fails the test with what is stored if they never are.
#[cfg(unix)]
pub fn wait_for_parsed(e: &Env, n: usize) {
    let mut seen = 0;
    for _ in 0..400 {
        seen = e
            .json(&["bounce", "ls", "--state", "parsed"])
            .as_array()
            .unwrap()
            .len();
        if seen == n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "waited for {n} parsed bounces, {seen} there: {}",
        e.json(&["bounce", "ls"])
    );
}

/// Starts `rundbrief sink` on a free loopback port.
#[cfg(unix)]
pub fn start_sink(e: &Env, args: &[&str]) -> (std::process::Child, u16) {
    start_server(
        e,
        &[&["sink", "--listen", "127.0.0.1:0", "--json"], args].concat(),
    )
}

/// One SMTP conversation; returns every reply line.
#[cfg(unix)]
pub fn smtp(port: u16, from: &str, rcpts: &[&str], body: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut replies = Vec::new();
    let mut read_reply = |r: &mut BufReader<std::net::TcpStream>| loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let done = l.as_bytes().get(3) != Some(&b'-');
        replies.push(l.trim_end().to_string());
        if done {
            break;
        }
    };
    read_reply(&mut r);
    let mut cmd = |w: &mut std::net::TcpStream, r: &mut BufReader<std::net::TcpStream>, c: &str| {
        w.write_all(c.as_bytes()).unwrap();
        read_reply(r);
    };
    cmd(&mut w, &mut r, "EHLO test.example\r\n");
    cmd(&mut w, &mut r, &format!("MAIL FROM:<{from}>\r\n"));
    for rcpt in rcpts {
        cmd(&mut w, &mut r, &format!("RCPT TO:<{rcpt}>\r\n"));
    }
    cmd(&mut w, &mut r, "DATA\r\n");
    cmd(&mut w, &mut r, &format!("{body}\r\n.\r\n"));
    cmd(&mut w, &mut r, "QUIT\r\n");
    replies
}

/// Writes a config with a secret and a bounce domain; returns the VERP codec for it.
pub fn endpoint_config(e: &Env) -> rundbrief_core::Verp {
    e.cmd().arg("init").assert().success();
    let cfg = std::fs::read_to_string(e.path("rundbrief.toml")).unwrap();
    let secret = cfg
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let cfg = cfg.replace(
        "# bounce_domain = \"bounce.example.org\"",
        "bounce_domain = \"bounce.example.org\"",
    );
    e.write("rundbrief.toml", cfg.as_bytes());
    rundbrief_core::Verp::new(
        rundbrief_core::Signer::new(rundbrief_core::Secret::new(secret), None),
        "b",
        "bounce.example.org",
    )
}

/// Starts `rundbrief bounce serve` on a free loopback port.
#[cfg(unix)]
pub fn start_endpoint(e: &Env, args: &[&str]) -> (std::process::Child, u16) {
    start_server(
        e,
        &[&["bounce", "serve", "--listen", "127.0.0.1:0"], args].concat(),
    )
}

/// Stops a server with SIGINT and returns what it printed on stdout (the
/// sink's JSON summary: messages, bounces_sent, bounces_failed, …).
#[cfg(unix)]
pub fn stop_output(child: std::process::Child) -> String {
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

#[cfg(unix)]
pub fn stop(child: std::process::Child, signal: &str) {
    std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    let mut child = child;
    child.wait().unwrap();
}

/// Recipients of the messages in a sink spool (one Delivered-To each).
/// Safe to call while the sink is writing: only finished `.eml` files count
/// (a file being written under a temporary name may vanish between listing
/// and reading).
#[cfg(unix)]
pub fn spool_recipients(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|f| {
                let path = f.ok()?.path();
                if path.extension().is_none_or(|x| x != "eml") {
                    return None;
                }
                let text = std::fs::read_to_string(path).ok()?;
                Some(
                    text.lines()
                        .find(|l| l.starts_with("Delivered-To:"))
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
        })
        .unwrap_or_default()
}

/// A plain HTTP/1.1 GET on loopback; returns the body.
#[cfg(unix)]
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}
