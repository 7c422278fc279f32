//! Handlebars registries, our helpers, the template context, and checking.
//!
//! Two registries, both in strict mode: one escapes HTML (the HTML part), one
//! does not (the subject and the text part). Checking compiles a source and
//! renders it once against a sample context, because handlebars reports an
//! unknown variable or helper only while rendering.

use chrono::format::StrftimeItems;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderErrorReason, Renderable as _,
    ScopedJson,
};
use serde_json::{Map, Value, json};

use crate::error::RenderError;
use crate::mustache;

/// Build a strict registry with our helpers; `html` chooses HTML escaping.
pub(crate) fn registry(html: bool, tz: Tz) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    r.set_strict_mode(true);
    if !html {
        r.register_escape_fn(handlebars::no_escape);
    }
    r.register_helper("default", Box::new(DefaultHelper));
    r.register_helper("format_date", Box::new(FormatDate { tz }));
    r
}

/// `{{default value "fallback"}}`: `value` unless it is missing, null, or an
/// empty string; then `fallback`. A missing value is no error here even in
/// strict mode, which is the point of the helper.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let fallback = h
            .param(1)
            .ok_or_else(|| RenderErrorReason::ParamNotFoundForIndex("default", 1))?;
        let value = h
            .param(0)
            .map(|p| p.value())
            .filter(|v| !(v.is_null() || v.as_str().is_some_and(str::is_empty)));
        match value {
            Some(v) if !h.param(0).is_some_and(|p| p.is_value_missing()) => {
                Ok(ScopedJson::Derived(v.clone()))
            }
            _ => Ok(ScopedJson::Derived(fallback.value().clone())),
        }
    }
}

/// `{{format_date date "%e %B %Y"}}`, optionally `tz="America/New_York"`:
/// formats an RFC 3339 timestamp (such as the `date` variable) in the
/// campaign's time zone or the one given, with chrono's strftime syntax.
struct FormatDate {
    tz: Tz,
}

impl HelperDef for FormatDate {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let bad = |what: String| RenderErrorReason::Other(format!("format_date: {what}"));
        let raw = h
            .param(0)
            .and_then(|p| p.value().as_str())
            .ok_or_else(|| bad("first parameter must be a date string such as `date`".into()))?;
        let fmt = h.param(1).and_then(|p| p.value().as_str()).ok_or_else(|| {
            bad("second parameter must be a format string such as \"%e %B %Y\"".into())
        })?;
        let tz = match h.hash_get("tz") {
            Some(v) => {
                let name = v.value().as_str().unwrap_or_default();
                name.parse::<Tz>()
                    .map_err(|_| bad(format!("unknown time zone {name:?}")))?
            }
            None => self.tz,
        };
        let when = DateTime::parse_from_rfc3339(raw)
            .map_err(|e| bad(format!("{raw:?} is not an RFC 3339 date: {e}")))?
            .with_timezone(&tz);
        let items = StrftimeItems::new(fmt)
            .parse()
            .map_err(|_| bad(format!("invalid format string {fmt:?}")))?;
        let mut out = String::new();
        use std::fmt::Write as _;
        write!(out, "{}", when.format_with_items(items.iter()))
            .map_err(|_| bad(format!("cannot format with {fmt:?}")))?;
        Ok(ScopedJson::Derived(Value::String(out)))
    }
}

/// The per-recipient part of the context, borrowed from the caller.
pub(crate) struct Vars<'a> {
    pub email: &'a str,
    pub name: Option<&'a str>,
    pub attributes: &'a Map<String, Value>,
    pub unsubscribe_url: &'a str,
    pub unsubscribe_mailto: &'a str,
    pub view_url: Option<&'a str>,
    pub date: String,
    /// The rendered preheader (plain text; the HTML registry escapes it).
    pub preheader: &'a str,
}

/// The campaign-wide part of the context.
#[derive(Clone)]
pub(crate) struct Fixed {
    pub list: Value,
    pub campaign_id: String,
    /// `sending.postal_address`, shown in the footer.
    pub postal_address: Option<String>,
}

/// The template context. Field names here are the documented template variables.
pub(crate) fn context(fixed: &Fixed, v: &Vars<'_>, subject: Option<&str>) -> Value {
    let mut campaign = Map::with_capacity(2);
    campaign.insert("id".into(), Value::String(fixed.campaign_id.clone()));
    if let Some(s) = subject {
        campaign.insert("subject".into(), Value::String(s.to_owned()));
    }
    json!({
        "subscriber": {
            "email": v.email,
            "name": v.name,
            "attributes": Value::Object(v.attributes.clone()),
        },
        "list": fixed.list.clone(),
        "campaign": Value::Object(campaign),
        "unsubscribe_url": v.unsubscribe_url,
        "unsubscribe_mailto": v.unsubscribe_mailto,
        "view_url": v.view_url,
        "date": v.date,
        "preheader": v.preheader,
        "postal_address": fixed.postal_address,
    })
}

