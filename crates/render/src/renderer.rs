//! Compiling a campaign once, and rendering it for one recipient.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use handlebars::{Context, Handlebars};
use serde_json::{Map, Value, json};

/// A renderer is built once and shared by every sending worker.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Renderer>();
};

use crate::error::RenderError;
use crate::layout::{Layout, fill_slot, splice_partials};
use crate::mime::{self, Headers, TransferEncoding};
use crate::mustache::{self, Style};
use crate::template::{self, Fixed, Vars};

/// Whether the campaign content is Markdown or HTML (the domain type, shared
/// with the store and the application layer).
pub use rundbrief_core::ContentKind;

/// Everything about a campaign that is the same for every recipient. Build a
/// [`Renderer`] from it once per campaign.
#[derive(Debug, Clone)]
pub struct CampaignTemplate {
    /// Subject line; a handlebars template (rendered without HTML escaping).
    pub subject: String,
    /// The content; a handlebars template in Markdown or HTML.
    pub content: String,
    /// How to read `content`.
    pub content_kind: ContentKind,
    /// The frame around the content: [`Layout::shipped`] or [`Layout::from_dir`].
    pub layout: Layout,
    /// The From mailbox, e.g. `Rundbrief News <news@example.org>`.
    pub from: String,
    /// Optional Reply-To mailbox.
    pub reply_to: Option<String>,
    /// The list identifier for `List-Id` (RFC 2919), e.g. `news.lists.example.org`.
    pub list_id: String,
    /// The list's human name, shown in `List-Id` and available as `list.name`.
    pub list_name: String,
    /// The campaign id: in `Feedback-ID`, `Message-ID` and `campaign.id`.
    /// Letters, digits, `.`, `_` and `-` only.
    pub campaign_id: String,
    /// The domain of every `Message-ID` (our own sending domain).
    pub message_id_domain: String,
    /// Time zone of the `date` variable and the default of `format_date`.
    pub time_zone: Tz,
    /// Content-Transfer-Encoding of both parts; see [`TransferEncoding`].
    pub transfer_encoding: TransferEncoding,
    /// The sender's postal address (`sending.postal_address`), shown in the
    /// footer as `postal_address`; CAN-SPAM requires one in bulk mail.
    pub postal_address: Option<String>,
}

/// One recipient. The unsubscribe links are computed by the caller (they carry
/// a token signed with a secret this crate never sees).
#[derive(Debug, Clone, Default)]
pub struct Recipient {
    /// The address the message goes to.
    pub email: String,
    /// Display name for `To:` and `subscriber.name`.
    pub name: Option<String>,
    /// Subscriber attributes, available as `subscriber.attributes.NAME`.
    pub attributes: Map<String, Value>,
    /// One-click unsubscribe URL (must be `https://`, RFC 8058).
    pub unsubscribe_url: String,
    /// `mailto:` unsubscribe address for `List-Unsubscribe`.
    pub unsubscribe_mailto: String,
    /// Optional "view in browser" URL.
    pub view_url: Option<String>,
    /// Unique left-hand side for the `Message-ID` (e.g. the delivery id).
    /// Without it one is derived from the campaign id and the address, so
    /// rendering the same delivery twice gives the same Message-ID.
    pub message_id: Option<String>,
}

/// A campaign compiled for sending: templates parsed and checked, Markdown
/// converted, CSS inlined and the text part derived, all once. `render` then
/// only fills in the recipient. `Send + Sync`: share one across workers.
pub struct Renderer {
    html_reg: Handlebars<'static>,
    text_reg: Handlebars<'static>,
    fixed: Fixed,
    tz: Tz,
    headers: Headers,
    encoding: TransferEncoding,
    html_source: String,
    text_source: String,
    /// Whether the "subject had a line break" warning was logged.
    warned_subject: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("campaign_id", &self.fixed.campaign_id)
            .field("time_zone", &self.tz)
            .field("encoding", &self.encoding)
            .field("html_template_len", &self.html_source.len())
            .field("text_template_len", &self.text_source.len())
            .finish_non_exhaustive()
    }
}

const SUBJECT: &str = "subject";
const PREHEADER: &str = "preheader";
/// A preheader taken from the first paragraph is cut to about this many
/// characters (inbox previews show 40–140).
const PREHEADER_CHARS: usize = 140;
const HTML: &str = "html";
const TEXT: &str = "text";

