//! The dashboard's pages, rendered on the server with maud (checked at
//! compile time; every `(value)` is HTML-escaped). No JavaScript: actions
//! are forms that carry the session's CSRF token. One stylesheet
//! ([`STYLE`]) makes the pages readable from 375 px up, light or dark as the
//! reader's system prefers.

use crate::api::{change_state, status_of};
use crate::auth::{self, LOGIN_COOKIE, SESSION_COOKIE, Session};
use crate::lists::list_href;
use crate::{AdminState, ClientAddr};
use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use rundbrief_app::AppError;
use rundbrief_core::{Address, CampaignState};
use std::collections::HashMap;

/// The stylesheet of every page (served as `/admin.css`: the CSP allows no
/// inline style).
pub const STYLE: &str = include_str!("admin.css");

/// How often a page that shows a running campaign reloads itself.
pub const REFRESH_SECS: u32 = 5;

/// `GET /admin.css`.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

pub(crate) fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    page_refreshing(title, session, body, false)
}

/// A page; with `refresh`, the browser loads it again every
/// [`REFRESH_SECS`] (a running campaign's progress, without JavaScript).
pub(crate) fn page_refreshing(
    title: &str,
    session: Option<&Session>,
    body: Markup,
    refresh: bool,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                @if refresh { meta http-equiv="refresh" content=(REFRESH_SECS); }
                title { (title) " · rundbrief" }
                link rel="stylesheet" href="/admin.css";
            }
            body {
                header {
                    nav {
                        a href="/" class="brand" { "rundbrief" }
                        @if let Some(s) = session {
                            a href="/lists" { "Lists" }
                            a href="/bounces" { "Bounces" }
                            span class="who" { (s.admin) }
                            form method="post" action="/logout" class="inline" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(crate) fn html_response(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// 303 to the page of campaign `name`.
fn to_campaign(name: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&campaign_href(name)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub(crate) fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

pub(crate) fn error_page(status: StatusCode, session: Option<&Session>, message: &str) -> Response {
    html_response(
        status,
        page(
            "Error",
            session,
            html! { h1 { "Error" } p class="error" { (message) } p { a href="/" { "Back to the overview" } } },
        ),
    )
}

pub(crate) fn app_error_page(session: &Session, e: &AppError) -> Response {
    let status =
        StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = crate::api::message(e), "dashboard request failed");
    }
    error_page(status, Some(session), &crate::api::message(e))
}

fn login_page(csrf: &str, message: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(m) = message { p class="error" role="alert" { (m) } }
            form method="post" action="/login" class="login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="username" { "User name" }
                input id="username" name="username" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
        },
    )
}

/// `GET /login`: the form, with a fresh CSRF token in a cookie and the form
/// (double submit: the login has no session to keep a token in yet).
pub async fn login_form(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if state.0.sessions.get(&headers).is_some() {
        return redirect("/");
    }
    login_with_token(&state, StatusCode::OK, None)
}

fn login_with_token(state: &AdminState, status: StatusCode, message: Option<&str>) -> Response {
    let token = auth::random_hex(32);
    let mut r = html_response(status, login_page(&token, message));
    let cookie = auth::set_cookie(
        LOGIN_COOKIE,
        &token,
        "/login",
        Some(3600),
        state.0.opts.secure_cookies,
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `POST /login` (fields `username`, `password`, `csrf`): rate-limited per
/// client and per name (429 with Retry-After), then the CSRF token, then the
/// password. Success starts a session and goes to the overview.
pub async fn login(
    State(state): State<AdminState>,
    Extension(ClientAddr(peer)): Extension<ClientAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let (name, password) = (field("username").trim(), field("password"));
    if let Err(wait) = state.0.limits.check(peer.ip(), name) {
        tracing::warn!(%peer, name, "login attempts over the limit");
        let mut r = login_with_token(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many login attempts: wait a minute and try again."),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if let Some(wait) = state.0.limits.locked(name) {
        tracing::warn!(%peer, name, "login to a locked-out name");
        let mut r = login_with_token(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed logins for this name: it is locked for a while."),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let expected = auth::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !auth::same(expected, field("csrf")) {
        return login_with_token(
            &state,
            StatusCode::FORBIDDEN,
            Some("The form expired: log in again."),
        );
    }
    let stored = match state.app().store.admin_password_hash(name).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "reading an admin user");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "The database is unavailable.",
            );
        }
    };
    if !auth::check_login(stored, password.to_string()).await {
        tracing::warn!(%peer, name, "failed login");
        if state.0.limits.failed(name) {
            tracing::warn!(name, "locked out after repeated failed logins");
        }
        return login_with_token(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
        );
    }
    let secure = state.0.opts.secure_cookies;
    let ttl = state.0.opts.session_ttl;
    state.0.limits.succeeded(name);
    let token = state.0.sessions.create(name, ttl);
    tracing::info!(%peer, admin = name, "logged in");
    let mut r = redirect("/");
    for c in [
        auth::set_cookie(SESSION_COOKIE, &token, "/", Some(ttl.as_secs()), secure),
        auth::set_cookie(LOGIN_COOKIE, "", "/login", Some(0), secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// The session and its checked CSRF token for a state-changing form:
/// 401 without a session, 403 with a wrong or missing token.
#[allow(clippy::result_large_err)] // the error is the response, returned at once
fn checked(
    state: &AdminState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Session, Response> {
    let Some(s) = state.0.sessions.get(headers) else {
        return Err(error_page(
            StatusCode::UNAUTHORIZED,
            None,
            "Your session has ended: log in again.",
        ));
    };
    let given = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !auth::same(&s.csrf, given) {
        tracing::warn!(admin = s.admin, "a form without the session's CSRF token");
        return Err(error_page(
            StatusCode::FORBIDDEN,
            Some(&s),
            "This form did not come from this session (CSRF token mismatch): reload the page and try again.",
        ));
    }
    Ok(s)
}

/// `POST /logout` (CSRF-checked).
pub async fn logout(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = checked(&state, &headers, &form) {
        return r;
    }
    state.0.sessions.remove(&headers);
    let mut r = redirect("/login");
    let c = auth::set_cookie(
        SESSION_COOKIE,
        "",
        "/",
        Some(0),
        state.0.opts.secure_cookies,
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Deliveries done (not pending) and the total.
fn progress(v: &serde_json::Value) -> (u64, u64) {
    let total = v["total"].as_u64().unwrap_or(0);
    let pending = v["pending"].as_u64().unwrap_or(0);
    (total.saturating_sub(pending), total)
}

fn percent(done: u64, total: u64) -> u64 {
    (done * 100).checked_div(total).unwrap_or(0)
}

pub(crate) fn campaign_href(name: &str) -> String {
    format!("/campaigns/{}", encode_segment(name))
}

/// A path segment, percent-encoded (a name may hold any printable character).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /`: lists with member counts, campaigns with state and progress.
pub async fn overview(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some(session) = state.0.sessions.get(&headers) else {
        return redirect("/login");
    };
    let app = state.app();
    let result: rundbrief_app::Result<_> = async {
        // Counted in the background (`member_counts`): the exact count
        // joins every membership with its subscriber.
        let lists = state.member_counts().get();
        let mut campaigns = Vec::new();
        for c in app.store.campaigns().await? {
            let counts = app.store.campaign_counts(c.id).await?;
            campaigns.push((c, counts));
        }
        let activity = crate::activity::Activity::read(app, app.clock.now()).await?;
        Ok((lists, campaigns, activity))
    }
    .await;
    let (lists, campaigns, activity) = match result {
        Ok(x) => x,
        Err(e) => return app_error_page(&session, &e),
    };
    let (hourly, daily) = (activity.hourly(), activity.daily());
    let body = html! {
        h1 { "Overview" }
        form method="get" action="/subscribers" class="search" role="search" {
            label for="email" { "Find a subscriber" }
            input id="email" name="email" type="email" placeholder="name@example.org" required;
            button type="submit" { "Show" }
        }
        section id="activity" {
            h2 { "Sending and bounces" }
            div class="charts" {
                (hourly.render())
                (daily.render())
            }
        }
        section {
            h2 { a href="/lists" { "Lists" } }
            @if let Some(snap) = &lists {
                p class="counts-age" { small {
                    "Member counts as of " (snap.at.elapsed().as_secs()) " s ago (counted in "
                    (snap.took.as_millis()) " ms every " (crate::member_counts::REFRESH_EVERY.as_secs())
                    " s or more); exact ones on " a href="/lists" { "Lists" } "."
                } }
            }
            @if lists.is_none() { p { "Counting members… exact counts are on " a href="/lists" { "Lists" } "." } }
            @else if lists.as_ref().is_some_and(|s| s.lists.is_empty()) { p { "No lists yet: " code { "rundbrief list create NAME" } } }
            @else {
                ul class="cards" { @for l in lists.iter().flat_map(|s| &s.lists) {
                    li class="card" {
                        a href=(list_href(&l.list.name)) { strong { (l.list.name) } }
                        @if let Some(d) = &l.list.description { p class="subject" { (d) } }
                        p class="counts-line" {
                            strong { (l.counts.subscribed) } " subscribed · "
                            (l.counts.unconfirmed) " unconfirmed · "
                            (l.counts.unsubscribed) " unsubscribed · "
                            (l.counts.bounced) " bounced · "
                            (l.counts.blocklisted) " blocklisted"
                        }
                    }
                } }
            }
        }
        section {
            h2 { "Campaigns" }
            @if campaigns.is_empty() { p { "No campaigns yet: " code { "rundbrief campaign create" } } }
            @else {
                ul class="cards" { @for (c, n) in &campaigns {
                    @let done = n.total.saturating_sub(n.pending);
                    li class="card" {
                        a href=(campaign_href(&c.name)) { strong { (c.name) } }
                        " " span class={ "state " (c.state.as_str()) } { (c.state.as_str()) }
                        p class="subject" { (c.subject) }
                        p class="lists" { small { (c.lists.join(", ")) } }
                        progress value=(done) max=(n.total.max(1)) { (percent(done, n.total)) "%" }
                        small { (done) " of " (n.total) " done · " (n.sent) " sent · " (n.failed) " failed · " (n.bounced) " bounced" }
                    }
                } }
            }
        }
    };
    let running = campaigns
        .iter()
        .any(|(c, _)| c.state == CampaignState::Running);
    html_response(
        StatusCode::OK,
        page_refreshing("Overview", Some(&session), body, running),
    )
}

/// `GET /campaigns/{name}`: status, top errors, held prunes, pause and
/// resume.
pub async fn campaign(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(session) = state.0.sessions.get(&headers) else {
        return redirect("/login");
    };
    let app = state.app();
    let result: rundbrief_app::Result<_> = async {
        let c = app.store.campaign(&name).await?;
        let v = status_of(&state, &name).await?;
        let held: Vec<_> = app
            .bounces()
            .held(None)
            .await?
            .into_iter()
            .filter(|p| p.campaign == c.campaign.name)
            .collect();
        let now = app.clock.now();
        let from = c.campaign.created_at.max(now - chrono::Duration::days(7));
        let sends = app.store.send_stats(Some(c.campaign.id), from).await?;
        let rate = crate::activity::send_rate(&sends, from, now);
        let classes = app.store.campaign_bounce_classes(c.campaign.id).await?;
        Ok((c, v, held, rate, classes))
    }
    .await;
    let (c, v, held, rate, classes) = match result {
        Ok(x) => x,
        Err(e) => return app_error_page(&session, &e),
    };
    let (done, total) = progress(&v);
    let st = c.campaign.state;
    let href = campaign_href(&c.campaign.name);
    let counts = [
        "total",
        "sent",
        "pending",
        "sending",
        "deferred",
        "failed",
        "bounced",
        "rejected",
        "held_prunes",
    ];
    let body = html! {
        p { a href="/" { "← Overview" } }
        h1 { (c.campaign.name) " " span class={ "state " (st.as_str()) } { (st.as_str()) } }
        p class="subject" { (c.campaign.subject) }
        p { small { "Lists: " (c.campaign.lists.join(", ")) } }
        progress value=(done) max=(total.max(1)) { (percent(done, total)) "%" }
        p { (percent(done, total)) "% done (" (done) " of " (total) ")"
            @if let Some(r) = v["rate_per_s"].as_f64() { " · " (format!("{r:.1}")) " messages/s" }
            @if let Some(eta) = v["eta_s"].as_u64() { " · about " (human_secs(eta)) " left" } }
        @if let Some(at) = v["eta"].as_str() {
            p id="eta" { "Expected to finish at " time datetime=(at) { (at) }
                @if let Some(why) = v["eta_reason"].as_str() { " (bounded by " (why) ")" } }
        }
        @if let Some(why) = v["paused_reason"].as_str() {
            p id="paused-reason" class="error" role="status" { "Paused by the circuit breaker: " (why)
                " — " strong { "Resume" } " lifts it." }
        }
        div class="actions" {
            @if st.can_become(CampaignState::Paused) {
                form method="post" action={ (href) "/pause" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Pause" }
                }
            }
            @if st == CampaignState::Paused {
                form method="post" action={ (href) "/resume" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Resume" }
                }
            }
            @if v["failed"].as_u64().unwrap_or(0) > 0 && matches!(st, CampaignState::Running | CampaignState::Paused | CampaignState::Finished) {
                form method="post" action={ (href) "/retry-failed" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Retry failed" }
                }
            }
        }
        @if st.can_become(CampaignState::Cancelled) {
            form method="post" action={ (href) "/cancel" } class="confirm" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { input type="checkbox" name="confirm" value="yes" required; " Yes, cancel it for good (a cancelled campaign cannot run again)" }
                button type="submit" class="danger" { "Cancel campaign" }
            }
        }
        details class="preview" {
            summary { "Preview of the message" }
            iframe sandbox="" src={ (href) "/preview" } title={ "Preview of " (c.campaign.name) } loading="lazy" {}
        }
        section {
            h2 { "Deliveries" }
            dl class="counts" { @for k in counts {
                div { dt { (k.replace('_', " ")) } dd { (v[k].as_u64().unwrap_or(0)) } }
            } }
        }
        section id="activity" {
            h2 { "Sending" }
            div class="charts" {
                (rate.render())
                @if classes.is_empty() {
                    figure class="chart ranking" id="chart-campaign-bounces" { figcaption { strong { "Bounces by class" } } p { "No bounces stored for this campaign." } }
                } @else {
                    (crate::charts::ranking("chart-campaign-bounces", "Bounces by class",
                        "How many stored bounces of this campaign fall in each class.", "bounces", &classes))
                }
            }
        }
        (providers_section(&v))
        (due_section(&v))
        section {
            h2 { "Top errors" }
            @match v["errors"].as_array() {
                Some(errs) if !errs.is_empty() => {
                    div class="scroll" { table {
                        thead { tr { th { "State" } th { "Error" } th class="num" { "Count" } } }
                        tbody { @for e in errs { tr {
                            td { (e["state"].as_str().unwrap_or("")) }
                            td class="wrap" { (e["error"].as_str().unwrap_or("-")) }
                            td class="num" { (e["count"].as_u64().unwrap_or(0)) }
                        } } }
                    } }
                }
                _ => { p { "None." } }
            }
        }
        section {
            h2 { "Held prunes" }
            @if held.is_empty() { p { "None." } }
            @else {
                p { "Hard bounces from these domains look like a block; the subscribers stay until you decide ("
                    code { "rundbrief bounce held release|discard" } ")." }
                div class="scroll" { table {
                    thead { tr { th { "Domain" } th { "Address" } th { "Reason" } } }
                    tbody { @for p in &held { tr {
                        td { (p.domain) }
                        td class="wrap" { a href={ "/subscribers/" (encode_segment(&p.email)) } { (p.email) } }
                        td class="wrap" { (p.reason) }
                    } } }
                } }
                (held_forms(&held, &format!("{href}/held"), &session.csrf))
            }
        }
    };
    html_response(
        StatusCode::OK,
        page_refreshing(
            &c.campaign.name,
            Some(&session),
            body,
            st == CampaignState::Running,
        ),
    )
}

/// A number of seconds as hours, minutes and seconds (`1 h 2 min`).
fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The campaign's queue per mailbox provider (`providers` of the status
/// object): suspended and slowed ones highlighted, with what lifts them.
fn providers_section(v: &serde_json::Value) -> Markup {
    let empty = Vec::new();
    let providers = v["providers"].as_array().unwrap_or(&empty);
    let suspended = providers.iter().any(|p| p["state"] == "suspended");
    html! {
        section id="providers" {
            h2 { "Queue per provider" }
            @if providers.is_empty() { p { "No deliveries yet." } }
            @else {
                @if suspended {
                    p class="error" role="status" { "The circuit breaker suspended sending to some providers for this campaign; "
                        strong { "Resume" } " (or " code { "rundbrief campaign resume NAME [--provider P]" } ") lifts the suspension." }
                }
                div class="scroll" { table {
                    thead { tr { th { "Provider" } th { "State" } th class="num" { "Pending" } th class="num" { "Sent" } th class="num" { "Rate (msg/s)" } th { "Why" } } }
                    tbody { @for p in providers {
                        @let state = p["state"].as_str().unwrap_or("sending");
                        tr class=(state) data-provider=(p["name"].as_str().unwrap_or("")) {
                            td class="wrap" { (p["name"].as_str().unwrap_or("")) }
                            td { span class={ "state " (state) } { (state) } }
                            td class="num" { (p["pending"].as_u64().unwrap_or(0)) }
                            td class="num" { (p["sent"].as_u64().unwrap_or(0)) }
                            td class="num" { (format!("{:.1}", p["rate"].as_f64().unwrap_or(0.0))) }
                            td class="wrap" { (p["reason"].as_str().unwrap_or("")) }
                        }
                    } }
                } }
            }
        }
    }
}

/// When the pending deliveries are due (`due` of the status object, by
/// UTC hour), and the local-time settings when the campaign has them.
fn due_section(v: &serde_json::Value) -> Markup {
    let empty = Vec::new();
    let due = v["due"].as_array().unwrap_or(&empty);
    let lt = &v["local_time"];
    html! {
        section id="due" {
            h2 { "Due" }
            @if lt.is_object() {
                p id="local-time" { "Sent at " strong { (lt["at"].as_str().unwrap_or("")) }
                    @if let Some(d) = lt["date"].as_str() { " on " (d) }
                    " in each reader's zone (attribute " code { (lt["tz_attr"].as_str().unwrap_or("")) }
                    ", else " (lt["default_tz"].as_str().unwrap_or("")) ")."
                    @if let Some(n) = lt["fallback"].as_u64() { @if n > 0 { " " (n) " without a valid zone get the default." } } }
            }
            @if due.is_empty() { p { "Nothing waits." } }
            @else {
                div class="scroll" { table {
                    thead { tr { th { "Due from (UTC hour)" } th class="num" { "Pending" } } }
                    tbody { @for g in due { tr {
                        td { (g["at"].as_str().unwrap_or("")) }
                        td class="num" { (g["pending"].as_u64().unwrap_or(0)) }
                    } } }
                } }
            }
        }
    }
}

async fn act(
    state: AdminState,
    name: String,
    headers: HeaderMap,
    form: HashMap<String, String>,
    to: CampaignState,
) -> Response {
    let session = match checked(&state, &headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match change_state(&state, &session.admin, &name, to).await {
        Ok(_) => to_campaign(&name),
        Err(e) => app_error_page(&session, &e),
    }
}

/// `POST /campaigns/{name}/pause` (session + CSRF).
pub async fn pause(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    act(state, name, headers, form, CampaignState::Paused).await
}

/// `POST /campaigns/{name}/resume` (session + CSRF): running again;
/// `rundbrief serve` sends it.
pub async fn resume(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    act(state, name, headers, form, CampaignState::Running).await
}

/// `GET /subscribers/{email}`: status, memberships and the audit trail.
pub async fn subscriber(
    State(state): State<AdminState>,
    Path(email): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(session) = state.0.sessions.get(&headers) else {
        return redirect("/login");
    };
    let d = match Address::parse(&email) {
        Ok(a) => state
            .app()
            .store
            .subscriber_detail(&a)
            .await
            .map_err(AppError::from),
        Err(e) => Err(e.into()),
    };
    let d = match d {
        Ok(d) => d,
        Err(e) => return app_error_page(&session, &e),
    };
    let s = &d.subscriber;
    let body = html! {
        p { a href="/" { "← Overview" } }
        h1 class="wrap" { (s.email) }
        p { (s.name.as_deref().unwrap_or("")) " " span class={ "state " (s.status.as_str()) } { (s.status.as_str()) } }
        @let href = format!("/subscribers/{}", encode_segment(&s.email));
        div class="actions" {
            @if s.status == rundbrief_core::SubscriberStatus::Bounced {
                form method="post" action={ (href) "/restore" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Restore (undo the bounce prune)" }
                }
            }
            @if s.status == rundbrief_core::SubscriberStatus::Undeliverable {
                form method="post" action={ (href) "/restore" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Restore (undo the domain check's mark)" }
                }
            }
            @if s.status == rundbrief_core::SubscriberStatus::Active {
                form method="post" action={ (href) "/unsubscribe" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Unsubscribe from everything" }
                }
            }
        }
        @if s.status != rundbrief_core::SubscriberStatus::Blocklisted {
            form method="post" action={ (href) "/blocklist" } class="confirm" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { input type="checkbox" name="confirm" value="yes" required; " Yes, never mail this address again" }
                button type="submit" class="danger" { "Blocklist" }
            }
        }
        section {
            h2 { "Memberships" }
            @if d.memberships.is_empty() { p { "None." } }
            @else { ul { @for m in &d.memberships { li { (m.list) ": " (m.status.as_str()) } } } }
        }
        section {
            h2 { "Audit trail" }
            div class="scroll" { table {
                thead { tr { th { "When" } th { "What" } th { "Who" } th { "Why" } } }
                tbody { @for a in &d.audit { tr {
                    td { (a.at.format("%Y-%m-%d %H:%M")) } td { (a.action.as_str()) }
                    td { (a.actor.as_str()) } td class="wrap" { (a.reason) }
                } } }
            } }
        }
    };
    html_response(StatusCode::OK, page(&s.email, Some(&session), body))
}

/// The domains of `held`, each once, in order.
fn held_domains(held: &[rundbrief_store::DomainPrune]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for p in held {
        if !out.contains(&p.domain.as_str()) {
            out.push(&p.domain);
        }
    }
    out
}

/// `POST /campaigns/{name}/held/release` (session + CSRF, field `domain`):
/// applies every held prune of the domain (as `bounce held release
/// --domain D`), audited with actor `admin` and the admin's name.
pub async fn release_held(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let back = campaign_href(&name);
    decide_held(state, &back, headers, form, true).await
}

/// `POST /campaigns/{name}/held/discard` (session + CSRF, field `domain`):
/// drops every held prune of the domain; the subscribers stay.
pub async fn discard_held(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let back = campaign_href(&name);
    decide_held(state, &back, headers, form, false).await
}

/// `POST /bounces/held/release` and `/discard` (session + CSRF, field
/// `domain`): as on a campaign's page, back to the bounces page.
pub async fn bounces_held(
    State(state): State<AdminState>,
    Path(verb): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    match verb.as_str() {
        "release" => decide_held(state, "/bounces", headers, form, true).await,
        "discard" => decide_held(state, "/bounces", headers, form, false).await,
        _ => api_free_404(&state, &headers),
    }
}

fn api_free_404(state: &AdminState, headers: &HeaderMap) -> Response {
    let session = state.0.sessions.get(headers);
    error_page(StatusCode::NOT_FOUND, session.as_ref(), "No such action.")
}

async fn decide_held(
    state: AdminState,
    back: &str,
    headers: HeaderMap,
    form: HashMap<String, String>,
    release: bool,
) -> Response {
    let session = match checked(&state, &headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let domain = form
        .get("domain")
        .map(|d| d.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if domain.is_empty() {
        return error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(&session),
            "Name the domain.",
        );
    }
    let result: rundbrief_app::Result<usize> = async {
        let app = state.app();
        if release {
            let released = app
                .bounces()
                .release_held(
                    Some(&domain),
                    rundbrief_core::Actor::Admin,
                    &format!("admin {}", session.admin),
                )
                .await?;
            Ok(released.len())
        } else {
            Ok(app.bounces().discard_held(Some(&domain)).await?.len())
        }
    }
    .await;
    match result {
        Ok(n) => {
            let verb = if release {
                "held-release"
            } else {
                "held-discard"
            };
            state
                .audit(&session.admin, verb, &domain, &format!("{n} prune(s)"))
                .await;
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(back) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => app_error_page(&session, &e),
    }
}

/// `GET /subscribers?email=ADDRESS` (the overview's search form): to the
/// subscriber's page.
pub async fn find_subscriber(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Form(query): Form<HashMap<String, String>>,
) -> Response {
    if state.0.sessions.get(&headers).is_none() {
        return redirect("/login");
    }
    let email = query.get("email").map(|e| e.trim()).unwrap_or_default();
    let to = format!("/subscribers/{}", encode_segment(email));
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `POST /campaigns/{name}/cancel` (session + CSRF + `confirm=yes`, the
/// form's checkbox): cancelled for good.
pub async fn cancel(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match checked(&state, &headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if form.get("confirm").map(String::as_str) != Some("yes") {
        return error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(&session),
            "Cancelling cannot be undone: tick the box to confirm.",
        );
    }
    act(state, name, headers, form, CampaignState::Cancelled).await
}

/// `POST /campaigns/{name}/retry-failed` (session + CSRF): failed deliveries
/// of still-active subscribers are pending again and the campaign runs
/// again (`campaign retry-failed NAME`); `rundbrief serve` sends them.
pub async fn retry_failed(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match checked(&state, &headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match state.app().store.retry_failed(&name).await {
        Ok(n) => {
            state
                .audit(
                    &session.admin,
                    "campaign-retry-failed",
                    &name,
                    &format!("deliveries pending again: {n}"),
                )
                .await;
            to_campaign(&name)
        }
        Err(e) => app_error_page(&session, &e.into()),
    }
}

/// `POST /subscribers/{email}/{action}` (session + CSRF): `restore` (a
/// bounced subscriber, as `sub restore`), `unsubscribe` (from everything,
/// as `sub unsubscribe`), `blocklist` (needs `confirm=yes`, as `sub
/// blocklist`). Audited on the subscriber with actor `admin` and the
/// admin's name, and in the admin audit.
pub async fn subscriber_action(
    State(state): State<AdminState>,
    Path((email, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    use rundbrief_core::Actor;
    let session = match checked(&state, &headers, &form) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let addr = match Address::parse(&email) {
        Ok(a) => a,
        Err(e) => return app_error_page(&session, &e.into()),
    };
    let why = format!("from the dashboard by admin {}", session.admin);
    let store = &state.app().store;
    let done: Result<(), rundbrief_store::StoreError> = match action.as_str() {
        "restore" => store.restore_subscriber(&addr, Actor::Admin, &why).await,
        "unsubscribe" => store
            .unsubscribe(&addr, None, Actor::Admin, &why)
            .await
            .map(drop),
        "blocklist" if form.get("confirm").map(String::as_str) == Some("yes") => {
            store.blocklist(&addr, Actor::Admin, &why).await.map(drop)
        }
        "blocklist" => {
            return error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&session),
                "Blocklisting is for good: tick the box to confirm.",
            );
        }
        _ => return error_page(StatusCode::NOT_FOUND, Some(&session), "No such action."),
    };
    if let Err(e) = done {
        return app_error_page(&session, &e.into());
    }
    state
        .audit(
            &session.admin,
            &format!("subscriber-{action}"),
            addr.as_str(),
            "",
        )
        .await;
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/subscribers/{}", encode_segment(addr.as_str())))
    {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Release and Discard buttons for each domain of `held`, posting to
/// `{base}/release` and `{base}/discard`.
fn held_forms(held: &[rundbrief_store::DomainPrune], base: &str, csrf: &str) -> Markup {
    html! {
        @for domain in held_domains(held) {
            div class="actions" {
                span { "All held prunes of " strong { (domain) } ": " }
                @for (verb, label) in [("release", "Release (prune them)"), ("discard", "Discard (keep them)")] {
                    form method="post" action={ (base) "/" (verb) } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="domain" value=(domain);
                        button type="submit" { (label) }
                    }
                }
            }
        }
    }
}

/// Receiving domains the bounces page ranks.
pub const TOP_DOMAINS: u64 = 10;

/// How many recent stored bounces the bounces page shows.
pub const RECENT_BOUNCES: u64 = 50;

/// `GET /bounces`: every held prune with Release / Discard per domain, the
/// recent stored bounces by class, and each with its class, rule and
/// diagnostic (`bounce ls`).
pub async fn bounces(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some(session) = state.0.sessions.get(&headers) else {
        return redirect("/login");
    };
    let app = state.app();
    let result: rundbrief_app::Result<_> = async {
        let held = app.bounces().held(None).await?;
        let recent = app
            .store
            .bounces(&rundbrief_store::BounceQuery {
                limit: RECENT_BOUNCES,
                ..Default::default()
            })
            .await?;
        let now = app.clock.now();
        let month = now - chrono::Duration::days(30);
        let classes =
            crate::activity::bounce_classes(&app.store.bounce_stats(month, false).await?, now);
        let domains = app.store.bounces_by_domain(month, TOP_DOMAINS).await?;
        Ok((held, recent, classes, domains))
    }
    .await;
    let (held, recent, classes, domains) = match result {
        Ok(x) => x,
        Err(e) => return app_error_page(&session, &e),
    };
    let mut by_class: Vec<(String, u64)> = Vec::new();
    for b in &recent {
        let class = b.class.clone().unwrap_or_else(|| "-".into());
        match by_class.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => *n += 1,
            None => by_class.push((class, 1)),
        }
    }
    by_class.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let body = html! {
        p { a href="/" { "← Overview" } }
        h1 { "Bounces" }
        section id="activity" {
            h2 { "Over time" }
            (classes.render())
            h2 { "By receiving domain" }
            @if domains.is_empty() {
                div id="bounce-domains" { p { "No bounces in the last 30 days." } }
            } @else {
                (crate::charts::ranking("bounce-domains", "Top receiving domains, last 30 days",
                    "The receiving domains whose mail bounced most in the last 30 days, with their counts.", "bounces", &domains))
            }
        }
        section {
            h2 { "Held prunes" }
            @if held.is_empty() { p { "None." } }
            @else {
                p { "Hard bounces from these domains looked like a block; the subscribers stay until you decide." }
                div class="scroll" { table {
                    thead { tr { th { "Domain" } th { "Campaign" } th { "Address" } th { "Reason" } } }
                    tbody { @for p in &held { tr {
                        td { (p.domain) }
                        td { a href=(campaign_href(&p.campaign)) { (p.campaign) } }
                        td class="wrap" { a href={ "/subscribers/" (encode_segment(&p.email)) } { (p.email) } }
                        td class="wrap" { (p.reason) }
                    } } }
                } }
                (held_forms(&held, "/bounces/held", &session.csrf))
            }
        }
        section {
            h2 { "Recent bounces" }
            @if recent.is_empty() { p { "None stored." } }
            @else {
                p { "The last " (recent.len()) " stored messages, by class: "
                    @for (i, (class, n)) in by_class.iter().enumerate() {
                        @if i > 0 { ", " }
                        strong { (n) } " " (class)
                    }
                }
                ul class="cards" { @for b in &recent {
                    @let first = b.parsed.as_ref().and_then(|p| p["recipients"].get(0)).cloned().unwrap_or_default();
                    li class="card" {
                        strong class="wrap" { (first["address"].as_str().or(b.rcpt.as_deref()).unwrap_or("-")) }
                        p {
                            span class={ "state " (b.class.as_deref().unwrap_or("")) } { (b.class.as_deref().unwrap_or("unparsed")) }
                            " " small { (b.kind.as_deref().unwrap_or("")) " · " (b.received_at.format("%Y-%m-%d %H:%M")) }
                        }
                        p class="wrap" {
                            "rule " code { (b.parsed.as_ref().and_then(|p| p["rule"].as_str()).unwrap_or("-")) }
                            @if let Some(d) = first["diagnostic"].as_str() { br; small { (d) } }
                            @if let Some(e) = &b.error { br; small class="error" { (e) } }
                        }
                    }
                } }
            }
        }
    };
    html_response(StatusCode::OK, page("Bounces", Some(&session), body))
}

/// The policy of a message preview: the campaign's own HTML (operator
/// content, raw HTML allowed) runs in a sandbox without scripts, may use its
/// inline styles and remote images, and may be framed only by our pages.
pub const PREVIEW_CSP: &str = "sandbox; default-src 'none'; style-src 'unsafe-inline'; \
     img-src https: data:; frame-ancestors 'self'";

/// `GET /campaigns/{name}/preview`: the HTML part of the campaign's message
/// as its first recipient (else a sample one) would get it, for the
/// sandboxed frame of the campaign page.
pub async fn preview(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(session) = state.0.sessions.get(&headers) else {
        return redirect("/login");
    };
    let app = state.app();
    let result: rundbrief_app::Result<String> = async {
        let c = app.store.campaign(&name).await?;
        let prepared = rundbrief_app::campaigns::prepare_first(&app.config, &c)?;
        let first = app
            .store
            .deliveries(c.campaign.id)
            .await?
            .into_iter()
            .next();
        let (email, subscriber, delivery, person) = match first {
            Some(d) => {
                let detail = app
                    .store
                    .subscriber_detail(&Address::parse(&d.email)?)
                    .await?;
                (
                    d.email,
                    d.subscriber_id,
                    d.delivery_id,
                    Some(detail.subscriber),
                )
            }
            None => (
                "preview@example.org".to_string(),
                uuid::Uuid::nil(),
                uuid::Uuid::nil(),
                None,
            ),
        };
        let recipient = prepared.recipient(
            email,
            person
                .as_ref()
                .map_or(Some("Preview".into()), |p| p.name.clone()),
            person.map(|p| p.attributes).unwrap_or_default(),
            subscriber,
            c.first_list_id.unwrap_or_default(),
            delivery,
        );
        let bytes = prepared.renderer.render(&recipient, app.clock.now())?;
        let message = mail_parser::MessageParser::default()
            .parse(&bytes[..])
            .ok_or_else(|| AppError::unavailable("the rendered message does not parse"))?;
        Ok(message
            .body_html(0)
            .map(|h| h.into_owned())
            .unwrap_or_default())
    }
    .await;
    match result {
        Ok(html) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, PREVIEW_CSP),
                (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
            ],
            html,
        )
            .into_response(),
        Err(e) => app_error_page(&session, &e),
    }
}
