//! `rundbrief list …`

use crate::args::ListCmd;
use crate::output;
use rundbrief_core::{Actor, ListSummary};
use rundbrief_store::Store;
use std::process::ExitCode;

pub async fn run(store: &Store, cmd: &ListCmd, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        ListCmd::Create {
            name,
            description,
            label,
        } => {
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                anyhow::bail!("a list name must be non-empty and printable");
            }
            let label = label
                .as_deref()
                .map(rundbrief_core::ListLabel::parse)
                .transpose()?;
            let list = store
                .create_list_labelled(name.trim(), label.as_ref(), description.as_deref())
                .await?;
            if json {
                output::json(&list)?;
            } else {
                println!("created list {} (List-Id label {})", list.name, list.label);
            }
        }
        ListCmd::Ls => {
            let lists = store.list_summaries().await?;
            if json {
                output::json(&lists)?;
            } else if lists.is_empty() {
                println!("no lists yet: create one with `rundbrief list create NAME`");
            } else {
                println!("{}", output::table(&HEADER, lists.iter().map(row)));
            }
        }
        ListCmd::Show { name } => {
            let l = store.list_summary(name).await?;
            if json {
                output::json(&l)?;
            } else {
                println!("list         {}", l.list.name);
                if let Some(d) = &l.list.description {
                    println!("description  {d}");
                }
                println!("created      {}", output::when(l.list.created_at));
                println!(
                    "public       {}",
                    if l.list.public {
                        "yes (the subscribe form takes requests)"
                    } else {
                        "no (`list edit NAME --public` opens the subscribe form)"
                    }
                );
                let c = &l.counts;
                println!("subscribed   {}  (receive campaigns)", c.subscribed);
                println!("unconfirmed  {}", c.unconfirmed);
                println!("unsubscribed {}", c.unsubscribed);
                println!("bounced      {}", c.bounced);
                println!("blocklisted  {}", c.blocklisted);
                println!("total        {}", c.total());
            }
        }
        ListCmd::Edit { name, public, .. } => {
            let changed = store.set_list_public(name, *public).await?;
            let list = store.list(name).await?;
            if json {
                output::json(&list)?;
            } else {
                let now = if list.public { "public" } else { "private" };
                let was = if changed { "" } else { "already " };
                println!("list {} is {was}{now}", list.name);
            }
        }
        ListCmd::Rm { name, force } => {
            let removed = store.delete_list(name, *force, Actor::Cli).await?;
            if json {
                output::json(
                    &serde_json::json!({ "deleted": name, "memberships_removed": removed }),
                )?;
            } else {
                println!(
                    "deleted list {name} ({removed} membership(s) removed; the subscribers remain)"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

const HEADER: [&str; 7] = [
    "name",
    "subscribed",
    "unconfirmed",
    "unsubscribed",
    "bounced",
    "blocklisted",
    "description",
];

fn row(l: &ListSummary) -> [String; 7] {
    let c = &l.counts;
    [
        l.list.name.clone(),
        c.subscribed.to_string(),
        c.unconfirmed.to_string(),
        c.unsubscribed.to_string(),
        c.bounced.to_string(),
        c.blocklisted.to_string(),
        l.list.description.clone().unwrap_or_default(),
    ]
}
