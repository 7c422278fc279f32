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
    ("get", "/api/v1/campaigns"),
    ("get", "/api/v1/campaigns/{name}"),
    ("post", "/api/v1/campaigns/{name}/pause"),
    ("post", "/api/v1/campaigns/{name}/resume"),
    ("post", "/api/v1/campaigns/{name}/retry-failed"),
    ("post", "/api/v1/campaigns/{name}/cancel"),
    ("get", "/api/v1/subscribers/{email}"),
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
                    "required": ["state", "total", "sent", "deferred", "failed", "bounced", "pending", "rejected", "sending", "errors", "held_prunes"],
                    "properties": {
                        "state": {"type": "string", "enum": ["draft", "scheduled", "running", "paused", "finished", "cancelled"]},
                        "total": {"type": "integer"}, "sent": {"type": "integer"}, "deferred": {"type": "integer"},
                        "failed": {"type": "integer"}, "bounced": {"type": "integer"}, "pending": {"type": "integer"},
                        "rejected": {"type": "integer"}, "sending": {"type": "integer"},
                        "errors": {"type": "array", "items": {"type": "object"}},
                        "held_prunes": {"type": "integer"},
                        "rate_per_s": {"type": "number", "description": "while running"},
                        "eta_s": {"type": "integer", "description": "while running and sending"}
                    }},
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
                ok("Lists, as `rundbrief list ls --json`", json!({"type": "array", "items": {"type": "object"}})))}},
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
        "409" => "The campaign's state does not allow this",
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
