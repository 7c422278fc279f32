//! `rundbrief sink`: the fake SMTP server of `rundbrief-smtpd`, with a live
//! count on a terminal and a summary when stopped.

use crate::args::SinkArgs;
use crate::output;
use anyhow::Context;
use rundbrief_smtpd::Limits;
use rundbrief_smtpd::sink::{Rule, Sink, SinkConfig, SinkCounts, SinkTls};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(a: &SinkArgs, json: bool) -> anyhow::Result<ExitCode> {
    // A RuleError names its flag and the rule as given: no context needed.
    let mut rules = Vec::new();
    for spec in &a.reject {
        rules.push(Rule::reject(spec)?);
    }
    for spec in &a.defer {
        rules.push(Rule::defer(spec)?);
    }
    for spec in &a.defer_once {
        rules.push(Rule::defer_first(spec, a.defer_times)?);
    }
    for spec in &a.reject_after {
        rules.push(Rule::refuse_after(spec, false)?);
    }
    for spec in &a.defer_after {
        rules.push(Rule::refuse_after(spec, true)?);
    }
    for spec in &a.bounce {
        rules.push(Rule::bounce(spec)?);
    }
    for spec in &a.auto_reply {
        rules.push(Rule::auto_reply(spec)?);
    }
    for spec in &a.complain {
        rules.push(Rule::complain(spec)?);
    }
    if let Some(dir) = &a.dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating --dir {}", dir.display()))?;
    }
    let cfg = SinkConfig {
        dir: a.dir.clone(),
        rules,
        bounce_to: a.bounce_to,
        latency: a.latency.map(Duration::from_millis),
        drop_after: a.drop_after,
        tls: if a.no_tls {
            SinkTls::Off
        } else {
            SinkTls::SelfSigned
        },
        ..SinkConfig::default()
    };
    let limits = Limits {
        max_message_size: a.max_size,
        max_connections: a.max_connections,
        ..Limits::default()
    };
    let sink = Sink::new(cfg)?;
    let stats = sink.stats();
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the sink listens beyond loopback: anybody who can reach it can make it store mail");
    }
    eprintln!(
        "sink listening on {addr}{}; Ctrl-C stops it",
        a.dir
            .as_ref()
            .map(|d| format!(", storing to {}", d.display()))
            .unwrap_or_default()
    );

    let stop = CancellationToken::new();
    let server = tokio::spawn(sink.run(listener, limits, stop.clone()));
    let live = std::io::stderr().is_terminal() && !json;
    let signal = crate::cmd::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = stats.changed(), if live => {
                let c = stats.snapshot();
                eprint!("\r{} message(s), {} recipient(s), {} rejected, {} deferred, {} bounced, {} auto-replied, {} complained   ", c.messages, c.recipients, c.rejected, c.deferred, c.bounces_sent, c.replies_sent, c.complaints_sent);
                let _ = std::io::stderr().flush();
            }
        }
    }
    if live {
        eprintln!();
    }
    stop.cancel();
    server.await.context("the sink task failed")??;
    let c = stats.snapshot();
    if json {
        output::json(&summary(&c))?;
    } else {
        println!(
            "{} message(s) for {} recipient(s); {} rejected, {} deferred, {} DSN(s), {} auto-reply(ies) and {} complaint(s) sent, {} failed",
            c.messages,
            c.recipients,
            c.rejected,
            c.deferred,
            c.bounces_sent,
            c.replies_sent,
            c.complaints_sent,
            c.bounces_failed
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(c: &SinkCounts) -> serde_json::Value {
    serde_json::json!({
        "messages": c.messages,
        "recipients": c.recipients,
        "rejected": c.rejected,
        "deferred": c.deferred,
        "bounces_sent": c.bounces_sent,
        "replies_sent": c.replies_sent,
        "complaints_sent": c.complaints_sent,
        "bounces_failed": c.bounces_failed,
        "store_failures": c.store_failures,
    })
}
