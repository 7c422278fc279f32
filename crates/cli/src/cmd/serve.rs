//! `rundbrief serve`: the scheduler, the sender, the bounce endpoint, the
//! HTTP endpoint and the metrics in one long-running process.
//!
//! Every `--tick` seconds: start what the schedules say is due (one-off
//! campaigns, one run per due occurrence of a recurring one), then give each
//! running campaign that has no task here a task that sends what is due now
//! ([`rundbrief_scheduler::Runner`] with `wait` off: it returns when only
//! later retries are left or the send window is closed, and the next tick
//! looks again). Several `serve` processes on one PostgreSQL share the work
//! through leased claims. SIGTERM/Ctrl-C: every task finishes its sends in
//! flight and releases what it claimed but did not start; then the
//! endpoints stop.

use crate::args::ServeArgs;
use crate::cmd::campaign::{SendOptions, runner_for};
use anyhow::Context;
use rundbrief_core::{CampaignState, Config, DeliveryState};
use rundbrief_scheduler::{Hooks, SystemClock};
use rundbrief_store::{PendingDelivery, Store};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn addr_or_off(s: &str, what: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("{what} `{s}` is not an address like 127.0.0.1:2525 (or `off`)"))
}

pub async fn run(store: &Store, cfg: &Config, a: &ServeArgs) -> anyhow::Result<ExitCode> {
    let bounce_listen = addr_or_off(&a.bounce_listen, "--bounce-listen")?;
    let http_listen = addr_or_off(&a.http_listen, "--http-listen")?;
    let metrics_listen = addr_or_off(&a.metrics_listen, "--metrics-listen")?;
    let stop = CancellationToken::new();
    let metrics = Arc::new(crate::metrics::Metrics::new());

    let endpoint = match bounce_listen {
        Some(addr) => {
            let e = crate::cmd::bounce::start_endpoint(
                store,
                cfg,
                addr,
                10 << 20,
                128,
                true,
                stop.child_token(),
                metrics.endpoint_connections(),
            )
            .await?;
            eprintln!("bounce endpoint on {} for *@{}", e.addr, e.domain);
            Some(e)
        }
        None => None,
    };
    let http = match http_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--http-listen)"))?;
            eprintln!("HTTP endpoint on {}", listener.local_addr()?);
            let state = rundbrief_http::AppState::new(
                store.clone(),
                cfg.signer()?,
                cfg.http.clone(),
                crate::cmd::http::mailer(cfg, a.relay.as_deref())?,
            );
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                rundbrief_http::serve(listener, state, stop.cancelled_owned()).await
            }))
        }
        None => None,
    };
    let metrics_task = match metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
            eprintln!(
                "metrics: listening on {} (GET /metrics)",
                listener.local_addr()?
            );
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                Arc::clone(&metrics),
                stop.clone(),
            )))
        }
        None => None,
    };

    let on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::cmd::shutdown_signal().await;
            tracing::info!("stopping: finishing the sends in flight");
            stop.cancel();
        })
    };
    let mut tasks: HashMap<Uuid, tokio::task::JoinHandle<()>> = HashMap::new();
    let opts = SendOptions {
        relay: a.relay.clone(),
        pool: a.pool,
        insecure: a.insecure,
        wait: false,
        progress: false,
        strict: false,
    };
    eprintln!(
        "scheduler running ({} database); SIGTERM or Ctrl-C drains and stops",
        store.backend_name()
    );
    while !stop.is_cancelled() {
        if let Err(e) = rundbrief_scheduler::tick::tick(store, &SystemClock).await {
            tracing::error!("scheduler tick failed: {e}");
        }
        tasks.retain(|_, t| !t.is_finished());
        match store.active_campaigns().await {
            Ok(active) => {
                let mut running = 0;
                for c in active {
                    if c.state != CampaignState::Running {
                        continue;
                    }
                    running += 1;
                    if let Ok(counts) = store.campaign_counts(c.id).await {
                        metrics.queue_depth(&c.name, counts.pending + counts.deferred);
                    }
                    if tasks.contains_key(&c.id) {
                        continue;
                    }
                    let task = spawn_run(store, cfg, &c.name, c.id, &opts, &metrics, &stop).await;
                    tasks.insert(c.id, task);
                }
                metrics.campaigns_running(running);
            }
            Err(e) => tracing::error!("reading campaigns failed: {e}"),
        }
        if let Ok(m) = store.metric_counts().await {
            metrics.db_counts(&m);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(a.tick.max(1))) => {}
            () = stop.cancelled() => {}
        }
    }
    for (_, t) in tasks.drain() {
        let _ = t.await;
    }
    on_signal.abort();
    if let Some(e) = endpoint {
        e.finish(store, &crate::cmd::endpoint::Policy::from_config(cfg))
            .await?;
    }
    if let Some(h) = http {
        h.await
            .context("the HTTP task failed")?
            .context("the HTTP endpoint failed")?;
    }
    if let Some(m) = metrics_task {
        let _ = m.await;
    }
    eprintln!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// One task sending what is due of one campaign, then ending.
async fn spawn_run(
    store: &Store,
    cfg: &Config,
    name: &str,
    id: Uuid,
    opts: &SendOptions,
    metrics: &Arc<crate::metrics::Metrics>,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (store, cfg, name, opts, metrics, stop) = (
        store.clone(),
        cfg.clone(),
        name.to_string(),
        opts.clone(),
        Arc::clone(metrics),
        stop.clone(),
    );
    tokio::spawn(async move {
        let result = async {
            let c = store.campaign(&name).await?;
            let mut runner = runner_for(&store, &cfg, &c, &opts).await?;
            runner.hooks = Arc::new(Observed {
                inner: runner.hooks,
                metrics,
            });
            let report = runner.run(id, &stop, &|_| {}).await;
            runner.sender.shutdown().await;
            let report = report?;
            if report.attempts > 0 {
                tracing::info!(campaign = %name, attempts = report.attempts, ended = ?report.ended, "campaign pass");
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(campaign = %name, "sending failed: {e:#}");
        }
    })
}

/// Counts every outcome in the metrics.
struct Observed {
    inner: Arc<dyn Hooks>,
    metrics: Arc<crate::metrics::Metrics>,
}

#[async_trait::async_trait]
impl Hooks for Observed {
    fn render(&self, d: &PendingDelivery) -> Result<Vec<u8>, String> {
        self.inner.render(d)
    }

    async fn rejected(
        &self,
        d: &PendingDelivery,
        error: &rundbrief_sender::SendError,
    ) -> Result<(), String> {
        self.inner.rejected(d, error).await
    }

    fn observe(&self, domain: &str, state: DeliveryState, latency: Duration) {
        self.metrics.sent(domain, state, latency);
        self.inner.observe(domain, state, latency);
    }
}
