//! Campaign services: validation of what is stored, compiling a campaign
//! once for its recipients (with their signed links), the pre-flight, state
//! changes, the status object that `campaign status --json` prints (and the
//! coming `GET /api/v1/campaigns/NAME` returns), preview and test sends.

use crate::error::{AppError, Reason, Result, ResultExt};
use crate::links;
use chrono::{DateTime, Timelike, Utc};
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
/// a `[relays.NAME]` of the configuration or a relay URL, or several of
/// them separated by commas. A name's password
/// is read only when sending (it may live in the server's environment).
///
/// # Errors
/// [`crate::ErrorKind::Invalid`]; the error quotes the relay without its password.
pub fn check_relay(cfg: &Config, given: &str) -> Result<()> {
    let names = rundbrief_core::config::relay_list(given);
    if names.is_empty() {
        return Err(AppError::invalid(
            "the relay is empty: name a [relays.NAME] or a URL, or several separated by commas",
        ));
    }
    // Several relays (`ses,mailgun`): each is checked.
    for name in names {
        if cfg.relays.contains_key(name) {
            continue;
        }
        rundbrief_sender::Relay::resolve(name, &cfg.relays)?;
    }
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
/// `bounced`, `pending`, …), `errors` (top reasons), `due` (pending
/// deliveries by the UTC hour they are due: `[{"at", "pending"}]`, those
/// due already in the current hour), `local_time` (the settings of a
/// campaign sent at a wall-clock time in each reader's zone, with how many
/// readers `fallback` to the default zone; null otherwise), while running
/// the rate over the last minute (`rate_per_s`) and the expected finish:
/// `eta` (RFC 3339), `eta_s` (seconds from now) and `eta_reason` (what
/// bounds it: `rate`, `window`, `local-time due times` or `relay quota`);
/// `relays` (each relay of the campaign with its use, quota and state:
/// [`RelayStatus`]);
/// `paused_reason` (why the circuit breaker paused it, else null) and
/// `providers` (the queue per mailbox provider:
/// [`crate::shaping::ProviderQueue`]).
///
/// # Errors
/// The store failed.
pub async fn status(app: &crate::App, c: &CampaignContent) -> Result<serde_json::Value> {
    let (store, clock) = (&app.store, app.clock.as_ref());
    let now = clock.now();
    let id = c.campaign.id;
    let mut counts = store.campaign_counts(id).await?;
    counts.state = c.campaign.state.to_string();
    let mut v = serde_json::to_value(&counts)?;
    v["errors"] = serde_json::to_value(store.campaign_errors(id, TOP_ERRORS).await?)?;
    // Hard-bounce prunes waiting for the operator (`bounce held ls`).
    v["held_prunes"] = store.campaign_held_prunes(id).await?.into();
    // Pending deliveries by due time; claimed ones (`sending`) are due now.
    let mut groups: Vec<(DateTime<Utc>, u64)> = store
        .pending_by_due(id)
        .await?
        .into_iter()
        .map(|g| (g.due.map_or(now, |d| d.max(now)), g.count))
        .collect();
    if counts.sending > 0 {
        groups.push((now, counts.sending));
    }
    groups.sort();
    let mut hours: std::collections::BTreeMap<DateTime<Utc>, u64> = Default::default();
    for (t, n) in &groups {
        let hour = t
            .date_naive()
            .and_hms_opt(t.hour(), 0, 0)
            .map_or(*t, |h| h.and_utc());
        *hours.entry(hour).or_default() += n;
    }
    v["due"] = hours
        .iter()
        .map(|(h, n)| {
            let at = h.format("%Y-%m-%dT%H:00:00Z").to_string();
            serde_json::json!({"at": at, "pending": n})
        })
        .collect::<Vec<_>>()
        .into();
    v["local_time"] = match store.local_time(id).await? {
        Some(lt) => {
            let mut o = serde_json::to_value(&lt)?;
            if let Ok(plan) = rundbrief_scheduler::local::Plan::from_stored(&lt) {
                let by_attr = if counts.total > 0 {
                    store.deliveries_by_attr(id, &lt.tz_attr).await?
                } else {
                    store.recipients_by_attr(id, &lt.tz_attr).await?
                };
                o["fallback"] = plan.fallbacks(&by_attr).into();
            }
            o
        }
        None => serde_json::Value::Null,
    };
    // Why the circuit breaker paused it (null otherwise), and the queue
    // per mailbox provider with what holds each back.
    v["paused_reason"] = store.campaign_paused_reason(id).await?.into();
    let running = c.campaign.state == CampaignState::Running;
    let providers =
        crate::shaping::provider_queues(store, &*app.shaping()?, &app.config, id, running, now)
            .await?;
    // The campaign's relays (a relay list, or one relay with a quota): what
    // each was handed this hour and day, its quota, and whether it takes mail.
    let relays = relay_statuses(app, c.relay.as_deref(), now).await?;
    v["relays"] = serde_json::to_value(&relays)?;
    if running {
        // The rate over the last minute (whole five-second buckets from
        // the one a minute ago, so up to 65 s), or over the time since the
        // first outcome when the campaign started less than that ago.
        let since = now - chrono::Duration::seconds(RATE_WINDOW_S);
        let (recent, first) = store.outcomes_since(id, since).await?;
        let longest = (RATE_WINDOW_S + rundbrief_store::PACE_BUCKET_S) as f64;
        let span = first.map_or(RATE_WINDOW_S as f64, |f| {
            ((now - f).num_milliseconds() as f64 / 1000.0).clamp(1.0, longest)
        });
        let rate = recent as f64 / span;
        v["rate_per_s"] = rate.into();
        let sched = store.campaign_schedule(id).await?;
        let send_window = match (&sched.schedule.window_start, &sched.schedule.window_end) {
            (Some(a), Some(b)) => rundbrief_scheduler::Window::from_parts(a, b),
            _ => None,
        }
        .zip(rundbrief_scheduler::parse_tz(sched.schedule.tz.as_deref().unwrap_or("UTC")).ok());
        let eta = estimate_finish(now, (rate > 0.0).then_some(rate), &groups, send_window);
        let bound = rate_bound(now, &providers, app.config.sending.rate);
        let eta = match (eta, bound) {
            (Some(e), Some(b)) if b.0 > e.at => Some((b.0, b.1)),
            (None, Some(b)) => Some((b.0, b.1)),
            (e, _) => e.map(|e| (e.at, e.reason.to_string())),
        };
        // Every relay at its quota (or rested): nothing goes before the
        // quota frees up, whatever the rate.
        let left: u64 = groups.iter().map(|(_, n)| n).sum();
        let eta = match quota_finish(now, left, &relays) {
            Some(at) if eta.as_ref().is_none_or(|(e, _)| at >= *e) => {
                Some((at, "relay quota".to_string()))
            }
            _ => eta,
        };
        if let Some((at, reason)) = eta {
            v["eta"] = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into();
            v["eta_s"] = ((at - now).num_milliseconds().max(0) as u64)
                .div_ceil(1000)
                .into();
            v["eta_reason"] = reason.into();
        }
    }
    v["providers"] = serde_json::to_value(providers)?;
    Ok(v)
}

/// The window `rate_per_s` is measured over, seconds.
const RATE_WINDOW_S: i64 = 60;

/// The earliest finish the configured rates allow: each provider's
/// deliveries left at the rate it may be sent at now (`rate`, halved while
/// slowed; a suspended provider waits for `resume` and is left out), and
/// everything left at the global `[sending] rate`. The measured rate alone
/// is too hopeful while a fast provider still hides a slow one's queue:
/// when the fast one is done, the slow one sets the pace.
pub fn rate_bound(
    now: DateTime<Utc>,
    providers: &[crate::shaping::ProviderQueue],
    global_rate: u32,
) -> Option<(DateTime<Utc>, String)> {
    let live = || {
        providers
            .iter()
            .filter(|q| q.pending > 0 && q.state != "suspended")
    };
    let mut best: Option<(f64, String)> = None;
    for q in live().filter(|q| q.rate > 0.0) {
        let secs = q.pending as f64 / q.rate;
        if best.as_ref().is_none_or(|(b, _)| secs > *b) {
            best = Some((
                secs,
                format!("provider rate ({} at {} msg/s)", q.name, q.rate),
            ));
        }
    }
    let left: u64 = live().map(|q| q.pending).sum();
    if global_rate > 0 && left > 0 {
        let secs = left as f64 / f64::from(global_rate);
        if best.as_ref().is_none_or(|(b, _)| secs > *b) {
            best = Some((secs, format!("rate ([sending] rate {global_rate} msg/s)")));
        }
    }
    best.map(|(secs, why)| {
        (
            now + chrono::Duration::milliseconds((secs * 1000.0).ceil() as i64),
            why,
        )
    })
}

/// One relay of a campaign in `campaign status` (`relays`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelayStatus {
    /// `[relays.NAME]`'s name, or the URL.
    pub name: String,
    /// Messages handed to it in this UTC hour and day (over every
    /// campaign and worker; quota reserved by a running worker counts).
    pub sent_hour: u64,
    pub max_per_hour: Option<u64>,
    pub sent_day: u64,
    pub max_per_day: Option<u64>,
    /// Its share among the campaign's relays.
    pub weight: u32,
    /// `ok`, `at quota` (until the next hour or day) or `rested` (it
    /// failed at CONNECT, TLS or AUTH repeatedly).
    pub state: &'static str,
    /// When an `at quota` or `rested` relay takes mail again (RFC 3339).
    pub until: Option<String>,
    /// Why it is rested (the failure), else null.
    pub reason: Option<String>,
    #[serde(skip)]
    until_at: Option<DateTime<Utc>>,
}

