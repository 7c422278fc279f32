//! An N-recipient campaign end to end, as issue 8 asks: import N generated
//! subscribers, create a campaign, then `rundbrief campaign send --wait
//! --json --pool 8` as a child process to Postfix's `smtp-sink`. Reports
//! the materialisation time (when the child logs "recipients materialised",
//! counted from its start), the end-to-end msgs/s, and the child's peak RSS.
//! The sender-only reference is our `Sender` in-process to the same sink with
//! a message of the campaign's own size, in the same run.

use crate::endpoint::{bench_secret, write_config};
use crate::postfix::{SmtpSink, comm_cpu_secs, proc_cpu_secs};
use crate::send::{message, sender_rate, sender_rate_with};
use crate::{Args, Figure, Measured, ScratchDb, generate_csv, measure, mib, rundbrief};
use anyhow::{Context, bail};
use rundbrief_render::{CampaignTemplate, ContentKind, Layout, Renderer};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

const POOL: usize = 8;

/// A short personalised newsletter (a few KB once rendered into the layout).
fn newsletter() -> String {
    "# Rundbrief {{format_date date \"%B %Y\"}}\n\n\
     Hello {{default subscriber.name \"reader\"}}, this month's news for \
     **{{default subscriber.attributes.city \"your town\"}}**.\n\n\
     ## What happened\n\n\
     Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor \
     incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
     exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat, with a \
     [link](https://example.org/story/1?utm_campaign=bench).\n\n\
     - Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore\n\
     - Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia\n\n\
     Your plan: {{default subscriber.attributes.plan \"free\"}}. See you next month!\n"
        .to_string()
}

fn rb(dir: &Path, db_url: &str) -> anyhow::Result<Command> {
    let mut c = Command::new(rundbrief()?);
    c.current_dir(dir)
        .env("DATABASE_URL", db_url)
        // The generated domains are not real: no domain check (and no
        // lookups leave the machine).
        .env("RUNDBRIEF_DNS__CHECK", "false")
        // info: lifecycle lines only ("recipients materialised", "finished").
        .env("RUST_LOG", "info");
    Ok(c)
}

/// When the child logged `needle` on stderr, counted from its start.
fn logged_at(m: &Measured, needle: &str) -> Option<f64> {
    m.stderr_lines
        .iter()
        .find(|(_, l)| l.contains(needle))
        .map(|(t, _)| t.as_secs_f64())
}

pub(crate) fn run(
    args: &Args,
    recipients: Option<u64>,
    no_sqlite: bool,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let n = recipients.unwrap_or(if args.quick { 20_000 } else { 1_000_000 });
    let csv = args.work.join(format!("import-{n}.csv"));
    generate_csv(&csv, n)?;
    let sink = SmtpSink::start()?;
    let relay = format!("smtp://{}", sink.addr);

    let mut backends: Vec<(&str, Option<ScratchDb>)> = Vec::new();
    if !args.no_postgres {
        backends.push((
            "PostgreSQL",
            Some(ScratchDb::new(&args.postgres, "campaign")?),
        ));
    }
    if !no_sqlite {
        backends.push(("SQLite", None));
    }
    let mut sender_only: Option<(usize, f64)> = None;
    let mut render_send: Option<f64> = None;
    for (label, db) in &backends {
        let dir = args.work.join(format!("campaign-{}", label.to_lowercase()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = db
            .as_ref()
            .map_or("sqlite://rundbrief.db?mode=rwc".to_string(), |d| {
                d.url.clone()
            });
        // No throttling: the bench measures the pipeline, not the limiter.
        write_config(
            &dir,
            &bench_secret(),
            &url,
            "rate = 1000000\ndomain_rate = 1000000\ndomain_concurrency = 64\n",
        )?;
        std::fs::write(dir.join("news.md"), newsletter())?;

        eprintln!("campaign: importing {n} subscribers into {label} …");
        measure(rb(&dir, &url)?.args(["-q", "list", "create", "bench"]))?;
        let imp = measure(
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
            "Rundbrief für {{default subscriber.attributes.city \"dich\"}}",
            "--content",
            "news.md",
        ]))?;

        // The sender-only reference, with a message of the campaign's size.
        if sender_only.is_none() {
            let preview = dir.join("preview.eml");
            measure(
                rb(&dir, &url)?
                    .args([
                        "-q",
                        "campaign",
                        "preview",
                        "bench",
                        "--to",
                        "user1@d1.example.org",
                        "--out",
                    ])
                    .arg(&preview),
            )?;
            let size = std::fs::metadata(&preview)
                .context("campaign preview wrote nothing")?
                .len() as usize;
            let count = if args.quick { 20_000 } else { 50_000 };
            eprintln!("campaign: sender-only reference, {count} × {size} B, pool {POOL} …");
            let cpu = Cpu::start(&sink);
            let (rate, _) = sender_rate(sink.addr, POOL, &message(size), count)?;
            let (client_us, sink_us) = cpu.per_message(&sink, count);
            sender_only = Some((size, rate));
            figures.push(Figure::new(
                format!("sender only, campaign-sized message, pool {POOL}"),
                rate,
                "msg/s",
                format!("{size} B messages to smtp-sink, no database, no rendering"),
            ));
            figures.push(cpu_figure(
                "sender only: CPU per message",
                client_us,
                sink_us,
                None,
            ));
            // What a campaign does minus the ledger: render each message of
            // the same newsletter, then send it. The campaign / this ratio is
            // what the database costs.
            eprintln!("campaign: render + send reference, {count} messages, pool {POOL} …");
            let cpu = Cpu::start(&sink);
            let (rate, _) = sender_rate_with(sink.addr, POOL, count, render_each()?)?;
            let (client_us, sink_us) = cpu.per_message(&sink, count);
            figures.push(Figure::new(
                format!("render + send, no database, pool {POOL}"),
                rate,
                "msg/s",
                "the campaign's newsletter rendered per recipient, then sent; no ledger",
            ));
            figures.push(cpu_figure(
                "render + send: CPU per message",
                client_us,
                sink_us,
                None,
            ));
            render_send = Some(rate);
        }

        eprintln!("campaign: sending to {n} recipients on {label} (pool {POOL}) …");
        let cpu0 = sink.cpu_secs();
        let pg0 = comm_cpu_secs("postgres");
        let m = measure(rb(&dir, &url)?.args([
            "campaign",
            "send",
            "bench",
            "--relay",
            &relay,
            "--pool",
            &POOL.to_string(),
            "--wait",
            "--json",
        ]))?;
        let sink_secs = sink.cpu_secs() - cpu0;
        let pg_secs = comm_cpu_secs("postgres") - pg0;
        let sink_cpu = sink_secs / m.elapsed.as_secs_f64();
        let report: serde_json::Value =
            serde_json::from_str(m.stdout.trim()).context("campaign send --json output")?;
        let sent = report["sent"].as_u64().unwrap_or(0);
        if sent == 0 {
            bail!("the campaign sent nothing: {report}");
        }
        let wall = m.elapsed.as_secs_f64();
        let materialised = logged_at(&m, "recipients materialised");
        let rate = sent as f64 / wall;
        figures.push(Figure::new(
            format!("campaign {n}, {label}: import"),
            n as f64 / imp.elapsed.as_secs_f64(),
            "rows/s",
            format!("{:.1} s", imp.elapsed.as_secs_f64()),
        ));
        figures.push(Figure::new(
            format!("campaign {n}, {label}: materialisation"),
            materialised.unwrap_or(f64::NAN),
            "s",
            "from process start to the \"recipients materialised\" log line",
        ));
        figures.push(Figure::new(
            format!("campaign {n}, {label}: end to end"),
            rate,
            "msg/s",
            format!(
                "{sent} sent, {} failed, {} rejected in {wall:.1} s (whole process); \
                 child says {:.0} msg/s; smtp-sink {:.0} % of a core",
                report["failed"],
                report["rejected"],
                report["msgs_per_s"].as_f64().unwrap_or(f64::NAN),
                sink_cpu * 100.0
            ),
        ));
        let us = |secs: f64| secs * 1e6 / sent as f64;
        figures.push(cpu_figure(
            &format!("campaign {n}, {label}: CPU per message"),
            us(m.cpu_secs),
            us(sink_secs),
            db.as_ref().map(|_| us(pg_secs)),
        ));
        if let Some(t) = materialised {
            figures.push(Figure::new(
                format!("campaign {n}, {label}: send phase"),
                sent as f64 / (wall - t).max(1e-9),
                "msg/s",
                "after materialisation, until exit",
            ));
        }
        figures.push(Figure::new(
            format!("campaign {n}, {label}: peak RSS of campaign send"),
            mib(m.max_rss),
            "MiB",
            "target ≤ 100",
        ));
        if let Some((_, reference)) = sender_only {
            figures.push(Figure::new(
                format!("campaign {n}, {label}: end to end / sender only"),
                rate / reference,
                "ratio",
                "target ≥ 0.9",
            ));
        }
        if let Some(reference) = render_send {
            figures.push(Figure::new(
                format!("campaign {n}, {label}: end to end / render + send"),
                rate / reference,
                "ratio",
                "1.0 = the ledger costs nothing",
            ));
        }
    }
    drop(backends);
    drop(sink);
    Ok(())
}

/// CPU time of this process (the in-process references) and of the sink,
/// from `start` to `per_message`.
struct Cpu {
    me: f64,
    sink: f64,
}

impl Cpu {
    fn start(sink: &SmtpSink) -> Cpu {
        Cpu {
            me: proc_cpu_secs(std::process::id()),
            sink: sink.cpu_secs(),
        }
    }

    /// (client µs, sink µs) per message over `count` messages.
    fn per_message(&self, sink: &SmtpSink, count: usize) -> (f64, f64) {
        let us = |secs: f64| secs * 1e6 / count as f64;
        (
            us(proc_cpu_secs(std::process::id()) - self.me),
            us(sink.cpu_secs() - self.sink),
        )
    }
}

/// A "CPU per message" figure: everything on the machine that works for the
/// send (the client process, smtp-sink, PostgreSQL's backends), in µs. On
/// two cores, a rate is at most 2 s / this total.
fn cpu_figure(name: &str, client_us: f64, sink_us: f64, postgres_us: Option<f64>) -> Figure {
    let total = client_us + sink_us + postgres_us.unwrap_or(0.0);
    let pg = postgres_us.map_or(String::new(), |p| format!(" + PostgreSQL {p:.0}"));
    Figure::new(
        name,
        total,
        "µs",
        format!("client {client_us:.0} + smtp-sink {sink_us:.0}{pg}"),
    )
}

/// Renders message `i` of the campaign's newsletter the way `campaign send`
/// does (shipped layout, default transfer encoding, per-recipient fields).
fn render_each()
-> anyhow::Result<impl Fn(usize) -> anyhow::Result<Arc<[u8]>> + Send + Sync + 'static> {
    let renderer = Renderer::new(CampaignTemplate {
        subject: "Rundbrief für {{default subscriber.attributes.city \"dich\"}}".into(),
        content: newsletter(),
        content_kind: ContentKind::Markdown,
        layout: Layout::shipped(),
        from: "Newsletter <news@example.org>".into(),
        reply_to: None,
        list_id: "bench.example.org".into(),
        list_name: "bench".into(),
        campaign_id: "bench".into(),
        message_id_domain: "example.org".into(),
        time_zone: chrono_tz::UTC,
        transfer_encoding: Default::default(),
        postal_address: None,
    })?;
    let recipients = crate::render::recipients();
    let now = chrono::Utc::now();
    Ok(move |i: usize| {
        let bytes = renderer.render(&recipients[i % recipients.len()], now)?;
        Ok(Arc::from(bytes))
    })
}
