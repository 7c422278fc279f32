//! `rundbrief smtp check`.

use crate::args::SmtpCmd;
use crate::output;
use anyhow::Context;
use rundbrief_core::Config;
use rundbrief_sender::check::{CheckRequest, CheckTls, check};
use rundbrief_sender::{Relay, RelayError, TlsMode};
use std::process::ExitCode;
use std::time::Duration;

/// `smtp check` with no HOST, no --relay and no configured relay.
const NO_TARGET: &str = "name the relay to check: give HOST[:PORT] or --relay URL|NAME, \
                         or set `relay` in rundbrief.toml or RUNDBRIEF_RELAY";

pub async fn run(cfg: &Config, cmd: &SmtpCmd, json: bool) -> anyhow::Result<ExitCode> {
    let SmtpCmd::Check {
        target,
        relay,
        starttls,
        tls,
        auth,
        from,
        to,
        ehlo,
        timeout,
        insecure,
    } = cmd;
    // --relay NAME|URL, or without HOST the configured default relay
    // (`relay`, RUNDBRIEF_RELAY): host, port, TLS mode, credentials and
    // EHLO name from it (the flags below still override).
    let relay = match (relay, target) {
        (Some(r), _) => Some(relay_to_check(cfg, r, auth.is_some())?),
        (None, Some(_)) => None,
        (None, None) => {
            let r = cfg.relay.as_deref().context(NO_TARGET)?;
            Some(relay_to_check(cfg, r, auth.is_some())?)
        }
    };
    let mode = if *tls {
        CheckTls::Implicit
    } else if *starttls {
        CheckTls::StartTls
    } else {
        match relay.as_ref().map(|r| r.tls()) {
            Some(TlsMode::Required) => CheckTls::StartTls,
            Some(TlsMode::Opportunistic) => CheckTls::Opportunistic,
            Some(TlsMode::Implicit) => CheckTls::Implicit,
            _ => CheckTls::None,
        }
    };
    let default_port = match mode {
        CheckTls::None => 25,
        CheckTls::StartTls | CheckTls::Opportunistic => 587,
        CheckTls::Implicit => 465,
    };
    let (host, port) = match (&relay, target.as_deref()) {
        (Some(r), _) => (r.host().to_owned(), r.port()),
        (None, Some(target)) => match target.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
                h.trim_matches(|c| c == '[' || c == ']').to_string(),
                p.parse::<u16>()
                    .with_context(|| format!("`{p}` is not a port"))?,
            ),
            _ => (target.to_owned(), default_port),
        },
        (None, None) => anyhow::bail!(NO_TARGET),
    };
    let auth = match auth {
        Some(user) => {
            let password = std::env::var("RUNDBRIEF_SMTP_PASSWORD").context(
                "--auth needs the password in the environment variable RUNDBRIEF_SMTP_PASSWORD",
            )?;
            Some((user.clone(), password))
        }
        None => relay.as_ref().and_then(|r| r.credentials()),
    };
    let ehlo = ehlo
        .clone()
        .or_else(|| relay.as_ref().and_then(|r| r.options.ehlo_name.clone()))
        .unwrap_or_else(|| "localhost".to_owned());
    let from = match from {
        Some(f) => f.clone(),
        None => cfg
            .verp()
            .map(|v| v.address(uuid::Uuid::now_v7()))
            .unwrap_or_default(),
    };
    let req = CheckRequest {
        host,
        port,
        tls: mode,
        auth,
        from,
        to: to.clone(),
        ehlo_name: ehlo,
        step_timeout: Duration::from_secs((*timeout).max(1)),
        dangerous_accept_invalid_certs: *insecure,
    };
    let report = check(&req).await;
    if json {
        output::json(&report)?;
    } else {
        for s in &report.steps {
            println!(
                "{} {:<8} {:>6} ms  {}",
                if s.ok { "✓" } else { "✗" },
                s.step,
                s.ms,
                s.reply
            );
            if !s.hint.is_empty() {
                println!("  hint: {}", s.hint);
            }
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--relay NAME|URL` as every command resolves it (a URL naming an AUTH
/// user takes its password from `RUNDBRIEF_SMTP_PASSWORD`), except that with
/// `--auth USER` such a URL is taken as it is: `--auth` says who logs in, and
/// its own check below says when the password is missing.
fn relay_to_check(cfg: &Config, given: &str, auth_flag: bool) -> anyhow::Result<Relay> {
    let err = match crate::cmd::relay_for(cfg, Some(given)) {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    match err.downcast_ref::<RelayError>() {
        Some(RelayError::UrlUserWithoutPassword { .. }) if auth_flag => Ok(Relay::parse(given)?),
        _ => Err(err),
    }
}