/// The relays a campaign sends through (its own relay, else the configured
/// default; a `--relay` given to one send is not known here), with their
/// use and state. Empty without a relay.
///
/// # Errors
/// The store failed.
pub async fn relay_statuses(
    app: &crate::App,
    campaign_relay: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<RelayStatus>> {
    let Some(given) = campaign_relay.or(app.config.relay.as_deref()) else {
        return Ok(Vec::new());
    };
    let names = rundbrief_core::config::relay_list(given);
    let rests = app.store.relay_rests(&names, now).await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let rc = app.config.relays.get(name).cloned().unwrap_or_default();
        let quota = rundbrief_store::RelayQuota {
            max_per_hour: rc.max_per_hour,
            max_per_day: rc.max_per_day,
        };
        let usage = app.store.relay_usage(name, now).await?;
        let rest = rests.iter().find(|r| r.relay == name);
        let (state, until_at) = match (rest, rundbrief_store::quota_frees_at(now, quota, usage)) {
            (Some(r), _) => ("rested", Some(r.until)),
            (None, Some(t)) => ("at quota", Some(t)),
            (None, None) => ("ok", None),
        };
        out.push(RelayStatus {
            name: name.to_string(),
            sent_hour: usage.sent_hour,
            max_per_hour: rc.max_per_hour,
            sent_day: usage.sent_day,
            max_per_day: rc.max_per_day,
            weight: rc.weight(),
            state,
            until: until_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            reason: rest.map(|r| r.reason.clone()),
            until_at,
        });
    }
    Ok(out)
}

