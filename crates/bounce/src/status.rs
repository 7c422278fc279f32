//! RFC 3463 enhanced status codes and RFC 5321 reply codes found in free text.

use std::fmt;

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// 0–999 (registry: 0 other, 1 addressing, 2 mailbox, 3 mail system, 4 network,
    /// 5 protocol, 6 content, 7 security/policy).
    pub subject: u16,
    /// 0–999.
    pub detail: u16,
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl StatusCode {
    /// Parses a whole field value such as `5.1.1`, `5.1.1 (Remote SMTP error)` or
    /// `#5.1.0`: the first code found at the start (after optional `#`).
    pub fn parse_field(value: &str) -> Option<StatusCode> {
        let v = value.trim_start().trim_start_matches('#');
        let (code, len) = parse_at(v.as_bytes(), 0)?;
        // must end at a boundary
        match v.as_bytes().get(len) {
            None => Some(code),
            Some(b) if !b.is_ascii_digit() && *b != b'.' => Some(code),
            _ => None,
        }
    }

    /// True for x.0.0-like codes that say nothing specific (detail 0).
    pub fn is_generic(&self) -> bool {
        self.detail == 0
    }
}

/// Parses `d.ddd.ddd` at `i` (no boundary check on the left); returns the code and
/// the index just past it.
fn parse_at(b: &[u8], i: usize) -> Option<(StatusCode, usize)> {
    let class = *b.get(i)?;
    if !matches!(class, b'2' | b'4' | b'5') || b.get(i + 1) != Some(&b'.') {
        return None;
    }
    let (subject, j) = number(b, i + 2)?;
    if b.get(j) != Some(&b'.') {
        return None;
    }
    let (detail, k) = number(b, j + 1)?;
    Some((
        StatusCode {
            class: class - b'0',
            subject,
            detail,
        },
        k,
    ))
}

/// 1–3 ASCII digits at `i`.
fn number(b: &[u8], i: usize) -> Option<(u16, usize)> {
    let mut n: u16 = 0;
    let mut k = i;
    while k < b.len() && b[k].is_ascii_digit() {
        if k - i == 3 {
            return None;
        }
        n = n * 10 + u16::from(b[k] - b'0');
        k += 1;
    }
    (k > i).then_some((n, k))
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_'
}

/// Every enhanced status code in `text`, with its byte offset. A code must not be
/// glued to digits, dots or letters on either side, so IP addresses and version
/// numbers (`15.0.918.8`, `192.0.2.1`) are not taken for codes.
pub fn find_status_codes(text: &str) -> impl Iterator<Item = (usize, StatusCode)> + '_ {
    let b = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let start = i;
            i += 1;
            if !matches!(b[start], b'2' | b'4' | b'5') {
                continue;
            }
            if start > 0 && is_word_byte(b[start - 1]) {
                continue;
            }
            if let Some((code, end)) = parse_at(b, start) {
                let next = b.get(end).copied();
                if next.is_some_and(|n| is_word_byte(n) && n != b'.')
                    || (next == Some(b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit))
                {
                    continue;
                }
                i = end;
                return Some((start, code));
            }
        }
        None
    })
}

/// Every 3-digit SMTP reply code (2xx, 4xx, 5xx) standing as a word in `text`,
/// followed by a space, `-`, `:`, `'`, `"` or the end, with its byte offset.
pub fn find_reply_codes(text: &str) -> impl Iterator<Item = (usize, u16)> + '_ {
    let b = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i + 3 <= b.len() {
            let s = i;
            i += 1;
            if !matches!(b[s], b'2' | b'4' | b'5')
                || !b[s + 1].is_ascii_digit()
                || !b[s + 2].is_ascii_digit()
            {
                continue;
            }
            if s > 0
                && (is_word_byte(b[s - 1])
                    || matches!(b[s - 1], b'-' | b'/' | b'=' | b'#' | b'+' | b'%'))
            {
                continue;
            }
            match b.get(s + 3) {
                None | Some(b' ' | b'-' | b'\'' | b'"' | b'\t' | b'\n' | b'\r' | b',') => {}
                Some(b':') if b.get(s + 4).is_none_or(|c| !c.is_ascii_digit()) => {}
                _ => continue,
            }
            let code = u16::from(b[s] - b'0') * 100
                + u16::from(b[s + 1] - b'0') * 10
                + u16::from(b[s + 2] - b'0');
            // x00–x59: real reply codes stay in these ranges.
            if code % 100 > 59 {
                continue;
            }
            i = s + 3;
            return Some((s, code));
        }
        None
    })
}

