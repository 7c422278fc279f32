//! `rundbrief-http`: the public HTTP endpoint behind `sending.public_url`.
//!
//! Owns: one-click unsubscribe (RFC 8058) and its page (`/u/TOKEN`), the
//! re-subscribe button shown after it (`/r/TOKEN`), double opt-in
//! (`POST /s/LIST`, the confirmation mail, `/c/TOKEN`), the rate limits of
//! the subscribe endpoint, and the HTTP server itself: a bounded accept loop
//! with per-connection header timeouts, request body limits, request
//! timeouts and security headers on every answer.
//!
//! Never: SQL (that is `rundbrief-store`), SMTP details (`rundbrief-sender`),
//! or JavaScript in a page. Every state change is keyed by ids from a signed
//! token ([`rundbrief_core::Signer`]); a forged or altered token gets 404 and
//! changes nothing.
//!
//! Start with [`router`] (the routes and what each does), then [`serve`]
//! (the accept loop) and [`mail`] (the confirmation mail).
//!
//! Why GET never changes anything: mail providers and corporate gateways
//! fetch every link in a message to scan it. A GET only shows a page with
//! one button; the button POSTs. RFC 8058 one-click unsubscribe is a POST
//! by design for the same reason.

pub mod limit;
pub mod mail;
pub mod pages;
mod server;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use rundbrief_core::config::HttpConfig;
use rundbrief_core::{Actor, Address, Purpose, Signer};
use rundbrief_store::{Confirmed, OptIn, Store};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use uuid::Uuid;

pub use limit::Limits;
pub use mail::{ConfirmJob, Mailer};
pub use server::serve;

/// The `Content-Security-Policy` of every answer: nothing may load, inline
/// styles excepted; forms post only to us; no framing.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// The body a mail provider POSTs for RFC 8058 one-click unsubscribe.
pub const ONE_CLICK_BODY: &[u8] = b"List-Unsubscribe=One-Click";

