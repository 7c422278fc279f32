//! The message walker: a trimmed copy of mail-parser 0.11's
//! `MessageParser::parse_` (© Stalwart Labs, MIT OR Apache-2.0), built from
//! mail-parser's own public stream primitives, decoders and header value parsers so
//! that the parts, boundaries, decoded bodies and header values it yields are the
//! ones `MessageParser::parse` gives, for everything rundbrief reads. What it does
//! differently, because rundbrief never reads the difference:
//!
//! - headers other than [`NEEDED`] are skipped with `memchr` instead of being named,
//!   hashed and stored (a report's `Received`, `DKIM-Signature`, `ARC-*`, … are most
//!   of its header bytes), and a MIME part's or a returned message's header block
//!   keeps only the few headers read from it;
//! - bodies that are never read (`image/*`, `application/*`, …) are skipped, not
//!   decoded; HTML parts are decoded only when asked for ([`Walked::html`]: a report
//!   with a text part never reads its HTML), unless their decoding could fail (a
//!   failed part becomes text in mail-parser, so those are decoded at once);
//! - text in an ASCII-compatible charset whose decoded bytes are all ASCII is taken
//!   as is instead of going through the charset decoder char by char;
//! - boundaries are found with `memchr` and quoted-printable is decoded on the slice
//!   (the same state machine as mail-parser's, plain runs copied whole);
//! - no `text_body`/`html_body`/`attachments` lists, and binary parts are always
//!   `Binary` (never `InlineBinary`).
//!
//! Header accessors of the returned `Message` (`subject()`, `from()`,
//! `content_type()`, …) behave as with mail-parser: the last occurrence wins.
//! Checked against mail-parser's walker (the previous `parse`) on the fixture corpus
//! and on more than a million mutated copies of it (truncations, swapped encodings,
//! stray `=`, `--`, header lines): identical `ParsedBounce` for every input.

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::quoted_printable::HEX_MAP;
use mail_parser::parsers::MessageStream;
use mail_parser::{
    ContentType, Encoding, Header, HeaderName, HeaderValue, Message, MessagePart, MimeHeaders,
    PartType,
};

/// Nesting of encoded `message/rfc822` parts, as in mail-parser.
const MAX_NESTED_ENCODED: usize = 3;

/// How a header's value is parsed (the parser mail-parser would use with rundbrief's
/// former `MessageParser` configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Raw,
    Unstructured,
    Address,
    Id,
    ContentType,
}

/// Every header rundbrief reads, lower-case, with its value parser. Any other header
/// is skipped. A header read by name (`header_text` in lib.rs) must be listed here.
pub(crate) const NEEDED: &[(&str, Kind)] = &[
    ("subject", Kind::Unstructured),
    ("from", Kind::Address),
    ("to", Kind::Address),
    ("cc", Kind::Address),
    ("reply-to", Kind::Address),
    ("sender", Kind::Address),
    ("message-id", Kind::Id),
    ("in-reply-to", Kind::Id),
    ("return-path", Kind::Id),
    ("content-type", Kind::ContentType),
    ("content-transfer-encoding", Kind::Unstructured),
    ("x-apple-unsubscribe", Kind::Raw),
    ("x-failed-recipients", Kind::Raw),
    ("auto-submitted", Kind::Raw),
    ("x-autoreply", Kind::Raw),
    ("x-autorespond", Kind::Raw),
    ("x-autoresponder", Kind::Raw),
    ("x-autoreply-from", Kind::Raw),
    ("precedence", Kind::Raw),
    ("list-id", Kind::Raw),
];

struct Entry {
    lc: &'static [u8],
    name: HeaderName<'static>,
    kind: Kind,
    /// Not one of mail-parser's known names: matched only when the name in the
    /// message has no inner whitespace (mail-parser keeps such names verbatim).
    other: bool,
    /// Which header blocks need it ([`ALL`], [`ORIGINAL`], [`STRUCTURE`]).
    uses: u8,
}

/// Header blocks by what is read from them: the report's own block reads every
/// [`NEEDED`] header, a MIME part's block only `Content-Type` and
/// `Content-Transfer-Encoding` (`STRUCTURE`), the returned message's block
/// `Message-ID`, `To` and `Cc` (`ORIGINAL`) plus its structure.
const STRUCTURE: u8 = 1;
const ORIGINAL: u8 = 2;
const ALL: u8 = 4;

fn uses(lc: &str) -> u8 {
    match lc {
        "content-type" | "content-transfer-encoding" => STRUCTURE | ALL,
        "message-id" | "to" | "cc" => ORIGINAL | ALL,
        _ => ALL,
    }
}

fn table() -> &'static [Entry] {
    static T: std::sync::LazyLock<Vec<Entry>> = std::sync::LazyLock::new(|| {
        NEEDED
            .iter()
            .map(|&(lc, kind)| {
                let name = HeaderName::from(lc);
                let other = matches!(name, HeaderName::Other(_));
                Entry {
                    lc: lc.as_bytes(),
                    name: if other {
                        HeaderName::Other(Cow::Borrowed(lc))
                    } else {
                        name
                    },
                    kind,
                    other,
                    uses: uses(lc),
                }
            })
            .collect()
    });
    &T
}

