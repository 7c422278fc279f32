//! `rundbrief campaign …`: create, list, send in the foreground, status.
//! The scheduler (schedules, pause/resume, leases, several workers) comes
//! later; `send` is the single-process path it will reuse.

use crate::args::CampaignCmd;
use crate::cmd::endpoint::apply_class;
use crate::cmd::render::{Campaign, content_kind, prepare};
use crate::output;
use anyhow::{Context, bail};
use rundbrief_core::{CampaignState, Config};
use rundbrief_render::ContentKind;
use rundbrief_scheduler::{Ended, Hooks, RetryPolicy, RunConfig, Runner, SystemClock};
use rundbrief_sender::{SendError, Sender};
use rundbrief_store::{NewCampaign, PendingDelivery, Store};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(
    store: &Store,
    cfg: &Config,
    cmd: &CampaignCmd,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match cmd {
        CampaignCmd::Create {
            name,
            lists,
            subject,
            content,
            layout,
            from,
            relay,
        } => {
            check_name(name)?;
            let (text, kind) = read_content(content)?;
            check_subject(subject)?;
            if let Some(f) = from {
                rundbrief_render::check_from(f)?;
            }
            if let Some(r) = relay {
                check_relay(cfg, r)?;
            }
            let c = store
                .create_campaign(&NewCampaign {
                    name: name.clone(),
                    lists: lists.clone(),
                    subject: subject.clone(),
                    content: text,
                    content_kind: kind.into(),
                    layout: layout.as_ref().map(|p| p.display().to_string()),
                    from: from.clone(),
                    relay: relay.clone(),
                })
                .await?;
            if json {
                output::json(&c)?;
            } else {
                println!(
                    "created campaign {} (draft) for {}",
                    c.name,
                    c.lists.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Ls => {
            let all = store.campaigns().await?;
            if json {
                output::json(&all)?;
            } else {
                let rows = all.iter().map(|c| {
                    [
                        c.name.clone(),
                        c.state.to_string(),
                        c.lists.join(", "),
                        c.subject.clone(),
                    ]
                });
                println!(
                    "{}",
                    output::table(&["name", "state", "lists", "subject"], rows)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Status { name } => {
            let c = store.campaign(name).await?;
            let v = status_json(store, &c).await?;
            if json {
                output::json(&v)?;
            } else {
                println!("{}", status_line(&c.campaign.name, &v));
                print_errors(&v, None);
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Show { name } => {
            let c = store.campaign(name).await?;
            let sched = store.campaign_schedule(c.campaign.id).await?;
            let runs = store.campaign_runs(c.campaign.id).await?;
            let status = status_json(store, &c).await?;
            let next_run = match (&sched.schedule.cron, sched.state) {
                (Some(cron), CampaignState::Scheduled) => {
                    let tz = rundbrief_scheduler::parse_tz(
                        sched.schedule.tz.as_deref().unwrap_or("UTC"),
                    )?;
                    rundbrief_scheduler::Recurrence::parse(cron, tz)?.next_after(
                        sched
                            .last_run_at
                            .unwrap_or(sched.updated_at)
                            .max(chrono::Utc::now()),
                    )
                }
                _ => sched
                    .schedule
                    .send_at
                    .filter(|_| sched.state == CampaignState::Scheduled),
            };
            let v = serde_json::json!({
                "name": c.campaign.name,
                "state": c.campaign.state.as_str(),
                "lists": c.campaign.lists,
                "subject": c.campaign.subject,
                "content_kind": c.content_kind,
                "layout": c.layout,
                "from": c.from,
                "relay": c.relay,
                "created_at": c.campaign.created_at,
                "schedule": sched.schedule,
                "next_run": next_run,
                "last_run_at": sched.last_run_at,
                "runs": runs.iter().map(|(n, s)| serde_json::json!({"name": n, "state": s.as_str()})).collect::<Vec<_>>(),
                "status": status,
            });
            if json {
                output::json(&v)?;
            } else {
                println!("campaign  {} ({})", c.campaign.name, c.campaign.state);
                println!("lists     {}", c.campaign.lists.join(", "));
                println!("subject   {}", c.campaign.subject);
                println!("content   {} ({} bytes)", c.content_kind, c.content.len());
                if let Some(f) = &c.from {
                    println!("from      {f}");
                }
                if let Some(r) = &c.relay {
                    println!("relay     {r}");
                }
                let tz = sched.schedule.tz.as_deref().unwrap_or("UTC");
                // Times as the operator gave them: on the wall clock of the zone.
                let zone = rundbrief_scheduler::parse_tz(tz).ok();
                let local = |t: chrono::DateTime<chrono::Utc>| match zone {
                    Some(z) => t.with_timezone(&z).format("%Y-%m-%d %H:%M %Z").to_string(),
                    None => t.format("%Y-%m-%d %H:%M UTC").to_string(),
                };
                if let Some(cron) = &sched.schedule.cron {
                    println!("schedule  cron \"{cron}\" in {tz}");
                } else if let Some(at) = sched.schedule.send_at {
                    println!("schedule  once at {} ({tz})", local(at));
                }
                if let (Some(a), Some(b)) =
                    (&sched.schedule.window_start, &sched.schedule.window_end)
                {
                    println!("window    {a}-{b} ({tz})");
                }
                if let Some(n) = next_run {
                    println!("next run  {}", local(n));
                }
                for (n, st) in &runs {
                    println!("run       {n} ({st})");
                }
                println!("{}", status_line(&c.campaign.name, &status));
                print_errors(&status, None);
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Edit {
            name,
            subject,
            content,
            layout,
            from,
            relay,
        } => {
            if subject.is_none()
                && content.is_none()
                && layout.is_none()
                && from.is_none()
                && relay.is_none()
            {
                bail!(
                    "nothing to change: give --subject, --content, --layout, --from or --relay \
                     (`rundbrief campaign edit --help`)"
                );
            }
            if let Some(s) = subject {
                check_subject(s)?;
            }
            if let Some(f) = from {
                rundbrief_render::check_from(f)?;
            }
            if let Some(r) = relay {
                check_relay(cfg, r)?;
            }
            let (text, kind) = match content {
                Some(path) => {
                    let (text, kind) = read_content(path)?;
                    (Some(text), Some(kind.to_string()))
                }
                None => (None, None),
            };
            store
                .edit_campaign(
                    name,
                    &rundbrief_store::CampaignEdit {
                        subject: subject.clone(),
                        content: text,
                        content_kind: kind,
                        layout: layout.as_ref().map(|p| p.display().to_string()),
                        from: from.clone(),
                        relay: relay.clone(),
                    },
                )
                .await?;
            // Fail now, not at send time, if the edit broke the campaign.
            prepare_campaign(cfg, &store.campaign(name).await?)?;
            if json {
                output::json(&serde_json::json!({"campaign": name, "edited": true}))?;
            } else {
                println!("campaign {name} edited");
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Schedule {
            name,
            at,
            cron,
            tz,
            window,
        } => {
            // Scheduling again keeps the zone and the window unless given.
            let current = store
                .campaign_schedule(store.campaign(name).await?.campaign.id)
                .await?
                .schedule;
            let tz = tz
                .clone()
                .or_else(|| current.tz.clone())
                .unwrap_or_else(|| "UTC".into());
            let zone = rundbrief_scheduler::parse_tz(&tz)?;
            let window_arg = window.as_deref();
            let window = match window_arg {
                Some("none") => None,
                Some(w) => Some(rundbrief_scheduler::Window::parse(w)?),
                None => match (&current.window_start, &current.window_end) {
                    (Some(a), Some(b)) => rundbrief_scheduler::Window::from_parts(a, b),
                    _ => None,
                },
            };
            let send_at = at
                .as_deref()
                .map(|a| rundbrief_scheduler::parse_at(a, zone))
                .transpose()?;
            let next = match cron {
                Some(p) => Some(
                    rundbrief_scheduler::Recurrence::parse(p, zone)?
                        .next_after(chrono::Utc::now())
                        .context("the cron expression never matches")?,
                ),
                None => send_at,
            };
            if let Some(at) = send_at
                && at < chrono::Utc::now()
            {
                tracing::warn!(%at, "the time is in the past: `serve` starts it at once");
            }
            store
                .schedule_campaign(
                    name,
                    &rundbrief_store::Schedule {
                        send_at,
                        cron: cron.clone(),
                        tz: Some(zone.name().to_string()),
                        window_start: window.map(|w| w.start_str()),
                        window_end: window.map(|w| w.end_str()),
                    },
                )
                .await?;
            if json {
                output::json(
                    &serde_json::json!({"campaign": name, "state": "scheduled", "next_run": next}),
                )?;
            } else {
                let local = next.map(|n| {
                    n.with_timezone(&zone)
                        .format("%Y-%m-%d %H:%M %Z")
                        .to_string()
                });
                // A window kept from the last schedule is said, so that a
                // campaign "starting now" that waits for it is no surprise.
                let kept = match (window, window_arg) {
                    (Some(w), None) => format!(
                        "; sends only {}-{} {tz} (kept; --window none removes it)",
                        w.start_str(),
                        w.end_str()
                    ),
                    _ => String::new(),
                };
                println!(
                    "campaign {name} scheduled; next run {}{kept} — `rundbrief serve` starts it",
                    local.unwrap_or_else(|| "-".into())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Start { name, strict } => {
            check_preflight(cfg, &store.campaign(name).await?, *strict)?;
            let from = store
                .transition_campaign(name, CampaignState::Running)
                .await?;
            if json {
                output::json(
                    &serde_json::json!({ "campaign": name, "from": from.as_str(), "state": "running" }),
                )?;
            } else {
                println!("campaign {name}: {from} -> running; `rundbrief serve` sends it");
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::RetryFailed {
            name,
            send,
            relay,
            pool,
        } => {
            let n = store.retry_failed(name).await?;
            // With --send, whatever is pending goes out, not only what this
            // call reset: a plain `retry-failed` before it left them pending.
            let c = store.campaign(name).await?;
            let pending = store.campaign_counts(c.campaign.id).await?.pending;
            if *send && pending > 0 {
                let opts = SendOptions {
                    relay: relay.clone(),
                    pool: *pool,
                    insecure: false,
                    wait: true,
                    progress: !json,
                    strict: false,
                };
                let r = send_foreground(store, cfg, name, &opts).await?;
                let mut v = serde_json::to_value(&r.counts)?;
                v["retried"] = n.into();
                v["errors"] =
                    serde_json::to_value(store.campaign_errors(c.campaign.id, TOP_ERRORS).await?)?;
                if json {
                    output::json(&v)?;
                } else {
                    println!(
                        "{n} failed deliveries reset; sent the {pending} pending: {} sent, {} failed, {} still deferred",
                        r.counts.sent, r.counts.failed, r.counts.deferred
                    );
                    print_errors(&v, Some(name));
                }
            } else if json {
                output::json(&serde_json::json!({"campaign": name, "retried": n}))?;
            } else {
                println!(
                    "{n} failed deliveries are pending again{}",
                    if n > 0 {
                        "; `campaign send` or `serve` sends them"
                    } else {
                        ""
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Test {
            name,
            to,
            relay,
            insecure,
        } => send_test(store, cfg, name, to, relay.as_deref(), *insecure, json).await,
        CampaignCmd::Preview { name, to, out } => {
            let c = store.campaign(name).await?;
            let prepared = prepare_campaign(cfg, &c)?;
            let addr = crate::cmd::address(to)?;
            let sub = store.subscriber_detail(&addr).await.with_context(|| {
                format!("{addr} is not a subscriber; `rundbrief render` previews any address")
            })?;
            let delivery = store
                .deliveries(c.campaign.id)
                .await?
                .into_iter()
                .find(|d| d.subscriber_id == sub.subscriber.id)
                .map_or_else(uuid::Uuid::now_v7, |d| d.delivery_id);
            let recipient = prepared.recipient(
                sub.subscriber.email.clone(),
                sub.subscriber.name.clone(),
                sub.subscriber.attributes.clone(),
                sub.subscriber.id,
                c.first_list_id.unwrap_or_default(),
                delivery,
            );
            let bytes = prepared.renderer.render(&recipient, chrono::Utc::now())?;
            match out {
                Some(path) => {
                    std::fs::write(path, &bytes)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Send {
            name,
            relay,
            pool,
            wait,
            insecure,
            strict,
        } => {
            send(
                *wait,
                *strict,
                false,
                store,
                cfg,
                name,
                relay.as_deref(),
                *pool,
                *insecure,
                json,
            )
            .await
        }
        CampaignCmd::Resume {
            name,
            wait,
            relay,
            pool,
            insecure,
        } => {
            store
                .transition_campaign(name, CampaignState::Running)
                .await?;
            send(
                *wait,
                false,
                true,
                store,
                cfg,
                name,
                relay.as_deref(),
                *pool,
                *insecure,
                json,
            )
            .await
        }
        CampaignCmd::Pause { name } => change_state(store, name, CampaignState::Paused, json).await,
        CampaignCmd::Unschedule { name } => {
            change_state(store, name, CampaignState::Draft, json).await
        }
        CampaignCmd::Cancel { name } => {
            change_state(store, name, CampaignState::Cancelled, json).await
        }
    }
}

async fn change_state(
    store: &Store,
    name: &str,
    to: CampaignState,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let from = store.transition_campaign(name, to).await?;
    if json {
        output::json(
            &serde_json::json!({ "campaign": name, "from": from.as_str(), "state": to.as_str() }),
        )?;
    } else {
        let note = match (from, to) {
            (CampaignState::Running, _) => " (a running send stops within one batch)",
            (_, CampaignState::Draft) => " (edit it, then `campaign schedule` it again)",
            _ => "",
        };
        println!("campaign {name}: {from} -> {to}{note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// How `campaign send` (and the demo) runs a campaign in the foreground.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Relay URL overriding the campaign's and the config's.
    pub relay: Option<String>,
    /// SMTP connections.
    pub pool: Option<usize>,
    /// Accept invalid TLS certificates (test relays only).
    pub insecure: bool,
    /// Wait for deferred deliveries' retries until each has a final outcome.
    pub wait: bool,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
    /// Refuse to start when the pre-flight checks warn.
    pub strict: bool,
}

/// What a foreground send did.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub counts: rundbrief_store::CampaignCounts,
    pub state: CampaignState,
    pub seconds: f64,
    /// Deliveries that reached a final outcome in this run.
    pub sent_now: u64,
}

#[allow(clippy::too_many_arguments)]
async fn send(
    wait: bool,
    strict: bool,
    resume: bool,
    store: &Store,
    cfg: &Config,
    name: &str,
    relay: Option<&str>,
    pool: Option<usize>,
    insecure: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let c = store.campaign(name).await?;
    if c.campaign.state == CampaignState::Paused && !resume {
        bail!("campaign `{name}` is paused: `rundbrief campaign resume {name}` continues it");
    }
    let opts = SendOptions {
        relay: relay.map(str::to_string),
        pool,
        insecure,
        wait,
        progress: !json,
        strict,
    };
    let r = send_foreground(store, cfg, name, &opts).await?;
    let (counts, secs, sent_now) = (r.counts, r.seconds, r.sent_now);
    let c = store.campaign(name).await?;
    let mut v = serde_json::to_value(&counts)?;
    v["errors"] = serde_json::to_value(store.campaign_errors(c.campaign.id, TOP_ERRORS).await?)?;
    if json {
        v["seconds"] = secs.into();
        v["msgs_per_s"] = (sent_now as f64 / secs.max(1e-9)).into();
        // What this process did (several may share a campaign).
        v["done_here"] = sent_now.into();
        output::json(&v)?;
    } else {
        println!(
            "{name}: {} sent, {} rejected, {} failed, {} still deferred of {} in {secs:.1} s ({:.0} msg/s){}",
            counts.sent,
            counts.rejected,
            counts.failed,
            counts.deferred,
            counts.total,
            sent_now as f64 / secs.max(1e-9),
            match r.state {
                CampaignState::Finished => String::new(),
                CampaignState::Paused =>
                    format!("; paused: `rundbrief campaign resume {name}` continues it"),
                CampaignState::Cancelled => {
                    format!("; cancelled: {} will not be sent", counts.pending)
                }
                _ => "; deferred ones are retried by `serve` or `campaign send --wait`".into(),
            }
        );
        print_errors(&v, Some(name));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the campaign `name` in this process: everything due now, and with
/// `wait` also the retries of deferred deliveries and the hours outside the
/// send window, until every recipient has an outcome (or the campaign is
/// paused or cancelled meanwhile, or Ctrl-C stops it: in-flight sends finish,
/// the rest stays for the next `send`, `resume` or `serve`).
pub async fn send_foreground(
    store: &Store,
    cfg: &Config,
    name: &str,
    opts: &SendOptions,
) -> anyhow::Result<SendReport> {
    let c = store.campaign(name).await?;
    match c.campaign.state {
        CampaignState::Cancelled => bail!("campaign `{name}` was cancelled"),
        CampaignState::Finished => bail!(
            "campaign `{name}` is finished: every recipient has an outcome \
             (`rundbrief campaign retry-failed {name}` sends the failed ones again)"
        ),
        CampaignState::Paused => {
            bail!("campaign `{name}` is paused: `rundbrief campaign resume {name}` continues it")
        }
        _ => {}
    }
    check_preflight(cfg, &c, opts.strict)?;
    let mut runner = runner_for(store, cfg, &c, opts).await?;
    store
        .set_campaign_state(c.campaign.id, CampaignState::Running)
        .await?;
    let added = store.materialise_deliveries(c.campaign.id).await?;
    runner.config.materialise = false;
    let before = store.campaign_counts(c.campaign.id).await?;
    tracing::info!(
        campaign = name,
        added,
        to_send = before.pending + before.deferred,
        "recipients materialised"
    );
    let bar = (opts.progress && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(before.pending + before.deferred);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, {eta} left) {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::cmd::shutdown_signal().await;
            tracing::warn!("stopping: finishing the sends in flight (again to abort)");
            stop.cancel();
        })
    };
    let started = Instant::now();
    let progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let report = runner.run(c.campaign.id, &stop, &progress).await;
    on_signal.abort();
    runner.sender.shutdown().await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = report?;
    match report.ended {
        Ended::Finished => tracing::info!(campaign = name, "finished"),
        Ended::RetriesLater(at) => tracing::info!(
            campaign = name,
            next = %at,
            "deferred deliveries are left for later: `campaign send --wait` or `serve` retries them"
        ),
        Ended::WindowClosed(at) => {
            tracing::info!(campaign = name, opens = %at, "outside the send window")
        }
        Ended::Shutdown => {
            tracing::warn!(campaign = name, "interrupted; `campaign send` continues it")
        }
        Ended::Stopped(state) => tracing::info!(campaign = name, %state, "stopped"),
    }
    let state = store.campaign_state(c.campaign.id).await?;
    let mut counts = report.counts;
    counts.state = state.to_string();
    Ok(SendReport {
        counts,
        state,
        seconds: started.elapsed().as_secs_f64(),
        sent_now: report.done,
    })
}

/// A campaign's content file, read and checked as a template: its text and
/// the kind stored with it (`html` or `markdown`, from the extension).
fn read_content(path: &std::path::Path) -> anyhow::Result<(String, &'static str)> {
    let kind = match content_kind(path)? {
        ContentKind::Html => "html",
        ContentKind::Markdown => "markdown",
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    rundbrief_render::check_template(&path.display().to_string(), &text)?;
    Ok((text, kind))
}

/// A campaign's `--relay`, checked when it is stored rather than at send
/// time: a `[relays.NAME]` of the configuration or a relay URL. A name's
/// password is read only when sending (it may live in the server's
/// environment, not the shell that creates the campaign).
fn check_relay(cfg: &Config, given: &str) -> anyhow::Result<()> {
    if cfg.relays.contains_key(given.trim()) {
        return Ok(());
    }
    // The error quotes the relay already, without its password; echoing
    // `given` here would print the password of `smtp://user:pw@host`.
    rundbrief_sender::Relay::resolve(given, &cfg.relays)
        .map(|_| ())
        .context("--relay")
}

/// The scheduler's runner for one campaign: relay, sender, throttle, hooks.
pub async fn runner_for(
    store: &Store,
    cfg: &Config,
    c: &rundbrief_store::CampaignContent,
    opts: &SendOptions,
) -> anyhow::Result<Runner> {
    let mut relay = crate::cmd::relay_for(cfg, opts.relay.as_deref().or(c.relay.as_deref()))?;
    if let Some(n) = opts.pool {
        relay.options.pool_size = n.max(1);
    }
    let pool = relay.options.pool_size;
    relay.options.dangerous_accept_invalid_certs = opts.insecure;
    // One compiled template per list: a recipient's message names a list
    // of the campaign that they are on (List-Id, footer, unsubscribe link).
    let mut prepared = Vec::with_capacity(c.list_ids.len().max(1));
    for ((id, name), label) in c.list_ids.iter().zip(&c.campaign.lists).zip(&c.list_labels) {
        prepared.push((*id, prepare_campaign_for(cfg, c, name, Some(label))?));
    }
    if prepared.is_empty() {
        prepared.push((uuid::Uuid::nil(), prepare_campaign(cfg, c)?));
    }
    let sender = Arc::new(Sender::new(relay, cfg.verp()?)?);
    let dkim = rundbrief_dkim::DkimSigner::from_config(cfg)
        .context("[dkim]")?
        .map(Arc::new);
    let hooks = Arc::new(CampaignHooks {
        prepared,
        dkim,
        store: store.clone(),
        policy: crate::cmd::endpoint::Policy::from_config(cfg),
    });
    Ok(Runner {
        store: store.clone(),
        sender,
        throttle: Arc::new(throttle_from(cfg)),
        hooks,
        clock: Arc::new(SystemClock),
        config: run_config(cfg, pool, opts.wait),
    })
}

/// A campaign name: recurring runs are called `NAME@TIME`, so no `@`, and
/// nothing that is hard to type or quote in a shell.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty()
        || name.contains('@')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!(
            "campaign name `{name}`: no spaces or control characters, and no @, which separates \
             a recurring campaign's name from the time of its run (e.g. `weekly-news`)"
        );
    }
    Ok(())
}

/// A subject must say something, and be a template that compiles.
fn check_subject(subject: &str) -> anyhow::Result<()> {
    if subject.trim().is_empty() {
        bail!(
            "the subject is empty: give --subject TEXT (a template, e.g. \"News for {{{{subscriber.name}}}}\")"
        );
    }
    rundbrief_render::check_template("subject", subject)?;
    Ok(())
}

/// Lease, batch and retry settings from `[sending]`.
pub fn run_config(cfg: &Config, pool: usize, wait: bool) -> RunConfig {
    let s = &cfg.sending;
    let mut rc = RunConfig::new(worker_name(), pool.max(1) * 2);
    rc.lease = Duration::from_secs(s.lease_secs);
    rc.retry = RetryPolicy {
        base: Duration::from_secs(s.retry_base_secs),
        max: Duration::from_secs(s.retry_max_secs),
        max_age: Duration::from_secs(s.max_age_secs),
    };
    rc.wait = wait;
    rc
}

/// This process's name in delivery leases.
fn worker_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!(
        "{host}/{}/{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

/// Renders each delivery and turns 5xx replies into bounce decisions.
struct CampaignHooks {
    /// The campaign compiled per list, the first list first (the fallback
    /// when a recipient is on none of them any more).
    prepared: Vec<(uuid::Uuid, crate::cmd::render::Prepared)>,
    /// Signs each rendered message when `[dkim]` is configured.
    dkim: Option<Arc<rundbrief_dkim::DkimSigner>>,
    store: Store,
    policy: crate::cmd::endpoint::Policy,
}

#[async_trait::async_trait]
impl Hooks for CampaignHooks {
    fn render(&self, d: &PendingDelivery) -> Result<Vec<u8>, String> {
        let (list_id, prepared) = d
            .list_id
            .and_then(|l| self.prepared.iter().find(|(id, _)| *id == l))
            .unwrap_or(&self.prepared[0]);
        let recipient = prepared.recipient(
            d.email.clone(),
            d.name.clone(),
            d.attributes.clone(),
            d.subscriber_id,
            *list_id,
            d.delivery_id,
        );
        let bytes = prepared
            .renderer
            .render(&recipient, chrono::Utc::now())
            .map_err(|e| e.without_recipient())?;
        match &self.dkim {
            Some(signer) => signer.sign(&bytes).map_err(|e| format!("DKIM: {e}")),
            None => Ok(bytes),
        }
    }

    async fn rejected(&self, d: &PendingDelivery, error: &SendError) -> Result<(), String> {
        // A 5xx at RCPT or DATA is a synchronous bounce: same classification and scoring.
        let Some(reply) = error.reply() else {
            return Ok(());
        };
        let enhanced = reply.enhanced.map(|e| e.to_string());
        let (class, rule) =
            rundbrief_bounce::classify_reply(reply.code, enhanced.as_deref(), &reply.text);
        let target = self
            .store
            .delivery_target(d.delivery_id)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(target) = target {
            apply_class(
                &self.store,
                &self.policy,
                &target,
                class,
                enhanced.as_deref().unwrap_or("-"),
                rule,
                &format!("{} while sending", error.step().as_str()),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }
}

/// `campaign status` as JSON: the contract fields, plus the current rate
/// (final outcomes per second over the last minute) and an ETA.
async fn status_json(
    store: &Store,
    c: &rundbrief_store::CampaignContent,
) -> anyhow::Result<serde_json::Value> {
    let mut counts = store.campaign_counts(c.campaign.id).await?;
    counts.state = c.campaign.state.to_string();
    let mut v = serde_json::to_value(&counts)?;
    v["errors"] = serde_json::to_value(store.campaign_errors(c.campaign.id, TOP_ERRORS).await?)?;
    if c.campaign.state == CampaignState::Running {
        let window = 60;
        let recent = store
            .outcomes_since(
                c.campaign.id,
                chrono::Utc::now() - chrono::Duration::seconds(window),
            )
            .await?;
        let rate = recent as f64 / window as f64;
        v["rate_per_s"] = rate.into();
        if rate > 0.0 {
            v["eta_s"] = ((counts.pending as f64 / rate).ceil() as u64).into();
        }
    }
    Ok(v)
}

/// How many (state, error) groups `campaign status` and `send` show.
const TOP_ERRORS: u64 = 10;

/// The `errors` of a status or send JSON as indented lines under the counts
/// (`4 failed: render: …`), most frequent first; with `hint`, a last line
/// saying where to look again.
fn print_errors(v: &serde_json::Value, hint: Option<&str>) {
    let Some(errors) = v["errors"].as_array().filter(|e| !e.is_empty()) else {
        return;
    };
    for e in errors {
        println!(
            "  {} {}: {}",
            e["count"].as_u64().unwrap_or(0),
            e["state"].as_str().unwrap_or("?"),
            e["error"].as_str().unwrap_or("(no error recorded)")
        );
    }
    if let Some(name) = hint {
        println!(
            "  (`rundbrief campaign status {name}` lists these reasons again; -v logs each delivery)"
        );
    }
}

fn status_line(name: &str, v: &serde_json::Value) -> String {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let state = v["state"].as_str().unwrap_or("?");
    // What is left of a cancelled campaign is never sent, not "pending".
    let pending = if state == "cancelled" {
        "never sent (cancelled)"
    } else {
        "pending"
    };
    let mut line = format!(
        "{name}: {state}; {} recipients: {} sent, {} deferred, {} failed, {} bounced ({} of them refused while sending), {} {pending}",
        n("total"),
        n("sent"),
        n("deferred"),
        n("failed"),
        n("bounced"),
        n("rejected"),
        n("pending")
    );
    if let Some(rate) = v["rate_per_s"].as_f64() {
        line.push_str(&format!("; {rate:.1} msg/s"));
        if let Some(eta) = v["eta_s"].as_u64() {
            line.push_str(&format!(", about {} left", humanize_secs(eta)));
        }
    }
    line
}

fn humanize_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s.div_ceil(60)),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// `campaign test`: one real send to `to`, marked, outside the ledger.
async fn send_test(
    store: &Store,
    cfg: &Config,
    name: &str,
    to: &str,
    relay: Option<&str>,
    insecure: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut c = store.campaign(name).await?;
    c.campaign.subject = format!("[TEST] {}", c.campaign.subject);
    let addr = crate::cmd::address(to)?;
    let opts = SendOptions {
        relay: relay.map(str::to_string),
        pool: Some(1),
        insecure,
        wait: false,
        progress: false,
        strict: false,
    };
    let sub = store.subscriber_detail(&addr).await.ok();
    // A blocklisted address gets no mail from us, tests included.
    if let Some(s) = &sub
        && s.subscriber.status == rundbrief_core::SubscriberStatus::Blocklisted
    {
        bail!(
            "{addr} is blocklisted: rundbrief sends it nothing, not even a test; \
             send the test to another address"
        );
    }
    let runner = runner_for(store, cfg, &c, &opts).await?;
    let delivery = uuid::Uuid::now_v7();
    let d = PendingDelivery {
        delivery_id: delivery,
        subscriber_id: sub.as_ref().map_or(uuid::Uuid::nil(), |s| s.subscriber.id),
        email: addr.to_string(),
        name: sub.as_ref().and_then(|s| s.subscriber.name.clone()),
        attributes: sub.map(|s| s.subscriber.attributes).unwrap_or_default(),
        attempts: 0,
        first_attempt_at: None,
        list_id: None,
    };
    let body = runner
        .hooks
        .render(&d)
        .map_err(|e| anyhow::anyhow!("render: {e}"))?;
    let mut message = b"X-Rundbrief-Test: yes\r\n".to_vec();
    message.extend_from_slice(&body);
    let outcome = runner
        .sender
        .send(rundbrief_sender::Delivery {
            id: delivery,
            to: d.email.clone(),
            message: Arc::from(message),
        })
        .await;
    runner.sender.shutdown().await;
    let ok = outcome.is_sent();
    if json {
        output::json(&serde_json::json!({
            "to": d.email,
            "outcome": outcome.as_str(),
            "error": outcome.error().map(|e| e.to_string()),
        }))?;
    } else if ok {
        println!("test message sent to {}", d.email);
    } else {
        println!(
            "test message to {} {}: {}",
            d.email,
            outcome.as_str(),
            outcome.error().map(|e| e.to_string()).unwrap_or_default()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Deliverability pre-flight (DKIM configured, From aligned with it, an
/// unsubscribe link in the layout): warnings in the log, an error with
/// `--strict`.
pub fn check_preflight(
    cfg: &Config,
    c: &rundbrief_store::CampaignContent,
    strict: bool,
) -> anyhow::Result<()> {
    let dir = c
        .layout
        .as_deref()
        .map(std::path::Path::new)
        .or(cfg.templates.dir.as_deref());
    let layout_html = match dir {
        Some(d) => Some(
            std::fs::read_to_string(d.join("layout.html.hbs"))
                .with_context(|| format!("reading {}", d.join("layout.html.hbs").display()))?,
        ),
        None => None,
    };
    let from = c
        .from
        .clone()
        .or_else(|| cfg.sending.from.clone())
        .unwrap_or_default();
    let warnings = crate::cmd::preflight::preflight(cfg, layout_html.as_deref(), &from);
    for w in &warnings {
        tracing::warn!("pre-flight: {w}");
    }
    if strict && !warnings.is_empty() {
        bail!(
            "pre-flight found {} problem(s) and --strict is set:\n  {}",
            warnings.len(),
            warnings.join("\n  ")
        );
    }
    Ok(())
}

/// Compiles a stored campaign (shared by preview and send).
fn prepare_campaign(
    cfg: &Config,
    c: &rundbrief_store::CampaignContent,
) -> anyhow::Result<crate::cmd::render::Prepared> {
    prepare_campaign_for(
        cfg,
        c,
        c.campaign.lists.first().map_or("", String::as_str),
        c.list_labels.first(),
    )
}

/// The campaign compiled for the recipients of one of its lists (List-Id,
/// footer), with `date` in the time zone of its schedule.
fn prepare_campaign_for(
    cfg: &Config,
    c: &rundbrief_store::CampaignContent,
    list_name: &str,
    list_label: Option<&rundbrief_core::ListLabel>,
) -> anyhow::Result<crate::cmd::render::Prepared> {
    let campaign_id = c.campaign.id.simple().to_string();
    prepare(
        cfg,
        Campaign {
            subject: &c.campaign.subject,
            content: c.content.clone(),
            content_kind: if c.content_kind == "html" {
                ContentKind::Html
            } else {
                ContentKind::Markdown
            },
            layout: c.layout.as_deref().map(std::path::Path::new),
            from: c.from.clone(),
            list_name,
            list_label,
            campaign_id: &campaign_id,
            tz: c.tz.as_deref().unwrap_or("UTC"),
        },
    )
}

/// The throttle from `[sending]`: global rate, per-domain rate and concurrency.
fn throttle_from(cfg: &Config) -> rundbrief_sender::throttle::Throttle {
    use rundbrief_sender::throttle::{DomainLimits, Limits, Throttle};
    let s = &cfg.sending;
    Throttle::new(Limits {
        global_rate: s.rate,
        default_domain: DomainLimits {
            rate: s.domain_rate,
            concurrency: s.domain_concurrency,
        },
        domains: s
            .domains
            .iter()
            .map(|(d, l)| {
                (
                    d.to_ascii_lowercase(),
                    DomainLimits {
                        rate: l.rate,
                        concurrency: l.concurrency,
                    },
                )
            })
            .collect(),
        ..Limits::default()
    })
}