/// What can go wrong outside a request (requests answer with pages).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// A configuration value the endpoint needs is missing or unusable.
    #[error("`{key}` {problem}")]
    Config { key: &'static str, problem: String },
    /// The relay did not take a confirmation mail.
    #[error("the confirmation mail to {to} was not sent ({outcome}): {error}")]
    Send {
        to: String,
        outcome: &'static str,
        error: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] rundbrief_store::StoreError),
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
    store: Store,
    signer: Signer,
    cfg: HttpConfig,
    limits: Limits,
    outbox: Option<mpsc::Sender<ConfirmJob>>,
    /// The mail worker and the token that tells it to finish the queue.
    worker: Mutex<Option<(tokio::task::JoinHandle<()>, CancellationToken)>>,
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
    /// The endpoint's state. Without a `mailer` (no relay configured) there
    /// is no `POST /s/LIST`: double opt-in needs to send mail. With one, a
    /// task that sends the queued confirmation mails is started (call from
    /// within a tokio runtime); [`serve`] finishes its queue on shutdown.
    pub fn new(store: Store, signer: Signer, cfg: HttpConfig, mailer: Option<Mailer>) -> Self {
        let limits = Limits::new(
            cfg.subscribe_per_ip_per_hour,
            cfg.subscribe_per_address_per_hour,
        );
        let (outbox, worker) = match mailer {
            Some(m) => {
                let (tx, rx) = mpsc::channel(mail::OUTBOX_CAPACITY);
                let closing = CancellationToken::new();
                let handle = tokio::spawn(run_outbox(Arc::new(m), rx, closing.clone()));
                (Some(tx), Some((handle, closing)))
            }
            None => (None, None),
        };
        AppState(Arc::new(Inner {
            store,
            signer,
            cfg,
            limits,
            outbox,
            worker: Mutex::new(worker),
        }))
    }

    /// The configuration the state was built with.
    pub fn config(&self) -> &HttpConfig {
        &self.0.cfg
    }

    /// Sends what is still queued (within `limit`) and stops the mail task.
    pub async fn finish_outbox(&self, limit: Duration) {
        let worker = self
            .0
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((handle, closing)) = worker {
            closing.cancel();
            if tokio::time::timeout(limit, handle).await.is_err() {
                tracing::warn!("confirmation mails still queued at shutdown were not sent");
            }
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

async fn run_outbox(
    mailer: Arc<Mailer>,
    mut rx: mpsc::Receiver<ConfirmJob>,
    closing: CancellationToken,
) {
    let send = |job: ConfirmJob| {
        let mailer = Arc::clone(&mailer);
        async move {
            match mailer.send(&job).await {
                Ok(()) => {
                    tracing::info!(subscriber = %job.subscriber_id, list = %job.list, "confirmation mail sent")
                }
                Err(e) => {
                    tracing::error!(subscriber = %job.subscriber_id, list = %job.list, error = %e, "confirmation mail not sent")
                }
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            job = rx.recv() => match job {
                Some(job) => send(job).await,
                None => break,
            },
            _ = closing.cancelled() => {
                while let Ok(job) = rx.try_recv() {
                    send(job).await;
                }
                break;
            }
        }
    }
    mailer.shutdown().await;
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

/// The ids in a verified membership token (`core::links`, the one place
/// for the format): subscriber, list and, for unsubscribe links, the campaign.
fn member_token(
    signer: &Signer,
    purpose: Purpose,
    token: &str,
) -> Option<(Uuid, Uuid, Option<Uuid>)> {
    rundbrief_core::links::verify_member_token(signer, purpose, token)
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

fn failed(e: &rundbrief_store::StoreError) -> Response {
    tracing::error!(error = %e, "the store failed while answering an HTTP request");
    pages::unavailable()
}

/// The re-subscribe button's action for `v`, or `None` when the button
/// cannot bring this subscriber back (bounced, complained, blocklisted, left
/// every list): then the page does not offer it.
fn resubscribe_action(signer: &Signer, v: &rundbrief_store::MembershipView) -> Option<String> {
    v.no_way_back.is_none().then(|| {
        format!(
            "../r/{}",
            rundbrief_core::links::member_token(
                signer,
                Purpose::Resubscribe,
                v.subscriber_id,
                v.list_id
            )
        )
    })
}

async fn unsubscribe_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    let Some((sub, list, _)) = member_token(&app.0.signer, Purpose::UnsubscribeLink, &token) else {
        return pages::not_found();
    };
    match app.0.store.membership_view(sub, list).await {
        Err(e) => failed(&e),
        Ok(None) => pages::not_on_list(),
        Ok(Some(v)) if v.status == rundbrief_core::MembershipStatus::Unsubscribed => {
            pages::unsubscribed(
                &v.email,
                &v.list,
                resubscribe_action(&app.0.signer, &v).as_deref(),
            )
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
    let Some((sub, list, campaign)) = member_token(&app.0.signer, Purpose::UnsubscribeLink, &token)
    else {
        return pages::not_found();
    };
    let one_click = is_one_click(&headers, &body);
    let mut reason = if one_click {
        "one-click unsubscribe (RFC 8058)".to_string()
    } else {
        "unsubscribe page".to_string()
    };
    if let Some(c) = campaign {
        reason.push_str(&format!(", campaign {c}"));
    }
    match app
        .0
        .store
        .unsubscribe_member(sub, list, Actor::Http, &reason)
        .await
    {
        Err(e) => return failed(&e),
        Ok(None) => return pages::not_on_list(),
        Ok(Some(changed)) => {
            tracing::info!(subscriber = %sub, list = %list, one_click, changed, "unsubscribe");
        }
    }
    match app.0.store.membership_view(sub, list).await {
        Ok(Some(v)) => pages::unsubscribed(
            &v.email,
            &v.list,
            resubscribe_action(&app.0.signer, &v).as_deref(),
        ),
        Ok(None) => pages::not_on_list(),
        Err(e) => failed(&e),
    }
}

async fn subscribe_ask_page(app: &AppState, purpose: Purpose, token: &str) -> Response {
    let Some((sub, list, _)) = member_token(&app.0.signer, purpose, token) else {
        return pages::not_found();
    };
    match app.0.store.membership_view(sub, list).await {
        Err(e) => failed(&e),
        Ok(None) => pages::not_found(),
        Ok(Some(v)) if v.subscriber_status == rundbrief_core::SubscriberStatus::Blocklisted => {
            pages::not_found()
        }
        Ok(Some(rundbrief_store::MembershipView {
            email,
            list,
            no_way_back: Some(why),
            ..
        })) if purpose == Purpose::Resubscribe => pages::no_way_back(&email, &list, why),
        Ok(Some(v))
            if v.status == rundbrief_core::MembershipStatus::Subscribed
                && v.subscriber_status == rundbrief_core::SubscriberStatus::Active =>
        {
            pages::subscribed(&v.email, &v.list)
        }
        Ok(Some(v)) => {
            pages::subscribe_ask(&v.email, &v.list, token, purpose == Purpose::Resubscribe)
        }
    }
}

async fn subscribe_confirmed(
    app: &AppState,
    purpose: Purpose,
    token: &str,
    reason: &str,
) -> Response {
    let Some((sub, list, _)) = member_token(&app.0.signer, purpose, token) else {
        return pages::not_found();
    };
    let outcome = if purpose == Purpose::Resubscribe {
        app.0
            .store
            .resubscribe_member(sub, list, Actor::Http, reason)
            .await
    } else {
        app.0
            .store
            .confirm_subscription(sub, list, Actor::Http, reason)
            .await
    };
    match outcome {
        Err(e) => failed(&e),
        Ok(Confirmed::Gone | Confirmed::Blocklisted) => pages::not_found(),
        Ok(Confirmed::Refused(why)) => {
            tracing::info!(subscriber = %sub, list = %list, why = why.as_str(), "re-subscribe refused: only a double opt-in brings this subscriber back");
            match app.0.store.membership_view(sub, list).await {
                Ok(Some(v)) => pages::no_way_back(&v.email, &v.list, why),
                Ok(None) => pages::not_found(),
                Err(e) => failed(&e),
            }
        }
        Ok(outcome @ (Confirmed::Subscribed | Confirmed::AlreadySubscribed)) => {
            tracing::info!(subscriber = %sub, list = %list, ?outcome, reason, "subscription confirmed");
            match app.0.store.membership_view(sub, list).await {
                Ok(Some(v)) => pages::subscribed(&v.email, &v.list),
                Ok(None) => pages::not_found(),
                Err(e) => failed(&e),
            }
        }
    }
}

async fn resubscribe_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    subscribe_ask_page(&app, Purpose::Resubscribe, &token).await
}

async fn resubscribe(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    subscribe_confirmed(
        &app,
        Purpose::Resubscribe,
        &token,
        "re-subscribed from the unsubscribe page",
    )
    .await
}

async fn confirm_page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    subscribe_ask_page(&app, Purpose::Confirm, &token).await
}

async fn confirm(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    subscribe_confirmed(
        &app,
        Purpose::Confirm,
        &token,
        "confirmed by the subscriber (double opt-in)",
    )
    .await
}

/// The subscribe form's fields.
#[derive(Debug, serde::Deserialize)]
struct SubscribeForm {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

/// Longest name kept from the form, in characters.
const MAX_NAME_CHARS: usize = 200;

/// `POST /s/LIST`: rate limit by client IP, then a double opt-in request.
/// The answer is the same page whether the address is new, unconfirmed,
/// subscribed or blocklisted, and it does not wait for the mail.
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
    // A list that is not public answers exactly as one that does not exist
    // (and before the form is looked at), so the form cannot tell which
    // lists exist.
    match app.0.store.find_list(&list).await {
        Ok(Some(l)) if l.public => {}
        Ok(_) => return pages::not_found(),
        Err(e) => return failed(&e),
    }
    let Ok(axum::Form(form)) = form else {
        return pages::bad_request("The form must have an e-mail address (field `email`).");
    };
    let Ok(addr) = Address::parse(form.email.trim()) else {
        return pages::bad_request("That does not look like an e-mail address.");
    };
    let name: Option<String> = form
        .name
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(MAX_NAME_CHARS)
                .collect::<String>()
                .trim()
                .to_string()
        })
        .filter(|n| !n.is_empty());
    let outcome = match app
        .0
        .store
        .request_subscription(
            &addr,
            &list,
            name.as_deref(),
            Actor::Http,
            "subscription form (double opt-in)",
        )
        .await
    {
        Ok(o) => o,
        Err(rundbrief_store::StoreError::ListNotFound(_)) => return pages::not_found(),
        Err(e) => return failed(&e),
    };
    if let OptIn::SendConfirmation {
        subscriber_id,
        list_id,
    } = outcome
    {
        if app.0.limits.check_address(&addr.key()).is_err() {
            tracing::info!(subscriber = %subscriber_id, "confirmation mail limit reached for this address; none sent");
        } else if let Some(outbox) = &app.0.outbox {
            let job = ConfirmJob {
                email: addr.to_string(),
                list: list.clone(),
                subscriber_id,
                list_id,
            };
            if outbox.try_send(job).is_err() {
                tracing::warn!(subscriber = %subscriber_id, "confirmation mail queue full; mail dropped");
            }
        }
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

    #[test]
    fn tokens_carry_two_or_three_ids_and_only_for_their_purpose() {
        let signer = Signer::new(rundbrief_core::Secret::new("k".repeat(40)), None);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let two = signer.sign(Purpose::UnsubscribeLink, &mail::member_payload(a, b));
        assert_eq!(
            member_token(&signer, Purpose::UnsubscribeLink, &two),
            Some((a, b, None))
        );
        let three: Vec<u8> = [a, b, c].iter().flat_map(|u| *u.as_bytes()).collect();
        let three = signer.sign(Purpose::UnsubscribeLink, &three);
        assert_eq!(
            member_token(&signer, Purpose::UnsubscribeLink, &three),
            Some((a, b, Some(c)))
        );
        let confirm = signer.sign(
            Purpose::Confirm,
            &[a.as_bytes().as_slice(), b.as_bytes(), c.as_bytes()].concat(),
        );
        assert_eq!(
            member_token(&signer, Purpose::Confirm, &confirm),
            None,
            "48 bytes only for links"
        );
        assert_eq!(member_token(&signer, Purpose::Confirm, &two), None);
        assert_eq!(
            member_token(&signer, Purpose::UnsubscribeLink, &two.to_uppercase()),
            Some((a, b, None))
        );
    }
}
