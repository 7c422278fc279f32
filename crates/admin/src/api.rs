//! The JSON API, `/api/v1/…`: `Authorization: Bearer KEY` (a key of
//! `rundbrief admin key create`), the objects the CLI's `--json` prints, and
//! errors as `{"error": "…"}` with the status of the [`rundbrief_app::ErrorKind`]
//! (404, 409, 422, 503); 401 without a valid key, 403 for a read key that
//! tries an action. [`openapi_document`] describes every route and a test
//! checks that it lists exactly the routes served.

use crate::AdminState;
use crate::auth::{self, Scope};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rundbrief_app::AppError;
use rundbrief_core::{Address, CampaignState};

/// A JSON response with `status`.
pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

/// An application error as its HTTP status and `{"error": …}`.
pub(crate) fn app_error(e: &AppError) -> Response {
    let status =
        StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = message(e), "API request failed");
    }
    error(status, &message(e))
}

/// The error and its causes, one after the other.
pub(crate) fn message(e: &AppError) -> String {
    let mut out = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(c) = next {
        out.push_str(": ");
        out.push_str(&c.to_string());
        next = c.source();
    }
    out
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "an API key is needed: Authorization: Bearer KEY (`rundbrief admin key create`)",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The key of the request, if it is one we issued.
pub(crate) async fn caller(
    state: &AdminState,
    headers: &HeaderMap,
) -> Result<(String, Scope), Response> {
    let Some(key) = auth::bearer(headers) else {
        return Err(unauthorized());
    };
    match state.app().store.admin_key(&auth::key_hash(key)).await {
        Ok(Some(k)) => {
            let scope = k.scope.parse().unwrap_or(Scope::Read);
            Ok((k.name, scope))
        }
        Ok(None) => Err(unauthorized()),
        Err(e) => Err(app_error(&e.into())),
    }
}

/// `GET /api/v1/lists`: every list with its counts, as `list ls --json` prints them.
pub async fn lists(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = caller(&state, &headers).await {
        return r;
    }
    match state.app().store.list_summaries().await {
        Ok(all) => json(
            StatusCode::OK,
            &serde_json::to_value(all).unwrap_or_default(),
        ),
        Err(e) => app_error(&e.into()),
    }
}

/// `GET /api/v1/lists/{list}`: one list with its counts (a row of `list ls --json`).
pub async fn list(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&state, &headers).await {
        return r;
    }
    let store = &state.app().store;
    let found: rundbrief_app::Result<_> = async {
        let l = store.list(&name).await?;
        store
            .list_summaries()
            .await?
            .into_iter()
            .find(|s| s.list.id == l.id)
            .ok_or_else(|| AppError::not_found(format!("no list `{name}`")))
    }
    .await;
    match found {
        Ok(l) => json(StatusCode::OK, &serde_json::to_value(l).unwrap_or_default()),
        Err(e) => app_error(&e),
    }
}

/// The body of `POST /api/v1/lists/{list}/members`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    attributes: serde_json::Map<String, serde_json::Value>,
    /// Bring back an unsubscribed or bounced subscriber (`sub add --resubscribe`).
    #[serde(default)]
    resubscribe: bool,
    /// Double opt-in: leave the membership unconfirmed and send the
    /// confirmation mail (`sub add --confirm`; needs a configured relay).
    #[serde(default)]
    confirm: bool,
}