/// mail-parser's limit on the header names it recognises.
const MAX_HEADER_NAME_LEN: usize = 34;

/// Headers of one block plus whether any header (kept or skipped) was seen.
#[derive(Default)]
struct Block<'x> {
    list: Vec<Header<'x>>,
    any: bool,
}

impl<'x> Block<'x> {
    fn take(&mut self) -> Vec<Header<'x>> {
        self.any = false;
        std::mem::take(&mut self.list)
    }
}

/// `MessageStream::parse_headers`, keeping only [`NEEDED`] headers.
fn header_block<'x>(
    s: &mut MessageStream<'x>,
    data: &'x [u8],
    out: &mut Block<'x>,
    read: u8,
) -> bool {
    loop {
        loop {
            match s.peek() {
                Some(b'\n') => {
                    s.next();
                    return true;
                }
                None => return false,
                Some(ch) if !ch.is_ascii_whitespace() => break,
                _ => {
                    s.next();
                }
            }
        }
        let offset_field = s.offset();
        match header_name(s, data, read) {
            Some(entry) => {
                out.any = true;
                let from_offset = s.offset();
                match entry {
                    Some(e) => {
                        let value = match e.kind {
                            Kind::Raw => s.parse_raw(),
                            Kind::Unstructured => s.parse_unstructured(),
                            Kind::Address => s.parse_address(),
                            Kind::Id => s.parse_id(),
                            Kind::ContentType => s.parse_content_type(),
                        };
                        out.list.push(Header {
                            name: e.name.clone(),
                            value,
                            offset_field: offset_field as u32,
                            offset_start: from_offset as u32,
                            offset_end: s.offset() as u32,
                        });
                    }
                    None => skip_value(s, data),
                }
            }
            None => {
                if s.is_eof() {
                    return false;
                }
            }
        }
    }
}

/// `MessageStream::parse_header_name` without building the name: `None` when there
/// is no name, `Some(None)` for a header rundbrief does not read.
fn header_name<'x>(
    s: &mut MessageStream<'x>,
    data: &'x [u8],
    read: u8,
) -> Option<Option<&'static Entry>> {
    let start = s.offset();
    let rest = &data[start..];
    // Common case: `Name:` without spaces.
    if let Some(c) = memchr::memchr2(b':', b'\n', rest)
        && c > 0
        && rest[c] == b':'
        && !rest[..c].iter().any(u8::is_ascii_whitespace)
    {
        s.skip_bytes(c + 1);
        let name = &rest[..c];
        if c > MAX_HEADER_NAME_LEN {
            return Some(None);
        }
        return Some(
            table()
                .iter()
                .find(|e| e.uses & read != 0 && e.lc.len() == c && e.lc.eq_ignore_ascii_case(name)),
        );
    }
    let mut buf = [0u8; MAX_HEADER_NAME_LEN];
    let mut len = 0usize;
    let mut first = usize::MAX;
    let mut last = 0usize;
    let mut i = 0usize;
    let mut colon = false;
    while i < rest.len() {
        let ch = rest[i];
        match ch {
            b':' if first != usize::MAX => {
                colon = true;
                break;
            }
            b':' => {}
            b'\n' => {
                s.skip_bytes(i + 1);
                return None;
            }
            _ if !ch.is_ascii_whitespace() => {
                if first == usize::MAX {
                    first = i;
                }
                last = i;
                if let Some(b) = buf.get_mut(len) {
                    *b = ch.to_ascii_lowercase();
                }
                len += 1;
            }
            _ => {}
        }
        i += 1;
    }
    if colon {
        s.skip_bytes(i + 1);
    } else {
        // mail-parser reads to the end of input.
        s.seek_end();
    }
    if first == usize::MAX {
        return None;
    }
    if len > MAX_HEADER_NAME_LEN {
        return Some(None);
    }
    let lc = &buf[..len];
    let verbatim = last + 1 - first == len;
    Some(
        table()
            .iter()
            .find(|e| e.uses & read != 0 && e.lc == lc && (!e.other || verbatim)),
    )
}

/// `MessageStream::parse_and_ignore`: to the end of the line, with folded lines.
fn skip_value<'x>(s: &mut MessageStream<'x>, data: &'x [u8]) {
    let mut pos = s.offset();
    loop {
        match memchr::memchr(b'\n', &data[pos..]) {
            Some(nl) => {
                pos += nl + 1;
                if matches!(data.get(pos), Some(b' ' | b'\t')) {
                    pos += 1;
                } else {
                    break;
                }
            }
            None => {
                s.seek_end();
                return;
            }
        }
    }
    let here = s.offset();
    s.skip_bytes(pos - here);
}

/// Last header called `name` in `headers` (mail-parser's `header_value`).
fn last<'a, 'x>(headers: &'a [Header<'x>], name: &HeaderName<'_>) -> Option<&'a HeaderValue<'x>> {
    headers
        .iter()
        .rev()
        .find(|h| &h.name == name)
        .map(|h| &h.value)
}

