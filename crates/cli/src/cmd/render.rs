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

pub fn content_kind(path: &Path) -> anyhow::Result<ContentKind> {
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

/// What every rendered message of a campaign shares: the compiled renderer
/// and where its links point.
pub struct Prepared {
    pub renderer: Renderer,
    pub signer: rundbrief_core::Signer,
    pub public_url: String,
    pub bounce_domain: String,
}

/// The campaign-level inputs of [`prepare`].
pub struct Campaign<'a> {
    pub subject: &'a str,
    pub content: String,
    pub content_kind: ContentKind,
    pub layout: Option<&'a Path>,
    pub from: Option<String>,
    pub list_name: &'a str,
    /// The list's List-Id label (`None`: derived from the name, for
    /// previews of a list that is not stored).
    pub list_label: Option<&'a rundbrief_core::ListLabel>,
    pub campaign_id: &'a str,
    pub tz: &'a str,
}

/// Compiles a campaign once: needs the secret, sending.public_url,
/// sending.bounce_domain and a From address, and names what is missing.
pub fn prepare(cfg: &Config, c: Campaign<'_>) -> anyhow::Result<Prepared> {
    let signer = cfg.signer()?;
    let missing = |key: &str, example: &str| {
        anyhow::anyhow!(
            "`{key}` is not set; put it in rundbrief.toml (e.g. {example}) or the matching RUNDBRIEF_ variable"
        )
    };
    let public_url = cfg.sending.public_url.clone().ok_or_else(|| {
        missing(
            "sending.public_url",
            "public_url = \"https://news.example.org\"",
        )
    })?;
    let bounce_domain = cfg.sending.bounce_domain.clone().ok_or_else(|| {
        missing(
            "sending.bounce_domain",
            "bounce_domain = \"bounce.example.org\"",
        )
    })?;
    let from = c
        .from
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
    let layout = match c.layout.or(cfg.templates.dir.as_deref()) {
        Some(dir) => Layout::from_dir(dir)
            .with_context(|| format!("loading the layout in {}", dir.display()))?,
        None => Layout::shipped(),
    };
    let renderer = Renderer::new(CampaignTemplate {
        subject: c.subject.to_string(),
        content: c.content,
        content_kind: c.content_kind,
        layout,
        from,
        reply_to: cfg.sending.reply_to.clone(),
        list_id: match c.list_label {
            Some(l) => l.list_id(&from_domain),
            // A campaign whose lists were all deleted has no name either.
            None if c.list_name.is_empty() => format!("list.{from_domain}"),
            None => rundbrief_core::ListLabel::derive(c.list_name)
                .map(|l| l.list_id(&from_domain))
                .with_context(|| format!("list `{}`", c.list_name))?,
        },
        list_name: c.list_name.to_string(),
        campaign_id: c.campaign_id.to_string(),
        message_id_domain,
        time_zone: parse_time_zone(c.tz)?,
        transfer_encoding: Default::default(),
        postal_address: cfg.sending.postal_address.clone(),
    })?;
    Ok(Prepared {
        renderer,
        signer,
        public_url,
        bounce_domain,
    })
}

impl Prepared {
    /// The recipient's links: a one-click URL carrying (subscriber, list) and
    /// a mailto carrying the delivery id, both signed.
    pub fn recipient(
        &self,
        email: String,
        name: Option<String>,
        attributes: rundbrief_core::Attributes,
        subscriber: Uuid,
        list: Uuid,
        delivery: Uuid,
    ) -> Recipient {
        let mut link = Vec::with_capacity(32);
        link.extend_from_slice(subscriber.as_bytes());
        link.extend_from_slice(list.as_bytes());
        Recipient {
            email,
            name,
            attributes,
            unsubscribe_url: format!(
                "{}/u/{}",
                self.public_url.trim_end_matches('/'),
                self.signer.sign(Purpose::UnsubscribeLink, &link)
            ),
            unsubscribe_mailto: format!(
                "mailto:unsub-{}@{}",
                self.signer
                    .sign(Purpose::UnsubscribeMail, delivery.as_bytes()),
                self.bounce_domain
            ),
            view_url: None,
            message_id: Some(delivery.simple().to_string()),
        }
    }
}

pub async fn render(store: &Store, cfg: &Config, a: &RenderArgs) -> anyhow::Result<ExitCode> {
    let content = std::fs::read_to_string(&a.content)
        .with_context(|| format!("cannot read {}", a.content.display()))?;
    let list = store.find_list(&a.list).await?;
    let prepared = prepare(
        cfg,
        Campaign {
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
    .map_err(
        |e| match e.downcast_ref::<rundbrief_render::RenderError>() {
            Some(rundbrief_render::RenderError::ListId { .. }) => e,
            _ => e.context(a.content.display().to_string()),
        },
    )?;

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
    let bytes = prepared.renderer.render(&recipient, chrono::Utc::now())?;
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
