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
use anyhow::Context;
use rundbrief_app::App;
use rundbrief_app::endpoint::{EndpointOptions, start_endpoint};
use rundbrief_app::sending::SendOptions;
use rundbrief_core::Config;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn addr_or_off(s: &str, what: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("{what} `{s}` is not an address like 127.0.0.1:2525 (or `off`)"))
}

pub async fn run(cfg: &Config, a: &ServeArgs) -> anyhow::Result<ExitCode> {
    let bounce_listen = addr_or_off(&a.bounce_listen, "--bounce-listen")?;
    let http_listen = addr_or_off(&a.http_listen, "--http-listen")?;
    let metrics_listen = addr_or_off(&a.metrics_listen, "--metrics-listen")?;
    let admin_listen = addr_or_off(&a.admin_listen, "--admin-listen")?;
    if let (Some(admin), Some(http)) = (admin_listen, http_listen)
        && admin == http
        && admin.port() != 0
    {
        anyhow::bail!(
            "--admin-listen and --http-listen are both {admin}: the dashboard never shares the \
             public endpoint's port"
        );
    }
    let stop = CancellationToken::new();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let app: App = crate::cmd::open_app(cfg, Arc::clone(&metrics) as _).await?;
    let store = &app.store;

    let endpoint = match bounce_listen {
        Some(addr) => {
            let e = start_endpoint(&app, &EndpointOptions::new(addr), stop.child_token()).await?;
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
                app.members()?,
                cfg.http.clone(),
                app.confirm_mailer(a.relay.as_deref())
                    .map_err(crate::cmd::cli_hint)?,
            );
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                rundbrief_http::serve(listener, state, stop.cancelled_owned()).await
            }))
        }
        None => None,
    };
    let admin = match admin_listen {
        Some(addr) => {
            let (listener, state) =
                crate::cmd::admin::bind(&app, addr, a.insecure_admin, a.secure_cookies).await?;
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                rundbrief_admin::serve(listener, state, stop.cancelled_owned()).await
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
    let opts = SendOptions {
        relay: a.relay.clone(),
        pool: a.pool,
        insecure: a.insecure,
        no_dns_check: a.no_dns_check,
        ..SendOptions::default()
    };
    eprintln!(
        "scheduler running ({} database); SIGTERM or Ctrl-C drains and stops",
        store.backend_name()
    );
    rundbrief_app::serve::supervise(&app, &opts, Duration::from_secs(a.tick.max(1)), &stop).await;
    on_signal.abort();
    if let Some(e) = endpoint {
        e.finish().await?;
    }
    if let Some(h) = http {
        h.await
            .context("the HTTP task failed")?
            .context("the HTTP endpoint failed")?;
    }
    if let Some(h) = admin {
        h.await
            .context("the dashboard task failed")?
            .context("the dashboard failed")?;
    }
    if let Some(m) = metrics_task {
        let _ = m.await;
    }
    eprintln!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