/// Charsets whose decoder maps every ASCII byte to itself (checked by a test).
const ASCII_COMPATIBLE: &[&[u8]] = &[
    b"us_ascii",
    b"ascii",
    b"iso_8859_1",
    b"iso_8859_2",
    b"iso_8859_15",
    b"latin1",
    b"windows_1250",
    b"windows_1251",
    b"windows_1252",
    b"utf_8",
    b"utf8",
];

fn ascii_compatible(charset: &str) -> bool {
    let c = charset.as_bytes();
    ASCII_COMPATIBLE.iter().any(|n| {
        n.len() == c.len()
            && n.iter().zip(c).all(|(&a, &b)| {
                a == if b == b'-' {
                    b'_'
                } else {
                    b.to_ascii_lowercase()
                }
            })
    })
}

/// Bytes of a text part as mail-parser turns them into text.
fn to_text<'x>(bytes: Cow<'x, [u8]>, charset: Option<&str>) -> Cow<'x, str> {
    let decoder = charset.and_then(|c| charset_decoder(c.as_bytes()).map(|d| (c, d)));
    match (bytes, decoder) {
        (bytes, Some((c, _))) if ascii_compatible(c) && bytes.is_ascii() => match bytes {
            Cow::Borrowed(b) => Cow::Borrowed(std::str::from_utf8(b).unwrap_or_default()),
            Cow::Owned(v) => Cow::Owned(String::from_utf8(v).unwrap_or_default()),
        },
        (Cow::Owned(vec), Some((_, d))) => d(&vec).into(),
        (Cow::Owned(vec), None) => String::from_utf8(vec)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            .into(),
        (Cow::Borrowed(bytes), Some((_, d))) => d(bytes).into(),
        (Cow::Borrowed(bytes), None) => match std::str::from_utf8(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(bytes),
        },
    }
}

#[derive(Debug, PartialEq, Default, Clone, Copy)]
enum MimeType {
    MultipartAlternative,
    MultipartOther,
    TextPlain,
    TextHtml,
    TextOther,
    Inline,
    #[default]
    Message,
    MultipartDigest,
    Other,
}

fn mime_type(content_type: Option<&ContentType<'_>>, parent: MimeType) -> (bool, bool, MimeType) {
    // (is_multipart, is_text, mime type); mail-parser's `is_inline` only sorts parts
    // into lists rundbrief does not read.
    if let Some(ct) = content_type {
        match ct.ctype() {
            "multipart" => (
                true,
                false,
                match ct.subtype() {
                    Some("alternative") => MimeType::MultipartAlternative,
                    Some("digest") => MimeType::MultipartDigest,
                    _ => MimeType::MultipartOther,
                },
            ),
            "text" => match ct.subtype() {
                Some("plain") => (false, true, MimeType::TextPlain),
                Some("html") => (false, true, MimeType::TextHtml),
                _ => (false, true, MimeType::TextOther),
            },
            "image" | "audio" | "video" => (false, false, MimeType::Inline),
            "message" if [Some("rfc822"), Some("global")].contains(&ct.subtype()) => {
                (false, false, MimeType::Message)
            }
            _ => (false, false, MimeType::Other),
        }
    } else if parent == MimeType::MultipartDigest {
        (false, false, MimeType::Message)
    } else {
        (false, true, MimeType::TextPlain)
    }
}

#[derive(Default, Debug)]
struct State {
    mime_type: MimeType,
    mime_boundary: Option<Vec<u8>>,
    parts: usize,
    part_id: u32,
    sub_part_ids: Vec<u32>,
    offset_header: usize,
    offset_body: usize,
    offset_end: usize,
}

/// A walked message: mail-parser's `Message`, except that some HTML parts are still
/// to be decoded (their body is `""` until [`Walked::html`] is asked for it).
pub(crate) struct Walked<'x> {
    pub msg: Message<'x>,
    deferred: Vec<Deferred>,
}

/// An HTML part whose decoding was left for later (it cannot fail, see
/// [`html_can_wait`]).
struct Deferred {
    part: u32,
    body: usize,
    encoding: Encoding,
    boundary: Option<Vec<u8>>,
}

impl Walked<'_> {
    /// Text of the top-level HTML part `part` as mail-parser would have decoded it,
    /// when its decoding was deferred.
    pub(crate) fn html(&self, part: usize) -> Option<String> {
        let d = self.deferred.iter().find(|d| d.part as usize == part)?;
        let raw: &[u8] = self.msg.raw_message.as_ref();
        let mut s = MessageStream::new(raw);
        s.skip_bytes(d.body);
        let boundary = d.boundary.as_deref().unwrap_or(&b""[..]);
        let (_, bytes) = match d.encoding {
            Encoding::QuotedPrintable => decode_qp(&mut s, raw, boundary),
            _ => mime_part(&mut s, raw, boundary),
        };
        let charset = self
            .msg
            .parts
            .get(part)?
            .content_type()?
            .attribute("charset");
        Some(to_text(bytes, charset).into_owned())
    }
}

/// Whether a binary part's body can be read by [`crate::mime::View`]: only
/// `message/*`, `text/*`, `multipart/*` and untyped parts are (also when their
/// decoding fails and mail-parser keeps them as text).
fn read_binary(ct: Option<&ContentType<'_>>) -> bool {
    ct.is_none_or(|ct| {
        let t = ct.ctype();
        t.is_empty()
            || t.eq_ignore_ascii_case("message")
            || t.eq_ignore_ascii_case("text")
            || t.eq_ignore_ascii_case("multipart")
    })
}

