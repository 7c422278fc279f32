//! `rundbrief-http`: the public HTTP endpoint behind `sending.public_url`.
//!
//! Owns the pages and the HTTP side of: one-click unsubscribe (RFC 8058)
//! and its page (`/u/TOKEN`), the re-subscribe button shown after it
//! (`/r/TOKEN`), double opt-in (`POST /s/LIST`, `/c/TOKEN`), the rate limits
//! of the subscribe endpoint, and the HTTP server itself: a bounded accept
//! loop with per-connection header timeouts, request body limits, request
//! timeouts and security headers on every answer.
//!
//! What each request does to a membership is the application layer's
//! ([`rundbrief_app::members`]; the confirmation mail and its queue are
//! [`rundbrief_app::confirm`]). Never here: SQL, SMTP, or JavaScript in a
//! page. Every state change is keyed by ids from a signed token; a forged
//! or altered token gets 404 and changes nothing.
//!
//! Start with [`router`] (the routes and what each does), then [`serve`]
//! (the accept loop).
//!
//! Why GET never changes anything: mail providers and corporate gateways
//! fetch every link in a message to scan it. A GET only shows a page with
//! one button; the button POSTs. RFC 8058 one-click unsubscribe is a POST
//! by design for the same reason.

pub mod limit;
pub mod pages;
mod server;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use rundbrief_app::members::{Confirmation, Members, Requested, UnsubscribeVia};
use rundbrief_app::{AppError, ErrorKind};
use rundbrief_core::config::HttpConfig;
use rundbrief_core::{Actor, Purpose};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

pub use limit::Limits;
pub use rundbrief_app::confirm::{ConfirmJob, Mailer, Outbox};
pub use server::{Shape, serve, serve_router};

/// The `Content-Security-Policy` of every answer: nothing may load, inline
/// styles excepted; forms post only to us; no framing.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// The body a mail provider POSTs for RFC 8058 one-click unsubscribe.
pub const ONE_CLICK_BODY: &[u8] = b"List-Unsubscribe=One-Click";

/// What can go wrong outside a request (requests answer with pages).
/// Why the HTTP listener stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Accepting connections failed.
    #[error("the HTTP listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The peer of a connection, put on each request by [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    members: Members,
    cfg: HttpConfig,
    limits: Limits,
    outbox: Option<Outbox>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.0.limits)
            .field("subscribe", &self.0.outbox.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The endpoint's state over the membership service. Without a
    /// `mailer` (no relay configured) there is no `POST /s/LIST`: double
    /// opt-in needs to send mail. With one, a task that sends the queued
    /// confirmation mails is started (call from within a tokio runtime);
    /// [`serve`] finishes its queue on shutdown.
    pub fn new(members: Members, cfg: HttpConfig, mailer: Option<Mailer>) -> Self {
        let limits = Limits::new(
            cfg.subscribe_per_ip_per_hour,
            cfg.subscribe_per_address_per_hour,
        );
        AppState(Arc::new(Inner {
            members,
            cfg,
            limits,
            outbox: mailer.map(Outbox::start),
        }))
    }

    /// The configuration the state was built with.
    pub fn config(&self) -> &HttpConfig {
        &self.0.cfg
    }

    /// Sends what is still queued (within `limit`) and stops the mail task.
    pub async fn finish_outbox(&self, limit: Duration) {
        if let Some(outbox) = &self.0.outbox {
            outbox.finish(limit).await;
        }
    }
}

/// The client IP the rate limit counts: with `trust_forwarded_for`, the last
/// `X-Forwarded-For` entry (the one our own proxy wrote; earlier ones are
/// the client's word), else the connection's peer.
fn client_ip(trust_forwarded_for: bool, peer: Option<ClientAddr>, headers: &HeaderMap) -> IpAddr {
    if trust_forwarded_for
        && let Some(ip) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|s| s.trim().parse().ok())
    {
        return ip;
    }
    peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip())
}

