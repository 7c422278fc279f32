//! One pass over the MIME tree (walked by `walk.rs`) that collects what the
//! recognisers need: the human-readable report text, the machine-readable report
//! parts and the returned original message.

use std::borrow::Cow;

use mail_parser::{MessagePart, MimeHeaders, PartType};

use crate::walk::Walked;
use crate::{MAX_PARTS, MAX_REPORT_TEXT};

/// What the recognisers look at, built once per message.
#[derive(Debug, Default)]
pub(crate) struct View<'a> {
    /// Decoded Subject, lower-cased.
    pub subject: String,
    /// From address, lower-cased (`""` when absent or `<>`).
    pub from_addr: String,
    /// From display name, lower-cased.
    pub from_name: String,
    /// Every address of To, Cc, Reply-To, Sender and Return-Path of the report itself,
    /// lower-cased: these are never the failed recipient.
    pub own_addrs: Vec<String>,
    /// Human-readable report text: text parts outside the returned message, joined,
    /// cut where a copy of the original message starts, at most [`MAX_REPORT_TEXT`].
    pub report: Cow<'a, str>,
    /// All text parts joined, not cut (at most [`MAX_REPORT_TEXT`]): DSN fields may
    /// sit after an inline copy of a forwarded report.
    pub full_text: Cow<'a, str>,
    /// Text that followed the "copy of the message" marker, if the report had one
    /// (header lines of the original inlined by Exim, qmail, Gmail, …).
    pub inline_original: Option<&'a str>,
    /// Bodies of `message/delivery-status` parts.
    pub delivery_status: Vec<Cow<'a, str>>,
    /// Body of the first `message/feedback-report` part.
    pub feedback_report: Option<Cow<'a, str>>,
    /// `report-type` of a top-level `multipart/report`, lower-cased.
    pub report_type: Option<String>,
    /// Message-ID of the returned original, without `<>`.
    pub original_message_id: Option<String>,
    /// To/Cc addresses of the returned original, lower-cased.
    pub original_to: Vec<String>,
    /// First text body (for provider notifications in JSON, forwarded bounces).
    pub first_text: Option<&'a str>,
    /// A returned original message is attached (`message/rfc822` or headers part).
    pub has_original: bool,
}

fn lower_addr(a: &str) -> String {
    a.trim().trim_matches(['<', '>']).to_ascii_lowercase()
}

fn addresses(v: Option<&mail_parser::Address<'_>>, out: &mut Vec<String>) {
    if let Some(list) = v {
        for a in list.iter() {
            if let Some(s) = a.address()
                && out.len() < 64
            {
                out.push(lower_addr(s));
            }
        }
    }
}

fn ctype_of(part: &MessagePart<'_>) -> (String, String) {
    match part.content_type() {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase(),
        ),
        None => (String::new(), String::new()),
    }
}

/// `String::from_utf8_lossy`, with the (much faster) validation of `str::from_utf8`
/// first: parts are nearly always valid UTF-8 already.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The largest char boundary of `s` at or below `max`.
fn floor_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn push_capped(out: &mut String, text: &str) {
    let room = MAX_REPORT_TEXT.saturating_sub(out.len());
    if room == 0 {
        return;
    }
    let mut end = text.len().min(room);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&text[..end]);
}

/// Crude HTML to text: tags dropped (block tags become line breaks), a few entities
/// decoded. Only used when a report has no text/plain part.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let after = &rest[lt..];
        let Some(gt) = after.find('>') else {
            rest = "";
            break;
        };
        let tag = after[1..gt].trim_start_matches('/').to_ascii_lowercase();
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "tr" | "li" | "table" | "h1" | "h2" | "h3" | "hr" | "pre"
        ) {
            out.push('\n');
        } else if matches!(name.as_str(), "td" | "th") {
            out.push(' ');
        }
        // skip <style> and <script> contents
        if (name == "style" || name == "script") && !after[1..].starts_with('/') {
            let close = format!("</{name}");
            let lower_rest = after.to_ascii_lowercase();
            if let Some(end) = lower_rest.find(&close) {
                rest = &after[end..];
                continue;
            }
        }
        rest = &after[gt + 1..];
    }
    out.push_str(rest);
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Line prefixes (lower-cased, trimmed) that start the copy of the original message
/// in non-MIME reports.
const ORIGINAL_MARKERS: &[&str] = &[
    "this is a copy of",
    "below this line is a copy of the message",
    "original message -",
    "original message follows",
    "message headers follow",
    "returned message",
    "the header of the original message is following",
    "original message headers",
    "unsent message follows",
    "message headers",
    "the original message",
    "your message reads (in part)",
    "you sent the following message",
    "content-type: message/rfc822",
    "original message header",
    "copy of the original message",
    "copy of your message",
];