/// For an HTML body starting at `body` (no encoding or quoted-printable): where the
/// part ends (`(end of body, offset after the boundary)`), if its decoder cannot
/// fail. The decoders fail when the boundary is missing, and quoted-printable also on
/// an `=` read while an escape is open; this test flags every `=` whose next
/// non-space byte, or the one after a following hex digit, is `=` (a superset).
fn html_can_wait(
    raw: &[u8],
    body: usize,
    boundary: Option<&[u8]>,
    enc: Encoding,
) -> Option<(usize, usize)> {
    let mut probe = MessageStream::new(raw);
    probe.skip_bytes(body);
    let (end, found) = seek_part_end(&mut probe, raw, boundary);
    if !found {
        return None;
    }
    if enc == Encoding::QuotedPrintable {
        let text = raw.get(body..end)?;
        let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0C');
        let next = |from: usize| {
            raw.get(from..)
                .and_then(|r| r.iter().position(|b| !ws(b)).map(|p| from + p))
        };
        for eq in memchr::memchr_iter(b'=', text) {
            let p = body + eq;
            match next(p + 1).map(|i| (i, raw[i])) {
                Some((_, b'=')) => return None,
                Some((i, h))
                    if HEX_MAP[h as usize] != -1 && next(i + 1).is_some_and(|j| raw[j] == b'=') =>
                {
                    return None;
                }
                _ => {}
            }
        }
    }
    Some((end, probe.offset()))
}

/// Index of the first `--boundary` at or after `start` (its first dash): where
/// mail-parser's byte-by-byte scans (`mime_part`, `seek_part_end`) stop.
fn find_boundary(raw: &[u8], start: usize, boundary: &[u8]) -> Option<usize> {
    let hay = raw.get(start..)?;
    let mut at = 0;
    while let Some(p) = memchr::memchr(b'-', &hay[at..]) {
        let dash = at + p;
        if hay.get(dash + 1) == Some(&b'-') && hay[dash + 2..].starts_with(boundary) {
            return Some(start + dash);
        }
        at = dash + 1;
    }
    None
}

/// End of a body that starts at `start` and whose boundary's dashes are at `dash`:
/// the line break before the boundary (mail-parser's `end_pos`).
fn body_end(raw: &[u8], start: usize, dash: usize) -> usize {
    if dash > start && raw[dash - 1] == b'\n' {
        if dash >= start + 2 && raw[dash - 2] == b'\r' {
            dash - 2
        } else {
            dash - 1
        }
    } else {
        dash
    }
}

/// `MessageStream::seek_part_end`, with `memchr`.
fn seek_part_end(s: &mut MessageStream<'_>, raw: &[u8], boundary: Option<&[u8]>) -> (usize, bool) {
    let start = s.offset();
    match boundary {
        Some(b) => match find_boundary(raw, start, b) {
            Some(dash) => {
                s.skip_bytes(dash + 2 + b.len() - start);
                (body_end(raw, start, dash), true)
            }
            None => {
                s.seek_end();
                (raw.len(), false)
            }
        },
        None => {
            s.seek_end();
            (raw.len(), true)
        }
    }
}

