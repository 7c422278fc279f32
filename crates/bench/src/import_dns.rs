//! The import's rows/s with the recipient-domain check on beside the same
//! import with it off (issue 18): N rows (default 1,000,000) over D distinct
//! domains (default 50,000), every domain answered by `rundbrief-dns`'s
//! loopback responder (`[dns] servers`), one in a hundred not known to it
//! (NXDOMAIN: those rows become `undeliverable`). The lookups run
//! concurrently and bounded inside the import; the figure says what they
//! cost.

use crate::endpoint::{bench_secret, write_config};
use crate::{Args, Figure, ScratchDb, measure, mib, rundbrief};
use anyhow::{Context, bail};
use rundbrief_dns::responder::Responder;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

/// Every hundredth domain does not exist.
const DEAD_EVERY: u64 = 100;

fn generate(path: &Path, rows: u64, domains: u64) -> anyhow::Result<()> {
    if std::fs::metadata(path).is_ok() {
        return Ok(());
    }
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "email,name")?;
    for i in 0..rows {
        writeln!(w, "user{i}@{},User {i}", domain(i % domains))?;
    }
    w.flush()?;
    Ok(())
}

fn domain(k: u64) -> String {
    format!("x{k}.example.net")
}

pub(crate) fn run(
    args: &Args,
    rows: Option<u64>,
    domains: Option<u64>,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let rows = rows.unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let domains = domains.unwrap_or(50_000).clamp(1, rows.max(1));
    let csv = args.work.join(format!("import-dns-{rows}-{domains}.csv"));
    generate(&csv, rows, domains)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let dns = rt
        .block_on(Responder::start())
        .context("starting the loopback DNS responder")?;
    for k in (0..domains).filter(|k| k % DEAD_EVERY != 1) {
        let d = domain(k);
        dns.mx(&d, 3600, &[(10, &format!("mx.{d}"))]);
    }
    let dead = (0..domains).filter(|k| k % DEAD_EVERY == 1).count();
    eprintln!(
        "import-dns: {domains} domains ({dead} unknown: NXDOMAIN) on {}",
        dns.addr()
    );

    let mut backends: Vec<(&str, Option<ScratchDb>, Option<ScratchDb>)> =
        vec![("SQLite", None, None)];
    if !args.no_postgres {
        backends.push((
            "PostgreSQL",
            Some(ScratchDb::new(&args.postgres, "dnsoff")?),
            Some(ScratchDb::new(&args.postgres, "dnson")?),
        ));
    }
    for (label, off_db, on_db) in &backends {
        let mut off_rate = None;
        for (check, db) in [(false, off_db), (true, on_db)] {
            let tag = if check { "on" } else { "off" };
            let dir = args
                .work
                .join(format!("import-dns-{}-{tag}", label.to_lowercase()));
            let _ = std::fs::remove_dir_all(&dir);
            let url = db
                .as_ref()
                .map_or("sqlite://bench.db?mode=rwc".to_string(), |d| d.url.clone());
            write_config(&dir, &bench_secret(), &url, "")?;
            let mut toml = std::fs::read_to_string(dir.join("rundbrief.toml"))?;
            toml.push_str(&format!(
                "\n[dns]\nservers = [\"{}\"]\ncheck = {check}\n",
                dns.addr()
            ));
            std::fs::write(dir.join("rundbrief.toml"), toml)?;
            let rb = || {
                let mut c = Command::new(rundbrief().expect("checked below"));
                c.current_dir(&dir)
                    .env("DATABASE_URL", &url)
                    .env_remove("RUST_LOG")
                    .arg("-q");
                c
            };
            rundbrief()?;
            measure(rb().args(["list", "create", "bench"]))?;
            eprintln!("import-dns: {rows} rows into {label}, domain check {tag} …");
            let before = dns.queries();
            let m = measure(
                rb().arg("import")
                    .arg(&csv)
                    .args(["--list", "bench", "--json"]),
            )?;
            let asked = dns.queries() - before;
            let report: serde_json::Value =
                serde_json::from_str(&m.stdout).context("import --json output")?;
            let imported = report["imported"].as_u64().unwrap_or(0);
            let undeliverable = report["undeliverable"].as_u64().unwrap_or(0);
            if imported == 0 {
                bail!("the import imported nothing: {report}");
            }
            if check && undeliverable == 0 {
                bail!("the check marked nothing undeliverable: {report}");
            }
            let rate = rows as f64 / m.elapsed.as_secs_f64();
            let note = if check {
                format!(
                    "{rows} rows, {domains} domains in {:.1} s; {asked} DNS queries, \
                     {undeliverable} undeliverable; {:.0} % of the rate without; peak RSS {:.0} MiB",
                    m.elapsed.as_secs_f64(),
                    off_rate.map_or(f64::NAN, |o: f64| 100.0 * rate / o),
                    mib(m.max_rss)
                )
            } else {
                format!(
                    "{rows} rows in {:.1} s; {asked} DNS queries; peak RSS {:.0} MiB",
                    m.elapsed.as_secs_f64(),
                    mib(m.max_rss)
                )
            };
            figures.push(Figure::new(
                format!("import {label}, domain check {tag}"),
                rate,
                "rows/s",
                note,
            ));
            if !check {
                off_rate = Some(rate);
            }
        }
    }
    drop(dns);
    Ok(())
}
