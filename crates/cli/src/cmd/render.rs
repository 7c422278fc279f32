//! `rundbrief template check` and `rundbrief render`.

use crate::args::RenderArgs;
use crate::cmd::address;
use crate::output;
use anyhow::Context;
use rundbrief_app::App;
use rundbrief_app::campaigns::{CampaignSpec, prepare};
use rundbrief_core::ContentKind;
use rundbrief_render::check_template;
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

/// The kind of a content file, from its extension.
pub fn content_kind(path: &Path) -> anyhow::Result<ContentKind> {
    ContentKind::from_path(path).with_context(|| {
        format!(
            "{}: content must be Markdown (.md) or HTML (.html)",
            path.display()
        )
    })
}

pub async fn render(app: &App, a: &RenderArgs) -> anyhow::Result<ExitCode> {
    let store = &app.store;
    let content = std::fs::read_to_string(&a.content)
        .with_context(|| format!("cannot read {}", a.content.display()))?;
    let list = store.find_list(&a.list).await?;
    let prepared = prepare(
        &app.config,
        CampaignSpec {
            subject: &a.subject,
            content,
            content_kind: content_kind(&a.content)?,
            layout: a.layout.as_deref(),
            from: a.from.clone(),
            list_name: &a.list,
            list_label: list.as_ref().map(|l| &l.label),
            campaign_id: "preview",
            tz: &a.tz,
        },
    )
    // A List-Id error is the list's: it names the list, not the content.
    .map_err(|e| match e.find::<rundbrief_render::RenderError>() {
        Some(rundbrief_render::RenderError::ListId { .. }) => anyhow::Error::from(e),
        _ => anyhow::Error::from(e).context(a.content.display().to_string()),
    })?;

    // A subscriber in the store brings their own data and a real token.
    let addr = address(&a.to)?;
    let detail = store.subscriber_detail(&addr).await.ok();
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
    let recipient = prepared.recipient(
        addr.to_string(),
        name,
        attributes,
        sub_id,
        list_id,
        Uuid::now_v7(),
    );
    let bytes = prepared.renderer.render(&recipient, app.clock.now())?;
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
