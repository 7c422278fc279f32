//! #21: a flood of DSNs at `rundbrief bounce serve`, killed with SIGKILL at a
//! random point: every message the endpoint acknowledged with 250 is stored,
//! on SQLite and (when `RUNDBRIEF_TEST_POSTGRES` is set) PostgreSQL. Bounded:
//! 1,000 messages from 8 connections.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MESSAGES: usize = 1000;
const SENDERS: usize = 8;

fn reply(r: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// Sends `rcpts` one message each on one connection; pushes each recipient
/// whose message got 250 after the final dot. Stops at the first error
/// (the server was killed).
fn sender(port: u16, rcpts: Vec<String>, acked: Arc<Mutex<Vec<String>>>, count: Arc<AtomicUsize>) {
    let run = || -> std::io::Result<()> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        reply(&mut r)?;
        w.write_all(b"EHLO flood.example\r\n")?;
        reply(&mut r)?;
        for rcpt in rcpts {
            w.write_all(format!("MAIL FROM:<>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())?;
            let codes = (reply(&mut r)?, reply(&mut r)?, reply(&mut r)?);
            if codes != (250, 250, 354) {
                w.write_all(b"RSET\r\n")?;
                reply(&mut r)?;
                continue;
            }
            w.write_all(
                format!(
                    "From: MAILER-DAEMON@mx.example.net\r\nTo: {rcpt}\r\n\
                     Subject: Undelivered Mail Returned to Sender\r\n\
                     Content-Type: text/plain\r\n\r\n\
                     <{rcpt}>: host mx.example.net said: 550 5.1.1 User unknown\r\n.\r\n"
                )
                .as_bytes(),
            )?;
            if reply(&mut r)? == 250 {
                acked.lock().unwrap().push(rcpt);
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    };
    let _ = run();
}

/// The database settings of one backend, as environment variables.
fn backends() -> Vec<(&'static str, Vec<(String, String)>)> {
    let mut out = vec![("sqlite", Vec::new())];
    if let Ok(url) = std::env::var("RUNDBRIEF_TEST_POSTGRES") {
        out.push((
            "postgres",
            vec![
                ("DATABASE_URL".into(), url),
                (
                    "RUNDBRIEF_DATABASE__SCHEMA".into(),
                    format!("t_{}", uuid::Uuid::now_v7().simple()),
                ),
            ],
        ));
    }
    out
}

#[cfg(unix)]
#[test]
fn every_acknowledged_bounce_survives_a_sigkill_mid_flood() {
    for (backend, env) in backends() {
        let e = Env::new();
        let verp = endpoint_config(&e);
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Create the schema first, so the server starts at once.
        e.cmd()
            .envs(envs.iter().copied())
            .args(["migrate"])
            .assert()
            .success();
        let (mut server, port) = start_server_with(
            e.dir.path(),
            &envs,
            &["bounce", "serve", "--listen", "127.0.0.1:0"],
        );

        // Each message to its own return path, so no per-address limit applies.
        let rcpts: Vec<String> = (0..MESSAGES)
            .map(|_| verp.address(uuid::Uuid::now_v7()))
            .collect();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = rcpts
            .chunks(MESSAGES / SENDERS)
            .map(|chunk| {
                let (chunk, acked, count) =
                    (chunk.to_vec(), Arc::clone(&acked), Arc::clone(&count));
                std::thread::spawn(move || sender(port, chunk, acked, count))
            })
            .collect();
        // Kill at a point that differs from run to run: after 100–900 acks.
        let at = 100 + (uuid::Uuid::now_v7().as_u128() % 800) as usize;
        for _ in 0..6000 {
            if count.load(Ordering::SeqCst) >= at {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
        assert!(
            acked.len() >= at.min(MESSAGES) / 2,
            "{backend}: only {} acknowledged",
            acked.len()
        );

        let out = e
            .cmd()
            .envs(envs.iter().copied())
            .args(["bounce", "ls", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
        let stored: BTreeSet<String> = stored
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["rcpt"].as_str().map(str::to_string))
            .collect();
        let lost: Vec<_> = acked.difference(&stored).take(5).collect();
        eprintln!(
            "{backend}: killed after {} acknowledged (target {at}); {} stored; lost {}",
            acked.len(),
            stored.len(),
            acked.difference(&stored).count()
        );
        assert!(
            lost.is_empty(),
            "{backend}: acknowledged but not stored: {lost:?}"
        );
    }
}
