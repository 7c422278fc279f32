//! MIME assembly with lettre's typed builders, and header safety.
//!
//! Header safety rests on two rules. Values that come from subscribers (the
//! display name, the rendered subject) only ever reach lettre as typed values
//! (`Mailbox`, `Subject`), whose encoders turn any word with CR, LF, NUL or
//! non-ASCII into an RFC 2047 encoded-word: such a value can never start a
//! header line. Values we put into headers verbatim (URLs, list id, campaign
//! id, domain) are checked here and refused if they contain anything that is
//! not printable ASCII without spaces.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};

use crate::encode;
use crate::error::RenderError;
use crate::renderer::{CampaignTemplate, Recipient};

/// The Content-Transfer-Encoding of both body parts.
///
/// Measured with `examples/render_bench.rs` on a ~20 KB newsletter, one core:
/// base64 ~35 µs per whole message (~28,000 msg/s), 8bit about the same,
/// quoted-printable through lettre ~130–175 µs (~6,000 msg/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TransferEncoding {
    /// base64: safe over any relay, fast to encode, ~37 % larger. The default.
    #[default]
    Base64,
    /// 8bit: no encoding at all. Only for relays that announce `8BITMIME`
    /// (the sender must then send `MAIL FROM … BODY=8BITMIME`). A part that
    /// cannot go as 8bit (a line over 998 octets, a NUL or a bare CR) falls
    /// back to base64 for that message.
    EightBit,
    /// quoted-printable: human-readable source, but slow (see above). For
    /// receivers that distrust base64 text.
    QuotedPrintable,
}

/// Header values that are the same for every recipient, checked once.
pub(crate) struct Headers {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    list_id: HeaderValue,
    feedback_id: String,
    campaign_id: String,
    domain: String,
}

/// Checks a From address (`Name <addr@example.org>` or a bare address) the
/// way [`crate::Renderer::new`] reads it, so a campaign can refuse a bad one
/// when it is stored rather than when it is sent.
///
/// # Errors
/// [`RenderError::Address`] saying what is wrong.
pub fn check_from(from: &str) -> Result<(), RenderError> {
    mailbox("from", from).map(drop)
}

/// `s` read as a mailbox for the header setting `field`.
fn mailbox(field: &'static str, s: &str) -> Result<Mailbox, RenderError> {
    s.parse::<Mailbox>().map_err(|e| RenderError::Address {
        field,
        value: s.to_owned(),
        reason: e.to_string(),
    })
}

impl Headers {
    pub(crate) fn new(c: &CampaignTemplate) -> Result<Headers, RenderError> {
        let from = mailbox("from", &c.from)?;
        let reply_to = c
            .reply_to
            .as_deref()
            .map(|r| mailbox("reply_to", r))
            .transpose()?;
        check_list_id(&c.list_name, &c.list_id)?;
        check_token("Feedback-ID", &c.campaign_id, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
        })?;
        check_token("message_id_domain", &c.message_id_domain, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
        })?;
        Ok(Headers {
            from,
            reply_to,
            list_id: list_id_value(&c.list_name, &c.list_id),
            feedback_id: format!("{}:{}:rundbrief", c.campaign_id, c.list_id),
            campaign_id: c.campaign_id.clone(),
            domain: c.message_id_domain.clone(),
        })
    }

    /// `<left@domain>`, from the recipient's own id or derived from the
    /// campaign id and the address.
    pub(crate) fn message_id(&self, r: &Recipient) -> Result<String, RenderError> {
        let left = match &r.message_id {
            Some(id) => {
                check_token("Message-ID", id, |b| {
                    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b)
                })?;
                id.clone()
            }
            None => format!(
                "{}.{}",
                self.campaign_id,
                digest_hex(&self.campaign_id, &r.email)
            ),
        };
        Ok(format!("<{left}@{}>", self.domain))
    }
}

/// `List-Id: Name <id>`, the name as a phrase: atoms, a quoted string
/// when it has specials, encoded-words when it is not ASCII.
fn list_id_value(name: &str, id: &str) -> HeaderValue {
    let name = name.trim();
    let raw = if name.is_empty() {
        format!("<{id}>")
    } else {
        format!("{} <{id}>", name.replace(|c: char| c.is_control(), " "))
    };
    pre_encoded("List-Id", raw, list_id_encoded(name, id))
}