/// The earliest time `left` messages can have been handed to `relays`
/// under their hourly and daily quotas (each relay's use so far counted,
/// a rested relay counted from when its rest ends): `None` when the quotas
/// do not delay them (they fit in what is left of this hour, or a relay
/// without a quota can take them).
pub fn quota_finish(
    now: DateTime<Utc>,
    left: u64,
    relays: &[RelayStatus],
) -> Option<DateTime<Utc>> {
    use rundbrief_store::{day_bucket, hour_bucket};
    if left == 0 || relays.is_empty() {
        return None;
    }
    let mut day_used: Vec<u64> = relays.iter().map(|r| r.sent_day).collect();
    let mut remaining = left;
    let this_hour = hour_bucket(now);
    // Bounded: a year of hours.
    for k in 0..(24 * 366) {
        let start = if k == 0 {
            now
        } else {
            this_hour + chrono::Duration::hours(k)
        };
        let end = this_hour + chrono::Duration::hours(k + 1);
        if k > 0 && hour_bucket(start) == day_bucket(start) {
            day_used.iter_mut().for_each(|d| *d = 0);
        }
        let mut capacity: u64 = 0;
        for (r, used) in relays.iter().zip(day_used.iter_mut()) {
            if r.state == "rested" && r.until_at.is_some_and(|t| t >= end) {
                continue;
            }
            if r.max_per_hour.is_none() && r.max_per_day.is_none() {
                // Unlimited: everything left goes now.
                return (k > 0).then_some(start);
            }
            let hour_left = r.max_per_hour.map_or(u64::MAX, |q| {
                q.saturating_sub(if k == 0 { r.sent_hour } else { 0 })
            });
            let day_left = r.max_per_day.map_or(u64::MAX, |q| q.saturating_sub(*used));
            let n = hour_left
                .min(day_left)
                .min(remaining - capacity.min(remaining));
            *used += n;
            capacity = capacity.saturating_add(n);
        }
        if capacity >= remaining {
            return (k > 0).then_some(start);
        }
        remaining -= capacity;
    }
    Some(this_hour + chrono::Duration::hours(24 * 366))
}

