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

/// Whether the campaign content is Markdown or HTML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentKind {
    /// CommonMark with tables, strikethrough and footnotes; raw HTML passes through.
    #[default]
    Markdown,
    /// An HTML fragment, put into the layout as it is.
    Html,
}

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
const HTML: &str = "html";
const TEXT: &str = "text";
const TEXT_WIDTH: usize = 78;

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
        template::check_in(&mut html_reg, "layout.html", &c.layout.html)?;
        if let Some(t) = &c.layout.text {
            template::check_in(&mut text_reg, "layout.txt", t)?;
        }

        let content = splice_partials(&c.content, &c.layout.partials, 0)?;
        let content_html = match c.content_kind {
            ContentKind::Html => content.clone(),
            ContentKind::Markdown => markdown_to_html(&content)?,
        };
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
            },
            tz: c.time_zone,
            headers,
            encoding: c.transfer_encoding,
            html_source,
            text_source,
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
        let vars = Vars {
            email: &r.email,
            name: r.name.as_deref(),
            attributes: &r.attributes,
            unsubscribe_url: &r.unsubscribe_url,
            unsubscribe_mailto: &r.unsubscribe_mailto,
            view_url: r.view_url.as_deref(),
            date: template::date_var(now, self.tz),
        };
        let mut ctx = template::context(&self.fixed, &vars, None);
        let subject = template::render(
            &self.text_reg,
            SUBJECT,
            &Context::from(ctx.clone()),
            &r.email,
            256,
        )?;
        // A subject read from a file ends with a newline; it is no part of the subject.
        let subject = subject.trim().to_owned();
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
    let text = html2text::from_read(p.text.as_bytes(), TEXT_WIDTH)
        .map_err(|e| RenderError::Html2Text(e.to_string()))?;
    mustache::restore_text(&text, &p, "html2text")
}