/// `MessageStream::decode_quoted_printable_mime`, the same state machine on the
/// slice instead of a peekable iterator. Length arithmetic wraps as it does in
/// mail-parser's release build.
fn decode_qp<'x>(
    s: &mut MessageStream<'x>,
    raw: &'x [u8],
    boundary: &[u8],
) -> (usize, Cow<'x, [u8]>) {
    #[derive(PartialEq)]
    enum St {
        None,
        Eq,
        Hex1,
    }
    let start = s.offset();
    let data = &raw[start..];
    let mut buf: Vec<u8> = Vec::with_capacity(128);
    let mut state = St::None;
    let mut hex1: i8 = 0;
    let mut last_ch = 0u8;
    let mut before_last_ch = 0u8;
    let mut ws_count = 0usize;
    let mut end_pos = start;
    let mut crlf: &[u8] = b"\n";
    let mut i = 0usize;
    while i < data.len() {
        if state == St::None {
            // A run of plain bytes is copied as is (what the loop below would do
            // byte by byte).
            let run = data[i..]
                .iter()
                .position(|&b| matches!(b, b'=' | b'\n' | b'\r' | b'-'))
                .unwrap_or(data.len() - i);
            if run > 0 {
                let bytes = &data[i..i + run];
                buf.extend_from_slice(bytes);
                let trailing_ws = bytes
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count();
                ws_count = if trailing_ws == run {
                    ws_count + run
                } else {
                    trailing_ws
                };
                before_last_ch = if run >= 2 { bytes[run - 2] } else { last_ch };
                last_ch = bytes[run - 1];
                i += run;
                continue;
            }
        }
        let ch = data[i];
        i += 1;
        match ch {
            b'=' => {
                if state == St::None {
                    state = St::Eq;
                } else {
                    return (usize::MAX, Cow::Borrowed(&[]));
                }
            }
            b'\n' => {
                end_pos = if last_ch == b'\r' {
                    start + i - 2
                } else {
                    start + i - 1
                };
                if state == St::Eq {
                    state = St::None;
                } else {
                    if ws_count > 0 {
                        buf.truncate(buf.len().wrapping_sub(ws_count));
                    }
                    buf.extend_from_slice(crlf);
                }
                ws_count = 0;
            }
            b'\r' => crlf = b"\r\n",
            b'-' if !boundary.is_empty() && last_ch == b'-' && data[i..].starts_with(boundary) => {
                i += boundary.len();
                if before_last_ch == b'\n' {
                    buf.truncate(buf.len().wrapping_sub(crlf.len() + 1));
                } else {
                    buf.truncate(buf.len().wrapping_sub(1));
                    end_pos = start + i - boundary.len() - 2;
                }
                s.skip_bytes(i);
                return (end_pos, buf.into());
            }
            _ => match state {
                St::None => {
                    if ch.is_ascii_whitespace() {
                        ws_count += 1;
                    } else {
                        ws_count = 0;
                    }
                    buf.push(ch);
                }
                St::Eq => {
                    hex1 = HEX_MAP[ch as usize];
                    if hex1 != -1 {
                        state = St::Hex1;
                    } else if !ch.is_ascii_whitespace() {
                        state = St::None;
                        buf.push(b'=');
                        buf.push(ch);
                        ws_count = 0;
                    }
                }
                St::Hex1 => {
                    let hex2 = HEX_MAP[ch as usize];
                    state = St::None;
                    if hex2 != -1 {
                        buf.push(((hex1 as u8) << 4) | hex2 as u8);
                    } else {
                        buf.push(b'=');
                        buf.push(last_ch);
                        buf.push(ch);
                    }
                    ws_count = 0;
                }
            },
        }
        before_last_ch = last_ch;
        last_ch = ch;
    }
    if boundary.is_empty() {
        s.seek_end();
        (raw.len(), buf.into())
    } else {
        (usize::MAX, buf.into())
    }
}

/// `MessageStream::mime_part` (a body without transfer encoding), with `memchr`.
fn mime_part<'x>(
    s: &mut MessageStream<'x>,
    raw: &'x [u8],
    boundary: &[u8],
) -> (usize, Cow<'x, [u8]>) {
    let start = s.offset();
    if boundary.is_empty() {
        s.seek_end();
        return (raw.len(), Cow::Borrowed(&raw[start..]));
    }
    match find_boundary(raw, start, boundary) {
        Some(dash) => {
            s.skip_bytes(dash + 2 + boundary.len() - start);
            let end = body_end(raw, start, dash);
            (end, Cow::Borrowed(&raw[start..end]))
        }
        None => (usize::MAX, Cow::Borrowed(&raw[start..])),
    }
}

/// `MessageParser::parse` (whole message).
pub(crate) fn parse(raw: &[u8]) -> Option<Walked<'_>> {
    parse_(raw, MAX_NESTED_ENCODED, false)
}

/// `MessageParser::parse_headers` (header block only).
pub(crate) fn parse_headers(raw: &[u8]) -> Option<Message<'_>> {
    parse_(raw, MAX_NESTED_ENCODED, true).map(|w| w.msg)
}

