//! SMTP replies and RFC 3463 enhanced status codes, as typed values.
//!
//! Pure: no I/O. A [`Reply`] renders itself to the wire form, one line or
//! several (`250-…` continuation lines), always with CRLF.

use std::fmt;
use std::str::FromStr;

use crate::error::ReplyParseError;

/// Longest reply text we put on one line; longer handler text is cut.
const MAX_REPLY_TEXT: usize = 480;

/// An RFC 3463 enhanced status code such as `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// Subject, 0..=999.
    pub subject: u16,
    /// Detail, 0..=999.
    pub detail: u16,
}

impl EnhancedStatus {
    /// A status from its three parts; no validation (for constants).
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl FromStr for EnhancedStatus {
    type Err = ReplyParseError;

    /// Parses `class.subject.detail` with class 2, 4 or 5 and the other two
    /// parts 0..=999 (RFC 3463 §2).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReplyParseError::Status {
            input: s.to_owned(),
        };
        let mut parts = s.split('.');
        let (Some(c), Some(sub), Some(det), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let num = |p: &str, max: u16| -> Option<u16> {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u16>().ok().filter(|v| *v <= max)
        };
        let class = num(c, 9)
            .filter(|c| matches!(c, 2 | 4 | 5))
            .ok_or_else(bad)?;
        let subject = num(sub, 999).ok_or_else(bad)?;
        let detail = num(det, 999).ok_or_else(bad)?;
        Ok(Self {
            class: class as u8,
            subject,
            detail,
        })
    }
}

/// One SMTP reply: a three-digit code, an optional enhanced status and text.
///
/// Text may hold several lines (separated by `\n`); each becomes its own
/// reply line. CR, LF and other control characters never reach the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    status: Option<EnhancedStatus>,
    text: String,
}

impl Reply {
    /// A reply from trusted parts (our own constants). Control characters in
    /// `text` are replaced; the code is taken as given.
    pub fn new(code: u16, status: Option<EnhancedStatus>, text: impl Into<String>) -> Self {
        Self {
            code,
            status,
            text: sanitize(&text.into()),
        }
    }

    /// Shorthand for `Reply::new(code, Some(EnhancedStatus::new(c, s, d)), text)`.
    pub fn with_status(code: u16, (c, s, d): (u8, u16, u16), text: impl Into<String>) -> Self {
        Self::new(code, Some(EnhancedStatus::new(c, s, d)), text)
    }

    /// Parses user input such as `550 5.1.1 User unknown` or `451 Try later`.
    ///
    /// # Errors
    /// [`ReplyParseError`] when the code is not 200..=599, the enhanced status is
    /// malformed, or its class does not match the code's first digit.
    pub fn parse(input: &str) -> Result<Self, ReplyParseError> {
        let s = input.trim();
        let (code_str, rest) = s.split_once(' ').unwrap_or((s, ""));
        let code: u16 = code_str
            .parse()
            .ok()
            .filter(|c| (200..=599).contains(c) && code_str.len() == 3)
            .ok_or_else(|| ReplyParseError::Code {
                input: input.to_owned(),
            })?;
        let rest = rest.trim_start();
        let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let (status, text) =
            if first.contains('.') && first.starts_with(|c: char| c.is_ascii_digit()) {
                (Some(first.parse::<EnhancedStatus>()?), after.trim())
            } else {
                (None, rest)
            };
        if let Some(st) = status
            && u16::from(st.class) != code / 100
        {
            return Err(ReplyParseError::ClassMismatch {
                input: input.to_owned(),
            });
        }
        Ok(Self::new(code, status, text))
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, when there is one.
    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The reply text (lines joined with `\n`).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: the peer may try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Appends the wire form (CRLF-terminated lines) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = if self.text.is_empty() {
            vec![""]
        } else {
            self.text.split('\n').collect()
        };
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let mut l = format!("{}{}", self.code, sep);
            if let Some(st) = self.status {
                l.push_str(&st.to_string());
                if !line.is_empty() {
                    l.push(' ');
                }
            }
            l.push_str(line);
            l.push_str("\r\n");
            out.extend_from_slice(l.as_bytes());
        }
    }

    /// The wire form as a string (for logs and tests).
    pub fn to_wire(&self) -> String {
        let mut v = Vec::new();
        self.write_to(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(st) = self.status {
            write!(f, " {st}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text.replace('\n', " / "))?;
        }
        Ok(())
    }
}

/// Keeps printable text and `\n` line breaks, drops CR and other controls,
/// cuts each line to [`MAX_REPLY_TEXT`] bytes on a char boundary.
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * MAX_REPLY_TEXT));
    for (i, line) in text.split('\n').take(16).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut n = 0;
        for ch in line.chars().filter(|c| !c.is_control()) {
            n += ch.len_utf8();
            if n > MAX_REPLY_TEXT {
                break;
            }
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        type Want<'a> = Option<(u16, Option<&'a str>, &'a str)>;
        let cases: &[(&str, Want<'_>)] = &[
            (
                "550 5.1.1 User unknown",
                Some((550, Some("5.1.1"), "User unknown")),
            ),
            (
                "451 4.7.1 Try later",
                Some((451, Some("4.7.1"), "Try later")),
            ),
            ("451 Try later", Some((451, None, "Try later"))),
            ("550", Some((550, None, ""))),
            ("550 4.1.1 mismatch", None),
            ("150 nope", None),
            ("5500 x", None),
            ("abc", None),
            ("550 5.1 x", None),
        ];
        for (input, want) in cases {
            let got = Reply::parse(input).ok().map(|r| {
                (
                    r.code(),
                    r.status().map(|s| s.to_string()),
                    r.text().to_owned(),
                )
            });
            let want = want.map(|(c, s, t)| (c, s.map(str::to_owned), t.to_owned()));
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn renders_multiline_and_strips_controls() {
        let r = Reply::new(250, None, "a\nb\r\x07c");
        assert_eq!(r.to_wire(), "250-a\r\n250 bc\r\n");
        let r = Reply::with_status(550, (5, 1, 1), "User unknown");
        assert_eq!(r.to_wire(), "550 5.1.1 User unknown\r\n");
    }

    #[test]
    fn status_bounds() {
        assert!("5.1.10".parse::<EnhancedStatus>().is_ok());
        assert!("3.1.1".parse::<EnhancedStatus>().is_err());
        assert!("5.1000.1".parse::<EnhancedStatus>().is_err());
        assert!("5.1.1.1".parse::<EnhancedStatus>().is_err());
    }
}