/// `POST /api/v1/lists/{list}/members` (write scope), JSON `{"email",
/// "name", "attributes", "resubscribe", "confirm"}`: subscribes the address
/// as `sub add` does (201 with `{email, list, status, outcome}`), or with
/// `confirm` sends the double opt-in mail (202 with `{email, list,
/// status: "unconfirmed", confirmation_sent}`). Audited with the key's name.
pub async fn add_member(
    State(state): State<AdminState>,
    Path(list): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let key = match writer(&state, &headers).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let m: NewMember = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!(
                    "the body must be JSON {{\"email\": …, \"name\": …, \"attributes\": {{…}}}}: {e}"
                ),
            );
        }
    };
    let app = state.app();
    let actor = format!("key:{key}");
    let reason = format!("API, key {key}");
    if m.confirm {
        let sent: rundbrief_app::Result<bool> = async {
            let mailer = app.confirm_mailer(None)?.ok_or_else(|| {
                AppError::invalid(
                    "confirm needs a relay for the confirmation mail: set `relay` in rundbrief.toml or RUNDBRIEF_RELAY",
                )
            })?;
            let requested = app
                .members()?
                .request(&list, &m.email, m.name.as_deref(), false, rundbrief_core::Actor::Admin, &reason)
                .await?;
            let sent = match requested {
                rundbrief_app::members::Requested::Confirm(job) => {
                    let r = mailer.send(&job).await;
                    mailer.shutdown().await;
                    r?;
                    true
                }
                rundbrief_app::members::Requested::Nothing => false,
            };
            Ok(sent)
        }
        .await;
        return match sent {
            Ok(sent) => {
                state
                    .audit(&actor, "member-request", &list, m.email.trim())
                    .await;
                json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({"email": m.email.trim(), "list": list, "status": "unconfirmed", "confirmation_sent": sent}),
                )
            }
            Err(e) => app_error(&e),
        };
    }
    match rundbrief_app::members::add(
        &app.store,
        &list,
        &m.email,
        m.name.as_deref(),
        m.attributes,
        m.resubscribe,
        rundbrief_core::Actor::Admin,
        &reason,
    )
    .await
    {
        Ok((addr, out)) => {
            state
                .audit(&actor, "member-add", &list, addr.as_str())
                .await;
            let status = if out.created || out.joined || out.restored {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json(
                status,
                &serde_json::json!({"email": addr.as_str(), "list": list, "status": "subscribed", "outcome": out}),
            )
        }
        Err(e) => app_error(&e),
    }
}

/// `DELETE /api/v1/lists/{list}/members/{email}` (write scope): unsubscribes
/// the address from that list (`sub unsubscribe EMAIL --list L`), audited
/// on the subscriber with actor `admin` and the key's name. 200 with
/// `{email, list, action: "unsubscribed", changed}`.
pub async fn remove_member(
    State(state): State<AdminState>,
    Path((list, email)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let key = match writer(&state, &headers).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let addr = match Address::parse(email.trim()) {
        Ok(a) => a,
        Err(e) => {
            return app_error(
                &AppError::from(e).context(format!("`{}` is not an e-mail address", email.trim())),
            );
        }
    };
    let why = format!("API, key {key}");
    match state
        .app()
        .store
        .unsubscribe(&addr, Some(&list), rundbrief_core::Actor::Admin, &why)
        .await
    {
        Ok(changed) => {
            state
                .audit(
                    &format!("key:{key}"),
                    "member-unsubscribe",
                    &list,
                    addr.as_str(),
                )
                .await;
            json(
                StatusCode::OK,
                &serde_json::json!({"email": addr.as_str(), "list": list, "action": "unsubscribed", "changed": changed}),
            )
        }
        Err(e) => app_error(&e.into()),
    }
}

/// `GET /api/v1/campaigns`: every campaign, as `campaign ls --json` prints them.
pub async fn campaigns(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = caller(&state, &headers).await {
        return r;
    }
    match state.app().store.campaigns().await {
        Ok(all) => json(
            StatusCode::OK,
            &serde_json::to_value(all).unwrap_or_default(),
        ),
        Err(e) => app_error(&e.into()),
    }
}

/// `GET /api/v1/campaigns/{name}`: exactly the `campaign status NAME --json` object.
pub async fn campaign_status(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&state, &headers).await {
        return r;
    }
    match status_of(&state, &name).await {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => app_error(&e),
    }
}

/// The status object of campaign `name` ([`rundbrief_app::campaigns::status`]).
pub(crate) async fn status_of(
    state: &AdminState,
    name: &str,
) -> rundbrief_app::Result<serde_json::Value> {
    let app = state.app();
    let c = app.store.campaign(name).await?;
    rundbrief_app::campaigns::status(app, &c).await
}

