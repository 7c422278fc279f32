//! `rundbrief sub …`

use crate::args::SubCmd;
use crate::cmd::address;
use crate::output;
use rundbrief_core::{Actor, Attributes, StatusFilter};
use rundbrief_store::{Store, SubscriberQuery};
use std::process::ExitCode;

/// Rows `sub ls` shows in a table when no --limit is given.
const TABLE_LIMIT: u64 = 100;

pub async fn run(store: &Store, cmd: &SubCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        SubCmd::Add {
            email,
            list,
            name,
            attrs,
            resubscribe,
            ..
        } => {
            let addr = address(email)?;
            if name
                .as_deref()
                .is_some_and(|n| n.chars().any(char::is_control))
            {
                anyhow::bail!("--name must not contain line breaks or other control characters");
            }
            let attributes: Attributes = attrs
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let (_, out) = rundbrief_app::members::add(
                store,
                list,
                addr.as_str(),
                name.as_deref(),
                attributes,
                *resubscribe,
                Actor::Cli,
                "sub add",
            )
            .await?;
            if json {
                output::json(
                    &serde_json::json!({ "email": addr.as_str(), "list": list, "outcome": out }),
                )?;
            } else {
                let what = match (out.created, out.joined) {
                    (true, _) => "added",
                    (false, true) => "subscribed existing subscriber",
                    (false, false) => "already subscribed:",
                };
                let updated = if out.updated {
                    " (name or attributes updated)"
                } else {
                    ""
                };
                println!("{what} {addr} to {list}{updated}");
            }
        }
        SubCmd::Ls {
            list,
            status,
            limit,
        } => {
            let status: Option<StatusFilter> = status.as_deref().map(str::parse).transpose()?;
            // A table is for reading, so it stops at a screenful by default;
            // JSON is for scripts, which must get every row unless they asked
            // for fewer.
            let limit = limit.unwrap_or(if json { 0 } else { TABLE_LIMIT });
            let q = SubscriberQuery {
                list: list.clone(),
                status,
                after: None,
                limit,
            };
            let rows = store.subscribers(&q).await?;
            if json {
                output::json(&rows)?;
            } else {
                let total = store.count_subscribers(&q).await?;
                if rows.is_empty() {
                    println!("no subscribers match");
                } else {
                    let mut header = vec!["email", "name", "status"];
                    if list.is_some() {
                        header.push("on list");
                    }
                    header.push("since");
                    let table = rows.iter().map(|r| {
                        let s = &r.subscriber;
                        let mut cells = vec![
                            s.email.clone(),
                            s.name.clone().unwrap_or_default(),
                            s.status.to_string(),
                        ];
                        if list.is_some() {
                            cells.push(r.membership.map(|m| m.to_string()).unwrap_or_default());
                        }
                        cells.push(output::when(s.created_at));
                        cells
                    });
                    println!("{}", output::table(&header, table));
                    if total > rows.len() as u64 {
                        eprintln!(
                            "showing {} of {total}; use --limit 0 for all, or --json",
                            rows.len()
                        );
                    }
                }
            }
        }
        SubCmd::Show { email } => {
            let d = store.subscriber_detail(&address(email)?).await?;
            if json {
                output::json(&d)?;
            } else {
                let s = &d.subscriber;
                println!("email    {}", output::safe(s.email.as_str()));
                println!(
                    "name     {}",
                    output::safe(s.name.as_deref().unwrap_or("-"))
                );
                println!("status   {}", s.status);
                println!("created  {}", output::when(s.created_at));
                if !s.attributes.is_empty() {
                    println!("attributes");
                    for (k, v) in &s.attributes {
                        println!(
                            "  {} = {}",
                            output::safe(k),
                            output::safe(&v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        );
                    }
                }
                println!("\nmemberships");
                if d.memberships.is_empty() {
                    println!("  (none)");
                } else {
                    let rows = d.memberships.iter().map(|m| {
                        [
                            m.list.clone(),
                            m.status.to_string(),
                            output::when(m.updated_at),
                        ]
                    });
                    println!(
                        "{}",
                        indent(&output::table(&["list", "status", "since"], rows))
                    );
                }
                println!("\nhistory");
                let rows = d.audit.iter().map(|a| {
                    [
                        output::when(a.at),
                        a.action.to_string(),
                        a.list.clone().unwrap_or_default(),
                        a.actor.to_string(),
                        a.reason.clone(),
                    ]
                });
                println!(
                    "{}",
                    indent(&output::table(&["when", "what", "list", "by", "why"], rows))
                );
            }
        }
        SubCmd::Unsubscribe {
            email,
            list,
            reason,
        } => {
            let addr = address(email)?;
            let changed = store
                .unsubscribe(&addr, list.as_deref(), Actor::Cli, reason)
                .await?;
            let scope = list
                .as_deref()
                .map_or_else(|| "every list".to_string(), |l| format!("list {l}"));
            report(
                json,
                &addr.to_string(),
                "unsubscribed",
                changed,
                &format!("{addr} unsubscribed from {scope}"),
            )?;
        }
        SubCmd::Blocklist { email, reason } => {
            let addr = address(email)?;
            let changed = store.blocklist(&addr, Actor::Cli, reason).await?;
            report(
                json,
                &addr.to_string(),
                "blocklisted",
                changed,
                &format!("{addr} blocklisted"),
            )?;
        }
        SubCmd::Restore { email, reason } => {
            let addr = address(email)?;
            store.restore_subscriber(&addr, Actor::Cli, reason).await?;
            report(
                json,
                &addr.to_string(),
                "restored",
                true,
                &format!("{addr} is active again"),
            )?;
        }
        SubCmd::Rm { email, reason } => {
            let addr = address(email)?;
            store.remove_subscriber(&addr, Actor::Cli, reason).await?;
            report(
                json,
                &addr.to_string(),
                "removed",
                true,
                &format!("{addr} removed with their memberships"),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report(json: bool, email: &str, action: &str, changed: bool, text: &str) -> anyhow::Result<()> {
    if json {
        output::json(&serde_json::json!({ "email": email, "action": action, "changed": changed }))
    } else {
        if changed {
            println!("{text}");
        } else {
            println!("{text} (already; nothing changed)");
        }
        Ok(())
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sub add EMAIL --list L --confirm`: a double opt-in confirmation mail
/// instead of a subscription.
pub async fn sub_add_confirm(
    app: &rundbrief_app::App,
    email: &str,
    list: &str,
    name: Option<&str>,
    relay: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let addr = crate::cmd::address(email)?;
    if name.is_some_and(|n| n.chars().any(char::is_control)) {
        anyhow::bail!("--name must not contain line breaks or other control characters");
    }
    let mailer = anyhow::Context::context(
        app.confirm_mailer(relay).map_err(crate::cmd::cli_hint)?,
        "--confirm sends a confirmation mail: pass --relay smtp://HOST:PORT, set `relay` in rundbrief.toml or RUNDBRIEF_RELAY",
    )?;
    let requested = app
        .members()?
        .request(
            list,
            addr.as_str(),
            name,
            false,
            rundbrief_core::Actor::Cli,
            "sub add --confirm",
        )
        .await?;
    let sent = match requested {
        rundbrief_app::members::Requested::Confirm(job) => {
            let result = mailer.send(&job).await;
            mailer.shutdown().await;
            result?;
            true
        }
        rundbrief_app::members::Requested::Nothing => false,
    };
    if json {
        crate::output::json(&serde_json::json!({
            "email": addr.as_str(),
            "list": list,
            "confirmation_sent": sent,
        }))?;
    } else if sent {
        println!(
            "sent a confirmation mail to {addr} for {list}; the membership stays unconfirmed until its link is followed"
        );
    } else {
        println!("{addr} is already subscribed to {list} (or blocklisted): nothing sent");
    }
    Ok(ExitCode::SUCCESS)
}