/// Lines that, unindented, look like a header of a copied message. Two of them in a
/// row (or one `Received:`/`Return-Path:`/`DKIM-Signature:`) after some report text
/// start the copy.
const ORIGINAL_HEADERS: &[&str] = &[
    "received:",
    "return-path:",
    "dkim-signature:",
    "message-id:",
    "from:",
    "to:",
    "subject:",
    "date:",
    "mime-version:",
    "content-type:",
    "x-mailer:",
    "reply-to:",
    "delivered-to:",
    "x-originating-ip:",
    "authentication-results:",
    "arc-seal:",
    "x-received:",
];

/// ASCII case-insensitive `starts_with`.
pub(crate) fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Whether a `:` occurs where one of [`ORIGINAL_HEADERS`] would put it: a cheap test
/// that rules out most prose lines before the prefix comparisons.
fn has_early_colon(line: &str) -> bool {
    const LONGEST: usize = 24;
    let b = line.as_bytes();
    memchr::memchr(b':', &b[..b.len().min(LONGEST)]).is_some()
}

/// Splits a report text at the start of a copied original message: returns the end
/// of the report part and, if a copy starts, where it starts.
fn cut_original(text: &str) -> (usize, Option<usize>) {
    const STRONG: &[&str] = &[
        "received:",
        "return-path:",
        "dkim-signature:",
        "x-received:",
        "arc-seal:",
        "delivered-to:",
    ];
    const UNDASHED: &[&str] = &[
        "original message follows",
        "message headers follow",
        "original message headers",
    ];
    let mut pos = 0usize;
    let mut header_run = 0usize;
    let mut header_run_start = 0usize;
    let mut seen_text = false;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim_end_matches(['\r', '\n']);
        let trimmed = line.trim();
        let stripped = trimmed.trim_start_matches(['-', '=', '_', '*', ' ']);
        let dashed = trimmed.len() != stripped.len() || starts_with_ci(trimmed, "content-type");
        if (dashed || UNDASHED.iter().any(|m| starts_with_ci(stripped, m)))
            && ORIGINAL_MARKERS.iter().any(|m| starts_with_ci(stripped, m))
        {
            return (pos, Some(pos + raw.len()));
        }
        let indented = line.starts_with([' ', '\t']);
        if !indented
            && seen_text
            && has_early_colon(trimmed)
            && ORIGINAL_HEADERS.iter().any(|h| starts_with_ci(trimmed, h))
        {
            if header_run == 0 {
                header_run_start = pos;
            }
            header_run += 1;
            if header_run >= 3 || STRONG.iter().any(|h| starts_with_ci(trimmed, h)) {
                return (header_run_start, Some(header_run_start));
            }
        } else if !(indented && header_run > 0) {
            header_run = 0;
        }
        if !trimmed.is_empty() {
            seen_text = true;
        }
        pos += raw.len();
    }
    (text.len(), None)
}

impl<'a> View<'a> {
    /// The local part of the From address (`mailer-daemon`), lower-cased.
    pub fn from_local(&self) -> &str {
        self.from_addr.split('@').next().unwrap_or("")
    }

    /// Walks `msg` (top level only: parts of the returned message are its own).
    pub(crate) fn build(walked: &'a Walked<'_>) -> View<'a> {
        let msg = &walked.msg;
        let mut v = View {
            subject: msg.subject().unwrap_or("").to_lowercase(),
            ..View::default()
        };
        if let Some(from) = msg.from().and_then(|a| a.first()) {
            v.from_addr = from.address().map(lower_addr).unwrap_or_default();
            v.from_name = from.name().unwrap_or("").to_lowercase();
        }
        addresses(msg.to(), &mut v.own_addrs);
        addresses(msg.cc(), &mut v.own_addrs);
        addresses(msg.reply_to(), &mut v.own_addrs);
        addresses(msg.sender(), &mut v.own_addrs);
        if let Some(rp) = msg.return_address() {
            v.own_addrs.push(lower_addr(rp));
        }
        if !v.from_addr.is_empty() {
            v.own_addrs.push(v.from_addr.clone());
        }

        if let Some(ct) = msg.content_type()
            && ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        {
            v.report_type = ct.attribute("report-type").map(str::to_ascii_lowercase);
        }