/// The routes:
///
/// | route | does |
/// |---|---|
/// | `GET /u/TOKEN` | page naming list and address, one button |
/// | `POST /u/TOKEN` | unsubscribes (RFC 8058 one-click or the button), 200 with a re-subscribe button |
/// | `GET /r/TOKEN`, `POST /r/TOKEN` | re-subscribe page, re-subscribes |
/// | `POST /s/LIST` | form fields `email`, `name`: double opt-in request (only with a mailer) |
/// | `GET /c/TOKEN`, `POST /c/TOKEN` | confirmation page, confirms |
///
/// Anything else is 404. Every answer carries [`CSP`], `X-Frame-Options:
/// DENY`, `Referrer-Policy: no-referrer` and `X-Content-Type-Options: nosniff`.
pub fn router(state: AppState) -> Router {
    let cfg = state.0.cfg.clone();
    let mut r = Router::new()
        .route("/u/{token}", get(unsubscribe_page).post(unsubscribe))
        .route("/r/{token}", get(resubscribe_page).post(resubscribe))
        .route("/c/{token}", get(confirm_page).post(confirm));
    if state.0.outbox.is_some() {
        r = r.route("/s/{list}", post(subscribe));
    }
    let set = |name, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    r.fallback(|| async { pages::not_found() })
        .with_state(state)
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(cfg.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(cfg.request_timeout_secs),
        ))
        .layer(set(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

/// Whether a POST to `/u/TOKEN` is RFC 8058 one-click: the field
/// `List-Unsubscribe=One-Click`, sent as `application/x-www-form-urlencoded`
/// (what RFC 8058 names) or as `multipart/form-data` (what some clients and
/// `curl -F` send). Only decides the audit's label: any POST unsubscribes.
fn is_one_click(headers: &HeaderMap, body: &[u8]) -> bool {
    if body.trim_ascii() == ONE_CLICK_BODY {
        return true;
    }
    let Some(boundary) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart_boundary)
    else {
        return false;
    };
    multipart_fields(body, &boundary)
        .into_iter()
        .any(|(name, value)| name == "List-Unsubscribe" && value.trim_ascii() == b"One-Click")
}

/// The `boundary` parameter of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

/// The (name, value) of each part of a `multipart/form-data` body (RFC
/// 7578), as far as a one-click field needs: the name from the part's
/// `Content-Disposition`, the value up to the next delimiter. Parts without
/// a name are skipped; the body is already bounded by `max_body_bytes`.
fn multipart_fields<'a>(body: &'a [u8], boundary: &str) -> Vec<(String, &'a [u8])> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&body[i..], &delimiter) {
        starts.push(i + at);
        i += at + delimiter.len();
    }
    starts
        .windows(2)
        .filter_map(|w| {
            let part = &body[w[0] + delimiter.len()..w[1]];
            let part = part
                .strip_prefix(b"\r\n")
                .or_else(|| part.strip_prefix(b"\n"))?;
            let (head, value) = match find(part, b"\r\n\r\n") {
                Some(at) => (&part[..at], &part[at + 4..]),
                None => {
                    let at = find(part, b"\n\n")?;
                    (&part[..at], &part[at + 2..])
                }
            };
            let value = value
                .strip_suffix(b"\r\n")
                .or_else(|| value.strip_suffix(b"\n"))
                .unwrap_or(value);
            let head = std::str::from_utf8(head).ok()?;
            let name = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                if !k.trim().eq_ignore_ascii_case("content-disposition") {
                    return None;
                }
                v.split(';').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
                })
            })?;
            Some((name, value))
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The page for a service failure: 404 for what does not exist (a link
/// whose membership is gone), else 503 with the cause in the log.
fn failed(e: &AppError) -> Response {
    if e.kind() == ErrorKind::NotFound {
        return pages::not_found();
    }
    tracing::error!(error = %e, "a service failed while answering an HTTP request");
    pages::unavailable()
}

/// The re-subscribe button's action for `v`, or `None` when the button
/// cannot bring this subscriber back: then the page does not offer it.
fn resubscribe_action(app: &AppState, v: &rundbrief_store::MembershipView) -> Option<String> {
    app.0
        .members
        .resubscribe_token(v)
        .map(|t| format!("../r/{t}"))
}

async fn unsubscribe_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(link) = app.0.members.verify(Purpose::UnsubscribeLink, &token) else {
        return pages::not_found();
    };
    match app.0.members.view(&link).await {
        Err(e) => failed(&e),
        Ok(None) => pages::not_on_list(),
        Ok(Some(v)) if v.status == rundbrief_core::MembershipStatus::Unsubscribed => {
            pages::unsubscribed(&v.email, &v.list, resubscribe_action(&app, &v).as_deref())
        }
        Ok(Some(v)) => pages::unsubscribe_ask(&v.email, &v.list, &token),
    }
}

/// RFC 8058 one-click (body `List-Unsubscribe=One-Click`) and the page's
/// button do the same: unsubscribe at once, answer 200 with the page that
/// says so. Idempotent.
async fn unsubscribe(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(link) = app.0.members.verify(Purpose::UnsubscribeLink, &token) else {
        return pages::not_found();
    };
    let via = if is_one_click(&headers, &body) {
        UnsubscribeVia::OneClick
    } else {
        UnsubscribeVia::Page
    };
    match app.0.members.unsubscribe(&link, via, Actor::Http).await {
        Err(e) => failed(&e),
        Ok(None) => pages::not_on_list(),
        Ok(Some(v)) => {
            pages::unsubscribed(&v.email, &v.list, resubscribe_action(&app, &v).as_deref())
        }
    }
}

