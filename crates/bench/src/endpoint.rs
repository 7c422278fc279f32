//! DSNs/s through the real bounce endpoint (`rundbrief bounce serve`): every
//! message is stored durably before its 250, on SQLite and on PostgreSQL.
//! Eight client connections each send their share of ~3 KB RFC 3464 DSNs to
//! distinct, validly signed VERP addresses; the figure is messages over the
//! time from the first connect to the last 250. The reference is a private
//! Postfix instance (smtpd + cleanup queueing with fsync, `discard:`
//! transport) fed 3 KB messages by `smtp-source` with 8 sessions.

use crate::postfix::{PrivatePostfix, smtp_source};
use crate::{Args, Figure, ScratchDb, rundbrief};
use anyhow::{Context, bail};
use rundbrief_core::{Secret, Signer, Verp};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Concurrent SMTP senders, as issue 7 asks.
const SENDERS: usize = 8;
/// The bounce domain of the generated configurations.
pub(crate) const BOUNCE_DOMAIN: &str = "bounce.example.org";

/// A fresh secret for a bench configuration (not a production secret: it
/// only has to be long enough and differ between runs).
pub(crate) fn bench_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    )
}

/// Writes `dir/rundbrief.toml` for a bench run: the secret, the database and
/// the sending settings, plus `extra` TOML lines for the `[sending]` table.
pub(crate) fn write_config(
    dir: &Path,
    secret: &str,
    db_url: &str,
    extra: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("rundbrief.toml"),
        format!(
            "secret = \"{secret}\"\n\n\
             [database]\n\
             url = \"{db_url}\"\n\n\
             [sending]\n\
             from = \"Newsletter <news@example.org>\"\n\
             bounce_domain = \"{BOUNCE_DOMAIN}\"\n\
             public_url = \"https://news.example.org\"\n\
             {extra}\n\n\
             [bounce]\n\
             # The bench is one peer sending as fast as it can: no per-peer limit.\n\
             peer_burst = 0\n"
        ),
    )?;
    Ok(())
}

/// A ~3 KB RFC 3464 delivery status notification for `rcpt` (the original
/// recipient) returned to `verp`.
fn dsn(verp: &str, rcpt: &str, n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n\
         To: {verp}\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <dsn.{n}@mx.example.net>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b{n}\"\r\n\
         \r\n\
         --b{n}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is the mail system at host mx.example.net.\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients.\r\n\
         \r\n\
         <{rcpt}>: host mx.example.net said: 550 5.1.1 <{rcpt}>: Recipient address\r\n\
         \x20   rejected: User unknown in virtual mailbox table\r\n\
         \r\n\
         --b{n}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.example.net\r\n\
         Arrival-Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\
         \r\n\
         Final-Recipient: rfc822; {rcpt}\r\n\
         Original-Recipient: rfc822; {rcpt}\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         Remote-MTA: dns; mx.example.net\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown\r\n\
         \r\n\
         --b{n}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         Return-Path: <{verp}>\r\n\
         From: Newsletter <news@example.org>\r\n\
         To: {rcpt}\r\n\
         Subject: Rundbrief November\r\n\
         Message-ID: <orig.{n}@example.org>\r\n\
         List-Id: Rundbrief News <news.lists.example.org>\r\n\
         List-Unsubscribe: <https://news.example.org/u/{n}>\r\n\
         List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    );
    // Received: lines up to ~3 KB, as real returned headers carry.
    let mut hop = 0;
    while m.len() < 2_900 {
        hop += 1;
        m.push_str(&format!(
            "Received: from relay{hop}.example.org (relay{hop}.example.org [192.0.2.{hop}])\r\n\
             \tby mx.example.net (Postfix) with ESMTPS id 4Ab{n:06}{hop}\r\n\
             \tfor <{rcpt}>; Sat, 28 Nov 2026 09:59:{hop:02} +0000\r\n"
        ));
    }
    m.push_str(&format!("\r\n--b{n}--\r\n"));
    m.into_bytes()
}

/// Reads one SMTP reply (all its lines) and returns its code.
async fn reply(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut String,
) -> anyhow::Result<u16> {
    loop {
        line.clear();
        if r.read_line(line).await? == 0 {
            bail!("the server closed the connection");
        }
        if line.len() >= 4 && line.as_bytes()[3] == b'-' {
            continue;
        }
        return line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad reply line {line:?}"));
    }
}

/// One sender connection: `msgs` DSNs, one transaction each, a command per
/// round trip (as a bouncing MTA without PIPELINING). Returns the 250s.
async fn sender(addr: SocketAddr, msgs: Vec<(String, Vec<u8>)>) -> anyhow::Result<usize> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    let expect = |got: u16, want: u16, step: &str, line: &str| -> anyhow::Result<()> {
        if got != want {
            bail!("{step}: expected {want}, got {}", line.trim_end());
        }
        Ok(())
    };
    let c = reply(&mut rd, &mut line).await?;
    expect(c, 220, "banner", &line)?;
    wr.write_all(b"EHLO mx.example.net\r\n").await?;
    let c = reply(&mut rd, &mut line).await?;
    expect(c, 250, "EHLO", &line)?;
    let mut ok = 0;
    for (rcpt, body) in msgs {
        wr.write_all(b"MAIL FROM:<>\r\n").await?;
        let c = reply(&mut rd, &mut line).await?;
        expect(c, 250, "MAIL", &line)?;
        wr.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
            .await?;
        let c = reply(&mut rd, &mut line).await?;
        expect(c, 250, "RCPT", &line)?;
        wr.write_all(b"DATA\r\n").await?;
        let c = reply(&mut rd, &mut line).await?;
        expect(c, 354, "DATA", &line)?;
        // The DSN has no line starting with '.', so no dot-stuffing is needed.
        wr.write_all(&body).await?;
        wr.write_all(b".\r\n").await?;
        let c = reply(&mut rd, &mut line).await?;
        expect(c, 250, "end of data", &line)?;
        ok += 1;
    }
    wr.write_all(b"QUIT\r\n").await?;
    let _ = reply(&mut rd, &mut line).await;
    Ok(ok)
}

