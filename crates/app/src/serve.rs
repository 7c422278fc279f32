//! The `serve` supervisor: every tick, start what the schedules say is due
//! (one-off campaigns, one run per due occurrence of a recurring one), then
//! give each running campaign that has no task here a task that sends what
//! is due now ([`rundbrief_scheduler::Runner`] with `wait` off: it returns
//! when only later retries are left or the send window is closed, and the
//! next tick looks again). Several `serve` processes on one PostgreSQL share
//! the work through leased claims. When `stop` is cancelled, every task
//! finishes its sends in flight and releases what it claimed but did not start.

use crate::App;
use crate::sending::SendOptions;
use rundbrief_core::CampaignState;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Runs the scheduler until `stop` is cancelled, then waits for every
/// campaign task to drain.
pub async fn supervise(app: &App, opts: &SendOptions, tick: Duration, stop: &CancellationToken) {
    let store = &app.store;
    let mut tasks: HashMap<Uuid, tokio::task::JoinHandle<()>> = HashMap::new();
    let opts = SendOptions {
        wait: false,
        strict: false,
        ..opts.clone()
    };
    while !stop.is_cancelled() {
        if let Err(e) = rundbrief_scheduler::tick::tick(store, app.clock.as_ref()).await {
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
                        app.observer
                            .queue_depth(&c.name, counts.pending + counts.deferred);
                    }
                    if tasks.contains_key(&c.id) {
                        continue;
                    }
                    tasks.insert(c.id, spawn_run(app, &c.name, c.id, &opts, stop));
                }
                app.observer.campaigns_running(running);
            }
            Err(e) => tracing::error!("reading campaigns failed: {e}"),
        }
        if let Ok(m) = store.metric_counts().await {
            app.observer.db_counts(&m);
        }
        tokio::select! {
            () = tokio::time::sleep(tick.max(Duration::from_millis(100))) => {}
            () = stop.cancelled() => {}
        }
    }
    for (_, t) in tasks.drain() {
        let _ = t.await;
    }
}

/// One task sending what is due of one campaign, then ending.
fn spawn_run(
    app: &App,
    name: &str,
    id: Uuid,
    opts: &SendOptions,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (app, name, opts, stop) = (app.clone(), name.to_string(), opts.clone(), stop.clone());
    tokio::spawn(async move {
        let result: crate::Result<()> = async {
            let c = app.store.campaign(&name).await?;
            let runner = app.runner_for(&c, &opts)?;
            if !opts.no_dns_check && !app.store.campaign_skips_dns_check(id).await? {
                // Recipients added since the last pass are checked too.
                app.store.materialise_deliveries(id).await?;
                if let Some(d) = app.check_campaign_domains(id).await?
                    && d.skipped > 0
                {
                    tracing::info!(campaign = %name, skipped = d.skipped, "undeliverable recipient domains skipped");
                }
            }
            let report = runner.run(id, &stop, &|_| {}).await;
            runner.sender.shutdown().await;
            if let Some(pool) = &runner.relays {
                pool.shutdown().await;
            }
            let report = report?;
            if report.attempts > 0 {
                tracing::info!(campaign = %name, attempts = report.attempts, ended = ?report.ended, "campaign pass");
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            tracing::error!(campaign = %name, "sending failed: {e}{cause}");
        }
    })
}