        let mut texts: Vec<&'a str> = Vec::new();
        let mut htmls: Vec<(usize, &'a str)> = Vec::new();
        for (i, part) in msg.parts.iter().enumerate().take(MAX_PARTS) {
            let (ct, sub) = ctype_of(part);
            match &part.body {
                PartType::Message(inner) => {
                    v.has_original = true;
                    if v.original_message_id.is_none() {
                        v.original_message_id = inner
                            .message_id()
                            .map(|s| s.trim_matches(['<', '>']).to_string());
                        addresses(inner.to(), &mut v.original_to);
                        addresses(inner.cc(), &mut v.original_to);
                    }
                }
                PartType::Multipart(_) => {}
                body => {
                    let bytes: &'a [u8] = match body {
                        PartType::Text(t) | PartType::Html(t) => t.as_bytes(),
                        PartType::Binary(b) | PartType::InlineBinary(b) => b.as_ref(),
                        _ => &[],
                    };
                    let is_msg = ct == "message";
                    if (is_msg || ct == "text")
                        && (sub == "delivery-status" || sub == "global-delivery-status")
                    {
                        if v.delivery_status.len() < 4 {
                            v.delivery_status.push(lossy(bytes));
                        }
                    } else if is_msg && sub == "feedback-report" {
                        if v.feedback_report.is_none() {
                            v.feedback_report = Some(lossy(bytes));
                        }
                    } else if (is_msg || ct == "text")
                        && (sub == "rfc822-headers" || sub == "global-headers" || sub == "rfc822")
                    {
                        v.has_original = true;
                        if v.original_message_id.is_none()
                            && let Some(h) = crate::walk::parse_headers(bytes)
                        {
                            v.original_message_id = h
                                .message_id()
                                .map(|s| s.trim_matches(['<', '>']).to_string());
                            addresses(h.to(), &mut v.original_to);
                            addresses(h.cc(), &mut v.original_to);
                        }
                    } else if let PartType::Text(t) = body {
                        if ct == "text" || ct.is_empty() || ct == "multipart" {
                            let t: &'a str = t.as_ref();
                            v.first_text.get_or_insert(t);
                            texts.push(t);
                        }
                    } else if let PartType::Html(t) = body {
                        htmls.push((i, t.as_ref()));
                    }
                }
            }
        }
        if texts.is_empty() && !htmls.is_empty() {
            // rare: build owned text from HTML
            let mut full = String::new();
            for &(i, h) in &htmls {
                let deferred = walked.html(i);
                push_capped(&mut full, &html_to_text(deferred.as_deref().unwrap_or(h)));
            }
            let (end, _) = cut_original(&full);
            v.report = Cow::Owned(full[..end].to_string());
            v.full_text = Cow::Owned(full);
        } else if texts.len() == 1 {
            let t = texts[0];
            let t = &t[..floor_boundary(t, MAX_REPORT_TEXT)];
            let (end, orig) = cut_original(t);
            v.full_text = Cow::Borrowed(t);
            v.report = Cow::Borrowed(&t[..end]);
            v.inline_original = orig.map(|o| &t[o..]);
        } else {
            let mut full = String::new();
            let mut report = String::new();
            for t in &texts {
                push_capped(&mut full, t);
                let (end, orig) = cut_original(t);
                push_capped(&mut report, &t[..end]);
                if let Some(o) = orig {
                    v.inline_original.get_or_insert(&t[o..]);
                }
            }
            v.full_text = Cow::Owned(full);
            v.report = Cow::Owned(report);
        }

        if (v.original_message_id.is_none() || v.original_to.is_empty())
            && let Some(orig) = v.inline_original
        {
            let trimmed = orig.trim_start_matches(['\r', '\n']);
            if let Some(h) = crate::walk::parse_headers(trimmed.as_bytes()) {
                if v.original_message_id.is_none() {
                    v.original_message_id = h
                        .message_id()
                        .map(|s| s.trim_matches(['<', '>']).to_string());
                }
                if v.original_to.is_empty() {
                    addresses(h.to(), &mut v.original_to);
                }
            }
        }
        v
    }

    /// True when `addr` (lower-case) belongs to the report's own headers.
    pub(crate) fn is_own(&self, addr: &str) -> bool {
        self.own_addrs.iter().any(|a| a.eq_ignore_ascii_case(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_markers() {
        let cases: &[(&str, &str)] = &[
            (
                "a\nb\n------ This is a copy of the message, including all the headers. ------\nReturn-path: x\n",
                "a\nb\n",
            ),
            (
                "a\n--- Below this line is a copy of the message.\n\nReceived: x",
                "a\n",
            ),
            (
                "Failed:\n  x@y\n\nReturn-Path: <x@y>\nReceived: from\n",
                "Failed:\n  x@y\n\n",
            ),
            ("no marker at all\n", "no marker at all\n"),
            (
                "  To: x@y\n  Subject: indented is fine\nreason\n",
                "  To: x@y\n  Subject: indented is fine\nreason\n",
            ),
        ];
        for (text, want) in cases {
            let (end, _) = cut_original(text);
            assert_eq!(&text[..end], *want, "{text:?}");
        }
    }

    #[test]
    fn html_is_flattened() {
        assert_eq!(
            html_to_text("<p>a&lt;b&gt;</p><style>x{}</style>c<br>d"),
            "\na<b>\nc\nd"
        );
    }
}