impl Renderer {
    /// Compile a campaign.
    ///
    /// # Errors
    /// [`RenderError::Template`] with the template's name, line and column for
    /// any template mistake; [`RenderError::ContentSlot`] for a layout without
    /// `{{{content}}}`; [`RenderError::Address`] / [`RenderError::HeaderValue`]
    /// for bad From, Reply-To, list id, campaign id or domain;
    /// [`RenderError::Misplaced`] when an expression cannot survive CSS inlining.
    pub fn new(c: CampaignTemplate) -> Result<Renderer, RenderError> {
        let headers = Headers::new(&c)?;
        let mut html_reg = template::registry(true, c.time_zone);
        let mut text_reg = template::registry(false, c.time_zone);
        for (name, src) in &c.layout.partials {
            for reg in [&mut html_reg, &mut text_reg] {
                reg.register_partial(name, src).map_err(|e| {
                    RenderError::from_template_error(&format!("partials/{name}.hbs"), &e)
                })?;
            }
        }

        // Each source on its own first, so errors point into the operator's file.
        template::check_in(&mut text_reg, SUBJECT, &c.subject)?;
        template::check_in(&mut html_reg, "content", &c.content)?;
        let (front, body) = front_matter(&c.content)?;
        template::check_in(&mut html_reg, "layout.html", &c.layout.html)?;
        if let Some(t) = &c.layout.text {
            template::check_in(&mut text_reg, "layout.txt", t)?;
        }

        let content = splice_partials(&body, &c.layout.partials, 0)?;
        let content_html = match c.content_kind {
            ContentKind::Html => content.clone(),
            ContentKind::Markdown => markdown_to_html(&content)?,
        };
        let preheader = match front.preheader {
            Some(p) => p,
            None => first_paragraph(&content_html),
        };
        template::check_in(&mut text_reg, PREHEADER, &preheader)?;
        let layout_html = splice_partials(&c.layout.html, &c.layout.partials, 0)?;
        let page = fill_slot("layout.html", &layout_html, &content_html)?;
        let html_source = inline_css(&page)?;

        let text_source = match &c.layout.text {
            Some(t) => {
                let text_content = match c.content_kind {
                    ContentKind::Markdown => content,
                    ContentKind::Html => html_to_text(&content_html)?,
                };
                let t = splice_partials(t, &c.layout.partials, 0)?;
                fill_slot("layout.txt", &t, &text_content)?
            }
            None => html_to_text(&html_source)?,
        };

        // CRLF once here, so that the per-recipient output needs no conversion.
        let html_source = mime::crlf(html_source);
        let text_source = mime::crlf(text_source);
        html_reg
            .register_template_string(HTML, &html_source)
            .map_err(|e| RenderError::from_template_error(HTML, &e))?;
        text_reg
            .register_template_string(TEXT, &text_source)
            .map_err(|e| RenderError::from_template_error(TEXT, &e))?;

        Ok(Renderer {
            html_reg,
            text_reg,
            fixed: Fixed {
                list: json!({"id": c.list_id, "name": c.list_name}),
                campaign_id: c.campaign_id,
                postal_address: c.postal_address.filter(|a| !a.trim().is_empty()),
            },
            tz: c.time_zone,
            headers,
            encoding: c.transfer_encoding,
            html_source,
            text_source,
            warned_subject: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The compiled HTML template (after layout, Markdown and CSS inlining):
    /// what `render` fills in. For previews and debugging.
    #[must_use]
    pub fn html_template(&self) -> &str {
        &self.html_source
    }

    /// The compiled text template.
    #[must_use]
    pub fn text_template(&self) -> &str {
        &self.text_source
    }

    /// The exact RFC 5322 message bytes (CRLF line ends) for one recipient,
    /// dated `now`.
    ///
    /// # Errors
    /// [`RenderError::Address`] for an invalid recipient address,
    /// [`RenderError::HeaderValue`] for unsubscribe or view URLs that could
    /// break a header, [`RenderError::Personalise`] when a template needs
    /// something this recipient lacks. Each concerns this recipient only.
    pub fn render(&self, r: &Recipient, now: DateTime<Utc>) -> Result<Vec<u8>, RenderError> {
        let to = mime::recipient_address(r)?;
        mime::check_url("List-Unsubscribe", &r.unsubscribe_url, "https://")?;
        mime::check_url("List-Unsubscribe", &r.unsubscribe_mailto, "mailto:")?;
        if let Some(v) = &r.view_url {
            mime::check_url("view_url", v, "")?;
        }
        let (subject, html, text) = self.fill(r, now)?;
        let message_id = self.headers.message_id(r)?;
        mime::build(
            &self.headers,
            self.encoding,
            to,
            r,
            &message_id,
            &subject,
            html,
            text,
            now,
        )
    }

    /// Render the three templates for `r`: (subject, html, text).
    fn fill(
        &self,
        r: &Recipient,
        now: DateTime<Utc>,
    ) -> Result<(String, String, String), RenderError> {
        let mut vars = Vars {
            email: &r.email,
            name: r.name.as_deref(),
            attributes: &r.attributes,
            unsubscribe_url: &r.unsubscribe_url,
            unsubscribe_mailto: &r.unsubscribe_mailto,
            view_url: r.view_url.as_deref(),
            date: template::date_var(now, self.tz),
            preheader: "",
        };
        let ctx = template::context(&self.fixed, &vars, None);
        let preheader = template::render(
            &self.text_reg,
            PREHEADER,
            &Context::from(ctx),
            &r.email,
            256,
        )?;
        vars.preheader = preheader.trim();
        let mut ctx = template::context(&self.fixed, &vars, None);
        let subject = template::render(
            &self.text_reg,
            SUBJECT,
            &Context::from(ctx.clone()),
            &r.email,
            256,
        )?;
        // A subject read from a file ends with a newline; it is no part of the subject.
        let subject = subject.trim();
        // A line break that came from subscriber data (an attribute in the
        // subject template) is folded to a space: a subject is one line, and
        // readers would see it broken (#21). Said once per campaign.
        let subject = if subject.contains(|c: char| c.is_control()) {
            if !self
                .warned_subject
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    "a rendered subject contained a line break or another control character \
                     (from subscriber data?); it is sent with a space instead"
                );
            }
            subject
                .split(|c: char| c.is_control())
                .filter(|p| !p.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            subject.to_owned()
        };
        if let Some(Value::Object(c)) = ctx.get_mut("campaign") {
            c.insert("subject".into(), Value::String(subject.clone()));
        }
        let ctx = Context::from(ctx);
        let html = template::render(
            &self.html_reg,
            HTML,
            &ctx,
            &r.email,
            self.html_source.len() + 1024,
        )?;
        let text = template::render(
            &self.text_reg,
            TEXT,
            &ctx,
            &r.email,
            self.text_source.len() + 1024,
        )?;
        Ok((subject, html, text))
    }
}

/// Markdown to HTML with the expressions kept intact.
fn markdown_to_html(src: &str) -> Result<String, RenderError> {
    use pulldown_cmark::{Options, Parser, html};
    let p = mustache::protect(src, Style::Word);
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_FOOTNOTES;
    let mut out = String::with_capacity(p.text.len() * 5 / 4);
    html::push_html(&mut out, Parser::new_ext(&p.text, opts));
    mustache::restore(&out, &p, "Markdown conversion")
}

/// Inline the `<style>` rules into `style` attributes; `@media` rules stay in
/// a `<style>` block so the layout remains responsive. No remote stylesheets.
fn inline_css(page: &str) -> Result<String, RenderError> {
    let p = mustache::protect(page, Style::Html);
    let inliner = css_inline::CSSInliner::options()
        .keep_at_rules(true)
        .load_remote_stylesheets(false)
        .build();
    let out = inliner
        .inline(&p.text)
        .map_err(|e| RenderError::CssInline(e.to_string()))?;
    mustache::restore(&out, &p, "CSS inlining")
}

/// The text alternative of an HTML template, expressions kept.
///
/// Lines are not wrapped: a wrapped URL cannot be clicked, and a mail
/// client wraps the text part for display anyway (long lines are fine up
/// to 998 octets, and the 8bit encoding falls back to base64 beyond).
/// `<pre>` blocks come out as their text indented by four spaces, as in
/// Markdown, instead of html2text's backticks.
fn html_to_text(html: &str) -> Result<String, RenderError> {
    let p = mustache::protect(html, Style::Word);
    // Text between table rows is moved out of the table by any HTML parser;
    // html2text would then show a row's content outside its condition or loop.
    if let Some(n) = p.table_gap.iter().position(|g| *g) {
        return Err(RenderError::Misplaced {
            expression: p.exprs[n].clone(),
            stage: "html2text".into(),
        });
    }
    let (without_pre, blocks) = take_pre_blocks(&p.text);
    let text = html2text::config::plain()
        .no_link_wrapping()
        .string_from_read(without_pre.as_bytes(), TEXT_UNWRAPPED)
        .map_err(|e| RenderError::Html2Text(e.to_string()))?;
    let mut text = text
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    text.push('\n');
    for (n, block) in blocks.iter().enumerate() {
        let marker = format!("{PRE_MARKER}{n}x");
        let indented: String = block
            .lines()
            .map(|l| {
                if l.trim().is_empty() {
                    String::new()
                } else {
                    format!("    {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        text = text.replacen(&marker, &indented, 1);
    }
    mustache::restore_text(&text, &p, "html2text")
}

/// What a content file's front matter sets.
#[derive(Debug, Default, PartialEq, Eq)]
struct FrontMatter {
    preheader: Option<String>,
}

/// Front matter: a first line `---`, lines `key: value`, a line `---`.
/// Returns it and the content with those lines blanked (so line numbers in
/// later errors still match the file). A first `---` not followed by
/// `key: value` lines is a Markdown rule, not front matter.
fn front_matter(content: &str) -> Result<(FrontMatter, String), RenderError> {
    let mut lines = content.split_inclusive('\n');
    let none = || Ok((FrontMatter::default(), content.to_owned()));
    if lines.next().map(str::trim_end) != Some("---") {
        return none();
    }
    let mut fm = FrontMatter::default();
    let mut consumed = 1;
    for (n, line) in lines.enumerate() {
        consumed += 1;
        let line = line.trim_end();
        if line == "---" {
            let rest: String = content.split_inclusive('\n').skip(consumed).collect();
            return Ok((fm, format!("{}{rest}", "\n".repeat(consumed))));
        }
        let Some((key, value)) = line.split_once(':') else {
            return none();
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return none();
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        match key {
            "preheader" => fm.preheader = Some(value.to_owned()),
            other => {
                return Err(RenderError::Template {
                    template: "content".into(),
                    line: Some(n + 2),
                    column: Some(1),
                    reason: format!("unknown front matter key `{other}` (known: preheader)"),
                });
            }
        }
    }
    none()
}

/// The preheader a content gives when its front matter sets none: the text
/// of its first paragraph, cut after a word near [`PREHEADER_CHARS`]
/// (never inside a handlebars expression). A template for the text registry.
fn first_paragraph(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let Some(start) = find_tag(&lower, "<p") else {
        return String::new();
    };
    let Some(open_end) = lower[start..].find('>').map(|e| start + e + 1) else {
        return String::new();
    };
    let close = lower[open_end..]
        .find("</p>")
        .map_or(html.len(), |e| open_end + e);
    let text = decode_entities(&strip_tags(&html[open_end..close]));
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= PREHEADER_CHARS {
        return text;
    }
    let spans = mustache::spans(&text);
    let mut cut = None;
    for (i, c) in text.char_indices() {
        if text[..i].chars().count() > PREHEADER_CHARS {
            break;
        }
        if c == ' ' && !spans.iter().any(|s| s.start < i && i < s.end) {
            cut = Some(i);
        }
    }
    match cut {
        Some(i) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Wider than any line: html2text then never wraps.
const TEXT_UNWRAPPED: usize = 100_000;
const PRE_MARKER: &str = "rdbpreblock";

/// Cuts every `<pre>…</pre>` out of `html`, leaving a paragraph with a
/// marker word in its place; returns the blocks' text (tags removed,
/// entities decoded, one trailing newline dropped).
fn take_pre_blocks(html: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(html.len());
    let mut blocks = Vec::new();
    let mut rest = html;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(start) = find_tag(&lower, "<pre") else {
            break;
        };
        let Some(open_end) = lower[start..].find('>').map(|e| start + e + 1) else {
            break;
        };
        let Some(close) = lower[open_end..].find("</pre>").map(|e| open_end + e) else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = strip_tags(&rest[open_end..close]);
        let inner = decode_entities(&inner);
        blocks.push(inner.strip_suffix('\n').unwrap_or(&inner).to_owned());
        out.push_str(&format!("<p>{PRE_MARKER}{}x</p>", blocks.len() - 1));
        rest = &rest[close + "</pre>".len()..];
    }
    out.push_str(rest);
    (out, blocks)
}

/// The first `<NAME` that is a whole tag name (`<pre>`, `<pre class=…>`,
/// not `<preview>`).
fn find_tag(lower: &str, open: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = lower[from..].find(open).map(|p| p + from) {
        match lower.as_bytes().get(p + open.len()) {
            Some(b'>' | b' ' | b'\t' | b'\n' | b'\r' | b'/') => return Some(p),
            _ => from = p + open.len(),
        }
    }
    None
}

fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The entities pulldown-cmark and hand-written HTML put into code.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let name = &after[..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_20_text_part_keeps_urls_whole_and_indents_pre() {
        let url = "https://example.org/a/very/long/path/that/goes/on/and/on?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=issue-12";
        let html = format!(
            "<p>Read <a href=\"{url}\">the whole article about a topic that needs many words to describe</a> today, and {{{{subscriber.email}}}} too.</p>\
             <pre><code class=\"language-rust\">fn main() {{\n    println!(&quot;a &lt;b&gt; {{{{x}}}}&quot;);\n}}\n</code></pre><p>After.</p>"
        );
        let text = html_to_text(&html).expect("converts");
        let plain_url = url.replace("&amp;", "&");
        assert!(
            text.lines().any(|l| l.contains(&plain_url)),
            "URL broken across lines:\n{text}"
        );
        assert!(!text.contains('`'), "backticks:\n{text}");
        assert!(
            text.contains("\n    fn main() {\n        println!(\"a <b> {{x}}\");\n    }\n"),
            "pre not indented:\n{text}"
        );
        assert!(text.contains("{{subscriber.email}}"), "{text}");
        assert!(text.find("After.") > text.find("fn main"), "{text}");
    }

    #[test]
    fn front_matter_and_first_paragraph() {
        let (fm, body) = front_matter("---\npreheader: \"Hi {{x}}\"\n---\n# T\n").expect("ok");
        assert_eq!(fm.preheader.as_deref(), Some("Hi {{x}}"));
        assert_eq!(body, "\n\n\n# T\n");
        let (fm, body) = front_matter("---\n\nText\n").expect("ok");
        assert_eq!(
            (fm, body.as_str()),
            (FrontMatter::default(), "---\n\nText\n")
        );
        let e = front_matter("---\npreheader: a\ntitle: b\n---\n").expect_err("unknown key");
        assert!(
            e.to_string().contains("content:3:1") && e.to_string().contains("title"),
            "{e}"
        );

        assert_eq!(
            first_paragraph(
                "<h1>T</h1>\n<p>Hello <strong>{{default subscriber.name \"you\"}}</strong> &amp; all.</p><p>2</p>"
            ),
            "Hello {{default subscriber.name \"you\"}} & all."
        );
        let long = format!(
            "<p>{} {{{{default subscriber.name \"a b c d\"}}}} end</p>",
            "word ".repeat(27)
        );
        let p = first_paragraph(&long);
        assert!(
            p.ends_with('…') && p.chars().count() <= PREHEADER_CHARS + 1,
            "{p}"
        );
        assert_eq!(p.matches("{{").count(), p.matches("}}").count(), "{p}");
        assert_eq!(first_paragraph("<h1>Only a heading</h1>"), "");
    }

    #[test]
    fn entities_and_tags() {
        assert_eq!(
            decode_entities("a &lt;b&gt; &amp;amp; &#65;&#x42; &bogus; &"),
            "a <b> &amp; AB &bogus; &"
        );
        assert_eq!(strip_tags("<span class=\"k\">fn</span> x"), "fn x");
        assert_eq!(find_tag("<preview><pre>", "<pre"), Some(9));
    }
}
