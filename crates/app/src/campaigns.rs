//! Campaign services: validation of what is stored, compiling a campaign
//! once for its recipients (with their signed links), the pre-flight, state
//! changes, the status object that `campaign status --json` prints (and the
//! coming `GET /api/v1/campaigns/NAME` returns), preview and test sends.

use crate::error::{AppError, Reason, Result, ResultExt};
use crate::links;
use rundbrief_core::{CampaignState, Config, ContentKind};
use rundbrief_render::{CampaignTemplate, Layout, Recipient, Renderer, parse_time_zone};
use rundbrief_store::CampaignContent;
use std::path::Path;
use uuid::Uuid;

/// How many (state, error) groups a status carries.
pub const TOP_ERRORS: u64 = 10;

/// A campaign name: recurring runs are called `NAME@TIME`, so no `@`, and
/// nothing that is hard to type or quote in a shell.
///
/// # Errors
/// [`crate::ErrorKind::Invalid`], saying what a name may be.
pub fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty()
        || name.contains('@')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(AppError::invalid(format!(
            "campaign name `{name}`: no spaces or control characters, and no @, which separates \
             a recurring campaign's name from the time of its run (e.g. `weekly-news`)"
        )));
    }
    Ok(())
}

/// A subject must say something, fit on one line, and be a template that
/// compiles.
///
/// # Errors
/// [`crate::ErrorKind::Invalid`].
pub fn check_subject(subject: &str) -> Result<()> {
    if subject.trim().is_empty() {
        return Err(AppError::invalid(
            "the subject is empty: give a subject (a template, e.g. \"News for {{subscriber.name}}\")",
        )
        .because(Reason::EmptySubject));
    }
    if subject.contains(['\r', '\n']) {
        return Err(AppError::invalid(
            "the subject contains a line break: a subject is one line (readers would see it broken)",
        ));
    }
    rundbrief_render::check_template("subject", subject)?;
    Ok(())
}

/// Content checked as a template of its kind.
///
/// # Errors
/// [`crate::ErrorKind::Invalid`] with the template's line and column.
pub fn check_content(name: &str, text: &str) -> Result<()> {
    rundbrief_render::check_template(name, text)?;
    Ok(())
}

/// A campaign's relay, checked when it is stored rather than at send time:
/// a `[relays.NAME]` of the configuration or a relay URL. A name's password
/// is read only when sending (it may live in the server's environment).
///
/// # Errors
/// [`crate::ErrorKind::Invalid`]; the error quotes the relay without its password.
pub fn check_relay(cfg: &Config, given: &str) -> Result<()> {
    if cfg.relays.contains_key(given.trim()) {
        return Ok(());
    }
    rundbrief_sender::Relay::resolve(given, &cfg.relays)?;
    Ok(())
}

/// What every rendered message of a campaign (for one of its lists) shares:
/// the compiled renderer and where its links point.
pub struct Prepared {
    pub renderer: Renderer,
    signer: rundbrief_core::Signer,
    public_url: String,
    bounce_domain: String,
}

/// The campaign-level inputs of [`prepare`].
pub struct CampaignSpec<'a> {
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

/// Compiles a campaign once: needs the secret, `sending.public_url`,
/// `sending.bounce_domain` and a From address, and names what is missing.
///
/// # Errors
/// [`crate::ErrorKind::Invalid`]: a missing setting (named, with an
/// example), a From without a domain, a layout or template that does not compile.
pub fn prepare(cfg: &Config, c: CampaignSpec<'_>) -> Result<Prepared> {
    let signer = cfg.signer()?;
    let missing = |key: &str, example: &str| {
        AppError::invalid(format!(
            "`{key}` is not set; put it in rundbrief.toml (e.g. {example}) or the matching RUNDBRIEF_ variable"
        ))
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
    let from_domain = crate::preflight::from_domain(&from)?;
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
                .map_err(|e| AppError::invalid(format!("list `{}`: {e}", c.list_name)))?,
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
        Recipient {
            email,
            name,
            attributes,
            unsubscribe_url: links::unsubscribe_url(
                &self.signer,
                &self.public_url,
                subscriber,
                list,
            ),
            unsubscribe_mailto: links::unsubscribe_mailto(
                &self.signer,
                &self.bounce_domain,
                delivery,
            ),
            view_url: None,
            message_id: Some(delivery.simple().to_string()),
        }
    }
}

/// A stored campaign compiled for the recipients of one of its lists
/// (List-Id, footer), with `date` in the time zone of its schedule.
///
/// # Errors
/// As [`prepare`].
pub fn prepare_stored(
    cfg: &Config,
    c: &CampaignContent,
    list_name: &str,
    list_label: Option<&rundbrief_core::ListLabel>,
) -> Result<Prepared> {
    let campaign_id = c.campaign.id.simple().to_string();
    prepare(
        cfg,
        CampaignSpec {
            subject: &c.campaign.subject,
            content: c.content.clone(),
            content_kind: c.content_kind,
            layout: c.layout.as_deref().map(Path::new),
            from: c.from.clone(),
            list_name,
            list_label,
            campaign_id: &campaign_id,
            tz: c.tz.as_deref().unwrap_or("UTC"),
        },
    )
}