/// A context for checking `source`: every documented variable with a sample
/// value, `content` for layouts, and each `subscriber.attributes.NAME` the
/// source mentions (attributes differ per subscriber, so naming one is never
/// an error at check time; a subscriber who lacks it fails at render time
/// unless the template uses `default`).
pub(crate) fn sample_context(source: &str) -> Value {
    let mut attributes = Map::new();
    for name in attribute_names(source) {
        attributes.insert(name, Value::String("sample".into()));
    }
    let fixed = Fixed {
        list: json!({"id": "news.lists.example.org", "name": "Sample list"}),
        campaign_id: "sample".into(),
        postal_address: Some("Sample Street 1, 12345 Sample Town".into()),
    };
    let vars = Vars {
        email: "reader@example.org",
        name: Some("Sample Reader"),
        attributes: &attributes,
        unsubscribe_url: "https://example.org/u/sample",
        unsubscribe_mailto: "mailto:unsubscribe@example.org?subject=sample",
        view_url: Some("https://example.org/v/sample"),
        date: "2026-01-06T09:00:00+01:00".into(),
        preheader: "Sample preheader",
    };
    let mut ctx = context(&fixed, &vars, Some("Sample subject"));
    if let Value::Object(m) = &mut ctx {
        m.insert("content".into(), Value::String(String::new()));
    }
    ctx
}