/// Sends `per_sender` DSNs on each of 8 connections to `addr`; returns the
/// 250s and the time from the first connect to the last 250.
fn blast(addr: SocketAddr, verp: &Verp, per_sender: usize) -> anyhow::Result<(usize, Duration)> {
    // Build every message first: the clock measures the server, not us.
    let mut work = Vec::new();
    for s in 0..SENDERS {
        let msgs: Vec<(String, Vec<u8>)> = (0..per_sender)
            .map(|i| {
                let rcpt = verp.address(uuid::Uuid::now_v7());
                let body = dsn(
                    &rcpt,
                    &format!("user{s}x{i}@d{}.example.org", i % 97),
                    s * per_sender + i,
                );
                (rcpt, body)
            })
            .collect();
        work.push(msgs);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .map(|msgs| tokio::spawn(sender(addr, msgs)))
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += t.await??;
        }
        anyhow::Ok((ok, started.elapsed()))
    })
}

/// A running `rundbrief bounce serve`; stopped with SIGINT (then SIGKILL
/// after 30 s) on drop.
struct Endpoint {
    child: Child,
    addr: SocketAddr,
}

impl Endpoint {
    fn start(dir: &Path, db_url: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(rundbrief()?)
            .current_dir(dir)
            .env("DATABASE_URL", db_url)
            .env("RUST_LOG", "error")
            .args(["bounce", "serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting rundbrief bounce serve")?;
        let mut err = std::io::BufReader::new(child.stderr.take().context("stderr")?);
        let mut seen = String::new();
        let mut port = None;
        for _ in 0..50 {
            let mut line = String::new();
            if err.read_line(&mut line)? == 0 {
                break;
            }
            seen.push_str(&line);
            if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                port = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
                break;
            }
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let mut ep = Endpoint {
            child,
            addr: "127.0.0.1:0".parse()?,
        };
        match port {
            Some(p) => ep.addr.set_port(p),
            None => bail!("bounce serve did not say where it listens:\n{seen}"),
        }
        Ok(ep)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn run(
    args: &Args,
    per_sender: Option<usize>,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let per_sender = per_sender.unwrap_or(if args.quick { 250 } else { 1_000 });
    let total = per_sender * SENDERS;
    let mut backends: Vec<(&str, Option<ScratchDb>)> = vec![("SQLite", None)];
    if !args.no_postgres {
        backends.push((
            "PostgreSQL",
            Some(ScratchDb::new(&args.postgres, "endpoint")?),
        ));
    }
    for (label, db) in &backends {
        let dir = args.work.join(format!("endpoint-{}", label.to_lowercase()));
        let _ = std::fs::remove_dir_all(&dir);
        let secret = bench_secret();
        let url = db
            .as_ref()
            .map_or("sqlite://rundbrief.db?mode=rwc".to_string(), |d| {
                d.url.clone()
            });
        write_config(&dir, &secret, &url, "")?;
        let verp = Verp::new(Signer::new(Secret::new(secret), None), "b", BOUNCE_DOMAIN);
        eprintln!("endpoint: {total} DSNs over {SENDERS} connections, {label} …");
        let ep = Endpoint::start(&dir, &url)?;
        let (ok, took) = blast(ep.addr, &verp, per_sender)?;
        drop(ep);
        figures.push(Figure::new(
            format!("bounce endpoint, {label}, 8 senders, 3 KB DSNs"),
            ok as f64 / took.as_secs_f64(),
            "DSN/s",
            format!(
                "stored before 250; {ok}/{total} accepted in {:.1} s",
                took.as_secs_f64()
            ),
        ));
    }
    drop(backends);

    eprintln!("endpoint: private Postfix instance, smtp-source -d, 8 sessions, 3 KB …");
    match PrivatePostfix::start(&args.work.join("postfix")) {
        Ok(pf) => {
            let rate = smtp_source(pf.addr, SENDERS, total, 3 * 1024, true);
            drop(pf);
            figures.push(Figure::new(
                "Postfix intake (smtpd + cleanup, fsync), 8 sessions, 3 KB",
                rate?,
                "msg/s",
                "reference: private instance, discard: transport, smtp-source -d",
            ));
        }
        Err(e) => {
            eprintln!("endpoint: no private Postfix instance: {e:#}");
            figures.push(Figure::new(
                "Postfix intake (issue 7 reference, not rerun)",
                1_350.0,
                "msg/s",
                format!("1,100–1,600 msg/s per issue 7; private instance failed: {e:#}")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ));
        }
    }
    Ok(())
}
