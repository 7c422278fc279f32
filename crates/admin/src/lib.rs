//! `rundbrief-admin`: the web dashboard and the JSON API (`rundbrief admin
//! serve`), a front end on the application layer like the CLI: the pages and
//! `/api/v1/…` call the same services, so `GET /api/v1/campaigns/NAME`
//! returns exactly what `rundbrief campaign status NAME --json` prints.
//!
//! Security comes first and lives in [`auth`]: admin users log in with a
//! password (argon2id hashes in the database) and get a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` when [`AdminOptions::secure_cookies`]);
//! every state-changing form carries the session's CSRF token; logins are
//! rate-limited per client and per user name; the API takes `Authorization:
//! Bearer KEY` with keys stored as SHA-256 hashes and scoped `read` or
//! `write`. Every response carries a strict CSP and the usual security
//! headers ([`security_headers`]). Unauthenticated requests get the login
//! page, a redirect to it, or a 401 — nothing else.
//!
//! Start reading at [`router`], then [`pages`] and [`api`].

// The hand-written OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

mod activity;
pub mod api;
pub mod auth;
pub mod charts;
pub mod lists;
pub mod member_counts;
pub mod pages;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use rundbrief_app::App;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub use auth::{Scope, hash_password, key_hash, new_api_key, verify_password};

/// How the dashboard behaves (from `rundbrief admin serve`'s flags).
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// Mark cookies `Secure` and send HSTS: set when the dashboard is reached
    /// over HTTPS (behind a reverse proxy that terminates TLS).
    pub secure_cookies: bool,
    /// Login attempts allowed per minute, per client IP and per user name
    /// (the whole minute's allowance may come at once; more get 429).
    pub login_per_minute: u32,
    /// Failed logins in a row after which a user name is locked out (0: never).
    pub lockout_after: u32,
    /// How long a locked-out name waits (even with the right password).
    pub lockout: Duration,
    /// How long a session lasts after login.
    pub session_ttl: Duration,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            secure_cookies: false,
            login_per_minute: 10,
            lockout_after: 10,
            lockout: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AdminState(Arc<Inner>);

struct Inner {
    app: App,
    opts: AdminOptions,
    sessions: auth::Sessions,
    limits: auth::LoginLimits,
    /// The overview's member counts, counted off the request path by
    /// [`serve`] ([`member_counts`]).
    members: member_counts::MemberCounts,
}

impl AdminState {
    pub fn new(app: App, opts: AdminOptions) -> AdminState {
        AdminState(Arc::new(Inner {
            limits: auth::LoginLimits::new(opts.login_per_minute, opts.lockout_after, opts.lockout),
            sessions: auth::Sessions::default(),
            members: member_counts::MemberCounts::default(),
            app,
            opts,
        }))
    }

    pub fn app(&self) -> &App {
        &self.0.app
    }

    pub fn options(&self) -> &AdminOptions {
        &self.0.opts
    }

    /// The overview's member counts (filled by [`serve`]'s refresher, or
    /// by [`member_counts::MemberCounts::refresh`] in tests).
    pub fn member_counts(&self) -> &member_counts::MemberCounts {
        &self.0.members
    }

    /// Records a state-changing action in the admin audit; a failure to
    /// record is logged (the action itself is done).
    pub(crate) async fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) {
        let a = rundbrief_store::AdminAction {
            at: self.0.app.clock.now(),
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.to_string(),
        };
        tracing::info!(actor, action, target, detail, "admin action");
        if let Err(e) = self.0.app.store.record_admin_action(&a).await {
            tracing::error!(error = %e, actor, action, target, "cannot write the admin audit");
        }
    }
}

/// The peer of a connection, put on each request by [`serve`] (the login
/// rate limit's key): the accept loop is the public endpoint's.
pub use rundbrief_http::ClientAddr;

/// Every route. Pages need a session (else a redirect to `/login`), state
/// changes also its CSRF token; the API needs a bearer key.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/admin.css", get(pages::stylesheet))
        .route("/", get(pages::overview))
        .route("/campaigns/{name}", get(pages::campaign))
        .route("/campaigns/{name}/pause", post(pages::pause))
        .route("/campaigns/{name}/resume", post(pages::resume))
        .route("/campaigns/{name}/cancel", post(pages::cancel))
        .route("/campaigns/{name}/preview", get(pages::preview))
        .route("/campaigns/{name}/retry-failed", post(pages::retry_failed))
        .route("/campaigns/{name}/held/release", post(pages::release_held))
        .route("/campaigns/{name}/held/discard", post(pages::discard_held))
        .route("/lists", get(lists::lists))
        .route("/lists/{name}", get(lists::list))
        .route("/lists/{name}/export.csv", get(lists::export))
        .route("/bounces", get(pages::bounces))
        .route("/bounces/held/{verb}", post(pages::bounces_held))
        .route("/subscribers", get(pages::find_subscriber))
        .route("/subscribers/{email}", get(pages::subscriber))
        .route(
            "/subscribers/{email}/{action}",
            post(pages::subscriber_action),
        )
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/lists", get(api::lists))
        .route("/api/v1/lists/{list}", get(api::list))
        .route("/api/v1/lists/{list}/members", post(api::add_member))
        .route(
            "/api/v1/lists/{list}/members/{email}",
            axum::routing::delete(api::remove_member),
        )
        .route("/api/v1/campaigns", get(api::campaigns))
        .route("/api/v1/campaigns/{name}", get(api::campaign_status))
        .route("/api/v1/campaigns/{name}/pause", post(api::pause))
        .route("/api/v1/campaigns/{name}/resume", post(api::resume))
        .route(
            "/api/v1/campaigns/{name}/retry-failed",
            post(api::retry_failed),
        )
        .route("/api/v1/campaigns/{name}/cancel", post(api::cancel))
        .route("/api/v1/subscribers/{email}", get(api::subscriber))
        .fallback(api::not_found)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

/// The policy every response carries unless it sets its own (the message
/// preview, [`pages::PREVIEW_CSP`]): nothing loads but our own stylesheet and
/// preview frames, forms post only to us, no framing by others, no
/// referrer, no caching of pages.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
     frame-src 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(
    axum::extract::State(state): axum::extract::State<AdminState>,
    mut res: Response,
) -> Response {
    let h = res.headers_mut();
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if state.0.opts.secure_cookies {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    res
}

/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Connections one client IP may hold at once.
const MAX_PER_IP: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops
/// accepting and lets requests in flight finish (bounded by 10 s). The
/// accept loop and its limits are the public endpoint's
/// ([`rundbrief_http::serve_router`]).
///
/// # Errors
/// None so far: a failed accept is logged and retried after a pause.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shape = rundbrief_http::Shape {
        name: "admin dashboard",
        max_connections: MAX_CONNECTIONS,
        max_per_ip: MAX_PER_IP,
        header_timeout: HEADER_TIMEOUT,
    };
    let tick = {
        let state = state.clone();
        move || {
            state.0.limits.evict_idle();
            state.0.sessions.evict_expired();
        }
    };
    // Counts members for the overview in the background while serving;
    // aborted when serving ends.
    let refresher = {
        let state = state.clone();
        tokio::spawn(async move {
            let store = state.0.app.store.clone();
            state.0.members.run(store).await;
        })
    };
    let served = rundbrief_http::serve_router(listener, router(state), shape, tick, shutdown).await;
    refresher.abort();
    served
}