/// The SMTP reply the text reports: the first reply code that is followed closely
/// by an enhanced status code, else the first 4xx/5xx reply code, else the first code.
/// Returns the reply code and the enhanced code that follows it, if any.
pub fn find_reply(text: &str) -> (Option<u16>, Option<StatusCode>) {
    let mut first: Option<u16> = None;
    let mut first_failure: Option<u16> = None;
    for (pos, code) in find_reply_codes(text) {
        let after = &text[pos + 3..];
        let window = after.get(..after.len().min(6)).unwrap_or(after);
        let lead = window.trim_start_matches([' ', '-', '\'', '"', '#', ':']);
        let skipped = after.len()
            - after
                .trim_start_matches([' ', '-', '\'', '"', '#', ':'])
                .len();
        if skipped <= 4
            && !lead.is_empty()
            && let Some((st, _)) = parse_at(after.as_bytes(), skipped)
        {
            return (Some(code), Some(st));
        }
        first.get_or_insert(code);
        if code >= 400 {
            first_failure.get_or_insert(code);
        }
    }
    (first_failure.or(first), None)
}

/// The status a failure text implies: the code right after a reply code, else the
/// first free-standing enhanced code.
pub fn status_in_text(text: &str) -> Option<StatusCode> {
    match find_reply(text) {
        (_, Some(st)) => Some(st),
        _ => find_status_codes(text).map(|(_, c)| c).next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> Option<String> {
        StatusCode::parse_field(s).map(|c| c.to_string())
    }

    #[test]
    fn parse_field_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("5.1.1", Some("5.1.1")),
            (" 4.4.7", Some("4.4.7")),
            ("5.1.1 (Remote SMTP error)", Some("5.1.1")),
            ("#5.1.0", Some("5.1.0")),
            ("5.7.509", Some("5.7.509")),
            ("5.1.10", Some("5.1.10")),
            ("2.0.0", Some("2.0.0")),
            ("3.1.1", None),
            ("5.1", None),
            ("5.1.1111", None),
            ("5.1.1.1", None),
            ("", None),
            ("abc", None),
        ];
        for (input, want) in cases {
            assert_eq!(st(input).as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn finds_codes_in_text() {
        let cases: &[(&str, Option<u16>, Option<&str>)] = &[
            (
                "550 5.1.1 <a@b.example>... User unknown",
                Some(550),
                Some("5.1.1"),
            ),
            (
                "550-5.7.26 Unauthenticated email",
                Some(550),
                Some("5.7.26"),
            ),
            (
                "5.1.0 - Unknown address error 550-'5.7.1 <x@y>... Access denied'",
                Some(550),
                Some("5.7.1"),
            ),
            ("550 #5.1.0 Address rejected.", Some(550), Some("5.1.0")),
            (
                "host 192.0.2.22 [192.0.2.22]: 550 Unknown user",
                Some(550),
                None,
            ),
            ("Server (TLS) id 15.0.918.8; Thu", None, None),
            ("delivery attempts: 0", None, None),
            ("550: : User unknown", Some(550), None),
            ("ERROR_CODE :550, ERROR_CODE :5.2.1 <x@y>", Some(550), None),
            ("552 Too many recipients", Some(552), None),
            ("IB607 <http://x.co/rlbounce> 2024", None, None),
        ];
        for (text, code, status) in cases {
            let (c, s) = find_reply(text);
            assert_eq!(c, *code, "reply in {text:?}");
            assert_eq!(
                s.map(|s| s.to_string()).as_deref(),
                *status,
                "status in {text:?}"
            );
        }
        assert_eq!(
            status_in_text("ERROR_CODE :550, ERROR_CODE :5.2.1 <x@y>")
                .map(|c| c.to_string())
                .as_deref(),
            Some("5.2.1")
        );
        assert_eq!(status_in_text("v14si1155795plk.134 - 1.2.3.4"), None);
    }
}