/// Moves campaign `name` to `to` on behalf of `actor`, audited. Returns the
/// state it was in. Pausing stops a running send within one batch; resuming
/// makes it `running` again (lifting the circuit breaker) and `rundbrief
/// serve` sends it.
pub(crate) async fn change_state(
    state: &AdminState,
    actor: &str,
    name: &str,
    to: CampaignState,
) -> rundbrief_app::Result<CampaignState> {
    let from = if to == CampaignState::Running {
        // As `campaign resume NAME`: also lifts the circuit breaker (every
        // suspended provider and a breaker's pause).
        state.app().lift_breaker(name, None).await?.from
    } else {
        state.app().store.transition_campaign(name, to).await?
    };
    state
        .audit(
            actor,
            &format!("campaign-{}", verb(to)),
            name,
            &format!("{from} -> {to}"),
        )
        .await;
    Ok(from)
}

fn verb(to: CampaignState) -> &'static str {
    match to {
        CampaignState::Paused => "pause",
        CampaignState::Running => "resume",
        CampaignState::Cancelled => "cancel",
        other => other.as_str(),
    }
}

/// The name of the request's key if it may act (write scope): 401 or 403 otherwise.
async fn writer(state: &AdminState, headers: &HeaderMap) -> Result<String, Response> {
    let (key, scope) = caller(state, headers).await?;
    if scope != Scope::Write {
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!("key `{key}` has read scope; actions need a key with --scope write"),
        ));
    }
    Ok(key)
}

async fn act(state: AdminState, name: String, headers: HeaderMap, to: CampaignState) -> Response {
    let key = match writer(&state, &headers).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    match change_state(&state, &format!("key:{key}"), &name, to).await {
        Ok(from) => json(
            StatusCode::OK,
            &serde_json::json!({ "campaign": name, "from": from.as_str(), "state": to.as_str() }),
        ),
        Err(e) => app_error(&e),
    }
}

/// `POST /api/v1/campaigns/{name}/pause` (write scope).
pub async fn pause(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    act(state, name, headers, CampaignState::Paused).await
}

/// `POST /api/v1/campaigns/{name}/resume` (write scope): running again;
/// `rundbrief serve` sends it.
pub async fn resume(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    act(state, name, headers, CampaignState::Running).await
}

/// `POST /api/v1/campaigns/{name}/cancel` (write scope): cancelled for good.
pub async fn cancel(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    act(state, name, headers, CampaignState::Cancelled).await
}

/// `POST /api/v1/campaigns/{name}/retry-failed` (write scope): as
/// `campaign retry-failed NAME --json`, `{"campaign", "retried"}`.
pub async fn retry_failed(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = match writer(&state, &headers).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    match state.app().store.retry_failed(&name).await {
        Ok(n) => {
            state
                .audit(
                    &format!("key:{key}"),
                    "campaign-retry-failed",
                    &name,
                    &format!("deliveries pending again: {n}"),
                )
                .await;
            json(
                StatusCode::OK,
                &serde_json::json!({ "campaign": name, "retried": n }),
            )
        }
        Err(e) => app_error(&e.into()),
    }
}

/// `GET /api/v1/subscribers/{email}`: the `sub show EMAIL --json` object.
pub async fn subscriber(
    State(state): State<AdminState>,
    Path(email): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = caller(&state, &headers).await {
        return r;
    }
    let addr = match Address::parse(&email) {
        Ok(a) => a,
        Err(e) => return app_error(&e.into()),
    };
    match state.app().store.subscriber_detail(&addr).await {
        Ok(d) => json(StatusCode::OK, &serde_json::to_value(d).unwrap_or_default()),
        Err(e) => app_error(&e.into()),
    }
}

/// `GET /api/v1/openapi.json` (any key).
pub async fn openapi(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(r) = caller(&state, &headers).await {
        return r;
    }
    json(StatusCode::OK, &openapi_document())
}

/// Anything else: 401 without credentials (nothing is said to strangers), else 404.
pub async fn not_found(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let known = state.0.sessions.get(&headers).is_some() || caller(&state, &headers).await.is_ok();
    if known {
        error(StatusCode::NOT_FOUND, "no such page")
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "log in at /login, or send an API key",
        )
    }
}

