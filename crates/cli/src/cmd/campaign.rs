//! `rundbrief campaign …`: flags → a request to the application layer
//! (`rundbrief_app`) → printed results. Validation, compiling, sending and
//! the status object are the app's; this module reads files and flags,
//! draws the progress bar and prints.

use crate::args::CampaignCmd;
use crate::output;
use anyhow::{Context, bail};
use rundbrief_app::campaigns::{
    TOP_ERRORS, check_content, check_name, check_preflight, check_relay, check_subject,
    prepare_first,
};
use rundbrief_app::sending::{SendOptions, SendReport};
use rundbrief_app::{App, Reason};
use rundbrief_core::{CampaignState, ContentKind};
use rundbrief_store::NewCampaign;
use std::io::IsTerminal;
use std::process::ExitCode;

pub async fn run(app: &App, cmd: &CampaignCmd, json: bool) -> anyhow::Result<ExitCode> {
    let (store, cfg) = (&app.store, app.config.as_ref());
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
            check_subject(subject).map_err(subject_hint)?;
            if let Some(f) = from {
                rundbrief_render::check_from(f)?;
            }
            if let Some(r) = relay {
                check_relay(cfg, r).context("--relay")?;
            }
            let c = store
                .create_campaign(&NewCampaign {
                    name: name.clone(),
                    lists: lists.clone(),
                    subject: subject.clone(),
                    content: text,
                    content_kind: kind,
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
            let v = rundbrief_app::campaigns::status(app, &c).await?;
            if json {
                output::json(&v)?;
            } else {
                println!("{}", status_line(&c.campaign.name, &v));
                print_relays(&v);
                print_providers(&c.campaign.name, &v);
                print_errors(&v, None);
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::Show { name } => {
            let c = store.campaign(name).await?;
            let sched = store.campaign_schedule(c.campaign.id).await?;
            let runs = store.campaign_runs(c.campaign.id).await?;
            let status = rundbrief_app::campaigns::status(app, &c).await?;
            let next_run = rundbrief_app::campaigns::next_run(&sched, app.clock.now())?;
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
                println!("subject   {}", output::safe(&c.campaign.subject));
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
                check_subject(s).map_err(subject_hint)?;
            }
            if let Some(f) = from {
                rundbrief_render::check_from(f)?;
            }
            if let Some(r) = relay {
                check_relay(cfg, r).context("--relay")?;
            }
            let (text, kind) = match content {
                Some(path) => {
                    let (text, kind) = read_content(path)?;
                    (Some(text), Some(kind))
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
            prepare_first(cfg, &store.campaign(name).await?)?;
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
            local_time,
            tz_attr,
            default_tz,
        } => {
            // Scheduling again keeps the zone and the window unless given.
            let campaign_id = store.campaign(name).await?.campaign.id;
            let current = store.campaign_schedule(campaign_id).await?.schedule;
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
            let local = match (local_time, at.as_deref()) {
                (true, Some(a)) => Some(local_plan(a, tz_attr, default_tz.as_deref(), zone)?),
                _ => None,
            };
            let send_at = match &local {
                // A day: when its time begins anywhere (UTC+14); else now.
                Some(l) => Some(
                    l.date
                        .map(|d| rundbrief_scheduler::local::earliest_start(d, l.at))
                        .unwrap_or_else(|| app.clock.now()),
                ),
                None => at
                    .as_deref()
                    .map(|a| rundbrief_scheduler::parse_at(a, zone))
                    .transpose()?,
            };
            let next = match cron {
                Some(p) => Some(
                    rundbrief_scheduler::Recurrence::parse(p, zone)?
                        .next_after(app.clock.now())
                        .context("the cron expression never matches")?,
                ),
                None => send_at,
            };
            if let Some(at) = send_at
                && at < app.clock.now()
                && local.is_none()
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
            let stored = local.as_ref().map(|l| rundbrief_store::LocalTime {
                at: if chrono::Timelike::second(&l.at) == 0 {
                    l.at.format("%H:%M").to_string()
                } else {
                    l.at.format("%H:%M:%S").to_string()
                },
                date: l.date.map(|d| d.to_string()),
                tz_attr: l.attr.clone(),
                default_tz: l.default_tz.name().to_string(),
            });
            store.set_local_time(campaign_id, stored.as_ref()).await?;
            let local_json = match (&local, &stored) {
                (Some(l), Some(st)) => {
                    let groups = store.recipients_by_attr(campaign_id, &l.attr).await?;
                    let mut o = serde_json::to_value(st)?;
                    o["recipients"] = groups.iter().map(|g| g.count).sum::<u64>().into();
                    o["fallback"] = l.fallbacks(&groups).into();
                    o
                }
                _ => serde_json::Value::Null,
            };
            if json {
                output::json(&serde_json::json!({
                    "campaign": name,
                    "state": "scheduled",
                    "next_run": next,
                    "local_time": local_json,
                }))?;
            } else if let Some(l) = &local {
                println!(
                    "campaign {name} scheduled; each reader gets it at {}{} in their own zone \
                     (attribute `{}`), starting {} — `rundbrief serve` sends it",
                    local_json["at"].as_str().unwrap_or("?"),
                    l.date.map(|d| format!(" on {d}")).unwrap_or_default(),
                    l.attr,
                    next.map(output::when).unwrap_or_else(|| "-".into()),
                );
                let fallback = local_json["fallback"].as_u64().unwrap_or(0);
                println!(
                    "  {} of {} recipients have no known zone and get it at that time in {} (--default-tz)",
                    fallback,
                    local_json["recipients"].as_u64().unwrap_or(0),
                    l.default_tz.name()
                );
                if let Some(w) = window {
                    println!(
                        "  sending only {}-{} {tz}: a due time outside the window waits for it",
                        w.start_str(),
                        w.end_str()
                    );
                }
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
        CampaignCmd::Start {
            name,
            strict,
            no_dns_check,
        } => {
            let c = store.campaign(name).await?;
            check_preflight(cfg, &c, *strict).map_err(strict_hint)?;
            let from = store
                .transition_campaign(name, CampaignState::Running)
                .await?;
            // The check runs now, so what `serve` sends is checked already;
            // --no-dns-check is kept with the campaign for `serve`'s passes.
            store
                .set_campaign_skips_dns_check(c.campaign.id, *no_dns_check)
                .await?;
            let dns = if *no_dns_check {
                None
            } else {
                store.materialise_deliveries(c.campaign.id).await?;
                app.check_campaign_domains(c.campaign.id).await?
            };
            if json {
                let mut v = serde_json::json!({ "campaign": name, "from": from.as_str(), "state": "running" });
                if let Some(d) = dns {
                    v["skipped"] = d.skipped.into();
                }
                output::json(&v)?;
            } else {
                println!("campaign {name}: {from} -> running; `rundbrief serve` sends it");
                if let Some(d) = dns.filter(|d| d.skipped > 0) {
                    println!(
                        "  {} recipient(s) skipped: their domain cannot receive mail (`campaign status {name}` shows why)",
                        d.skipped
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CampaignCmd::RetryFailed {
            name,
            send,
            relay,
            pool,
            no_dns_check,
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
                    strict: false,
                    no_dns_check: *no_dns_check,
                };
                let r = send_foreground(app, name, &opts, !json).await?;
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
        } => send_test(app, name, to, relay.as_deref(), *insecure, json).await,
        CampaignCmd::Preview { name, to, out } => {
            let c = store.campaign(name).await?;
            let prepared = prepare_first(cfg, &c)?;
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
            let bytes = prepared.renderer.render(&recipient, app.clock.now())?;
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
            no_dns_check,
        } => {
            send(
                *wait,
                *strict,
                false,
                app,
                name,
                relay.as_deref(),
                *pool,
                *insecure,
                *no_dns_check,
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
            no_dns_check,
            provider,
        } => {
            // The relay is checked first: a resume that cannot send lifts
            // nothing (a campaign that cannot resume says so below).
            let c = store.campaign(name).await?;
            let state = c.campaign.state;
            if state == CampaignState::Running || state.can_become(CampaignState::Running) {
                app.relay(relay.as_deref().or(c.relay.as_deref()))?;
            }
            let lifted = app.lift_breaker(name, provider.as_deref()).await?;
            if let Some(reason) = &lifted.paused_reason {
                eprintln!("{name}: the circuit breaker's pause is lifted (it was: {reason})");
            }
            for p in &lifted.providers {
                eprintln!("{name}: provider {p} is no longer suspended");
            }
            send(
                *wait,
                false,
                true,
                app,
                name,
                relay.as_deref(),
                *pool,
                *insecure,
                *no_dns_check,
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
    store: &rundbrief_store::Store,
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

#[allow(clippy::too_many_arguments)]
async fn send(
    wait: bool,
    strict: bool,
    resume: bool,
    app: &App,
    name: &str,
    relay: Option<&str>,
    pool: Option<usize>,
    insecure: bool,
    no_dns_check: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    let c = store.campaign(name).await?;
    if c.campaign.state == CampaignState::Paused && !resume {
        bail!("campaign `{name}` is paused: `rundbrief campaign resume {name}` continues it");
    }
    let opts = SendOptions {
        relay: relay.map(str::to_string),
        pool,
        insecure,
        wait,
        strict,
        no_dns_check,
    };
    let r = send_foreground(app, name, &opts, !json).await?;
    let (counts, secs, sent_now) = (r.counts, r.seconds, r.sent_now);
    let c = store.campaign(name).await?;
    let mut v = serde_json::to_value(&counts)?;
    v["errors"] = serde_json::to_value(store.campaign_errors(c.campaign.id, TOP_ERRORS).await?)?;
    // Claimed by another or a dead worker: not "deferred", not lost.
    v["leased"] = r.leased.into();
    v["leased_until"] = serde_json::to_value(r.leased_until)?;
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
                _ if counts.pending > counts.sending => format!(
                    "; {} not due yet (local time) and deferred ones go out with `serve` or `campaign send --wait`",
                    counts.pending - counts.sending
                ),
                _ => "; deferred ones are retried by `serve` or `campaign send --wait`".into(),
            }
        );
        if counts.skipped > 0 {
            println!(
                "  {} skipped: the recipient's domain cannot receive mail (undeliverable; reasons below)",
                counts.skipped
            );
        }
        if r.leased > 0 {
            println!(
                "  {} still claimed by another (or a stopped) worker until {}: they go out after that \
                 (`rundbrief campaign send {name} --wait` waits for them; so does `serve`)",
                r.leased,
                r.leased_until
                    .map(crate::output::when)
                    .unwrap_or_else(|| "their lease ends".into())
            );
        }
        print_errors(&v, Some(name));
    }
    Ok(ExitCode::SUCCESS)
}

/// The app's foreground send with a progress bar on a terminal (when
/// `progress`) and Ctrl-C/SIGTERM draining it, the hints in the CLI's words.
pub async fn send_foreground(
    app: &App,
    name: &str,
    opts: &SendOptions,
    progress: bool,
) -> anyhow::Result<SendReport> {
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
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
    let report = app
        .send_foreground(name, opts, &stop, &|total, n| {
            if let Some(b) = &bar {
                b.set_length(total);
                b.set_position(n);
            }
        })
        .await;
    on_signal.abort();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    report.map_err(|e| match e.reason() {
        Some(Reason::CampaignPaused) => anyhow::anyhow!(
            "campaign `{name}` is paused: `rundbrief campaign resume {name}` continues it"
        ),
        Some(Reason::CampaignFinished) => anyhow::anyhow!(
            "campaign `{name}` is finished: every recipient has an outcome \
             (`rundbrief campaign retry-failed {name}` sends the failed ones again)"
        ),
        _ => strict_hint(e),
    })
}

/// `--at … --local-time` with `--tz-attr` and `--default-tz` (else the
/// campaign's zone), checked, with errors that name the flag.
fn local_plan(
    at: &str,
    attr: &str,
    default_tz: Option<&str>,
    zone: rundbrief_scheduler::local::Tz,
) -> anyhow::Result<rundbrief_scheduler::local::Plan> {
    let Some((date, time)) = rundbrief_scheduler::local::parse_local_at(at) else {
        bail!(
            "--at `{at}` with --local-time: give a wall-clock time (\"09:00\") or a day and a time \
             (\"2026-12-04 09:00\"), read in each reader's zone; not an instant with an offset"
        );
    };
    if !rundbrief_scheduler::local::valid_attr(attr) {
        bail!(
            "--tz-attr `{attr}`: an attribute name is 1-64 letters, digits, `_` or `-` \
             (the CSV column that holds each reader's zone, e.g. tz)"
        );
    }
    let default_tz = match default_tz {
        Some(z) => rundbrief_scheduler::parse_tz(z).context("--default-tz")?,
        None => zone,
    };
    Ok(rundbrief_scheduler::local::Plan {
        at: time,
        date,
        attr: attr.to_string(),
        default_tz,
    })
}

/// The pre-flight error with the flag that turned it on.
fn strict_hint(e: rundbrief_app::AppError) -> anyhow::Error {
    if e.reason() == Some(Reason::PreflightStrict) {
        let s = e.to_string();
        return anyhow::anyhow!("{}", s.replace("strict mode is on", "--strict is set"));
    }
    crate::cmd::cli_hint(e)
}

/// The subject error with the flag that sets it.
fn subject_hint(e: rundbrief_app::AppError) -> anyhow::Error {
    if e.reason() == Some(Reason::EmptySubject) {
        return anyhow::anyhow!(
            "the subject is empty: give --subject TEXT (a template, e.g. \"News for {{{{subscriber.name}}}}\")"
        );
    }
    e.into()
}

/// A campaign's content file, read and checked as a template: its text and
/// the kind stored with it (from the extension).
fn read_content(path: &std::path::Path) -> anyhow::Result<(String, ContentKind)> {
    let kind = crate::cmd::render::content_kind(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    check_content(&path.display().to_string(), &text)?;
    Ok((text, kind))
}

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
            output::safe(e["error"].as_str().unwrap_or("(no error recorded)"))
        );
    }
    if let Some(name) = hint {
        println!(
            "  (`rundbrief campaign status {name}` lists these reasons again; -v logs each delivery)"
        );
    }
}

/// The campaign's relays when it has several or a quota: use this hour
/// and day against the quota, and whether each takes mail now.
fn print_relays(v: &serde_json::Value) {
    let relays = v["relays"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let quota = |r: &serde_json::Value| r["max_per_hour"].is_u64() || r["max_per_day"].is_u64();
    if relays.len() < 2 && !relays.iter().any(quota) {
        return;
    }
    for r in relays {
        let of = |k: &str| {
            r[k].as_u64()
                .map(|n| format!(" of {n}"))
                .unwrap_or_default()
        };
        let mut line = format!(
            "  relay {}: {}{} sent this hour, {}{} today",
            output::safe(r["name"].as_str().unwrap_or("?")),
            r["sent_hour"].as_u64().unwrap_or(0),
            of("max_per_hour"),
            r["sent_day"].as_u64().unwrap_or(0),
            of("max_per_day"),
        );
        match r["state"].as_str().unwrap_or("ok") {
            "at quota" => line.push_str(&format!(
                "; AT QUOTA until {}",
                r["until"].as_str().unwrap_or("?")
            )),
            "rested" => line.push_str(&format!(
                "; RESTED until {}: {}",
                r["until"].as_str().unwrap_or("?"),
                output::safe(r["reason"].as_str().unwrap_or(""))
            )),
            _ => {}
        }
        println!("{line}");
    }
}

/// Why the breaker paused the campaign, and the providers that are slowed
/// or suspended (with the command that lifts a suspension).
fn print_providers(name: &str, v: &serde_json::Value) {
    if let Some(reason) = v["paused_reason"].as_str() {
        println!(
            "  paused by the circuit breaker: {} (`rundbrief campaign resume {name}` continues it)",
            output::safe(reason)
        );
    }
    // Every slowed or suspended provider, and the largest few others.
    let (mut ok_shown, mut ok_left) = (0, 0);
    for p in v["providers"].as_array().into_iter().flatten() {
        let pname = p["name"].as_str().unwrap_or("?");
        let state = p["state"].as_str().unwrap_or("?");
        if state == "sending" || state == "waiting" {
            if ok_shown == 5 {
                ok_left += 1;
                continue;
            }
            ok_shown += 1;
        }
        let line = format!(
            "  provider {pname}: {} pending, {} sent, {:.0} msg/s",
            p["pending"].as_u64().unwrap_or(0),
            p["sent"].as_u64().unwrap_or(0),
            p["rate"].as_f64().unwrap_or(0.0)
        );
        match state {
            "suspended" => println!(
                "{line}; SUSPENDED: {} (`rundbrief campaign resume {name} --provider {pname}` lifts it)",
                output::safe(p["reason"].as_str().unwrap_or(""))
            ),
            "slowed" => println!(
                "{line}; slowed: {}",
                output::safe(p["reason"].as_str().unwrap_or(""))
            ),
            _ => println!("{line}"),
        }
    }
    if ok_left > 0 {
        println!("  … and {ok_left} more provider(s) (`--json` lists them)");
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
    if let Some(held) = v["held_prunes"].as_u64().filter(|n| *n > 0) {
        line.push_str(&format!(
            "; {held} prune(s) held for review (`rundbrief bounce held ls`)"
        ));
    }
    if let Some(rate) = v["rate_per_s"].as_f64() {
        line.push_str(&format!("; {rate:.1} msg/s"));
        if let Some(eta) = v["eta_s"].as_u64() {
            line.push_str(&format!(", about {} left", humanize_secs(eta)));
            if let (Some(at), Some(why)) = (v["eta"].as_str(), v["eta_reason"].as_str()) {
                line.push_str(&format!(" (done by {at}; bounded by {why})"));
            }
        }
    }
    let lt = &v["local_time"];
    if let Some(at) = lt["at"].as_str() {
        line.push_str(&format!(
            "\n  local time: {at}{} in each reader's zone (attribute `{}`); {} reader(s) without a known zone get it in {}",
            lt["date"].as_str().map(|d| format!(" on {d}")).unwrap_or_default(),
            lt["tz_attr"].as_str().unwrap_or("tz"),
            lt["fallback"].as_u64().unwrap_or(0),
            lt["default_tz"].as_str().unwrap_or("UTC"),
        ));
    }
    // Pending by due hour, when anything waits for a later hour.
    if let Some(due) = v["due"]
        .as_array()
        .filter(|d| d.len() > 1 || lt.is_object())
    {
        for d in due {
            line.push_str(&format!(
                "\n  due {}: {} pending",
                d["at"].as_str().unwrap_or("?"),
                d["pending"].as_u64().unwrap_or(0)
            ));
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
    app: &App,
    name: &str,
    to: &str,
    relay: Option<&str>,
    insecure: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let addr = crate::cmd::address(to)?;
    let outcome = app
        .send_test(name, &addr, relay, insecure)
        .await
        .map_err(crate::cmd::cli_hint)?;
    let ok = outcome.is_sent();
    if json {
        output::json(&serde_json::json!({
            "to": addr.as_str(),
            "outcome": outcome.as_str(),
            "error": outcome.error().map(|e| e.to_string()),
        }))?;
    } else if ok {
        println!("test message sent to {addr}");
    } else {
        println!(
            "test message to {addr} {}: {}",
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
