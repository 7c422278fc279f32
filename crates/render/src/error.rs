//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while compiling a campaign or rendering one
/// message. Errors from [`crate::Renderer::new`] and [`crate::check_template`]
/// are the operator's to fix (they name the template, line and column); errors
/// from [`crate::Renderer::render`] concern one recipient (bad address, an
/// attribute the template needs and the subscriber lacks) and should fail that
/// delivery only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A template does not compile or refers to something that does not exist
    /// (unknown variable, unknown helper, unclosed block, bad syntax).
    #[error("{}: {reason}", position(template, *line, *column))]
    Template {
        /// The template's name: a file name, or `subject`, `content`, `layout.html`, `layout.txt`.
        template: String,
        /// 1-based line, when handlebars knows it.
        line: Option<usize>,
        /// 1-based column, when handlebars knows it.
        column: Option<usize>,
        /// What is wrong, in handlebars' words.
        reason: String,
    },
    /// Rendering failed for one recipient, e.g. a `subscriber.attributes.X` the
    /// template uses without `default` and this subscriber does not have.
    #[error("rendering {} for {recipient}: {reason}", position(template, *line, *column))]
    Personalise {
        /// Which compiled template failed (`subject`, `html`, `text`).
        template: String,
        /// Line in the compiled template (after layout, Markdown and CSS inlining).
        line: Option<usize>,
        /// Column in the compiled template.
        column: Option<usize>,
        /// The recipient's address.
        recipient: String,
        /// What is wrong.
        reason: String,
    },
    /// A layout has no `{{{content}}}` slot, or more than one.
    #[error(
        "{template}: the layout must contain `{{{{{{content}}}}}}` exactly once (found {found})"
    )]
    ContentSlot {
        /// The layout's name.
        template: String,
        /// How many slots were found.
        found: usize,
    },
    /// A handlebars expression sits where the HTML or text conversion cannot
    /// keep it (e.g. inside `<style>`, or between table rows for html2text).
    #[error(
        "the expression `{expression}` did not survive {stage}: move it out of <style>, or into a table cell, or ship a text layout"
    )]
    Misplaced {
        /// The expression as written.
        expression: String,
        /// The step that lost or moved it (`css inlining`, `html2text`).
        stage: String,
    },
    /// css-inline refused the HTML or its CSS.
    #[error("inlining CSS: {0}")]
    CssInline(String),
    /// html2text could not derive the text part.
    #[error("deriving the text part from HTML: {0}")]
    Html2Text(String),
    /// Reading an operator layout directory failed.
    #[error("reading layout file {}: {source}", path.display())]
    LayoutIo {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A partial includes itself, directly or through others, or nests too deep.
    #[error("partial `{name}` is nested more than {max} levels deep (does it include itself?)")]
    PartialDepth {
        /// The partial that hit the limit.
        name: String,
        /// The limit.
        max: usize,
    },
    /// An address (From, Reply-To or the recipient's) is not a valid mailbox.
    #[error("{field} address {value:?} is invalid: {reason}")]
    Address {
        /// `from`, `reply_to`, `to`.
        field: &'static str,
        /// The address as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value that goes into a header verbatim (URL, list id, campaign id,
    /// domain) contains characters that could break the header.
    #[error("{header} value {value:?} is not allowed: {reason}")]
    HeaderValue {
        /// The header or setting (`List-Unsubscribe`, `List-Id`, …).
        header: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The list's List-Id (RFC 2919) is not one: the list's, not the
    /// content's, to fix.
    #[error(
        "list {list:?}: its List-Id {value:?} is not allowed: {reason}. A list gets its id at \
         `rundbrief list create NAME [--label LABEL]`; the List-Id is the label followed by the \
         From domain"
    )]
    ListId {
        /// The list's name.
        list: String,
        /// The List-Id as built.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The configured time zone is not an IANA name chrono-tz knows.
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Berlin)")]
    TimeZone(String),
    /// lettre refused to build the message.
    #[error("building the MIME message: {0}")]
    Mime(#[from] lettre::error::Error),
}

fn position(template: &str, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{template}:{l}:{c}"),
        (Some(l), None) => format!("{template}:{l}"),
        _ => template.to_owned(),
    }
}

impl RenderError {
    /// The message without the recipient's address, so that the same
    /// failure for many subscribers reads the same (the delivery ledger
    /// records this per delivery and `campaign status` groups by it; the
    /// delivery already names its address).
    pub fn without_recipient(&self) -> String {
        match self {
            RenderError::Personalise {
                template,
                line,
                column,
                reason,
                ..
            } => match (line, column) {
                (Some(l), Some(c)) => format!("{template} at {l}:{c}: {reason}"),
                (Some(l), None) => format!("{template} at line {l}: {reason}"),
                _ => format!("{template}: {reason}"),
            },
            other => other.to_string(),
        }
    }

    /// The (line, column) this error points at, if any.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            RenderError::Template {
                line: Some(l),
                column: Some(c),
                ..
            }
            | RenderError::Personalise {
                line: Some(l),
                column: Some(c),
                ..
            } => Some((*l, *c)),
            _ => None,
        }
    }

    pub(crate) fn from_template_error(name: &str, e: &handlebars::TemplateError) -> Self {
        let (line, column) = match e.pos() {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        RenderError::Template {
            template: name.to_owned(),
            line,
            column,
            reason: e.reason().to_string(),
        }
    }

    pub(crate) fn from_check_render(name: &str, e: &handlebars::RenderError) -> Self {
        if let handlebars::RenderErrorReason::TemplateError(te) = e.reason() {
            return Self::from_template_error(name, te);
        }
        RenderError::Template {
            template: name.to_owned(),
            line: e.line_no,
            column: e.column_no,
            reason: e.reason().to_string(),
        }
    }
}