fn list_id_encoded(name: &str, id: &str) -> String {
    match name.trim() {
        "" => format!("<{id}>"),
        n => encode::mailbox("List-Id", Some(n), id),
    }
}

/// The List-Id (RFC 2919): `label.namespace`, lower-case letters, digits,
/// `-` and `_` between dots. A bad one is the list's, so the error names
/// the list (and how it got its id), not the campaign's content.
fn check_list_id(list: &str, id: &str) -> Result<(), RenderError> {
    let bad = |reason: &'static str| {
        Err(RenderError::ListId {
            list: list.to_owned(),
            value: id.to_owned(),
            reason,
        })
    };
    if list.chars().any(char::is_control) {
        return bad("the list name must not contain control characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
    };
    if id.is_empty() || id.len() > 255 || !id.split('.').all(label_ok) {
        return bad(
            "a List-Id is lower-case letters, digits, '-' and '_' in dot-separated parts (RFC 2919)",
        );
    }
    if !id.contains('.') {
        return bad("a List-Id looks like a domain name, e.g. news.lists.example.org");
    }
    Ok(())
}

fn check_token(header: &'static str, v: &str, ok: impl Fn(u8) -> bool) -> Result<(), RenderError> {
    if v.is_empty() || v.len() > 200 || !v.bytes().all(ok) {
        return Err(RenderError::HeaderValue {
            header,
            value: v.to_owned(),
            reason: "must be 1–200 characters of letters, digits and . - _",
        });
    }
    Ok(())
}

/// A URL that goes into a header between `<` `>`: printable ASCII, no
/// spaces or angle brackets, at most 900 octets so its line stays legal.
pub(crate) fn check_url(header: &'static str, url: &str, scheme: &str) -> Result<(), RenderError> {
    let bad = |reason| {
        Err(RenderError::HeaderValue {
            header,
            value: url.to_owned(),
            reason,
        })
    };
    // http:// only to a loopback address (tests), as `sending.public_url` allows.
    let scheme_ok = url.starts_with(scheme)
        || (scheme == "https://" && rundbrief_core::config::loopback_http(url));
    if !scheme_ok || url.len() <= scheme.len() {
        return bad(if scheme == "https://" {
            "the one-click unsubscribe URL must start with https:// (RFC 8058; http:// only to a loopback address, for tests)"
        } else if scheme == "mailto:" {
            "the unsubscribe address must be a mailto: URL"
        } else {
            "empty URL"
        });
    }
    if url.len() > 900 {
        return bad("longer than 900 octets");
    }
    if !url
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
    {
        return bad("only printable ASCII without spaces or < > (percent-encode the rest)");
    }
    Ok(())
}

/// The recipient's address: it must parse (lettre refuses CR, LF, spaces and
/// the like).
pub(crate) fn recipient_address(r: &Recipient) -> Result<Address, RenderError> {
    r.email
        .parse::<Address>()
        .map_err(|e| RenderError::Address {
            field: "to",
            value: r.email.clone(),
            reason: e.to_string(),
        })
}

/// The `To:` header, encoded here rather than through lettre's `To` type:
/// lettre's `Mailbox` panics while displaying a name that contains CR or LF
/// (0.11.23, `header/mailbox.rs` calls `to_string()` on it), and its encoder
/// drops the spaces between encoded words. [`encode::mailbox`] keeps the
/// display name exactly and can never end the line.
fn to_header(name: Option<&str>, addr: &Address) -> HeaderValue {
    let encoded = encode::mailbox("To", name, addr.as_ref());
    // The raw value is what lettre would show in Debug output; keep it one line.
    let raw = match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => format!("{} <{addr}>", n.replace(|c: char| c.is_control(), " ")),
        None => addr.to_string(),
    };
    HeaderValue::dangerous_new_pre_encoded(HeaderName::new_from_ascii_str("To"), raw, encoded)
}

