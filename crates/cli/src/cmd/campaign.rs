//! `rundbrief campaign …`: create, list, send in the foreground, status.
//! The scheduler (schedules, pause/resume, leases, several workers) comes
//! later; `send` is the single-process path it will reuse.

use crate::args::CampaignCmd;
use crate::cmd::endpoint::apply_class;
use crate::cmd::render::{Campaign, content_kind, prepare};
use crate::output;
use anyhow::{Context, bail};
use rundbrief_core::{CampaignState, Config, DeliveryState};
use rundbrief_render::ContentKind;
use rundbrief_sender::{Delivery, Outcome, Relay, Sender};
use rundbrief_store::{NewCampaign, Store};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Deliveries read per batch, per connection of the pool (8 to 500 in all):
/// small enough that a pause takes effect quickly.
const BATCH_PER_CONNECTION: u64 = 8;
/// How many times a deferred delivery is retried within one `send`.
const MAX_ATTEMPTS: i32 = 3;

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
            let kind = content_kind(content)?;
            let text = std::fs::read_to_string(content)
                .with_context(|| format!("cannot read {}", content.display()))?;
            rundbrief_render::check_template(&content.display().to_string(), &text)?;
            rundbrief_render::check_template("subject", subject)?;
            let c = store
                .create_campaign(&NewCampaign {
                    name: name.clone(),
                    lists: lists.clone(),
                    subject: subject.clone(),
                    content: text,
                    content_kind: if kind == ContentKind::Html {
                        "html"
                    } else {
                        "markdown"
                    }
                    .into(),
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
            let mut counts = store.campaign_counts(c.campaign.id).await?;
            counts.state = c.campaign.state.to_string();
            if json {
                output::json(&counts)?;
            } else {
                println!(
                    "{}: {}; {} recipients: {} sent, {} deferred, {} failed, {} rejected, {} bounced, {} pending",
                    c.campaign.name,
                    counts.state,
                    counts.total,
                    counts.sent,
                    counts.deferred,
                    counts.failed,
                    counts.rejected,
                    counts.bounced,
                    counts.pending
                );
            }
            Ok(ExitCode::SUCCESS)
        }
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
            wait: _,
            insecure,
        } => {
            send(
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
            relay,
            pool,
            insecure,
        } => {
            store
                .transition_campaign(name, CampaignState::Running)
                .await?;
            send(
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
        println!("campaign {name}: {from} -> {to} (a running send stops within one batch)");
    }
    Ok(ExitCode::SUCCESS)
}

/// How `campaign send` (and the demo) runs a campaign in the foreground.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Relay URL overriding the campaign's and the config's.
    pub relay: Option<String>,
    /// SMTP connections.
    pub pool: usize,
    /// Accept invalid TLS certificates (test relays only).
    pub insecure: bool,
    /// Wait for deferred deliveries' retries until each has a final outcome.
    pub wait: bool,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
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
    resume: bool,
    store: &Store,
    cfg: &Config,
    name: &str,
    relay: Option<&str>,
    pool: usize,
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
        wait: true,
        progress: !json,
    };
    let r = send_foreground(store, cfg, name, &opts).await?;
    let (counts, secs, sent_now) = (r.counts, r.seconds, r.sent_now);
    let finished = r.state == CampaignState::Finished;
    if json {
        let mut v = serde_json::to_value(&counts)?;
        v["seconds"] = secs.into();
        v["msgs_per_s"] = (sent_now as f64 / secs.max(1e-9)).into();
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
            if finished {
                ""
            } else {
                "; run `campaign send` again later for the deferred ones"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the campaign `name` in this process until every recipient has an
/// outcome (or it is paused or cancelled meanwhile).
pub async fn send_foreground(
    store: &Store,
    cfg: &Config,
    name: &str,
    opts: &SendOptions,
) -> anyhow::Result<SendReport> {
    let (relay, pool, insecure, json) = (
        opts.relay.as_deref(),
        opts.pool,
        opts.insecure,
        !opts.progress,
    );
    let c = store.campaign(name).await?;
    match c.campaign.state {
        CampaignState::Cancelled => bail!("campaign `{name}` was cancelled"),
        CampaignState::Finished => bail!(
            "campaign `{name}` is finished: every recipient has an outcome (create a new campaign to send again)"
        ),
        _ => {}
    }
    let relay_url = relay
        .map(str::to_string)
        .or(c.relay.clone())
        .or(cfg.relay.clone())
        .context("no relay: pass --relay smtp://HOST:PORT, set `relay` in rundbrief.toml or RUNDBRIEF_RELAY")?;
    let mut relay = Relay::parse(&relay_url).with_context(|| format!("relay `{relay_url}`"))?;
    relay.options.pool_size = pool.max(1);
    relay.options.dangerous_accept_invalid_certs = insecure;
    let prepared = Arc::new(prepare_campaign(cfg, &c)?);
    let sender = Arc::new(Sender::new(relay, cfg.verp()?)?);
    let throttle = Arc::new(throttle_from(cfg));
    store
        .set_campaign_state(c.campaign.id, CampaignState::Running)
        .await?;
    let added = store.materialise_deliveries(c.campaign.id).await?;
    let total = store.campaign_counts(c.campaign.id).await?.total;
    tracing::info!(campaign = name, added, total, "sending");
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, {eta} left) {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let started = Instant::now();
    let list_id = c.first_list_id.unwrap_or_default();
    let mut sent_now = 0u64;
    for round in 0..MAX_ATTEMPTS {
        let states: &[DeliveryState] = if round == 0 {
            &[DeliveryState::Pending, DeliveryState::Deferred]
        } else {
            &[DeliveryState::Deferred]
        };
        loop {
            // Pause and cancel are state changes, honoured within one batch.
            if store.campaign_state(c.campaign.id).await? != CampaignState::Running {
                break;
            }
            let batch: Vec<_> = store
                .deliveries_in(
                    c.campaign.id,
                    states,
                    (pool as u64 * BATCH_PER_CONNECTION).clamp(8, 500),
                )
                .await?
                .into_iter()
                .filter(|d| d.attempts < MAX_ATTEMPTS)
                .collect();
            if batch.is_empty() {
                break;
            }
            let mut tasks = tokio::task::JoinSet::new();
            let limit = Arc::new(tokio::sync::Semaphore::new(pool.max(1) * 2));
            for d in batch {
                let recipient = prepared.recipient(
                    d.email.clone(),
                    d.name.clone(),
                    d.attributes.clone(),
                    d.subscriber_id,
                    list_id,
                    d.delivery_id,
                );
                let rendered = prepared.renderer.render(&recipient, chrono::Utc::now());
                let (sender, throttle, permit) = (
                    Arc::clone(&sender),
                    Arc::clone(&throttle),
                    Arc::clone(&limit).acquire_owned().await?,
                );
                tasks.spawn(async move {
                    let domain = d.email.rsplit('@').next().unwrap_or_default().to_string();
                    let outcome = match rendered {
                        Ok(bytes) => {
                            // Per-domain concurrency and rate, then the global rate.
                            let _slot = throttle.acquire(&domain).await;
                            let outcome = sender
                                .send(Delivery {
                                    id: d.delivery_id,
                                    to: d.email.clone(),
                                    message: Arc::from(bytes),
                                })
                                .await;
                            let reply = outcome.error().and_then(|e| e.reply());
                            throttle.report(
                                &domain,
                                reply.map(|r| r.code),
                                reply.and_then(|r| r.enhanced).map(|e| (e.class, e.subject)),
                                outcome.is_sent(),
                            );
                            Ok(outcome)
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    drop(permit);
                    (d, outcome)
                });
            }
            while let Some(done) = tasks.join_next().await {
                let (d, outcome) = done.context("a send task failed")?;
                let (state, error) = match &outcome {
                    Err(render_error) => (
                        DeliveryState::Failed,
                        Some(format!("render: {render_error}")),
                    ),
                    Ok(Outcome::Sent { .. }) => (DeliveryState::Sent, None),
                    Ok(Outcome::Deferred { error }) => {
                        (DeliveryState::Deferred, Some(error.to_string()))
                    }
                    Ok(Outcome::Rejected { error }) => {
                        (DeliveryState::Rejected, Some(error.to_string()))
                    }
                    Ok(Outcome::Failed { error }) => {
                        (DeliveryState::Failed, Some(error.to_string()))
                    }
                };
                store
                    .record_delivery(d.delivery_id, state, error.as_deref())
                    .await?;
                if let Ok(Outcome::Rejected { error }) = &outcome
                    && let Some(reply) = error.reply()
                {
                    // A 5xx at RCPT or DATA is a synchronous bounce: same classification and scoring.
                    let enhanced = reply.enhanced.map(|e| e.to_string());
                    let (class, rule) = rundbrief_bounce::classify_reply(
                        reply.code,
                        enhanced.as_deref(),
                        &reply.text,
                    );
                    if let Some(target) = store.delivery_target(d.delivery_id).await? {
                        apply_class(
                            store,
                            &crate::cmd::endpoint::Policy::from_config(cfg),
                            &target,
                            class,
                            enhanced.as_deref().unwrap_or("-"),
                            rule,
                            &format!("{} while sending", error.step().as_str()),
                        )
                        .await?;
                    }
                }
                if state != DeliveryState::Deferred {
                    sent_now += 1;
                    if let Some(b) = &bar {
                        b.inc(1);
                    }
                }
            }
            if states == [DeliveryState::Deferred] {
                break;
            }
        }
        if store.campaign_state(c.campaign.id).await? != CampaignState::Running
            || store.campaign_counts(c.campaign.id).await?.deferred == 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500 * (round as u64 + 1))).await;
    }
    sender.shutdown().await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut counts = store.campaign_counts(c.campaign.id).await?;
    let finished = counts.pending == 0 && counts.deferred == 0;
    let state = match store.campaign_state(c.campaign.id).await? {
        CampaignState::Running if finished => CampaignState::Finished,
        CampaignState::Running => CampaignState::Paused,
        other => other, // paused or cancelled meanwhile
    };
    store.set_campaign_state(c.campaign.id, state).await?;
    counts.state = state.to_string();
    Ok(SendReport {
        counts,
        state,
        seconds: started.elapsed().as_secs_f64(),
        sent_now,
    })
}

/// Compiles a stored campaign (shared by preview and send).
fn prepare_campaign(
    cfg: &Config,
    c: &rundbrief_store::CampaignContent,
) -> anyhow::Result<crate::cmd::render::Prepared> {
    let list_name = c.campaign.lists.first().cloned().unwrap_or_default();
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
            list_name: &list_name,
            campaign_id: &campaign_id,
            tz: "UTC",
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