fn parse_(raw_message: &[u8], depth: usize, skip_body: bool) -> Option<Walked<'_>> {
    let mut stream = MessageStream::new(raw_message);
    let mut message = Message::default();
    let mut state = State::default();
    let mut state_stack: Vec<(State, Option<Message<'_>>)> = Vec::with_capacity(4);
    let mut part_headers = Block::default();
    // Nesting of `message/rfc822` parts read from the same stream.
    let mut nested = 0usize;
    let mut deferred = Vec::new();

    'outer: loop {
        state.offset_header = stream.offset();
        let read = match (skip_body, message.parts.is_empty(), nested) {
            (true, _, _) => ORIGINAL,
            (false, true, 0) => ALL,
            (false, true, _) => ORIGINAL | STRUCTURE,
            (false, false, _) => STRUCTURE,
        };
        if !header_block(&mut stream, raw_message, &mut part_headers, read) {
            break;
        }
        state.offset_body = stream.offset();
        if skip_body {
            break;
        }

        state.parts += 1;
        state.sub_part_ids.push(message.parts.len() as u32);

        let content_type =
            last(&part_headers.list, &HeaderName::ContentType).and_then(|c| c.as_content_type());
        let (is_multipart, mut is_text, mut mime_type) = mime_type(content_type, state.mime_type);

        if is_multipart && let Some(boundary) = content_type.and_then(|f| f.attribute("boundary")) {
            if stream.seek_next_part(boundary.as_bytes()) {
                let part_id = message.parts.len();
                let new_state = State {
                    mime_type,
                    mime_boundary: Some(boundary.as_bytes().to_vec()),
                    part_id: part_id as u32,
                    ..Default::default()
                };
                message.parts.push(MessagePart {
                    headers: part_headers.take(),
                    offset_header: state.offset_header as u32,
                    offset_body: state.offset_body as u32,
                    offset_end: 0,
                    is_encoding_problem: false,
                    encoding: Encoding::None,
                    body: PartType::default(),
                });
                state_stack.push((state, None));
                state = new_state;
                stream.skip_crlf();
                continue;
            } else {
                mime_type = MimeType::TextOther;
                is_text = true;
            }
        }

        let mut encoding = match last(&part_headers.list, &HeaderName::ContentTransferEncoding) {
            Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("base64") => Encoding::Base64,
            Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("quoted-printable") => {
                Encoding::QuotedPrintable
            }
            _ => Encoding::None,
        };

        if mime_type == MimeType::Message && encoding == Encoding::None {
            let new_state = State {
                mime_type: MimeType::Message,
                mime_boundary: state.mime_boundary.take(),
                part_id: message.parts.len() as u32,
                ..Default::default()
            };
            message.parts.push(MessagePart {
                headers: part_headers.take(),
                encoding,
                is_encoding_problem: false,
                offset_header: state.offset_header as u32,
                offset_body: state.offset_body as u32,
                offset_end: 0,
                body: PartType::default(),
            });
            state_stack.push((state, Some(message)));
            nested += 1;
            message = Message::default();
            state = new_state;
            continue;
        }

        // Bodies rundbrief never reads are not decoded: the stream ends up where the
        // decoder (or, when it fails, mail-parser's recovery) would leave it, after the
        // first `--boundary`.
        if nested == 0 && !is_text && !read_binary(content_type) {
            let (offset_end, found) =
                seek_part_end(&mut stream, raw_message, state.mime_boundary.as_deref());
            if !found {
                state.mime_boundary = None;
            }
            message.parts.push(MessagePart {
                headers: part_headers.take(),
                encoding,
                is_encoding_problem: false,
                body: PartType::Binary(Cow::Borrowed(&[])),
                offset_header: state.offset_header as u32,
                offset_body: state.offset_body as u32,
                offset_end: offset_end as u32,
            });
        } else if nested == 0
            && mime_type == MimeType::TextHtml
            && encoding != Encoding::Base64
            && let Some(offset_end) = html_can_wait(
                raw_message,
                state.offset_body,
                state.mime_boundary.as_deref(),
                encoding,
            )
        {
            // HTML is read only when a report has no text part: decoded on demand
            // ([`Walked::html`]), here only skipped.
            let here = stream.offset();
            stream.skip_bytes(offset_end.1 - here);
            deferred.push(Deferred {
                part: message.parts.len() as u32,
                body: state.offset_body,
                encoding,
                boundary: state.mime_boundary.clone(),
            });
            message.parts.push(MessagePart {
                headers: part_headers.take(),
                encoding,
                is_encoding_problem: false,
                body: PartType::Html(Cow::Borrowed("")),
                offset_header: state.offset_header as u32,
                offset_body: state.offset_body as u32,
                offset_end: offset_end.0 as u32,
            });
        } else {
            let boundary = state.mime_boundary.as_deref().unwrap_or(&b""[..]);
            let (offset_end, mut bytes) = match encoding {
                Encoding::Base64 => stream.decode_base64_mime(boundary),
                Encoding::QuotedPrintable => decode_qp(&mut stream, raw_message, boundary),
                Encoding::None => mime_part(&mut stream, raw_message, boundary),
            };

            // Recovery of an invalid part, as in mail-parser.
            let mut is_encoding_problem = offset_end == usize::MAX;
            if is_encoding_problem {
                encoding = Encoding::None;
                if mime_type != MimeType::TextPlain {
                    mime_type = MimeType::TextOther;
                }
                is_text = true;
                let (offset_end, boundary_found) =
                    seek_part_end(&mut stream, raw_message, state.mime_boundary.as_deref());
                state.offset_end = offset_end;
                bytes = raw_message
                    .get(state.offset_body..state.offset_end)
                    .unwrap_or_default()
                    .into();
                if !boundary_found {
                    state.mime_boundary = None;
                }
            } else {
                state.offset_end = offset_end;
            }

            let body_part = if mime_type != MimeType::Message {
                if is_text {
                    let text = to_text(bytes, content_type.and_then(|ct| ct.attribute("charset")));
                    if mime_type == MimeType::TextHtml {
                        PartType::Html(text)
                    } else {
                        PartType::Text(text)
                    }
                } else {
                    PartType::Binary(bytes)
                }
            } else if depth != 0 {
                match parse_(bytes.as_ref(), depth - 1, false).map(|w| w.msg) {
                    Some(nested) => PartType::Message(Message {
                        html_body: nested.html_body,
                        text_body: nested.text_body,
                        attachments: nested.attachments,
                        parts: nested.parts.into_iter().map(|p| p.into_owned()).collect(),
                        raw_message: bytes.into_owned().into(),
                    }),
                    None => {
                        is_encoding_problem = true;
                        PartType::Binary(bytes)
                    }
                }
            } else {
                is_encoding_problem = true;
                PartType::Binary(bytes)
            };

            message.parts.push(MessagePart {
                headers: part_headers.take(),
                encoding,
                is_encoding_problem,
                body: body_part,
                offset_header: state.offset_header as u32,
                offset_body: state.offset_body as u32,
                offset_end: state.offset_end as u32,
            });
        }

        if state.mime_boundary.is_some() {
            'inner: loop {
                if let MimeType::Message = state.mime_type {
                    // End of a nested message: back to its parent.
                    if let Some((mut prev_state, Some(mut prev_message))) = state_stack.pop() {
                        let offset_end = state
                            .mime_boundary
                            .as_ref()
                            .map(|b| {
                                let pos = stream.offset().saturating_sub(b.len() + 2);
                                raw_message.get(pos.wrapping_sub(2)).map_or(
                                    pos.wrapping_sub(1),
                                    |&ch| {
                                        if ch == b'\r' { pos - 2 } else { pos - 1 }
                                    },
                                )
                            })
                            .unwrap_or_else(|| stream.offset());
                        message.raw_message = raw_message.into();
                        if let Some(part) = prev_message.parts.get_mut(state.part_id as usize) {
                            part.offset_end = offset_end as u32;
                            if message.parts.is_empty() {
                                part.is_encoding_problem = true;
                                part.body = PartType::Text(String::from_utf8_lossy(
                                    raw_message
                                        .get(part.offset_body as usize..offset_end)
                                        .unwrap_or_default(),
                                ));
                            } else {
                                part.body = PartType::Message(message);
                            }
                        }
                        message = prev_message;
                        nested -= 1;
                        prev_state.mime_boundary = state.mime_boundary;
                        state = prev_state;
                    } else {
                        break 'outer;
                    }
                }

                if stream.is_multipart_end() {
                    if let Some(part) = message.parts.get_mut(state.part_id as usize) {
                        if state.sub_part_ids.len() != 1 || state.sub_part_ids[0] != 0 {
                            part.body =
                                PartType::Multipart(std::mem::take(&mut state.sub_part_ids));
                        }
                        if let Some((prev_state, _)) = state_stack.pop() {
                            state = prev_state;
                            if let Some(ref boundary) = state.mime_boundary
                                && let Some(offset) = stream.seek_next_part_offset(boundary)
                            {
                                part.offset_end = offset as u32;
                                continue 'inner;
                            }
                        }
                        part.offset_end = stream.offset() as u32;
                    }
                    break 'outer;
                } else {
                    break 'inner;
                }
            }
        } else if stream.offset() >= raw_message.len() {
            break 'outer;
        }
    }

    // Corrupted MIME message: recover what is possible, as mail-parser does.
    while let Some((prev_state, prev_message)) = state_stack.pop() {
        if let Some(mut prev_message) = prev_message {
            message.raw_message = raw_message.into();
            if let Some(part) = prev_message.parts.get_mut(state.part_id as usize) {
                part.offset_end = stream.offset() as u32;
                if message.parts.is_empty() {
                    part.is_encoding_problem = true;
                    let raw_text = raw_message.get(part.offset_body as usize..stream.offset());
                    let text = match raw_text
                        .and_then(|bytes| std::str::from_utf8(bytes).ok())
                        .and_then(|text| {
                            state
                                .mime_boundary
                                .as_deref()
                                .and_then(|b| std::str::from_utf8(b).ok())
                                .and_then(|boundary| {
                                    text.rsplit_once(boundary)
                                        .and_then(|(text, _)| text.strip_suffix("--"))
                                })
                                .map(|text| {
                                    let text = text.strip_suffix('\n').unwrap_or(text);
                                    text.strip_suffix('\r').unwrap_or(text)
                                })
                        }) {
                        Some(text) => Cow::Borrowed(text),
                        _ => String::from_utf8_lossy(raw_text.unwrap_or_default()),
                    };
                    part.body = PartType::Text(text);
                } else {
                    part.body = PartType::Message(message);
                }
            }
            message = prev_message;
        } else if let Some(part) = message.parts.get_mut(state.part_id as usize) {
            part.offset_end = stream.offset() as u32;
            if state.sub_part_ids.len() != 1 || state.sub_part_ids[0] != 0 {
                part.body = PartType::Multipart(state.sub_part_ids);
            }
        }
        state = prev_state;
    }

    message.raw_message = raw_message.into();
    if !message.parts.is_empty() {
        message.parts[0].offset_end = message.raw_message.len() as u32;
        Some(Walked {
            msg: message,
            deferred,
        })
    } else if part_headers.any {
        // A message without a body.
        message.parts.push(MessagePart {
            headers: part_headers.take(),
            encoding: Encoding::None,
            is_encoding_problem: true,
            body: PartType::Text("".into()),
            offset_header: 0,
            offset_body: message.raw_message.len() as u32,
            offset_end: message.raw_message.len() as u32,
        });
        Some(Walked {
            msg: message,
            deferred,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{Address, MessageParser};

    /// mail-parser set up as rundbrief used it before this walker: every [`NEEDED`]
    /// header decoded as here, every other header skipped.
    fn reference() -> MessageParser {
        let mut p = MessageParser::new().default_header_ignore();
        for &(name, kind) in NEEDED {
            let name = HeaderName::from(name);
            p = match kind {
                Kind::Raw => p.header_raw(name),
                Kind::Unstructured => p.header_text(name),
                Kind::Address => p.header_address(name),
                Kind::Id => p.header_id(name),
                Kind::ContentType => p.header_content_type(name),
            };
        }
        p
    }

    fn addrs(a: Option<&Address<'_>>) -> Vec<Option<String>> {
        a.map(|a| a.iter().map(|x| x.address().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    fn first_raw(m: &Message<'_>, name: &str) -> Option<String> {
        m.headers()
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .map(|h| format!("{:?}", h.value()))
    }

    /// Everything rundbrief reads from a message, `html` deciding how an HTML part's
    /// text is obtained.
    fn digest(m: &Message<'_>, html: &dyn Fn(usize, &str) -> String) -> Vec<String> {
        let mut out = vec![
            format!("{:?}", m.subject()),
            format!(
                "{:?} {:?}",
                addrs(m.from()),
                m.from().and_then(|a| a.first()).map(|a| a.name())
            ),
            format!("{:?} {:?}", addrs(m.to()), addrs(m.cc())),
            format!("{:?} {:?}", addrs(m.reply_to()), addrs(m.sender())),
            format!("{:?} {:?}", m.return_address(), m.message_id()),
            format!("{:?}", m.content_type()),
        ];
        for &(name, _) in NEEDED {
            out.push(format!("{name}: {:?}", first_raw(m, name)));
        }
        for (i, part) in m.parts.iter().enumerate() {
            let ct = part.content_type();
            let read = read_binary(ct);
            out.push(format!(
                "part {i}: {:?} {}",
                ct.map(|c| (c.ctype(), c.subtype(), c.attributes())),
                match &part.body {
                    // A part whose decoding failed is text in mail-parser; the view
                    // reads no part of these types either way.
                    PartType::Text(_) | PartType::Binary(_) | PartType::InlineBinary(_)
                        if !read =>
                    {
                        "unread".to_string()
                    }
                    PartType::Text(t) => format!("text {t:?}"),
                    PartType::Html(t) => format!("html {:?}", html(i, t)),
                    PartType::Binary(b) | PartType::InlineBinary(b) => format!("binary {b:?}"),
                    PartType::Message(inner) => format!(
                        "message {:?} {:?} {:?}",
                        inner.message_id(),
                        addrs(inner.to()),
                        addrs(inner.cc())
                    ),
                    PartType::Multipart(ids) => format!("multipart {ids:?}"),
                }
            ));
        }
        out
    }

    fn fixtures() -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut out = Vec::new();
        for dir in std::fs::read_dir(root).expect("fixtures").flatten() {
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if f.path().extension().is_some_and(|e| e == "eml") {
                    out.push(std::fs::read(f.path()).expect("fixture"));
                }
            }
        }
        out
    }

    fn replace(raw: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(p) = memchr::memmem::find(rest, from) {
            out.extend_from_slice(&rest[..p]);
            out.extend_from_slice(to);
            rest = &rest[p + from.len()..];
        }
        out.extend_from_slice(rest);
        out
    }

    /// The walker reads every fixture, and variants of it that take the walker's
    /// other paths, as mail-parser does.
    #[test]
    fn same_as_mail_parser() {
        let reference = reference();
        let mut inputs = Vec::new();
        for raw in fixtures() {
            for k in 1..8 {
                inputs.push(raw[..raw.len() * k / 8].to_vec());
            }
            inputs.push(replace(&raw, b"text/plain", b"text/html"));
            inputs.push(replace(&raw, b"7bit", b"quoted-printable"));
            inputs.push(replace(
                &replace(&raw, b"text/plain", b"text/html"),
                b"=",
                b"==",
            ));
            inputs.push(replace(&raw, b"\r\n", b"\n"));
            inputs.push(replace(&raw, b"text/html", b"image/gif"));
            inputs.push(raw);
        }
        for raw in &inputs {
            let want = reference.parse(raw);
            let got = parse(raw);
            assert_eq!(want.is_some(), got.is_some());
            let (Some(want), Some(got)) = (want, got) else {
                continue;
            };
            let want = digest(&want, &|_, t| t.to_string());
            let got = digest(&got.msg, &|i, t| {
                got.html(i).unwrap_or_else(|| t.to_string())
            });
            assert_eq!(want, got, "{}", String::from_utf8_lossy(raw));
        }
        for raw in &inputs {
            let want = reference.parse_headers(raw).map(|m| {
                (
                    m.message_id().map(str::to_string),
                    addrs(m.to()),
                    addrs(m.cc()),
                )
            });
            let got = parse_headers(raw).map(|m| {
                (
                    m.message_id().map(str::to_string),
                    addrs(m.to()),
                    addrs(m.cc()),
                )
            });
            assert_eq!(want, got);
        }
    }

    #[test]
    fn ascii_compatible_charsets_decode_ascii_to_itself() {
        let ascii: Vec<u8> = (0u8..128).collect();
        let want = String::from_utf8(ascii.clone()).unwrap();
        for name in ASCII_COMPATIBLE {
            let name = std::str::from_utf8(name).unwrap();
            for spelled in [name.to_string(), name.replace('_', "-").to_uppercase()] {
                assert!(ascii_compatible(&spelled));
                if let Some(d) = charset_decoder(spelled.as_bytes()) {
                    assert_eq!(d(&ascii), want, "{spelled}");
                }
            }
        }
        assert!(!ascii_compatible("iso-2022-jp"));
        assert!(!ascii_compatible("utf-16"));
    }
}