fn attribute_names(source: &str) -> Vec<String> {
    const KEY: &str = "subscriber.attributes.";
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(p) = rest.find(KEY) {
        rest = &rest[p + KEY.len()..];
        let name: String = if let Some(inner) = rest.strip_prefix('[') {
            inner.chars().take_while(|c| *c != ']').collect()
        } else {
            rest.chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '}' | ')' | '.' | '/' | '~'))
                .collect()
        };
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// Names used as `{{> name}}` in `source`.
pub(crate) fn partial_names(source: &str) -> Vec<String> {
    mustache::spans(source)
        .into_iter()
        .filter_map(|sp| {
            let inner = source[sp.start..sp.end]
                .trim_start_matches('{')
                .trim_start_matches('~');
            let inner = inner.strip_prefix('>')?;
            let name = inner
                .split_whitespace()
                .next()?
                .trim_end_matches('}')
                .trim_end_matches('~');
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// Compile `source` under `name` into `reg` and render it once against the
/// sample context, turning handlebars' errors into positioned ones.
pub(crate) fn check_in(
    reg: &mut Handlebars<'static>,
    name: &str,
    source: &str,
) -> Result<(), RenderError> {
    reg.register_template_string(name, source).map_err(|e| {
        // handlebars says "invalid syntax: expected <its grammar rules>" at
        // the end of the file for an unclosed block or expression; say
        // which one, where it opens.
        match (e.reason(), unclosed(source)) {
            (handlebars::TemplateErrorReason::InvalidSyntax(_), Some((line, column, reason))) => {
                RenderError::Template {
                    template: name.to_owned(),
                    line: Some(line),
                    column: Some(column),
                    reason,
                }
            }
            _ => RenderError::from_template_error(name, &e),
        }
    })?;
    let ctx = Context::from(sample_context(source));
    reg.render_with_context(name, &ctx)
        .map_err(|e| RenderError::from_check_render(name, &e))?;
    Ok(())
}

/// The first `{{` that is never closed, or else the last block (`{{#if …}}`,
/// `{{#each …}}`) without its `{{/…}}`: (line, column, what to do), both
/// 1-based, the column in characters. Comments (`{{!-- … --}}`, `{{! … }}`)
/// are skipped whole.
fn unclosed(source: &str) -> Option<(usize, usize, String)> {
    let at = |offset: usize| {
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before[before.rfind('\n').map_or(0, |n| n + 1)..]
            .chars()
            .count()
            + 1;
        (line, column)
    };
    let mut blocks: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while let Some(found) = source[i..].find("{{") {
        let start = i + found;
        let body = &source[start + 2..];
        let end = if body.starts_with("!--") {
            body.find("--}}").map(|n| n + 4)
        } else {
            body.find("}}").map(|n| n + 2)
        };
        let Some(end) = end else {
            let (line, column) = at(start);
            return Some((
                line,
                column,
                "this `{{` is never closed: add the `}}` that ends the expression".into(),
            ));
        };
        let inner = body[..end].trim_start_matches(['{', '~']).trim_start();
        let word = |s: &str| {
            s.split(|c: char| c.is_whitespace() || c == '}' || c == '~')
                .next()
                .unwrap_or("")
                .to_string()
        };
        if let Some(open) = inner.strip_prefix('#') {
            blocks.push((word(open.trim_start_matches(['>', '*'])), start));
        } else if let Some(close) = inner.strip_prefix('/') {
            let close = word(close);
            if let Some(n) = blocks.iter().rposition(|(b, _)| *b == close) {
                blocks.truncate(n);
            }
        }
        i = start + 2 + end;
    }
    blocks.pop().map(|(block, start)| {
        let (line, column) = at(start);
        (
            line,
            column,
            format!("`{{{{#{block}}}}}` opened here is never closed: add `{{{{/{block}}}}}` where it ends"),
        )
    })
}

/// Check one template file on its own: it must compile, and every variable
/// and helper it uses must exist. Partials it includes are not resolved here
/// (they live in the layout directory); [`crate::Renderer::new`] checks them.
///
/// # Errors
/// [`RenderError::Template`], whose `Display` reads `name:line:column: reason`.
pub fn check_template(name: &str, source: &str) -> Result<(), RenderError> {
    let mut reg = registry(true, Tz::UTC);
    for p in partial_names(source) {
        // Stand-ins so a standalone check does not fail on layout partials.
        let _ = reg.register_partial(&p, "");
    }
    check_in(&mut reg, name, source)
}

/// Render a compiled template for one recipient into a buffer sized for it
/// (handlebars' own `render_with_context` starts at 8 KB and reallocates).
pub(crate) fn render(
    reg: &Handlebars<'static>,
    name: &str,
    ctx: &Context,
    recipient: &str,
    size_hint: usize,
) -> Result<String, RenderError> {
    let failed = |e: handlebars::RenderError| RenderError::Personalise {
        template: name.to_owned(),
        line: e.line_no,
        column: e.column_no,
        recipient: recipient.to_owned(),
        reason: match e.reason() {
            // handlebars says `Failed to access variable in strict mode
            // Some("…")`: name the path and the way out instead.
            RenderErrorReason::MissingVariable(Some(path)) => format!(
                "missing `{path}` (this subscriber has no such value; \
                 `{{{{default {path} \"…\"}}}}` gives a fallback)"
            ),
            other => other.to_string(),
        },
    };
    let tpl = reg
        .get_template(name)
        .ok_or_else(|| failed(RenderErrorReason::TemplateNotFound(name.to_owned()).into()))?;
    let mut out = Buf(String::with_capacity(size_hint));
    let mut rc = RenderContext::new(tpl.name.as_ref());
    tpl.render(reg, ctx, &mut rc, &mut out).map_err(failed)?;
    Ok(out.0)
}

struct Buf(String);

impl handlebars::Output for Buf {
    fn write(&mut self, seg: &str) -> Result<(), std::io::Error> {
        self.0.push_str(seg);
        Ok(())
    }
}

/// Parse an IANA time zone name.
///
/// # Errors
/// [`RenderError::TimeZone`] for a name chrono-tz does not know.
pub fn parse_time_zone(name: &str) -> Result<Tz, RenderError> {
    name.parse::<Tz>()
        .map_err(|_| RenderError::TimeZone(name.to_owned()))
}

/// RFC 3339 in the given zone: the `date` variable.
pub(crate) fn date_var(now: DateTime<Utc>, tz: Tz) -> String {
    now.with_timezone(&tz).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_one(src: &str, ctx: Value) -> Result<String, String> {
        let mut reg = registry(true, "Europe/Berlin".parse().map_err(|_| "tz")?);
        reg.register_template_string("t", src)
            .map_err(|e| e.to_string())?;
        reg.render_with_context("t", &Context::from(ctx))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn helpers() {
        let ctx = json!({
            "a": {"city": "Köln", "empty": "", "nul": null},
            "date": "2026-03-29T00:30:00Z",
        });
        let cases: &[(&str, Result<&str, &str>)] = &[
            (r#"{{default a.city "there"}}"#, Ok("Köln")),
            (r#"{{default a.missing "there"}}"#, Ok("there")),
            (r#"{{default a.empty "there"}}"#, Ok("there")),
            (r#"{{default a.nul "there"}}"#, Ok("there")),
            (r#"{{default a.missing "<b>"}}"#, Ok("&lt;b&gt;")),
            (
                r#"{{format_date date "%Y-%m-%d %H:%M %Z"}}"#,
                Ok("2026-03-29 01:30 CET"),
            ),
            (
                r#"{{format_date date "%H:%M" tz="America/New_York"}}"#,
                Ok("20:30"),
            ),
            (r#"{{format_date date "%Q"}}"#, Err("invalid format string")),
            (
                r#"{{format_date date "%H" tz="Mars/Base"}}"#,
                Err("unknown time zone"),
            ),
            ("{{a.missing}}", Err("strict mode")),
        ];
        for (src, want) in cases {
            let got = render_one(src, ctx.clone());
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{src}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{src}: {g}"),
                _ => panic!("{src}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn finds_attribute_and_partial_names() {
        assert_eq!(
            attribute_names(
                "{{subscriber.attributes.city}} {{default subscriber.attributes.[first name] \"x\"}}"
            ),
            vec!["city".to_owned(), "first name".to_owned()]
        );
        assert_eq!(
            partial_names("{{> footer}} {{>head title=x}}"),
            vec!["footer", "head"]
        );
    }
}
