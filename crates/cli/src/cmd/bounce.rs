//! `rundbrief bounce …`

use crate::output;
use anyhow::Context;
use rundbrief_app::App;
use rundbrief_app::endpoint::{EndpointOptions, start_endpoint};
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
                r.evidence
                    .as_ref()
                    .and_then(|e| e.phrase.clone())
                    .unwrap_or_default(),
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
                    "evidence",
                    "diagnostic"
                ],
                rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(app: &App, cmd: &crate::args::BounceCmd, json: bool) -> anyhow::Result<ExitCode> {
    use crate::args::BounceCmd;
    use rundbrief_core::{BounceSource, BounceState};
    use rundbrief_store::{BounceQuery, NewBounce};
    let store = &app.store;
    let bounces = app.bounces();
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
                app,
                &EndpointOptions {
                    listen: *listen,
                    max_size: *max_size,
                    max_connections: *max_connections,
                    parse: *parse_workers > 0,
                    starttls: true,
                },
                stop.clone(),
            )
            .await?;
            eprintln!(
                "bounce endpoint listening on {} for *@{}; Ctrl-C stops it",
                running.addr, running.domain
            );
            crate::cmd::shutdown_signal().await;
            stop.cancel();
            running.finish().await?;
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
            let parsed = bounces.process_pending().await?;
            if json {
                output::json(&serde_json::json!({ "stored": raws.len(), "parsed": parsed }))?;
            } else {
                println!("stored {} message(s), parsed {parsed}", raws.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        BounceCmd::Held(cmd) => held(app, cmd, json).await,
        BounceCmd::Ls {
            class,
            kind,
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
                    kind: kind.clone(),
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
                    // Each recipient's verdict and why: the rule and the
                    // words of the diagnostic that decided.
                    for r in p["recipients"].as_array().into_iter().flatten() {
                        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                        let ev = &r["evidence"];
                        println!(
                            "verdict     {} {} {} (rule {}){}",
                            s("address"),
                            s("class"),
                            s("status"),
                            s("rule"),
                            ev["phrase"]
                                .as_str()
                                .map(|p| format!(", evidence \"{}\"", output::safe(p)))
                                .unwrap_or_default()
                        );
                    }
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
            let parsed = bounces.process_pending().await?;
            if json {
                output::json(&serde_json::json!({ "requeued": requeued, "parsed": parsed }))?;
            } else {
                println!("parsed {parsed} stored message(s)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `bounce held ls|release|discard [--domain D]`.
async fn held(app: &App, cmd: &crate::args::HeldCmd, json: bool) -> anyhow::Result<ExitCode> {
    use crate::args::HeldCmd;
    let bounces = app.bounces();
    let (rows, done) = match cmd {
        HeldCmd::Ls { domain } => (bounces.held(domain.as_deref()).await?, None),
        HeldCmd::Release { domain } => (
            bounces
                .release_held(
                    domain.as_deref(),
                    rundbrief_core::Actor::Cli,
                    "the operator",
                )
                .await?,
            Some("released (pruned)"),
        ),
        HeldCmd::Discard { domain } => (
            bounces.discard_held(domain.as_deref()).await?,
            Some("discarded (the subscribers stay)"),
        ),
    };
    if json {
        match done {
            None => output::json(&rows)?,
            Some(_) => output::json(&serde_json::json!({
                "done": match cmd { HeldCmd::Release { .. } => "released", _ => "discarded" },
                "count": rows.len(),
                "prunes": rows,
            }))?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no held prunes");
        return Ok(ExitCode::SUCCESS);
    }
    let table = rows.iter().map(|p| {
        [
            p.campaign.clone(),
            p.domain.clone(),
            p.email.clone(),
            crate::output::when(p.created_at),
            p.reason.clone(),
        ]
    });
    println!(
        "{}",
        output::table(&["campaign", "domain", "address", "held", "bounce"], table)
    );
    match done {
        Some(what) => println!("{} prune(s) {what}", rows.len()),
        None => println!(
            "{} held; `rundbrief bounce held release [--domain D]` prunes them, `discard` keeps the subscribers",
            rows.len()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
