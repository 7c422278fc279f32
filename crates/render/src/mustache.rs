//! Finding handlebars expressions in a source and hiding them from the HTML,
//! Markdown and text tools that run once per campaign.
//!
//! pulldown-cmark, css-inline and html2text do not know handlebars: they would
//! escape the quotes of `{{default x "y"}}`, percent-encode braces in links or
//! move an expression that sits between table rows. So before each of them runs,
//! every `{{…}}` is replaced by a placeholder that those tools pass through
//! unchanged, and afterwards the placeholders are swapped back. The swap checks
//! that every placeholder came back once and in order; anything else is an error
//! that names the expression, never a silently broken template.

use crate::error::RenderError;

/// One `{{…}}` expression: its byte range in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

/// Every handlebars expression in `src`, in order: `{{x}}`, `{{{x}}}`,
/// `{{{{raw}}}}`, `{{!-- … --}}`, and `\{{x}}` (an escaped, literal one, kept
/// whole so the backslash stays with it). Quoted strings inside an expression
/// may contain `}}`. An expression that never closes ends the scan; handlebars
/// itself reports it with its position when the source is compiled.
pub(crate) fn spans(src: &str) -> Vec<Span> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] != b'{' || b[i + 1] != b'{' {
            i += 1;
            continue;
        }
        let start = if i > 0 && b[i - 1] == b'\\' { i - 1 } else { i };
        // Comments may contain anything up to their own terminator.
        let rest = &src[i..];
        let end = if rest.starts_with("{{!--") {
            rest.find("--}}").map(|p| i + p + 4)
        } else if rest.starts_with("{{!") {
            rest.find("}}").map(|p| i + p + 2)
        } else {
            close_of(b, i)
        };
        match end {
            Some(end) => {
                out.push(Span { start, end });
                i = end;
            }
            None => break,
        }
    }
    out
}

/// The end (exclusive) of the expression opening at `open`, skipping quoted
/// strings; `None` if it never closes.
fn close_of(b: &[u8], open: usize) -> Option<usize> {
    let mut braces = 0;
    while open + braces < b.len() && b[open + braces] == b'{' {
        braces += 1;
    }
    let mut i = open + braces;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'\'' => quote = Some(c),
            None if c == b'}' && b.get(i + 1) == Some(&b'}') => {
                // Take every closing brace of this run: `}}}` closes `{{{`.
                let mut j = i;
                while j < b.len() && b[j] == b'}' && j - i < braces.max(2) {
                    j += 1;
                }
                return Some(j);
            }
            None => {}
        }
        i += 1;
    }
    None
}

/// How a placeholder is written where an expression stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `rdbhbs7z`: letters and digits only. Safe in Markdown and in any HTML
    /// context but one where the parser moves text (between table rows).
    Word,
    /// `<!--rdbhbs7z-->` where the expression stands in HTML text, `rdbhbs7z`
    /// inside a tag or an HTML comment. A comment stays where it is in every
    /// HTML context, tables included.
    Html,
}

const PREFIX: &str = "rdbhbs";

/// A source with its expressions replaced by placeholders.
pub(crate) struct Protected {
    pub text: String,
    pub exprs: Vec<String>,
    /// Per expression: it stood inside an HTML tag (an attribute value).
    pub in_tag: Vec<bool>,
    /// Per expression: it stood as text directly inside a table, outside any
    /// cell, where an HTML parser moves text out of the table.
    pub table_gap: Vec<bool>,
}

pub(crate) fn protect(src: &str, style: Style) -> Protected {
    let spans = spans(src);
    let mut text = String::with_capacity(src.len() + spans.len() * 8);
    let mut exprs = Vec::with_capacity(spans.len());
    let mut in_tag = Vec::with_capacity(spans.len());
    let mut table_gap = Vec::with_capacity(spans.len());
    let mut html = HtmlState::default();
    let mut last = 0;
    for (n, sp) in spans.iter().enumerate() {
        let between = &src[last..sp.start];
        html.feed(between);
        text.push_str(between);
        let word = format!("{PREFIX}{n}z");
        in_tag.push(!html.in_text());
        table_gap.push(html.in_text() && html.in_table_gap());
        if style == Style::Html && html.in_text() {
            text.push_str("<!--");
            text.push_str(&word);
            text.push_str("-->");
        } else {
            text.push_str(&word);
        }
        exprs.push(src[sp.start..sp.end].to_owned());
        last = sp.end;
    }
    text.push_str(&src[last..]);
    Protected {
        text,
        exprs,
        in_tag,
        table_gap,
    }
}