/// The API routes as (method, OpenAPI path): what [`openapi_document`]
/// describes and [`crate::router`] serves.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/lists"),
    ("get", "/api/v1/lists/{list}"),
    ("get", "/api/v1/campaigns"),
    ("get", "/api/v1/campaigns/{name}"),
    ("post", "/api/v1/campaigns/{name}/pause"),
    ("post", "/api/v1/campaigns/{name}/resume"),
    ("post", "/api/v1/campaigns/{name}/retry-failed"),
    ("post", "/api/v1/campaigns/{name}/cancel"),
    ("get", "/api/v1/subscribers/{email}"),
    ("post", "/api/v1/lists/{list}/members"),
    ("delete", "/api/v1/lists/{list}/members/{email}"),
];

/// The OpenAPI 3.1 description of the API, written by hand next to the
/// routes (a generator would be a large dependency for six routes).
pub fn openapi_document() -> serde_json::Value {
    use serde_json::json;
    let errors = |codes: &[&str]| {
        let mut m = serde_json::Map::new();
        for c in codes {
            m.insert(
                (*c).to_string(),
                json!({"description": describe(c), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        m
    };
    let ok = |what: &str, schema: serde_json::Value| json!({"description": what, "content": {"application/json": {"schema": schema}}});
    let name = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The campaign's name"}]);
    let with = |mut m: serde_json::Map<String, serde_json::Value>, ok: serde_json::Value| {
        m.insert("200".into(), ok);
        serde_json::Value::Object(m)
    };
    let action = |verb: &str, what: &str| {
        json!({"post": {
            "summary": format!("{verb} a campaign (write scope)"),
            "description": what,
            "parameters": name,
            "responses": with(errors(&["401", "403", "404", "409", "503"]),
                ok("The change: {campaign, from, state}", json!({"$ref": "#/components/schemas/StateChange"})))
        }})
    };
    let member_responses = {
        let member = json!({"$ref": "#/components/schemas/Member"});
        let mut m = errors(&["401", "403", "404", "409", "422", "503"]);
        m.insert("201".into(), ok("Subscribed", member.clone()));
        m.insert(
            "200".into(),
            ok("Already subscribed: nothing changed", member.clone()),
        );
        m.insert(
            "202".into(),
            ok("With confirm: the confirmation mail", member),
        );
        serde_json::Value::Object(m)
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rundbrief admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The objects are the ones `rundbrief … --json` prints, with the same field names."
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A key from `rundbrief admin key create NAME --scope read|write`"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "StateChange": {"type": "object", "properties": {"campaign": {"type": "string"}, "from": {"type": "string"}, "state": {"type": "string"}}},
                "CampaignStatus": {"type": "object", "description": "`rundbrief campaign status NAME --json`",
                    "required": ["state", "total", "sent", "deferred", "failed", "bounced", "pending", "rejected", "sending", "errors", "held_prunes", "due", "local_time", "paused_reason", "providers"],
                    "properties": {
                        "state": {"type": "string", "enum": ["draft", "scheduled", "running", "paused", "finished", "cancelled"]},
                        "total": {"type": "integer"}, "sent": {"type": "integer"}, "deferred": {"type": "integer"},
                        "failed": {"type": "integer"}, "bounced": {"type": "integer"}, "pending": {"type": "integer"},
                        "rejected": {"type": "integer"}, "sending": {"type": "integer"},
                        "errors": {"type": "array", "description": "The most frequent errors of failed and deferred deliveries",
                            "items": {"type": "object", "properties": {"state": {"type": "string"}, "error": {"type": ["string", "null"]}, "count": {"type": "integer"}}}},
                        "held_prunes": {"type": "integer", "description": "Hard-bounce prunes waiting for the operator (`bounce held ls`)"},
                        "rate_per_s": {"type": "number", "description": "Messages per second over the last minute; only while running"},
                        "eta_s": {"type": "integer", "description": "Seconds until the expected finish; only while running and something waits"},
                        "eta": {"type": "string", "format": "date-time", "description": "The expected finish (UTC); only while running and something waits"},
                        "eta_reason": {"type": "string", "description": "What bounds the expected finish: `rate`, `window`, `local-time due times`, `relay quota`, or a configured rate named in words (`provider rate (google at 10 msg/s)`, `rate ([sending] rate 50 msg/s)`)"},
                        "due": {"type": "array", "description": "Pending deliveries by the UTC hour they are due from (local-time sending spreads them)",
                            "items": {"type": "object", "required": ["at", "pending"], "properties": {
                                "at": {"type": "string", "format": "date-time"}, "pending": {"type": "integer"}}}},
                        "local_time": {"type": ["object", "null"], "description": "Sending at a wall-clock time in each reader's zone; null otherwise",
                            "properties": {"at": {"type": "string"}, "date": {"type": ["string", "null"]}, "tz_attr": {"type": "string"},
                                "default_tz": {"type": "string"}, "fallback": {"type": "integer", "description": "Recipients without a valid zone, who get the default"}}},
                        "paused_reason": {"type": ["string", "null"], "description": "Why the circuit breaker paused the campaign; null for a pause by the operator"},
                        "providers": {"type": "array", "description": "The queue per mailbox provider; `resume` lifts suspensions",
                            "items": {"$ref": "#/components/schemas/ProviderQueue"}}
                    }},
                "ProviderQueue": {"type": "object", "required": ["name", "pending", "sent", "rate", "rate_per_s", "state", "reason"],
                    "properties": {
                        "name": {"type": "string", "description": "The provider group, or the domain outside any group"},
                        "pending": {"type": "integer"}, "sent": {"type": "integer"},
                        "rate": {"type": "number", "description": "The rate it may be sent at now, messages per second (halved while slowed, 0 while suspended)"},
                        "rate_per_s": {"type": "number", "description": "The same as `rate` (its first name)"},
                        "state": {"type": "string", "enum": ["sending", "waiting", "slowed", "suspended"]},
                        "reason": {"type": "string", "description": "Why it is waiting, slowed or suspended; empty while sending"}}},
                "ListSummary": {"type": "object", "description": "A row of `rundbrief list ls --json`: the list and its counts by status",
                    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "label": {"type": "string"},
                        "description": {"type": ["string", "null"]}, "created_at": {"type": "string"}, "public": {"type": "boolean"},
                        "counts": {"type": "object", "properties": {"subscribed": {"type": "integer"}, "unconfirmed": {"type": "integer"},
                            "unsubscribed": {"type": "integer"}, "bounced": {"type": "integer"}, "blocklisted": {"type": "integer"},
                            "undeliverable": {"type": "integer"}}}}},
                "NewMember": {"type": "object", "required": ["email"], "additionalProperties": false, "properties": {
                    "email": {"type": "string"}, "name": {"type": "string"},
                    "attributes": {"type": "object", "description": "Merged into the subscriber's attributes"},
                    "resubscribe": {"type": "boolean", "description": "Bring back an unsubscribed or bounced subscriber (`sub add --resubscribe`)"},
                    "confirm": {"type": "boolean", "description": "Double opt-in: send the confirmation mail instead (`sub add --confirm`; needs a relay)"}}},
                "Member": {"type": "object", "properties": {"email": {"type": "string"}, "list": {"type": "string"},
                    "status": {"type": "string", "enum": ["subscribed", "unconfirmed"]},
                    "outcome": {"type": "object", "description": "`sub add --json`'s outcome: created, joined, restored, updated",
                        "properties": {"created": {"type": "boolean"}, "joined": {"type": "boolean"}, "restored": {"type": "boolean"}, "updated": {"type": "boolean"}}},
                    "confirmation_sent": {"type": "boolean", "description": "With confirm: whether a mail went out"}}},
                "Campaign": {"type": "object", "description": "A row of `rundbrief campaign ls --json`",
                    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "subject": {"type": "string"},
                        "state": {"type": "string"}, "lists": {"type": "array", "items": {"type": "string"}}, "created_at": {"type": "string"}}},
                "Subscriber": {"type": "object", "description": "`rundbrief sub show EMAIL --json`: the subscriber, memberships and audit trail"}
            }
        },
        "paths": {
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": with(errors(&["401"]), json!({"description": "OpenAPI 3.1"}))}},
            "/api/v1/campaigns": {"get": {"summary": "Every campaign", "responses": with(errors(&["401", "503"]),
                ok("Campaigns", json!({"type": "array", "items": {"$ref": "#/components/schemas/Campaign"}})))}},
            "/api/v1/campaigns/{name}": {"get": {"summary": "A campaign's status", "parameters": name,
                "responses": with(errors(&["401", "404", "503"]), ok("Status", json!({"$ref": "#/components/schemas/CampaignStatus"})))}},
            "/api/v1/campaigns/{name}/pause": action("Pause", "A running send stops within one batch."),
            "/api/v1/campaigns/{name}/resume": action("Resume", "The campaign is running again; `rundbrief serve` sends it."),
            "/api/v1/campaigns/{name}/cancel": action("Cancel", "Cancelled for good: a cancelled campaign cannot run again."),
            "/api/v1/campaigns/{name}/retry-failed": {"post": {
                "summary": "Retry a campaign's failed deliveries (write scope)",
                "description": "Failed deliveries of still-active subscribers are pending again, as `campaign retry-failed NAME`; `rundbrief serve` sends them.",
                "parameters": name,
                "responses": with(errors(&["401", "403", "404", "409", "503"]),
                    ok("{campaign, retried}", json!({"type": "object", "properties": {"campaign": {"type": "string"}, "retried": {"type": "integer"}}})))
            }},
            "/api/v1/lists": {"get": {"summary": "Every list with its counts", "responses": with(errors(&["401", "503"]),
                ok("Lists, as `rundbrief list ls --json`", json!({"type": "array", "items": {"$ref": "#/components/schemas/ListSummary"}})))}},
            "/api/v1/lists/{list}": {"get": {"summary": "A list with its counts",
                "parameters": [{"name": "list", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The list's name"}],
                "responses": with(errors(&["401", "404", "503"]), ok("The list", json!({"$ref": "#/components/schemas/ListSummary"})))}},
            "/api/v1/lists/{list}/members": {"post": {
                "summary": "Subscribe an address to a list (write scope)",
                "description": "As `rundbrief sub add EMAIL --list LIST`: creates the subscriber when needed and merges name and attributes. With `confirm`, sends the double opt-in mail instead and answers 202. Already subscribed: 200, nothing changed.",
                "parameters": [{"name": "list", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewMember"}}}},
                "responses": member_responses
            }},
            "/api/v1/lists/{list}/members/{email}": {"delete": {
                "summary": "Unsubscribe an address from a list (write scope)",
                "description": "As `rundbrief sub unsubscribe EMAIL --list LIST`; audited on the subscriber with actor `admin` and the key's name.",
                "parameters": [{"name": "list", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "email", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(errors(&["401", "403", "404", "422", "503"]), ok("{email, list, action, changed}",
                    json!({"type": "object", "properties": {"email": {"type": "string"}, "list": {"type": "string"}, "action": {"type": "string"}, "changed": {"type": "boolean"}}})))
            }},
            "/api/v1/subscribers/{email}": {"get": {"summary": "A subscriber with memberships and audit trail",
                "parameters": [{"name": "email", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": with(errors(&["401", "404", "422", "503"]), ok("Subscriber", json!({"$ref": "#/components/schemas/Subscriber"})))}}
        }
    })
}

fn describe(code: &str) -> &'static str {
    match code {
        "401" => "No valid API key",
        "403" => "The key has read scope",
        "404" => "Not found",
        "409" => {
            "The campaign's state does not allow this, or the address is blocklisted, unsubscribed or bounced"
        }
        "422" => "The request is invalid",
        _ => "The database is unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc = openapi_document();
        let paths = doc["paths"].as_object().unwrap();
        let mut listed: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        listed.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_string(), (*p).to_string()))
            .collect();
        routes.sort();
        assert_eq!(listed, routes);
        // Every $ref points at a schema that exists.
        let text = doc.to_string();
        for r in text.split("#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
    }
}
