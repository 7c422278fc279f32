//! `rundbrief smtp check`.

use crate::args::SmtpCmd;
use crate::output;
use anyhow::Context;
use rundbrief_core::Config;
use rundbrief_sender::check::{CheckRequest, CheckTls, check};
use std::process::ExitCode;
use std::time::Duration;

pub async fn run(cfg: &Config, cmd: &SmtpCmd, json: bool) -> anyhow::Result<ExitCode> {
    let SmtpCmd::Check {
        target,
        starttls,
        tls,
        auth,
        from,
        to,
        ehlo,
        timeout,
        insecure,
    } = cmd;
    let mode = if *tls {
        CheckTls::Implicit
    } else if *starttls {
        CheckTls::StartTls
    } else {
        CheckTls::None
    };
    let default_port = match mode {
        CheckTls::None => 25,
        CheckTls::StartTls => 587,
        CheckTls::Implicit => 465,
    };
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
            h.trim_matches(|c| c == '[' || c == ']').to_string(),
            p.parse::<u16>()
                .with_context(|| format!("`{p}` is not a port"))?,
        ),
        _ => (target.clone(), default_port),
    };
    let auth = match auth {
        Some(user) => {
            let password = std::env::var("RUNDBRIEF_SMTP_PASSWORD").context(
                "--auth needs the password in the environment variable RUNDBRIEF_SMTP_PASSWORD",
            )?;
            Some((user.clone(), password))
        }
        None => None,
    };
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
        ehlo_name: ehlo.clone(),
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
