//! `rundbrief http serve`: the public endpoint (`rundbrief-http`) over the
//! application layer's membership service and confirmation mailer.

use anyhow::Context;
use rundbrief_app::App;
use rundbrief_http::AppState;
use std::net::SocketAddr;
use std::process::ExitCode;

pub async fn serve(
    app: &App,
    listen: Option<SocketAddr>,
    relay: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let cfg = &app.config;
    let listen = match listen {
        Some(a) => a,
        None => cfg
            .http
            .listen
            .parse()
            .with_context(|| format!("http.listen `{}`", cfg.http.listen))?,
    };
    let mailer = app.confirm_mailer(relay).map_err(crate::cmd::cli_hint)?;
    if mailer.is_none() {
        tracing::warn!(
            "no relay configured: POST /s/LIST (double opt-in) is off; unsubscribe links work"
        );
    }
    if cfg
        .sending
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("http://"))
    {
        tracing::warn!(
            "sending.public_url is http://: mailbox providers expect https:// for one-click unsubscribe"
        );
    }
    let state = AppState::new(app.members()?, cfg.http.clone(), mailer);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    eprintln!("HTTP endpoint listening on {addr}; Ctrl-C stops it");
    rundbrief_http::serve(listener, state, crate::cmd::shutdown_signal())
        .await
        .context("the HTTP endpoint failed")?;
    Ok(ExitCode::SUCCESS)
}