/// When a campaign is expected to finish, and what bounds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Eta {
    pub at: DateTime<Utc>,
    /// `rate`, `window` or `local-time due times`: whichever of sending,
    /// waiting for the send window and waiting for due times takes longest;
    /// `relay quota` when the relays' quotas hold the rest back longer.
    pub reason: &'static str,
}

/// The expected finish from `now`: `due` (when, how many; sorted) sent at
/// `rate` per second, only inside `window` (in its zone). Without a rate
/// (nothing sent in the last minute) sending takes no time: the answer is
/// then the earliest possible finish, and None when nothing waits.
pub fn estimate_finish(
    now: DateTime<Utc>,
    rate: Option<f64>,
    due: &[(DateTime<Utc>, u64)],
    window: Option<(rundbrief_scheduler::Window, chrono_tz::Tz)>,
) -> Option<Eta> {
    if due.iter().all(|(_, n)| *n == 0) {
        return None;
    }
    let secs = |d: chrono::Duration| d.num_milliseconds().max(0) as f64 / 1000.0;
    let (mut t, mut sending, mut windowed, mut waiting) = (now, 0.0, 0.0, 0.0);
    for (at, n) in due {
        if *at > t {
            waiting += secs(*at - t);
            t = *at;
        }
        let mut left = *n as f64;
        // Bounded: one step per window opening.
        for _ in 0..10_000 {
            if let Some((w, tz)) = window
                && !w.contains(tz, t)
            {
                let opens = w.opens_at(tz, t);
                windowed += secs(opens - t);
                t = opens;
            }
            let Some(rate) = rate else { break };
            let need = left / rate;
            let room = window.map_or(f64::INFINITY, |(w, tz)| secs(w.closes_at(tz, t) - t));
            if need <= room {
                t += chrono::Duration::milliseconds((need * 1000.0).ceil() as i64);
                sending += need;
                break;
            }
            left -= room * rate;
            sending += room;
            t += chrono::Duration::milliseconds((room * 1000.0) as i64);
        }
    }
    if rate.is_none() && t <= now {
        return None;
    }
    let reason = if waiting >= sending && waiting >= windowed {
        "local-time due times"
    } else if windowed >= sending {
        "window"
    } else {
        "rate"
    };
    Some(Eta { at: t, reason })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn relay(max_h: Option<u64>, sent_h: u64, max_d: Option<u64>, sent_d: u64) -> RelayStatus {
        RelayStatus {
            name: "r".into(),
            sent_hour: sent_h,
            max_per_hour: max_h,
            sent_day: sent_d,
            max_per_day: max_d,
            weight: 1,
            state: "ok",
            until: None,
            reason: None,
            until_at: None,
        }
    }

    #[test]
    fn the_quota_bound_walks_hours_and_days() {
        let now = utc("2026-12-03T10:20:00Z");
        // 5 an hour, all 5 used: 12 more need this hour's rest (0), then
        // 11:00, 12:00 and a part of 13:00.
        let r = [relay(Some(5), 5, None, 0)];
        assert_eq!(quota_finish(now, 12, &r), Some(utc("2026-12-03T13:00:00Z")));
        // What fits in this hour is not delayed.
        assert_eq!(quota_finish(now, 3, &[relay(Some(5), 2, None, 0)]), None);
        // A relay without a quota takes everything.
        assert_eq!(
            quota_finish(now, 100, &[r[0].clone(), relay(None, 0, None, 0)]),
            None
        );
        // 10 a day, used up: tomorrow.
        let d = [relay(None, 0, Some(10), 10)];
        assert_eq!(quota_finish(now, 4, &d), Some(utc("2026-12-04T00:00:00Z")));
        // Two relays share the load: 5 + 3 an hour.
        let two = [relay(Some(5), 5, None, 0), relay(Some(3), 3, None, 0)];
        assert_eq!(
            quota_finish(now, 16, &two),
            Some(utc("2026-12-03T12:00:00Z"))
        );
        assert_eq!(quota_finish(now, 0, &two), None);
    }

    #[test]
    fn the_slowest_provider_bounds_the_finish() {
        let now = utc("2026-12-03T10:00:00Z");
        let q = |name: &str, pending, rate, state| crate::shaping::ProviderQueue {
            name: name.into(),
            pending,
            sent: 0,
            rate,
            rate_per_s: rate,
            state,
            reason: String::new(),
        };
        let providers = [
            q("google", 1000, 100.0, "sending"),
            q("slow.example", 600, 10.0, "slowed"),
            q("held.example", 1_000_000, 0.0, "suspended"),
        ];
        // 600 at 10/s: 60 s, more than 1000 at 100/s or 1600 at 1000/s.
        let (at, why) = rate_bound(now, &providers, 1000).unwrap();
        assert_eq!(at, utc("2026-12-03T10:01:00Z"));
        assert!(why.contains("slow.example"), "{why}");
        // A global rate of 20/s: 1600 left take 80 s.
        let (at, why) = rate_bound(now, &providers, 20).unwrap();
        assert_eq!(at, utc("2026-12-03T10:01:20Z"));
        assert!(why.starts_with("rate"), "{why}");
        assert_eq!(rate_bound(now, &providers[2..], 20), None);
    }

    #[test]
    fn eta_is_bounded_by_rate_window_or_due_times() {
        let now = utc("2026-12-03T10:00:00Z");
        // 3,600 now at 10/s: six minutes, the rate decides.
        let e = estimate_finish(now, Some(10.0), &[(now, 3600)], None).unwrap();
        assert_eq!((e.at, e.reason), (utc("2026-12-03T10:06:00Z"), "rate"));
        // Half of them due tomorrow at 08:00Z: the due time decides.
        let tomorrow = utc("2026-12-04T08:00:00Z");
        let e = estimate_finish(now, Some(10.0), &[(now, 1800), (tomorrow, 1800)], None).unwrap();
        assert_eq!(
            (e.at, e.reason),
            (utc("2026-12-04T08:03:00Z"), "local-time due times")
        );
        // A window 08:00-09:00 UTC: closed now, then one hour a day at
        // 10/s = 36,000 a day; 50,000 take two windows.
        let w = rundbrief_scheduler::Window::parse("08:00-09:00").unwrap();
        let e =
            estimate_finish(now, Some(10.0), &[(now, 50_000)], Some((w, chrono_tz::UTC))).unwrap();
        assert_eq!((e.at, e.reason), (utc("2026-12-05T08:23:20Z"), "window"));
        // No rate measured yet: the earliest finish is the last due time.
        let e = estimate_finish(now, None, &[(now, 5), (tomorrow, 5)], None).unwrap();
        assert_eq!((e.at, e.reason), (tomorrow, "local-time due times"));
        assert_eq!(estimate_finish(now, None, &[(now, 5)], None), None);
        assert_eq!(estimate_finish(now, Some(1.0), &[], None), None);
    }
}
