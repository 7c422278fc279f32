//! `rundbrief template check` and `rundbrief render`.

use crate::args::RenderArgs;
use crate::cmd::address;
use crate::output;
use anyhow::{Context, bail};
use rundbrief_core::{Config, Purpose};
use rundbrief_render::{
    CampaignTemplate, ContentKind, Layout, Recipient, Renderer, check_template, parse_time_zone,
};
use rundbrief_store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use uuid::Uuid;

pub fn check(files: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let mut results = Vec::new();
    for f in files {
        let source =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let name = f.display().to_string();
        results.push((
            name.clone(),
            check_template(&name, &source).err().map(|e| e.to_string()),
        ));
    }
    let failed = results.iter().filter(|(_, e)| e.is_some()).count();
    if json {
        let v: Vec<_> = results
            .iter()
            .map(|(f, e)| serde_json::json!({ "file": f, "ok": e.is_none(), "error": e }))
            .collect();
        output::json(&v)?;
    } else {
        for (f, e) in &results {
            match e {
                None => println!("{f}: ok"),
                Some(e) => eprintln!("{e}"),
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn content_kind(path: &Path) -> anyhow::Result<ContentKind> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("md" | "markdown") => Ok(ContentKind::Markdown),
        Some("html" | "htm") => Ok(ContentKind::Html),
        _ => bail!(
            "{}: content must be Markdown (.md) or HTML (.html)",
            path.display()
        ),
    }
}

/// The domain part of a `From:` value like `Name <user@example.org>`.
fn domain_of(from: &str) -> Option<&str> {
    from.rsplit('@')
        .next()
        .map(|d| d.trim_end_matches('>').trim())
        .filter(|d| !d.is_empty() && from.contains('@'))
}

pub async fn render(store: &Store, cfg: &Config, a: &RenderArgs) -> anyhow::Result<ExitCode> {
    let signer = cfg.signer()?;
    let missing = |key: &str, example: &str| {
        anyhow::anyhow!(
            "`{key}` is not set; put it in rundbrief.toml (e.g. {example}) or the matching RUNDBRIEF_ variable"
        )
    };
    let public_url = cfg.sending.public_url.as_deref().ok_or_else(|| {
        missing(
            "sending.public_url",
            "public_url = \"https://news.example.org\"",
        )
    })?;
    let bounce_domain = cfg.sending.bounce_domain.as_deref().ok_or_else(|| {
        missing(
            "sending.bounce_domain",
            "bounce_domain = \"bounce.example.org\"",
        )
    })?;
    let from = a
        .from
        .clone()
        .or_else(|| cfg.sending.from.clone())
        .ok_or_else(|| missing("sending.from", "from = \"News <news@example.org>\""))?;
    let from_domain = domain_of(&from)
        .with_context(|| format!("`{from}` has no address domain"))?
        .to_string();
    let message_id_domain = cfg
        .sending
        .message_id_domain
        .clone()
        .unwrap_or_else(|| from_domain.clone());

    let content = std::fs::read_to_string(&a.content)
        .with_context(|| format!("cannot read {}", a.content.display()))?;
    let layout = match a.layout.as_ref().or(cfg.templates.dir.as_ref()) {
        Some(dir) => Layout::from_dir(dir)
            .with_context(|| format!("loading the layout in {}", dir.display()))?,
        None => Layout::shipped(),
    };
    let renderer = Renderer::new(CampaignTemplate {
        subject: a.subject.clone(),
        content,
        content_kind: content_kind(&a.content)?,
        layout,
        from,
        reply_to: cfg.sending.reply_to.clone(),
        list_id: format!("{}.{from_domain}", a.list),
        list_name: a.list.clone(),
        campaign_id: "preview".into(),
        message_id_domain,
        time_zone: parse_time_zone(&a.tz)?,
        transfer_encoding: Default::default(),
    })
    .with_context(|| format!("{}", a.content.display()))?;

    // A subscriber in the store brings their own data and a real token.
    let addr = address(&a.to)?;
    let detail = store.subscriber_detail(&addr).await.ok();
    let list = store.find_list(&a.list).await?;
    let (name, attributes, ids) = match (&detail, &list) {
        (Some(d), Some(l)) => (
            d.subscriber.name.clone(),
            d.subscriber.attributes.clone(),
            Some((d.subscriber.id, l.id)),
        ),
        (Some(d), None) => (
            d.subscriber.name.clone(),
            d.subscriber.attributes.clone(),
            None,
        ),
        _ => (
            a.name.clone(),
            a.attrs
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            None,
        ),
    };
    if ids.is_none() {
        tracing::warn!(to = %addr, list = %a.list, "not a subscriber of that list: the unsubscribe link is a placeholder that unsubscribes nobody");
    }
    let (sub_id, list_id) = ids.unwrap_or((Uuid::nil(), Uuid::nil()));
    let mut link_payload = Vec::with_capacity(32);
    link_payload.extend_from_slice(sub_id.as_bytes());
    link_payload.extend_from_slice(list_id.as_bytes());
    let delivery = Uuid::now_v7();
    let recipient = Recipient {
        email: addr.to_string(),
        name,
        attributes,
        unsubscribe_url: format!(
            "{}/u/{}",
            public_url.trim_end_matches('/'),
            signer.sign(Purpose::UnsubscribeLink, &link_payload)
        ),
        unsubscribe_mailto: format!(
            "mailto:unsub-{}@{bounce_domain}",
            signer.sign(Purpose::UnsubscribeMail, delivery.as_bytes())
        ),
        view_url: None,
        message_id: Some(delivery.simple().to_string()),
    };
    let bytes = renderer.render(&recipient, chrono::Utc::now())?;
    match &a.out {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
