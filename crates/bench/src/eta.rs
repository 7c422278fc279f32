//! How far `campaign status`'s ETA is from the real finish (issue 18): a
//! throttled N-recipient campaign (default 20,000) sent by `rundbrief
//! campaign send --wait` to `rundbrief sink` on loopback, with `campaign
//! status --json` read once a second meanwhile. At 25 %, 50 % and 75 %
//! progress the predicted finish (`eta`) is compared with the moment the
//! send really ended; the estimate of the first release (pending ÷ the rate
//! of the last minute) is shown beside it.
//!
//! The throttle is shaped so that the measured rate alone misleads: 5 % of
//! the recipients are at a slow provider (`[shaping.providers.slow]`, 15
//! msg/s), the rest go at `[sending] rate` 400 msg/s; the fast share is done
//! long before the slow one.

use crate::endpoint::{bench_secret, write_config};
use crate::{Args, Figure, ScratchDb, generate_csv, measure, rundbrief};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Domains of the slow provider: d0 … d49 of the generated CSV's 997.
const SLOW_DOMAINS: usize = 50;
const SLOW_RATE: u32 = 15;
const GLOBAL_RATE: u32 = 400;
const POOL: usize = 8;

/// One reading of `campaign status --json`.
struct Sample {
    at: DateTime<Utc>,
    progress: f64,
    pending: u64,
    rate: f64,
    eta: Option<DateTime<Utc>>,
    reason: String,
}

fn rb(dir: &Path, db_url: &str) -> anyhow::Result<Command> {
    let mut c = Command::new(rundbrief()?);
    c.current_dir(dir)
        .env("DATABASE_URL", db_url)
        // Generated domains: no domain check, no lookups.
        .env("RUNDBRIEF_DNS__CHECK", "false")
        .env("RUST_LOG", "warn");
    Ok(c)
}

/// A loopback port free right now (the sink binds it just after).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Kills the child when dropped (the sink, or a send cut short by an error).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(dir: &Path, url: &str) -> anyhow::Result<Sample> {
    let out = rb(dir, url)?
        .args(["-q", "campaign", "status", "bench", "--json"])
        .output()?;
    if !out.status.success() {
        bail!(
            "campaign status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    // Before the deliveries exist (total 0) nothing is done yet.
    let total = n("total");
    let progress = if total == 0 {
        0.0
    } else {
        (total - n("pending").min(total)) as f64 / total as f64
    };
    Ok(Sample {
        at: Utc::now(),
        progress,
        pending: n("pending"),
        rate: v["rate_per_s"].as_f64().unwrap_or(0.0),
        eta: v["eta"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc)),
        reason: v["eta_reason"].as_str().unwrap_or("").to_string(),
    })
}

pub(crate) fn run(
    args: &Args,
    recipients: Option<u64>,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let n = recipients.unwrap_or(20_000);
    let csv = args.work.join(format!("import-{n}.csv"));
    generate_csv(&csv, n)?;
    let mut backends: Vec<(&str, Option<ScratchDb>)> = vec![("SQLite", None)];
    if !args.no_postgres {
        backends.push(("PostgreSQL", Some(ScratchDb::new(&args.postgres, "eta")?)));
    }
    let slow: Vec<String> = (0..SLOW_DOMAINS)
        .map(|i| format!("\"d{i}.example.org\""))
        .collect();
    for (label, db) in &backends {
        let dir = args.work.join(format!("eta-{}", label.to_lowercase()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = db
            .as_ref()
            .map_or("sqlite://rundbrief.db?mode=rwc".to_string(), |d| {
                d.url.clone()
            });
        write_config(
            &dir,
            &bench_secret(),
            &url,
            &format!(
                "rate = {GLOBAL_RATE}\ndomain_rate = 1000\ndomain_concurrency = 16\n\n\
                 [shaping.providers.slow]\ndomains = [{}]\nrate_per_second = {SLOW_RATE}\n",
                slow.join(", ")
            ),
        )?;
        std::fs::write(
            dir.join("news.md"),
            "# Hello {{subscriber.name}}\n\nNews.\n",
        )?;
        eprintln!("eta: importing {n} subscribers into {label} …");
        measure(rb(&dir, &url)?.args(["-q", "list", "create", "bench"]))?;
        measure(
            rb(&dir, &url)?
                .args(["-q", "import"])
                .arg(&csv)
                .args(["--list", "bench", "--json"]),
        )?;
        measure(rb(&dir, &url)?.args([
            "-q",
            "campaign",
            "create",
            "bench",
            "--list",
            "bench",
            "--subject",
            "News",
            "--content",
            "news.md",
        ]))?;
        let port = free_port()?;
        let _sink = Reaped(
            rb(&dir, &url)?
                .args(["-q", "sink", "--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting rundbrief sink")?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the sink did not listen on 127.0.0.1:{port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("eta: sending to the sink at 127.0.0.1:{port}, reading the status each second …");
        let started = Utc::now();
        let mut send = Reaped(
            rb(&dir, &url)?
                .args(["-q", "campaign", "send", "bench", "--wait", "--json"])
                .args(["--relay", &format!("smtp://127.0.0.1:{port}")])
                .args(["--pool", &POOL.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting campaign send")?,
        );
        let mut samples = Vec::new();
        let limit = Instant::now() + Duration::from_secs(1800);
        let finished = loop {
            if let Some(code) = send.0.try_wait()? {
                let at = Utc::now();
                if !code.success() {
                    let mut err = String::new();
                    if let Some(mut e) = send.0.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("campaign send failed ({code}): {err}");
                }
                break at;
            }
            if Instant::now() > limit {
                bail!("the campaign did not finish within 30 min");
            }
            let tick = Instant::now();
            let s = status(&dir, &url)?;
            if samples.len() % 10 == 0 {
                eprintln!(
                    "eta: {:>5.1} % done, {:>6.1} msg/s, eta {} ({})",
                    s.progress * 100.0,
                    s.rate,
                    s.eta
                        .map_or("-".into(), |t| t.format("%H:%M:%S").to_string()),
                    s.reason
                );
            }
            samples.push(s);
            std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
        };
        let took = (finished - started).num_milliseconds() as f64 / 1000.0;
        figures.push(Figure::new(
            format!("eta: throttled {n}-recipient campaign ({label})"),
            took,
            "s",
            format!(
                "5 % at {SLOW_RATE} msg/s, the rest at {GLOBAL_RATE} msg/s; {} status reads",
                samples.len()
            ),
        ));
        for p in [0.25, 0.5, 0.75] {
            let Some(s) = samples.iter().find(|s| s.progress >= p) else {
                eprintln!("eta: no status read at {:.0} % progress", p * 100.0);
                continue;
            };
            let left = (finished - s.at).num_milliseconds() as f64 / 1000.0;
            let (err, note) = match s.eta {
                Some(eta) => {
                    let err = (eta - finished).num_milliseconds() as f64 / 1000.0;
                    (
                        err,
                        format!(
                            "{err:+.1} s on {left:.1} s left ({:+.0} %), {}",
                            100.0 * err / left.max(0.001),
                            s.reason
                        ),
                    )
                }
                None => (f64::NAN, "no eta".to_string()),
            };
            let naive = if s.rate > 0.0 {
                let e = s.pending as f64 / s.rate - left;
                format!("; pending ÷ rate would be {e:+.1} s")
            } else {
                String::new()
            };
            figures.push(Figure::new(
                format!("eta: error at {:.0} % ({label})", p * 100.0),
                err.abs(),
                "s",
                format!("{note}{naive}"),
            ));
        }
    }
    Ok(())
}
