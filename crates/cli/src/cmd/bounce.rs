//! `rundbrief bounce …`

use crate::cmd::endpoint::{Endpoint, process_pending};
use crate::output;
use anyhow::Context;
use rundbrief_core::Config;
use rundbrief_store::Store;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

/// Largest message read for parsing; the parser itself looks at the first 4 MiB.
const MAX_READ: u64 = 64 << 20;

/// Messages `bounce ls` shows in a table when no --limit is given.
const TABLE_LIMIT: u64 = 50;

/// Reads one message (at most [`MAX_READ`] bytes) from a file, or from
/// standard input when `file` is `-`.
fn read_message(file: &Path) -> anyhow::Result<Vec<u8>> {
    let mut raw = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_READ)
            .read_to_end(&mut raw)
            .context("reading standard input")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("cannot open {}", file.display()))?
            .take(MAX_READ)
            .read_to_end(&mut raw)
            .with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(raw)
}

pub fn parse(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let raw = read_message(file)?;
    let parsed = rundbrief_bounce::parse(&raw);
    if json {
        output::json(&parsed)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "kind   {}",
        serde_json::to_value(parsed.kind)?.as_str().unwrap_or("?")
    );
    println!("class  {}  (rule {})", parsed.class.as_str(), parsed.rule);
    if let Some(id) = &parsed.original_message_id {
        println!("original message-id  {id}");
    }
    if let Some(t) = &parsed.feedback_type {
        println!("feedback type        {t}");
    }
    if !parsed.recipients.is_empty() {
        let rows = parsed.recipients.iter().map(|r| {
            [
                r.address.clone(),
                r.class.as_str().to_string(),
                r.status.clone(),
                r.action.clone(),
                r.rule.to_string(),
                r.diagnostic.clone(),
            ]
        });
        println!(
            "{}",
            output::table(
                &[
                    "recipient",
                    "class",
                    "status",
                    "action",
                    "rule",
                    "diagnostic"
                ],
                rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(
    store: &rundbrief_store::Store,
    cfg: &rundbrief_core::Config,
    cmd: &crate::args::BounceCmd,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use crate::args::BounceCmd;
    use rundbrief_core::{BounceSource, BounceState};
    use rundbrief_store::{BounceQuery, NewBounce};
    let policy = crate::cmd::endpoint::Policy::from_config(cfg);
    match cmd {
        BounceCmd::Parse { file } => parse(file, json),
        BounceCmd::Serve {
            listen,
            max_size,
            max_connections,
            parse_workers,
        } => {
            let stop = rundbrief_smtpd::CancellationToken::new();
            let running = start_endpoint(
                store,
                cfg,
                *listen,
                *max_size,
                *max_connections,
                *parse_workers > 0,
                stop.clone(),
                Default::default(),
            )
            .await?;
            eprintln!(
                "bounce endpoint listening on {} for *@{}; Ctrl-C stops it",
                running.addr, running.domain
            );
            crate::cmd::shutdown_signal().await;
            stop.cancel();
            running.finish(store, &policy).await?;
            Ok(ExitCode::SUCCESS)
        }
        BounceCmd::Ingest { paths, stdin } => {
            let mut files = Vec::new();
            for p in paths {
                if p.is_dir() {
                    let mut inner: Vec<_> = std::fs::read_dir(p)
                        .with_context(|| format!("reading {}", p.display()))?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| f.is_file())
                        .collect();
                    // In a directory, take .eml files and extension-less ones (maildir).
                    let before = inner.len();
                    inner.retain(|f| {
                        let hidden = f
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'));
                        let ext = f
                            .extension()
                            .and_then(|e| e.to_str())
                            .map(str::to_ascii_lowercase);
                        !hidden && matches!(ext.as_deref(), None | Some("eml"))
                    });
                    if inner.len() < before {
                        eprintln!(
                            "{}: skipped {} file(s) that are not .eml",
                            p.display(),
                            before - inner.len()
                        );
                    }
                    inner.sort();
                    files.extend(inner);
                } else {
                    files.push(p.clone());
                }
            }
            if files.is_empty() && !stdin {
                anyhow::bail!("nothing to ingest: give .eml files or directories, or --stdin");
            }
            // Everything is read before anything is stored: an unreadable
            // file stops the ingest with nothing stored, so a rerun after
            // fixing it cannot store a message twice.
            let mut raws = Vec::new();
            if *stdin {
                raws.push(read_message(Path::new("-"))?);
            }
            for f in &files {
                raws.push(read_message(f)?);
            }
            for raw in &raws {
                let b = NewBounce {
                    source: BounceSource::Ingest,
                    peer: None,
                    mail_from: None,
                    rcpt: None,
                    delivery_id: None,
                    raw,
                };
                store.insert_bounce(&b).await?;
            }
            let parsed = process_pending(store, &policy).await?;
            if json {
                output::json(&serde_json::json!({ "stored": raws.len(), "parsed": parsed }))?;
            } else {
                println!("stored {} message(s), parsed {parsed}", raws.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        BounceCmd::Ls {
            class,
            state,
            limit,
        } => {
            let state: Option<BounceState> = state.as_deref().map(str::parse).transpose()?;
            // A table is for reading; JSON is for scripts, which get every
            // message unless they asked for fewer.
            let limit = limit.unwrap_or(if json { 0 } else { TABLE_LIMIT });
            let rows = store
                .bounces(&BounceQuery {
                    class: class.clone(),
                    state,
                    since: None,
                    limit,
                })
                .await?;
            if json {
                output::json(&rows)?;
            } else if rows.is_empty() {
                println!("no stored bounces match");
            } else {
                let table = rows.iter().map(|b| {
                    let first = b
                        .parsed
                        .as_ref()
                        .and_then(|p| p["recipients"][0]["address"].as_str())
                        .unwrap_or("")
                        .to_string();
                    [
                        b.id.to_string(),
                        crate::output::when(b.received_at),
                        b.source.to_string(),
                        b.state.to_string(),
                        b.kind.clone().unwrap_or_default(),
                        b.class.clone().unwrap_or_default(),
                        first,
                    ]
                });
                println!(
                    "{}",
                    output::table(
                        &[
                            "id",
                            "received",
                            "via",
                            "state",
                            "kind",
                            "class",
                            "recipient"
                        ],
                        table
                    )
                );
                if limit != 0 && rows.len() as u64 == limit {
                    eprintln!("(the newest {limit}; --limit 0 shows all, --json lists all)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BounceCmd::Show { id, raw } => {
            let b = store.bounce(*id).await?;
            if json {
                let mut v = serde_json::to_value(&b)?;
                if *raw {
                    v["raw"] = String::from_utf8_lossy(&b.raw).into();
                }
                output::json(&v)?;
            } else {
                println!("id          {}", b.id);
                println!(
                    "received    {} via {}",
                    crate::output::when(b.received_at),
                    b.source
                );
                println!(
                    "envelope    from <{}> to <{}>",
                    b.mail_from.as_deref().unwrap_or(""),
                    b.rcpt.as_deref().unwrap_or("")
                );
                println!(
                    "delivery    {}",
                    b.delivery_id
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "-".into())
                );
                println!(
                    "state       {}{}",
                    b.state,
                    b.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
                if let Some(p) = &b.parsed {
                    println!("parsed\n{}", serde_json::to_string_pretty(p)?);
                }
                if *raw {
                    println!("\n{}", String::from_utf8_lossy(&b.raw));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BounceCmd::Reprocess { since } => {
            let requeued = store.requeue_bounces(*since).await?;
            let parsed = process_pending(store, &policy).await?;
            if json {
                output::json(&serde_json::json!({ "requeued": requeued, "parsed": parsed }))?;
            } else {
                println!("parsed {parsed} stored message(s)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `rundbrief clean [--dry-run]`.
pub async fn clean(
    store: &rundbrief_store::Store,
    cfg: &rundbrief_core::Config,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use rundbrief_bounce::score::Score;
    let policy = crate::cmd::endpoint::Policy::from_config(cfg);
    let today = chrono::Utc::now().timestamp().div_euclid(86_400);
    let mut over = Vec::new();
    for s in store.scored_subscribers().await? {
        let score = Score {
            value: s.score,
            day: s.day,
            day_weight: s.day_weight,
        }
        .decayed(today, &policy.score);
        if score + 1e-9 >= policy.score.threshold {
            over.push((s, score));
        }
    }
    if !dry_run {
        // Only those actually pruned are reported: one whose status changed
        // since the scores were read (unsubscribed, say) is left as it is.
        let mut pruned = Vec::with_capacity(over.len());
        for (s, score) in over {
            let addr = rundbrief_core::Address::parse(&s.email)?;
            // The same words as the endpoint's own prune, for the bounce
            // that counted last, so the audit trail can say which it was.
            let last = s.last_bounce.as_deref().unwrap_or(
                "not recorded (the score was counted before rundbrief kept the bounce behind it)",
            );
            let reason = format!(
                "clean: bounce score {score:.1} >= threshold {:.1}; last counted: {last}",
                policy.score.threshold
            );
            if store
                .mark_bounced(&addr, rundbrief_core::Actor::Cli, &reason)
                .await?
            {
                pruned.push((s, score));
            }
        }
        over = pruned;
    }
    if json {
        let v: Vec<_> = over
            .iter()
            .map(|(s, score)| {
                serde_json::json!({ "email": s.email, "score": score, "last_bounce": s.last_bounce })
            })
            .collect();
        // As with `import --dry-run`, the count is what would be done.
        output::json(
            &serde_json::json!({ "dry_run": dry_run, "pruned": over.len(), "subscribers": v }),
        )?;
    } else {
        for (s, score) in &over {
            match &s.last_bounce {
                Some(last) => println!("{}  score {score:.1}  last counted: {last}", s.email),
                None => println!("{}  score {score:.1}", s.email),
            }
        }
        if dry_run {
            println!(
                "{} subscriber(s) would be pruned (threshold {:.1}); run without --dry-run to do it",
                over.len(),
                policy.score.threshold
            );
        } else {
            println!("pruned {} subscriber(s)", over.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A running bounce endpoint (server and parse worker).
pub struct RunningEndpoint {
    pub addr: std::net::SocketAddr,
    pub domain: String,
    server: tokio::task::JoinHandle<Result<(), rundbrief_smtpd::SmtpdError>>,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl RunningEndpoint {
    /// Waits for messages in flight (after `stop` was cancelled), then parses
    /// what is still pending.
    pub async fn finish(
        self,
        store: &Store,
        policy: &crate::cmd::endpoint::Policy,
    ) -> anyhow::Result<()> {
        self.server.await.context("the endpoint task failed")??;
        if let Some(w) = self.worker {
            let _ = w.await;
            process_pending(store, policy).await?;
        }
        Ok(())
    }
}

/// Starts the bounce endpoint on `listen` (and, with `parse`, the worker
/// that parses stored messages) until `stop` is cancelled.
#[allow(clippy::too_many_arguments)] // each is a separate operator setting
pub async fn start_endpoint(
    store: &Store,
    cfg: &Config,
    listen: std::net::SocketAddr,
    max_size: usize,
    max_connections: usize,
    parse: bool,
    stop: rundbrief_smtpd::CancellationToken,
    connections: prometheus_client::metrics::counter::Counter,
) -> anyhow::Result<RunningEndpoint> {
    let policy = crate::cmd::endpoint::Policy::from_config(cfg);
    let verp = cfg.verp()?;
    let domain = cfg.sending.bounce_domain.clone().unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let stored = std::sync::Arc::new(tokio::sync::Notify::new());
    let handler = std::sync::Arc::new(Endpoint {
        store: store.clone(),
        verp,
        domain: domain.clone(),
        abuse: cfg
            .bounce
            .abuse_address
            .as_ref()
            .map(|a| a.trim().to_ascii_lowercase()),
        stored: stored.clone(),
        connections,
    });
    let limits = rundbrief_smtpd::Limits {
        max_message_size: max_size,
        max_connections,
        max_recipients: 10,
        ..rundbrief_smtpd::Limits::default()
    };
    let server_cfg = rundbrief_smtpd::ServerConfig {
        hostname: domain.clone(),
        advertise_dsn: false,
        limits,
    };
    let (tls, _) = rundbrief_smtpd::tls::self_signed(&["localhost"])?;
    let server = tokio::spawn(rundbrief_smtpd::run(
        listener,
        server_cfg,
        handler,
        Some(tls),
        stop.clone(),
    ));
    let worker = parse.then(|| {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = process_pending(&store, &policy).await {
                    tracing::error!(error = %e, "parsing stored bounces failed; retrying");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = stored.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
            }
        })
    });
    Ok(RunningEndpoint {
        addr,
        domain,
        server,
        worker,
    })
}
