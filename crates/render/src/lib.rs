//! Campaign rendering for rundbrief: from a campaign (subject + Markdown or HTML
//! content, both handlebars templates, inside a layout) and one subscriber to
//! the exact RFC 5322 bytes that subscriber receives.
//!
//! **Owns:** the template language (handlebars in strict mode, our helpers and
//! variables), Markdown → HTML, CSS inlining, the text alternative, MIME
//! assembly with the `List-*` headers, and header safety for subscriber data.
//! The shipped default layout lives in the workspace's `templates/default/`.
//!
//! **Never does:** I/O per recipient (only [`Layout::from_dir`] reads files,
//! once per campaign), database access, sending, DKIM signing, or unsubscribe
//! tokens (the caller signs them and passes the finished URLs in).
//!
//! **Start at** [`Renderer::new`], which does everything that is the same for
//! every recipient once (check, Markdown, CSS inlining, text derivation), then
//! call [`Renderer::render`] per recipient. [`check_template`] backs
//! `rundbrief template check FILE`.
//!
//! ```
//! use rundbrief_render::{CampaignTemplate, ContentKind, Layout, Recipient, Renderer, TransferEncoding};
//! # fn main() -> Result<(), rundbrief_render::RenderError> {
//! let renderer = Renderer::new(CampaignTemplate {
//!     subject: "Hello {{default subscriber.name \"reader\"}}".into(),
//!     content: "# News\n\nDear {{default subscriber.attributes.city \"world\"}}, …".into(),
//!     content_kind: ContentKind::Markdown,
//!     layout: Layout::shipped(),
//!     from: "Rundbrief <news@example.org>".into(),
//!     reply_to: None,
//!     list_id: "news.lists.example.org".into(),
//!     list_name: "News".into(),
//!     campaign_id: "2026-01".into(),
//!     message_id_domain: "example.org".into(),
//!     time_zone: chrono_tz::Europe::Berlin,
//!     transfer_encoding: TransferEncoding::Base64,
//!     postal_address: None,
//! })?;
//! let bytes = renderer.render(&Recipient {
//!     email: "anna@example.org".into(),
//!     name: Some("Anna".into()),
//!     unsubscribe_url: "https://example.org/u/TOKEN".into(),
//!     unsubscribe_mailto: "mailto:u-TOKEN@example.org".into(),
//!     ..Recipient::default()
//! }, chrono::Utc::now())?;
//! assert!(bytes.starts_with(b"From: "));
//! # Ok(()) }
//! ```

mod encode;
mod error;
mod layout;
mod mime;
mod mustache;
mod renderer;
mod template;

pub use error::RenderError;

/// A header value of human text (a subject) for a header called `name`,
/// folded, with RFC 2047 encoded-words where needed; nothing in `value`
/// can end the header line (see the `encode` module's notes).
pub fn encode_unstructured(name: &str, value: &str) -> String {
    encode::unstructured(name, value)
}
pub use layout::{Layout, MAX_PARTIAL_DEPTH};
pub use mime::{TransferEncoding, check_from};
pub use renderer::{CampaignTemplate, ContentKind, Recipient, Renderer};
pub use template::{check_template, parse_time_zone};

/// Re-exported so callers can name time zones without their own dependency.
pub use chrono_tz::Tz;
