//! The lists pages: `GET /lists` (every list with its members by status),
//! `GET /lists/{name}` (its counts and growth chart) and
//! `GET /lists/{name}/export.csv` (its members as the CSV `rundbrief export`
//! writes, streamed page by page through [`rundbrief_app::export::Export`]).
//! Session auth, as every page.

use crate::AdminState;
use crate::pages::{app_error_page, encode_segment, html_response, page, redirect};
use axum::body::Body;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use rundbrief_app::AppError;
use rundbrief_core::{ListCounts, StatusFilter};
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

/// How far back a list's growth chart goes.
pub const GROWTH_DAYS: i64 = 90;

pub(crate) fn list_href(name: &str) -> String {
    format!("/lists/{}", encode_segment(name))
}

/// The statuses a list page shows, in order, with their counts.
fn by_status(c: &ListCounts) -> [(&'static str, u64); 6] {
    [
        ("subscribed", c.subscribed),
        ("unconfirmed", c.unconfirmed),
        ("unsubscribed", c.unsubscribed),
        ("bounced", c.bounced),
        ("blocklisted", c.blocklisted),
        ("undeliverable", c.undeliverable),
    ]
}

fn counts_table(id: &str, c: &ListCounts) -> Markup {
    html! {
        dl class="counts" id=(id) { @for (k, n) in by_status(c) {
            div data-status=(k) { dt { (k) } dd { (n) } }
        } }
    }
}

/// `GET /lists`: every list with its members by status.
pub async fn lists(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some(session) = state.0.sessions.get(&headers) else {
        return redirect("/login");
    };
    let lists = match state.app().store.list_summaries().await {
        Ok(l) => l,
        Err(e) => return app_error_page(&session, &e.into()),
    };
    let body = html! {
        p { a href="/" { "← Overview" } }
        h1 { "Lists" }
        @if lists.is_empty() { p { "No lists yet: " code { "rundbrief list create NAME" } } }
        @else {
            div class="scroll" { table id="lists" {
                thead { tr { th { "List" }
                    @for (k, _) in by_status(&ListCounts::default()) { th class="num" { (k) } }
                    th class="num" { "total" } } }
                tbody { @for l in &lists { tr data-list=(l.list.name) {
                    td class="wrap" { a href=(list_href(&l.list.name)) { (l.list.name) }
                        @if let Some(d) = &l.list.description { br; small class="subject" { (d) } } }
                    @for (k, n) in by_status(&l.counts) { td class="num" data-status=(k) { (n) } }
                    td class="num" { (l.counts.total()) }
                } } }
            } }
        }
    };
    html_response(StatusCode::OK, page("Lists", Some(&session), body))
}

/// `GET /lists/{name}`: counts by status, joins/unsubscribes/prunes per
/// day, and the export link.
pub async fn list(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(session) = state.0.sessions.get(&headers) else {
        return redirect("/login");
    };
    let app = state.app();
    let result: rundbrief_app::Result<_> = async {
        let list = app.store.list(&name).await?;
        let summary = app
            .store
            .list_summaries()
            .await?
            .into_iter()
            .find(|s| s.list.id == list.id)
            .ok_or_else(|| AppError::not_found(format!("no list `{name}`")))?;
        let now = app.clock.now();
        let growth = app
            .store
            .list_growth(list.id, now - chrono::Duration::days(GROWTH_DAYS - 1))
            .await?;
        Ok((summary, crate::activity::list_growth(&growth, now)))
    }
    .await;
    let (l, growth) = match result {
        Ok(x) => x,
        Err(e) => return app_error_page(&session, &e),
    };
    let href = list_href(&l.list.name);
    let body = html! {
        p { a href="/lists" { "← Lists" } }
        h1 { (l.list.name) }
        @if let Some(d) = &l.list.description { p class="subject" { (d) } }
        p { small { "List-Id label " code { (l.list.label.as_str()) }
            " · created " (l.list.created_at.format("%Y-%m-%d"))
            @if l.list.public { " · public subscribe form" } } }
        section {
            h2 { "Members by status" }
            (counts_table("list-counts", &l.counts))
            p { (l.counts.total()) " memberships in all." }
        }
        section {
            h2 { "Growth" }
            (growth.render())
        }
        section id="export" {
            h2 { "Export" }
            p {
                a id="export-subscribed" href={ (href) "/export.csv" } download { "Subscribed members (CSV)" }
                " · "
                a id="export-all" href={ (href) "/export.csv?status=all" } download { "Every member (CSV)" }
            }
            p class="note" { "The file " code { "rundbrief export --list NAME" } " writes: email, name and one column per attribute; "
                "cells a spreadsheet would run as formulas start with " code { "'" } "." }
        }
    };
    html_response(StatusCode::OK, page(&l.list.name, Some(&session), body))
}

/// The CSV pieces a spawned task produces, as a body stream (bounded: at
/// most two pages wait while the client reads).
struct Chunks(tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Vec<u8>, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A file name for `Content-Disposition`: the list's name with anything
/// but letters, digits, `.`, `_` and `-` as `_`.
fn file_name(list: &str) -> String {
    let s: String = list
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{}.csv", if s.is_empty() { "list" } else { &s })
}

/// `GET /lists/{name}/export.csv[?status=S|all]`: the list's members as
/// `rundbrief export --list NAME [--status S|all]` writes them (by default
/// the subscribed ones), streamed page by page.
pub async fn export(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(query): Form<HashMap<String, String>>,
) -> Response {
    let Some(session) = state.0.sessions.get(&headers) else {
        return crate::api::error(
            StatusCode::UNAUTHORIZED,
            "log in at /login to export a list",
        );
    };
    let status: Option<StatusFilter> = match query.get("status").map(String::as_str) {
        None | Some("") => Some(StatusFilter::Membership(
            rundbrief_core::MembershipStatus::Subscribed,
        )),
        Some("all") => None,
        Some(s) => match s.parse() {
            Ok(f) => Some(f),
            Err(e) => {
                return crate::pages::error_page(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some(&session),
                    &format!("{e}, or all"),
                );
            }
        },
    };
    let mut export =
        match rundbrief_app::export::Export::open(&state.app().store, &name, status, false).await {
            Ok(x) => x,
            Err(e) => return app_error_page(&session, &e),
        };
    tracing::info!(admin = session.admin, list = name, "list export");
    let disposition = format!("attachment; filename=\"{}\"", file_name(&name));
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let piece = match export.next_page().await {
                Ok(Some(p)) => Ok(p),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(
                        error = crate::api::message(&e),
                        list = name,
                        "list export failed"
                    );
                    Err(std::io::Error::other(e.to_string()))
                }
            };
            let failed = piece.is_err();
            if tx.send(piece).await.is_err() || failed {
                break; // the client went away, or the body ends with the error
            }
        }
    });
    let mut r = Body::from_stream(Chunks(rx)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}
