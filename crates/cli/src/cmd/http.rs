//! `rundbrief http serve`, and the confirmation mailer it shares with
//! `rundbrief sub add --confirm` (`rundbrief_http::Mailer`).

use anyhow::Context;
use rundbrief_core::Config;
use rundbrief_http::{AppState, Mailer};
use rundbrief_sender::Sender;
use rundbrief_store::Store;
use std::net::SocketAddr;
use std::process::ExitCode;

/// The confirmation mailer for `relay` (or the configured one). `Ok(None)`
/// when no relay is configured at all.
///
/// # Errors
/// A relay that does not parse, or a missing secret, `sending.from`,
/// `sending.public_url` or `sending.bounce_domain`, each named.
pub fn mailer(cfg: &Config, relay: Option<&str>) -> anyhow::Result<Option<Mailer>> {
    if relay.is_none() && cfg.relay.is_none() {
        return Ok(None);
    }
    let relay = crate::cmd::relay_for(cfg, relay)?;
    let missing = |key: &str, example: &str| {
        anyhow::anyhow!(
            "`{key}` is not set; confirmation mails need it (e.g. {example} in rundbrief.toml)"
        )
    };
    let from = cfg
        .sending
        .from
        .as_deref()
        .ok_or_else(|| missing("sending.from", "from = \"News <news@example.org>\""))?;
    let public_url = cfg.sending.public_url.as_deref().ok_or_else(|| {
        missing(
            "sending.public_url",
            "public_url = \"https://news.example.org\"",
        )
    })?;
    let sender = Sender::new(relay, cfg.verp()?).context("setting up the relay")?;
    let mut mailer = Mailer::new(
        sender,
        cfg.signer()?,
        from,
        public_url,
        cfg.sending.message_id_domain.as_deref(),
    )?;
    // Confirmation mails are DKIM-signed like campaigns.
    if let Some(dkim) = rundbrief_dkim::DkimSigner::from_config(cfg).context("[dkim]")? {
        // A confirmation mail that cannot be signed is not sent (the same
        // rule as a campaign message), never sent unsigned.
        mailer = mailer.with_finish(std::sync::Arc::new(move |m: Vec<u8>| {
            dkim.sign(&m)
                .map_err(|e| format!("DKIM signing failed: {e}"))
        }));
    }
    Ok(Some(mailer))
}

pub async fn serve(
    store: &Store,
    cfg: &Config,
    listen: Option<SocketAddr>,
    relay: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let listen = match listen {
        Some(a) => a,
        None => cfg
            .http
            .listen
            .parse()
            .with_context(|| format!("http.listen `{}`", cfg.http.listen))?,
    };
    let mailer = mailer(cfg, relay)?;
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
    let state = AppState::new(store.clone(), cfg.signer()?, cfg.http.clone(), mailer);
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