/// A stored campaign compiled for its first list (preview, edit check).
///
/// # Errors
/// As [`prepare`].
pub fn prepare_first(cfg: &Config, c: &CampaignContent) -> Result<Prepared> {
    prepare_stored(
        cfg,
        c,
        c.campaign.lists.first().map_or("", String::as_str),
        c.list_labels.first(),
    )
}

/// Deliverability pre-flight for a stored campaign (DKIM configured, From
/// aligned with it, an unsubscribe link in the layout): the warnings, each
/// saying what to do. With `strict`, any warning is an error.
///
/// # Errors
/// The layout cannot be read; with `strict`, [`crate::ErrorKind::Invalid`]
/// listing the warnings.
pub fn check_preflight(cfg: &Config, c: &CampaignContent, strict: bool) -> Result<Vec<String>> {
    let dir = c
        .layout
        .as_deref()
        .map(Path::new)
        .or(cfg.templates.dir.as_deref());
    let layout_html = match dir {
        Some(d) => Some(
            std::fs::read_to_string(d.join("layout.html.hbs"))
                .with_context(|| format!("reading {}", d.join("layout.html.hbs").display()))?,
        ),
        None => None,
    };
    let from = c
        .from
        .clone()
        .or_else(|| cfg.sending.from.clone())
        .unwrap_or_default();
    let mut warnings = crate::preflight::preflight(cfg, layout_html.as_deref(), &from);
    // What only the keys themselves tell (an Ed25519 key alone).
    match rundbrief_dkim::DkimSigner::from_config(cfg) {
        Ok(Some(signer)) => warnings.extend(signer.warnings()),
        Ok(None) => {}
        Err(e) => warnings.push(format!("[dkim]: {e}")),
    }
    for w in &warnings {
        tracing::warn!("pre-flight: {w}");
    }
    if strict && !warnings.is_empty() {
        return Err(AppError::invalid(format!(
            "pre-flight found {} problem(s) and strict mode is on:\n  {}",
            warnings.len(),
            warnings.join("\n  ")
        ))
        .because(Reason::PreflightStrict));
    }
    Ok(warnings)
}

/// The status of a campaign as `campaign status --json` prints it: the
/// contract fields (`state`, `total`, `sent`, `deferred`, `failed`,
/// `bounced`, `pending`, …), `errors` (top reasons), and while running the
/// rate over the last minute (`rate_per_s`) and an ETA (`eta_s`);
/// `paused_reason` (why the circuit breaker paused it, else null) and
/// `providers` (the queue per mailbox provider:
/// [`crate::shaping::ProviderQueue`]).
///
/// # Errors
/// The store failed.
pub async fn status(app: &crate::App, c: &CampaignContent) -> Result<serde_json::Value> {
    let (store, clock) = (&app.store, app.clock.as_ref());
    let mut counts = store.campaign_counts(c.campaign.id).await?;
    counts.state = c.campaign.state.to_string();
    let mut v = serde_json::to_value(&counts)?;
    v["errors"] = serde_json::to_value(store.campaign_errors(c.campaign.id, TOP_ERRORS).await?)?;
    // Hard-bounce prunes waiting for the operator (`bounce held ls`).
    v["held_prunes"] = store.campaign_held_prunes(c.campaign.id).await?.into();
    if c.campaign.state == CampaignState::Running {
        let window = 60;
        let recent = store
            .outcomes_since(
                c.campaign.id,
                clock.now() - chrono::Duration::seconds(window),
            )
            .await?;
        let rate = recent as f64 / window as f64;
        v["rate_per_s"] = rate.into();
        if rate > 0.0 {
            v["eta_s"] = ((counts.pending as f64 / rate).ceil() as u64).into();
        }
    }
    // Why the circuit breaker paused it (null otherwise), and the queue
    // per mailbox provider with what holds each back.
    v["paused_reason"] = store.campaign_paused_reason(c.campaign.id).await?.into();
    v["providers"] = serde_json::to_value(
        crate::shaping::provider_queues(
            store,
            &*app.shaping()?,
            &app.config,
            c.campaign.id,
            clock.now(),
        )
        .await?,
    )?;
    Ok(v)
}

/// When a campaign runs next: the next cron occurrence of a recurring one,
/// the send time of a scheduled one-off, else none.
///
/// # Errors
/// A stored zone or cron expression that no longer parses.
pub fn next_run(
    sched: &rundbrief_store::ScheduledCampaign,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    Ok(match (&sched.schedule.cron, sched.state) {
        (Some(cron), CampaignState::Scheduled) => {
            let tz = rundbrief_scheduler::parse_tz(sched.schedule.tz.as_deref().unwrap_or("UTC"))?;
            rundbrief_scheduler::Recurrence::parse(cron, tz)?
                .next_after(sched.last_run_at.unwrap_or(sched.updated_at).max(now))
        }
        _ => sched
            .schedule
            .send_at
            .filter(|_| sched.state == CampaignState::Scheduled),
    })
}