/// A header whose value we encoded ourselves ([`encode`]); `raw` is what
/// lettre parses back (it reads `From` to check the message has one).
fn pre_encoded(name: &'static str, raw: String, encoded: String) -> HeaderValue {
    HeaderValue::dangerous_new_pre_encoded(HeaderName::new_from_ascii_str(name), raw, encoded)
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// Assemble the message.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    h: &Headers,
    enc: TransferEncoding,
    to: Address,
    r: &Recipient,
    message_id: &str,
    subject: &str,
    html: String,
    text: String,
    now: DateTime<Utc>,
) -> Result<Vec<u8>, RenderError> {
    let envelope = Envelope::new(Some(h.from.email.clone()), vec![to.clone()])?;
    let from = pre_encoded(
        "From",
        h.from.to_string(),
        encode::mailbox("From", h.from.name.as_deref(), h.from.email.as_ref()),
    );
    let mut b = Message::builder()
        .envelope(envelope)
        .from(h.from.clone())
        .raw_header(from)
        .raw_header(to_header(r.name.as_deref(), &to))
        .raw_header(pre_encoded(
            "Subject",
            subject.replace(|c: char| c.is_control(), " "),
            encode::unstructured("Subject", subject),
        ))
        .date(SystemTime::from(now))
        .message_id(Some(message_id.to_owned()));
    if let Some(rt) = &h.reply_to {
        b = b.reply_to(rt.clone());
    }
    b = b
        .raw_header(h.list_id.clone())
        .raw_header(header(
            "List-Unsubscribe",
            format!("<{}>, <{}>", r.unsubscribe_url, r.unsubscribe_mailto),
        ))
        .raw_header(header(
            "List-Unsubscribe-Post",
            "List-Unsubscribe=One-Click".into(),
        ))
        .raw_header(header("Feedback-ID", h.feedback_id.clone()))
        .raw_header(header("Precedence", "bulk".into()));

    let text_body = body(text, enc);
    let html_body = body(html, enc);
    let boundary = boundary(message_id, &text_body, &html_body);
    let parts = MultiPart::alternative()
        .boundary(boundary)
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text_body),
        )
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html_body),
        );
    Ok(b.multipart(parts)?.formatted())
}

/// Encode one part. base64 and 8bit are done here directly, because lettre's
/// `Body::new_with_encoding` first measures the quoted-printable size of the
/// whole body to "choose", which costs as much as encoding it.
fn body(s: String, enc: TransferEncoding) -> Body {
    match enc {
        TransferEncoding::EightBit if eight_bit_ok(&s) => {
            Body::dangerous_pre_encoded(crlf(s).into_bytes(), ContentTransferEncoding::EightBit)
        }
        TransferEncoding::QuotedPrintable => {
            match Body::new_with_encoding(s, ContentTransferEncoding::QuotedPrintable) {
                Ok(b) => b,
                Err(raw) => base64_body(&raw),
            }
        }
        TransferEncoding::Base64 | TransferEncoding::EightBit => base64_body(crlf(s).as_bytes()),
    }
}

/// base64 in lines of 76 characters joined by CRLF (RFC 2045). The whole
/// input is encoded in one call (the base64 crate's fast path; per-line calls
/// measured 3x slower), then cut into lines.
fn base64_body(raw: &[u8]) -> Body {
    use base64::Engine as _;
    let mut flat = vec![0u8; raw.len().div_ceil(3) * 4];
    // `flat` has exactly the encoded length, so encoding cannot run out of room.
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(raw, &mut flat)
        .unwrap_or(0);
    flat.truncate(n);
    let mut out = Vec::with_capacity(n + n / 76 * 2);
    for (i, line) in flat.chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(line);
    }
    Body::dangerous_pre_encoded(out, ContentTransferEncoding::Base64)
}

/// 8bit needs lines of at most 998 octets, no NUL and no bare CR.
fn eight_bit_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut bad = u8::from(b.last() == Some(&b'\r'));
    for w in b.windows(2) {
        bad |= u8::from(w[0] == b'\r') & u8::from(w[1] != b'\n');
    }
    bad == 0
        && !b.contains(&0)
        && s.split('\n')
            .all(|line| line.strip_suffix('\r').unwrap_or(line).len() <= 998)
}

/// LF or CRLF line ends to CRLF. The compiled templates already use CRLF,
/// so the usual case is one branch-free scan and no copy.
pub(crate) fn crlf(s: String) -> String {
    let b = s.as_bytes();
    let mut bare = u8::from(b.first() == Some(&b'\n'));
    for w in b.windows(2) {
        bare |= u8::from(w[1] == b'\n') & u8::from(w[0] != b'\r');
    }
    if bare == 0 {
        return s;
    }
    let mut out = String::with_capacity(s.len() + s.len() / 40);
    for line in s.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(l) => {
                out.push_str(l.strip_suffix('\r').unwrap_or(l));
                out.push_str("\r\n");
            }
            None => out.push_str(line),
        }
    }
    out
}