/// Swap placeholders in `text` back for the expressions; `stage` names the tool
/// that ran in between, for the error. Every placeholder must come back once
/// and in order (a moved one means the HTML parser moved it: foster parenting).
pub(crate) fn restore(text: &str, p: &Protected, stage: &str) -> Result<String, RenderError> {
    restore_impl(text, p, stage, false)
}

/// Like [`restore`], but expressions that stood inside a tag may come back
/// out of order: html2text moves link targets into footnotes at the end.
/// Expressions in text must still keep their order.
pub(crate) fn restore_text(text: &str, p: &Protected, stage: &str) -> Result<String, RenderError> {
    restore_impl(text, p, stage, true)
}

fn restore_impl(
    text: &str,
    p: &Protected,
    stage: &str,
    tags_may_move: bool,
) -> Result<String, RenderError> {
    let exprs = &p.exprs;
    let mut seen = vec![false; exprs.len()];
    let mut out = String::with_capacity(text.len() + exprs.iter().map(String::len).sum::<usize>());
    // The lowest expression not yet seen that must keep its order.
    let mut next = 0usize;
    let mut rest = text;
    let skip_free = |seen: &[bool], mut next: usize| {
        while next < exprs.len() && (seen[next] || (tags_may_move && p.in_tag[next])) {
            next += 1;
        }
        next
    };
    next = skip_free(&seen, next);
    while let Some(pos) = rest.find(PREFIX) {
        let after = &rest[pos + PREFIX.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || after.as_bytes().get(digits) != Some(&b'z') {
            out.push_str(&rest[..pos + PREFIX.len()]);
            rest = after;
            continue;
        }
        let n: usize = after[..digits]
            .parse()
            .map_err(|_| misplaced(exprs, next, stage))?;
        if n >= exprs.len() || seen[n] {
            return Err(misplaced(exprs, n.min(next), stage));
        }
        let free = tags_may_move && p.in_tag[n];
        if !free && n != next {
            return Err(misplaced(exprs, n.min(next), stage));
        }
        seen[n] = true;
        next = skip_free(&seen, next);
        let mut head = &rest[..pos];
        let mut tail = &after[digits + 1..];
        // Drop the comment wrapper, raw or as escaped text (inside <title>).
        for (open, close) in [("<!--", "-->"), ("&lt;!--", "--&gt;")] {
            if head.ends_with(open) && tail.starts_with(close) {
                head = &head[..head.len() - open.len()];
                tail = &tail[close.len()..];
                break;
            }
        }
        out.push_str(head);
        out.push_str(&exprs[n]);
        rest = tail;
    }
    out.push_str(rest);
    if let Some(lost) = seen.iter().position(|s| !s) {
        return Err(misplaced(exprs, lost, stage));
    }
    Ok(out)
}

fn misplaced(exprs: &[String], n: usize, stage: &str) -> RenderError {
    RenderError::Misplaced {
        expression: exprs.get(n).cloned().unwrap_or_default(),
        stage: stage.to_owned(),
    }
}

/// Just enough HTML lexing to know whether the next byte is text, inside a tag
/// or inside a comment, and whether text there sits between table rows.
#[derive(Default)]
struct HtmlState {
    mode: Mode,
    /// Name of the tag being read, lowercased, while it is being read.
    tag: String,
    naming: bool,
    closing: bool,
    /// Open table-structure elements, innermost last.
    tables: Vec<&'static str>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    #[default]
    Text,
    Tag,
    TagQuote(u8),
    Comment,
}

const TABLE_TAGS: [&str; 8] = [
    "table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption",
];

impl HtmlState {
    fn in_text(&self) -> bool {
        self.mode == Mode::Text
    }

    fn in_table_gap(&self) -> bool {
        self.tables
            .last()
            .is_some_and(|t| matches!(*t, "table" | "thead" | "tbody" | "tfoot" | "tr"))
    }

    fn end_tag(&mut self) {
        let Some(name) = TABLE_TAGS.iter().copied().find(|t| *t == self.tag) else {
            return;
        };
        if !self.closing {
            self.tables.push(name);
        } else if let Some(p) = self.tables.iter().rposition(|t| *t == name) {
            self.tables.truncate(p);
        }
    }

    fn feed(&mut self, s: &str) {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match self.mode {
                Mode::Text => {
                    if b[i] == b'<' {
                        if b[i..].starts_with(b"<!--") {
                            self.mode = Mode::Comment;
                            i += 4;
                            continue;
                        }
                        if let Some(&c) = b.get(i + 1)
                            && (c.is_ascii_alphabetic() || c == b'/' || c == b'!')
                        {
                            self.mode = Mode::Tag;
                            self.tag.clear();
                            self.closing = c == b'/';
                            self.naming = true;
                            if self.closing {
                                i += 1;
                            }
                        }
                    }
                }
                Mode::Tag => match b[i] {
                    b'>' => {
                        self.mode = Mode::Text;
                        self.end_tag();
                    }
                    q @ (b'"' | b'\'') => {
                        self.naming = false;
                        self.mode = Mode::TagQuote(q);
                    }
                    c if self.naming && c.is_ascii_alphanumeric() => {
                        self.tag.push(char::from(c.to_ascii_lowercase()))
                    }
                    _ => self.naming = false,
                },
                Mode::TagQuote(q) => {
                    if b[i] == q {
                        self.mode = Mode::Tag;
                    }
                }
                Mode::Comment => {
                    if b[i..].starts_with(b"-->") {
                        self.mode = Mode::Text;
                        i += 3;
                        continue;
                    }
                }
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_expressions() {
        let cases: &[(&str, &[&str])] = &[
            ("Hi {{name}}!", &["{{name}}"]),
            ("{{{content}}} and {{x}}", &["{{{content}}}", "{{x}}"]),
            (r#"{{default a "}}"}} tail"#, &[r#"{{default a "}}"}}"#]),
            ("{{!-- a }} b --}}{{y}}", &["{{!-- a }} b --}}", "{{y}}"]),
            (r"lit \{{x}}", &[r"\{{x}}"]),
            ("{{#if a}}b{{/if}}", &["{{#if a}}", "{{/if}}"]),
            ("open {{x", &[]),
            ("no braces { } here", &[]),
        ];
        for (src, want) in cases {
            let got: Vec<&str> = spans(src).iter().map(|s| &src[s.start..s.end]).collect();
            assert_eq!(&got, want, "source {src:?}");
        }
    }

    #[test]
    fn html_style_uses_comments_only_in_text() {
        let src = r#"<a href="{{u}}" title='{{t}}'>{{x}}</a><!-- {{c}} -->"#;
        // Multi-byte characters next to every construct do not upset the lexer.
        let uni = "<p título=\"ü{{a}}ü\">ü{{b}}ü<!-- ü{{c}}ü -->ü</p>";
        let p = protect(uni, Style::Html);
        assert_eq!(p.in_tag, vec![true, false, true]);
        assert_eq!(restore(&p.text, &p, "t").ok().as_deref(), Some(uni));

        let p = protect(src, Style::Html);
        assert_eq!(
            p.text,
            r#"<a href="rdbhbs0z" title='rdbhbs1z'><!--rdbhbs2z--></a><!-- rdbhbs3z -->"#
        );
        assert_eq!(restore(&p.text, &p, "test").ok().as_deref(), Some(src));
        assert_eq!(p.in_tag, vec![true, true, false, true]);
    }

    #[test]
    fn knows_which_expressions_sit_between_table_rows() {
        let src = "{{a}}<table class=x>{{b}}<tr><td>{{c}}<table><tr><td>{{d}}</td></tr></table>{{e}}</td></tr>{{f}}</table>{{g}}";
        let p = protect(src, Style::Word);
        assert_eq!(
            p.table_gap,
            vec![false, true, false, false, false, true, false]
        );
    }

    #[test]
    fn restore_rejects_lost_or_moved_placeholders() {
        let p = protect("{{a}} {{b}}", Style::Word);
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("rdbhbs0z rdbhbs1z", false, Some("{{a}} {{b}}")),
            ("rdbhbs1z rdbhbs0z", false, None),
            ("rdbhbs1z rdbhbs0z", true, None),
            ("rdbhbs0z", false, None),
            ("rdbhbs0z rdbhbs0z rdbhbs1z", false, None),
            ("&lt;!--rdbhbs0z--&gt; rdbhbs1z", false, Some("{{a}} {{b}}")),
        ];
        for (text, lenient, want) in cases {
            let got = if *lenient {
                restore_text(text, &p, "t")
            } else {
                restore(text, &p, "t")
            };
            assert_eq!(got.ok().as_deref(), *want, "{text}");
        }
        // Link targets (in a tag) may move to the end, text may not.
        let p = protect(r#"<a href="{{u}}">{{x}}</a> {{y}}"#, Style::Word);
        assert_eq!(
            restore_text("rdbhbs1z rdbhbs2z [1]: rdbhbs0z", &p, "t")
                .ok()
                .as_deref(),
            Some("{{x}} {{y}} [1]: {{u}}")
        );
        assert!(restore_text("rdbhbs2z rdbhbs1z rdbhbs0z", &p, "t").is_err());
    }
}