async fn subscribe_ask_page(app: &AppState, purpose: Purpose, token: &str) -> Response {
    let Some(link) = app.0.members.verify(purpose, token) else {
        return pages::not_found();
    };
    match app.0.members.subscribe_view(&link).await {
        Err(e) => failed(&e),
        Ok(None) => pages::not_found(),
        Ok(Some(rundbrief_store::MembershipView {
            email,
            list,
            no_way_back: Some(why),
            ..
        })) if purpose == Purpose::Resubscribe => pages::no_way_back(&email, &list, why),
        Ok(Some(v)) if Members::is_subscribed(&v) => pages::subscribed(&v.email, &v.list),
        Ok(Some(v)) => {
            pages::subscribe_ask(&v.email, &v.list, token, purpose == Purpose::Resubscribe)
        }
    }
}

async fn subscribe_confirmed(app: &AppState, purpose: Purpose, token: &str) -> Response {
    let Some(link) = app.0.members.verify(purpose, token) else {
        return pages::not_found();
    };
    match app.0.members.confirm(&link, Actor::Http).await {
        Err(e) => failed(&e),
        Ok(Confirmation::Refused(v)) => match v.no_way_back {
            Some(why) => pages::no_way_back(&v.email, &v.list, why),
            None => pages::not_found(),
        },
        Ok(Confirmation::Subscribed(v)) => pages::subscribed(&v.email, &v.list),
    }
}

async fn resubscribe_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    subscribe_ask_page(&app, Purpose::Resubscribe, &token).await
}

async fn resubscribe(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    subscribe_confirmed(&app, Purpose::Resubscribe, &token).await
}

async fn confirm_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    subscribe_ask_page(&app, Purpose::Confirm, &token).await
}

async fn confirm(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    subscribe_confirmed(&app, Purpose::Confirm, &token).await
}

/// The subscribe form's fields.
#[derive(Debug, serde::Deserialize)]
struct SubscribeForm {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /s/LIST`: rate limit by client IP, then a double opt-in request.
/// The answer is the same page whether the address is new, unconfirmed,
/// subscribed or blocklisted, and it does not wait for the mail. A list
/// that is not public answers exactly as one that does not exist (and
/// before the form is looked at), so the form cannot tell which lists exist.
async fn subscribe(
    State(app): State<AppState>,
    Path(list): Path<String>,
    peer: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    form: Result<axum::Form<SubscribeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let ip = client_ip(app.0.cfg.trust_forwarded_for, peer.map(|p| p.0), &headers);
    if let Err(wait) = app.0.limits.check_ip(ip) {
        tracing::info!(%ip, "subscribe rate limit reached for this client");
        return pages::too_many(wait);
    }
    let form = form.map(|axum::Form(f)| f);
    // An empty address for a list that may not exist: the list is checked
    // first by the service, so an unknown list always answers 404.
    let (email, name) = match &form {
        Ok(f) => (f.email.as_str(), f.name.as_deref()),
        Err(_) => ("", None),
    };
    let requested = app
        .0
        .members
        .request(
            &list,
            email,
            name,
            true,
            Actor::Http,
            "subscription form (double opt-in)",
        )
        .await;
    let job = match requested {
        Ok(Requested::Confirm(job)) => job,
        Ok(Requested::Nothing) => return pages::check_inbox(),
        Err(e) if e.kind() == ErrorKind::Invalid => {
            return pages::bad_request(if form.is_err() {
                "The form must have an e-mail address (field `email`)."
            } else {
                "That does not look like an e-mail address."
            });
        }
        Err(e) => return failed(&e),
    };
    let key =
        rundbrief_core::Address::parse(&job.email).map_or_else(|_| job.email.clone(), |a| a.key());
    if app.0.limits.check_address(&key).is_err() {
        tracing::info!(subscriber = %job.subscriber_id, "confirmation mail limit reached for this address; none sent");
    } else if let Some(outbox) = &app.0.outbox {
        outbox.queue(job);
    }
    pages::check_inbox()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_ip_comes_from_the_proxy_only_when_trusted() {
        let peer = Some(ClientAddr("10.0.0.1:4711".parse().unwrap()));
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 192.0.2.7"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.9"));
        let ip = |trust, h: &HeaderMap| client_ip(trust, peer, h).to_string();
        assert_eq!(ip(false, &h), "10.0.0.1");
        assert_eq!(ip(true, &h), "198.51.100.9", "the last entry: our proxy's");
        assert_eq!(ip(true, &HeaderMap::new()), "10.0.0.1");
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-for", HeaderValue::from_static("unknown"));
        assert_eq!(ip(true, &bad), "10.0.0.1");
    }
}