/// A boundary derived from the Message-ID (so output is reproducible), made
/// of characters base64 never produces, and checked against 8bit bodies.
fn boundary(message_id: &str, a: &Body, b: &Body) -> String {
    let mut salt = 0u64;
    loop {
        let candidate = format!("=_rdb_{}", digest_hex(message_id, &salt.to_string()));
        let clash = |body: &Body| {
            body.encoding() != ContentTransferEncoding::Base64
                && std::str::from_utf8(body.as_ref())
                    .map_or(true, |s| s.contains(candidate.as_str()))
        };
        if !clash(a) && !clash(b) {
            return candidate;
        }
        salt += 1;
    }
}

/// 128 bits of FNV-1a over `a` and `b`, as hex. Not cryptographic: it only
/// has to make ids unique and stable; it hides nothing.
pub(crate) fn digest_hex(a: &str, b: &str) -> String {
    let fnv = |seed: u64| {
        let mut h = seed;
        for byte in a.bytes().chain([0u8]).chain(b.bytes()) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let cases: &[(&str, &str, bool)] = &[
            ("https://example.org/u/abc", "https://", true),
            ("http://example.org/u/abc", "https://", false),
            // http:// only to a loopback address (tests).
            ("http://127.0.0.1:8080/u/abc", "https://", true),
            ("http://localhost/u/abc", "https://", true),
            ("http://[::1]:8080/u/abc", "https://", true),
            ("http://localhost@evil.example/u/abc", "https://", false),
            ("http://127.0.0.1.example.org/u/abc", "https://", false),
            ("http://127.0.0.1:8080/u/abc", "mailto:", false),
            ("https://example.org/u/a b", "https://", false),
            (
                "https://example.org/u/a\r\nBcc: v@example.org",
                "https://",
                false,
            ),
            ("https://example.org/u/a>", "https://", false),
            ("mailto:u+abc@example.org", "mailto:", true),
            ("mailto:", "mailto:", false),
        ];
        for (url, scheme, ok) in cases {
            assert_eq!(check_url("t", url, scheme).is_ok(), *ok, "{url:?}");
        }
    }

    #[test]
    fn eight_bit_rules_and_crlf() {
        assert!(eight_bit_ok("ä\nb\r\nc"));
        assert!(!eight_bit_ok(&"x".repeat(999)));
        assert!(!eight_bit_ok("a\rb"));
        assert!(!eight_bit_ok("a\0b"));
        for (input, want) in [
            ("a\nb\r\nc", "a\r\nb\r\nc"),
            ("\n", "\r\n"),
            ("a\r\n", "a\r\n"),
            ("", ""),
        ] {
            assert_eq!(crlf(input.to_owned()), want, "{input:?}");
        }
        for len in [0, 1, 56, 57, 58, 114, 1000] {
            let raw: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let body = base64_body(&raw);
            let mut want = String::new();
            let _ = email_encoding::body::base64::encode(&raw, &mut want);
            assert_eq!(
                std::str::from_utf8(body.as_ref()).ok(),
                Some(want.as_str()),
                "length {len}"
            );
        }
    }

    #[test]
    fn list_id_quoting() {
        let v = list_id_encoded;
        assert_eq!(v("News", "n.example.org"), "News <n.example.org>");
        assert_eq!(
            v("A, B \"C\"", "n.example.org"),
            "\"A, B \\\"C\\\"\" <n.example.org>"
        );
        assert_eq!(v("", "n.example.org"), "<n.example.org>");
        assert_eq!(
            v("Bücher  Köln", "b.example.org"),
            "=?utf-8?b?QsO8Y2hlciAgS8O2bG4=?= <b.example.org>"
        );
    }

    #[test]
    fn list_ids_name_the_list() {
        for (id, ok) in [
            ("news.example.org", true),
            ("team-news.lists.example.org", true),
            ("a_b.example.org", true),
            ("Team News.example.org", false),
            ("News.example.org", false),
            ("bücher.example.org", false),
            ("news", false),
            ("news..example.org", false),
            (".news.example.org", false),
            ("", false),
        ] {
            let r = check_list_id("Team News", id);
            assert_eq!(r.is_ok(), ok, "{id}");
            if let Err(e) = r {
                let e = e.to_string();
                assert!(e.contains("list \"Team News\""), "{e}");
            }
        }
    }
}
