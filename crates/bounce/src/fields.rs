//! A bounded parser for RFC 822-style field blocks, as found in
//! `message/delivery-status` (RFC 3464) and `message/feedback-report` (RFC 5965)
//! bodies: `Name: value` lines, continuation lines starting with white space, blocks
//! separated by blank lines.
//!
//! mail-parser has no type for these parts; its header parser would stop at the first
//! blank line and decode every field as an unstructured header, so this small
//! tokenizer walks all blocks itself and leaves the meaning to the callers.

use std::borrow::Cow;

use crate::{MAX_FIELD_VALUE, MAX_FIELDS};

/// One field: its name as written and its unfolded value (continuation lines joined
/// with one space, trimmed, at most [`MAX_FIELD_VALUE`] bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written (compare with `eq_ignore_ascii_case`).
    pub name: &'a str,
    /// The unfolded value (borrowed from the input unless it was folded or cut).
    pub value: Cow<'a, str>,
    /// Index of the blank-line separated block the field belongs to (0-based).
    pub block: usize,
}

impl Field<'_> {
    /// Case-insensitive name comparison.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Splits `text` into fields. Lines that are neither a field nor a continuation are
/// appended to the previous field (some MTAs wrap long values without indenting) or
/// skipped when no field is open. At most [`MAX_FIELDS`] fields are returned; the rest
/// of the input is ignored.
pub fn parse_fields(text: &str) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut block = 0usize;
    let mut in_block = false;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            if in_block {
                block += 1;
                in_block = false;
            }
            continue;
        }
        let continuation = line.starts_with([' ', '\t']);
        if !continuation && let Some((name, value)) = split_field(line) {
            if out.len() >= MAX_FIELDS {
                break;
            }
            let value = value.trim();
            let v = if value.len() <= MAX_FIELD_VALUE {
                Cow::Borrowed(value)
            } else {
                let mut v = String::with_capacity(MAX_FIELD_VALUE);
                push_bounded(&mut v, value);
                Cow::Owned(v)
            };
            out.push(Field {
                name,
                value: v,
                block,
            });
            in_block = true;
            continue;
        }
        // continuation (or a stray line) of the open field in this block
        if in_block && let Some(last) = out.last_mut() {
            let t = line.trim();
            let value = last.value.to_mut();
            if !value.is_empty() {
                push_bounded(value, " ");
            }
            push_bounded(value, t);
        }
    }
    out
}

/// `Name: value` with a token name (RFC 5322 ftext without spaces).
fn split_field(line: &str) -> Option<(&str, &str)> {
    let colon = line.find(':')?;
    let name = &line[..colon];
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return None;
    }
    Some((name, &line[colon + 1..]))
}

fn push_bounded(s: &mut String, add: &str) {
    let room = MAX_FIELD_VALUE.saturating_sub(s.len());
    if room == 0 {
        return;
    }
    if add.len() <= room {
        s.push_str(add);
    } else {
        let mut end = room;
        while end > 0 && !add.is_char_boundary(end) {
            end -= 1;
        }
        s.push_str(&add[..end]);
    }
}

/// Strips an RFC 3464 type prefix (`rfc822;`, `smtp;`, `dns;`) and angle brackets.
pub fn strip_type(value: &str) -> &str {
    let v = match value.find(';') {
        Some(i)
            if value[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && i <= 16 =>
        {
            &value[i + 1..]
        }
        _ => value,
    };
    v.trim()
}

/// An address field value: type prefix and `<>` removed.
pub fn address_value(value: &str) -> &str {
    let v = strip_type(value);
    let v = v.strip_prefix('<').unwrap_or(v);
    let v = match v.find('>') {
        Some(i) => &v[..i],
        None => v,
    };
    v.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_continuations() {
        let text = "Reporting-MTA: dns; mx.example.org\r\nArrival-Date: Thu, 1 Jan 2015\r\n\r\n\
                    Final-Recipient: rfc822; a@example.jp\r\nAction: failed\r\nStatus: 5.1.1\r\n\
                    Diagnostic-Code: smtp; 550 5.1.1 <a@example.jp>:\r\n    Recipient address rejected\r\n\r\n\r\n\
                    Final-Recipient: rfc822;b@example.jp\nAction: delayed\nStatus: 4.4.7\n";
        let f = parse_fields(text);
        let got: Vec<(&str, &str, usize)> = f
            .iter()
            .map(|f| (f.name, f.value.as_ref(), f.block))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Reporting-MTA", "dns; mx.example.org", 0),
                ("Arrival-Date", "Thu, 1 Jan 2015", 0),
                ("Final-Recipient", "rfc822; a@example.jp", 1),
                ("Action", "failed", 1),
                ("Status", "5.1.1", 1),
                (
                    "Diagnostic-Code",
                    "smtp; 550 5.1.1 <a@example.jp>: Recipient address rejected",
                    1
                ),
                ("Final-Recipient", "rfc822;b@example.jp", 2),
                ("Action", "delayed", 2),
                ("Status", "4.4.7", 2),
            ]
        );
    }

    #[test]
    fn stray_lines_and_garbage() {
        let cases: &[(&str, usize)] = &[
            ("", 0),
            ("\n\n\n", 0),
            ("no colon here\nstill none", 0),
            (": empty name", 0),
            ("Status: 5.0.0\nwrapped without indent", 1),
            ("Bad Name: x\nGood: y", 1),
        ];
        for (text, n) in cases {
            assert_eq!(parse_fields(text).len(), *n, "{text:?}");
        }
        assert_eq!(
            parse_fields("Status: 5.0.0\nwrapped")[0].value,
            "5.0.0 wrapped"
        );
    }

    #[test]
    fn bounded() {
        let many = "X: y\n".repeat(MAX_FIELDS + 50);
        assert_eq!(parse_fields(&many).len(), MAX_FIELDS);
        let long = format!("X: {}\n{}", "a".repeat(MAX_FIELD_VALUE), " b\n".repeat(100));
        assert!(parse_fields(&long)[0].value.len() <= MAX_FIELD_VALUE);
    }

    #[test]
    fn address_values() {
        let cases = [
            ("rfc822; a@example.jp", "a@example.jp"),
            ("RFC822;<a@example.jp>", "a@example.jp"),
            ("a@example.jp", "a@example.jp"),
            ("rfc822; <a@example.jp> (comment)", "a@example.jp"),
            ("", ""),
        ];
        for (v, want) in cases {
            assert_eq!(address_value(v), want);
        }
        assert_eq!(strip_type("smtp; 550 5.1.1 x; y"), "550 5.1.1 x; y");
        assert_eq!(strip_type("550 x; y"), "550 x; y");
    }
}
