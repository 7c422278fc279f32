//! RFC 2047 encoded-words for the header values that carry human text: the
//! subject (unstructured) and display names (phrases).
//!
//! Why not the encoder lettre and email-encoding use: it encodes word by
//! word and leaves the spaces between two encoded words outside them, where
//! RFC 2047 §6.2 tells decoders to drop them (`Grüße  Köln` came back as
//! `GrüßeKöln`), and it splits long text wherever a line fills up, so a
//! reader showed `von un d zu`. Here:
//!
//! - adjacent words that need encoding are encoded *together*, with the
//!   white space between them inside the encoded text, so every space
//!   survives, however many there are;
//! - long text is split into several encoded-words after a word and its
//!   following white space (inside the first word), never inside a word
//!   unless that one word is longer than an encoded-word can hold, and then
//!   only between characters (never inside a UTF-8 sequence);
//! - `Q` or `B`, whichever is shorter for the run; `Q` keeps mostly-ASCII
//!   text readable in the raw message.
//!
//! Lines are folded at white space to at most 78 characters where possible;
//! an encoded-word is at most 75 characters (RFC 2047 §2). Nothing a
//! subscriber controls can end a header line: CR, LF and every other
//! control character only ever appear inside an encoded-word, as `=0D`.

/// RFC 5322's recommended line length.
const LINE: usize = 78;
/// RFC 2047 §2: an encoded-word is at most 75 characters.
const WORD: usize = 75;
const Q_PREFIX: &str = "=?utf-8?q?";
const B_PREFIX: &str = "=?utf-8?b?";
const SUFFIX: &str = "?=";

/// A header value folded for a header called `name`: an unstructured text
/// such as the subject. Words that are plain printable ASCII stay as they
/// are; runs of words that are not become encoded-words.
pub(crate) fn unstructured(name: &str, value: &str) -> String {
    let mut out = Folder::new(name);
    words(&mut out, value, needs_encoding);
    out.finish()
}

/// Writes `value` word by word: words for which `encode` is false as they
/// are, each run of adjacent words for which it is true as encoded-words
/// carrying the white space between them.
fn words(out: &mut Folder, value: &str, encode: fn(&str) -> bool) {
    let tokens = tokens(value);
    let mut i = 0;
    while i < tokens.len() {
        let (ws, word) = tokens[i];
        if !encode(word) {
            out.plain(ws, word);
            i += 1;
            continue;
        }
        let start = word.as_ptr() as usize - value.as_ptr() as usize;
        let mut end = start + word.len();
        i += 1;
        while i < tokens.len() && encode(tokens[i].1) {
            let w = tokens[i].1;
            end = w.as_ptr() as usize - value.as_ptr() as usize + w.len();
            i += 1;
        }
        out.encoded(ws, &value[start..end]);
    }
}

/// A display name (RFC 5322 phrase) followed by `<address>`, folded for a
/// header called `name`. A name of printable ASCII is written as atoms or,
/// when it has specials, as a quoted string. In any other name, words that
/// are atoms stay as they are and the rest is encoded (encoded-words cannot
/// stand inside a quoted string).
///
/// Keeping atoms plain matters beyond readability: inside a phrase, Python's
/// `email` keeps the white space between two encoded-words (RFC 2047 §6.2
/// says to drop it; mail-parser does), so a name split into several
/// encoded-words reads differently in the two. With atoms plain, only a
/// run of non-ASCII words longer than one encoded-word is split.
pub(crate) fn mailbox(name: &str, display: Option<&str>, address: &str) -> String {
    let display = display.map(str::trim).filter(|n| !n.is_empty());
    let mut out = Folder::new(name);
    if let Some(d) = display {
        if d.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            if d.split(' ').all(|w| !needs_phrase_encoding(w)) {
                words(&mut out, d, needs_phrase_encoding);
            } else {
                let quoted = format!("\"{}\"", d.replace('\\', "\\\\").replace('"', "\\\""));
                out.plain("", &quoted);
            }
        } else {
            words(&mut out, d, needs_phrase_encoding);
        }
        out.plain(" ", &format!("<{address}>"));
    } else {
        out.plain("", address);
    }
    out.finish()
}

/// In a phrase, a word must be encoded unless it is an atom (RFC 5322
/// `atext`) that cannot be mistaken for an encoded-word.
fn needs_phrase_encoding(word: &str) -> bool {
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    !word.bytes().all(atext) || word.contains("=?") || word.len() > WORD
}

/// The value as (white space before, word) pairs; white space is spaces and
/// tabs only, so CR, LF and the like stay inside words and get encoded.
fn tokens(value: &str) -> Vec<(&str, &str)> {
    let is_ws = |c: char| c == ' ' || c == '\t';
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let ws_end = rest.find(|c| !is_ws(c)).unwrap_or(rest.len());
        let after = &rest[ws_end..];
        let word_end = after.find(is_ws).unwrap_or(after.len());
        out.push((&rest[..ws_end], &after[..word_end]));
        rest = &after[word_end..];
    }
    out
}

/// A word must be encoded when it is not printable ASCII, when a decoder
/// could mistake it for an encoded-word, or when it is too long to fold.
fn needs_encoding(word: &str) -> bool {
    !word.bytes().all(|b| b.is_ascii_graphic()) || word.contains("=?") || word.len() > WORD
}

/// Characters `Q` may leave as they are in any header (RFC 2047 §5 (3)).
fn q_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'!' | b'*' | b'+' | b'-' | b'/')
}

fn q_len(s: &str) -> usize {
    s.bytes()
        .map(|b| if q_literal(b) || b == b' ' { 1 } else { 3 })
        .sum()
}

fn b_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

#[derive(Clone, Copy)]
enum Scheme {
    Q,
    B,
}

impl Scheme {
    fn len(self, s: &str) -> usize {
        Q_PREFIX.len()
            + SUFFIX.len()
            + match self {
                Scheme::Q => q_len(s),
                Scheme::B => b_len(s.len()),
            }
    }

    fn encode(self, s: &str) -> String {
        use base64::Engine as _;
        use std::fmt::Write as _;
        match self {
            Scheme::Q => {
                let mut out = String::with_capacity(self.len(s));
                out.push_str(Q_PREFIX);
                for b in s.bytes() {
                    if q_literal(b) {
                        out.push(char::from(b));
                    } else if b == b' ' {
                        out.push('_');
                    } else {
                        let _ = write!(out, "={b:02X}");
                    }
                }
                out.push_str(SUFFIX);
                out
            }
            Scheme::B => format!(
                "{B_PREFIX}{}{SUFFIX}",
                base64::engine::general_purpose::STANDARD.encode(s)
            ),
        }
    }
}

/// `text` as encoded-words of at most [`WORD`] characters each, split after
/// white space where possible, else between characters.
fn encoded_words(text: &str) -> Vec<String> {
    let scheme = if Scheme::Q.len(text) <= Scheme::B.len(text) {
        Scheme::Q
    } else {
        Scheme::B
    };
    // Units: a word with the white space that follows it.
    let mut units = Vec::new();
    let mut start = 0;
    let mut in_ws = false;
    for (i, c) in text.char_indices() {
        let ws = c == ' ' || c == '\t';
        if in_ws && !ws {
            units.push(&text[start..i]);
            start = i;
        }
        in_ws = ws;
    }
    units.push(&text[start..]);

    let mut out = Vec::new();
    let mut chunk = String::new();
    for unit in units {
        let mut candidate = chunk.clone();
        candidate.push_str(unit);
        if scheme.len(&candidate) <= WORD {
            chunk = candidate;
            continue;
        }
        if !chunk.is_empty() {
            out.push(scheme.encode(&chunk));
            chunk.clear();
        }
        if scheme.len(unit) <= WORD {
            chunk.push_str(unit);
            continue;
        }
        // One word longer than an encoded-word: split between characters.
        for c in unit.chars() {
            let mut candidate = chunk.clone();
            candidate.push(c);
            if scheme.len(&candidate) > WORD && !chunk.is_empty() {
                out.push(scheme.encode(&chunk));
                chunk.clear();
            }
            chunk.push(c);
        }
    }
    if !chunk.is_empty() {
        out.push(scheme.encode(&chunk));
    }
    out
}

/// Writes words and folds lines at white space.
struct Folder {
    out: String,
    line: usize,
    /// Nothing of the value written yet.
    empty: bool,
}

impl Folder {
    fn new(name: &str) -> Folder {
        Folder {
            out: String::new(),
            line: name.len() + 2,
            empty: true,
        }
    }

    /// `ws` then `word`, on a new line (starting with `ws`) if it does not fit.
    fn put(&mut self, ws: &str, word: &str) {
        if !self.empty && !ws.is_empty() && self.line + ws.len() + word.len() > LINE {
            self.out.push_str("\r\n");
            self.line = 0;
        }
        if !self.empty || !ws.is_empty() {
            self.out.push_str(ws);
            self.line += ws.len();
        }
        self.out.push_str(word);
        self.line += word.len();
        self.empty = false;
    }

    fn plain(&mut self, ws: &str, word: &str) {
        self.put(ws, word);
    }

    /// `text` as encoded-words after `ws`; the space between two of them is
    /// ignored by decoders (all of the text's own white space is inside).
    fn encoded(&mut self, ws: &str, text: &str) {
        for (n, w) in encoded_words(text).iter().enumerate() {
            self.put(if n == 0 { ws } else { " " }, w);
        }
    }

    fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small RFC 2047 decoder for the tests (the integration tests use
    /// mail-parser and Python's `email`).
    fn decode(v: &str) -> String {
        use base64::Engine as _;
        let unfolded = v.replace("\r\n", "");
        let mut out = String::new();
        let mut last_encoded = false;
        for (ws, word) in tokens(&unfolded) {
            let enc = word
                .strip_prefix("=?utf-8?")
                .and_then(|w| w.strip_suffix("?="));
            match enc {
                Some(e) => {
                    if !last_encoded {
                        out.push_str(ws);
                    }
                    let bytes = if let Some(q) = e.strip_prefix("q?") {
                        let mut b = Vec::new();
                        let q = q.as_bytes();
                        let mut i = 0;
                        while i < q.len() {
                            match q[i] {
                                b'_' => b.push(b' '),
                                b'=' => {
                                    let h = std::str::from_utf8(&q[i + 1..i + 3]).unwrap();
                                    b.push(u8::from_str_radix(h, 16).unwrap());
                                    i += 2;
                                }
                                c => b.push(c),
                            }
                            i += 1;
                        }
                        b
                    } else {
                        base64::engine::general_purpose::STANDARD
                            .decode(e.strip_prefix("b?").unwrap())
                            .unwrap()
                    };
                    // Each encoded-word must hold whole characters.
                    out.push_str(std::str::from_utf8(&bytes).expect("whole UTF-8 sequences"));
                    last_encoded = true;
                }
                None => {
                    out.push_str(ws);
                    out.push_str(word);
                    last_encoded = false;
                }
            }
        }
        out
    }

    #[test]
    fn spaces_between_encoded_words_survive() {
        // Issue #20 point 2: `Grüße  Köln` decoded as `GrüßeKöln`.
        for s in [
            "Grüße  Köln",
            "für  — Ausgabe 12",
            "für — Ausgabe",
            "News for Köln – Ausgabe 12",
            "a  b   ü",
            "ü\tä",
            "x\r\nBcc: evil@example.org",
            "😀 😀  😀",
            "plain ascii subject",
        ] {
            let enc = unstructured("Subject", s);
            assert_eq!(decode(&enc), s, "{enc}");
            assert!(
                enc.split("\r\n").all(|l| l.len() <= LINE),
                "line too long: {enc}"
            );
            assert!(!enc.contains('\n') || enc.contains("\r\n "), "{enc}");
        }
        // One encoded word, both spaces inside it.
        let enc = unstructured("Subject", "Grüße  Köln");
        assert!(!enc.contains(' '), "{enc}");
        assert_eq!(
            unstructured("Subject", "Köln ist schön"),
            "=?utf-8?b?S8O2bG4=?= ist =?utf-8?b?c2Now7Zu?="
        );
    }

    #[test]
    fn long_text_splits_between_words_and_whole_characters() {
        // Atoms of a long name stay plain; only the non-ASCII word is encoded.
        let name = "Maximiliane Friederike von und zu Hohenzollern-Sigmaringen Müller-Lüdenscheidt";
        let enc = mailbox("To", Some(name), "max@example.org");
        assert!(
            enc.starts_with("Maximiliane Friederike von und zu"),
            "{enc}"
        );
        assert_eq!(enc.matches("=?utf-8?").count(), 1, "{enc}");
        // A run of non-ASCII words longer than one encoded-word is split
        // after the white space that ends a word.
        let text = "Größenwahnsinnige Übermütigkeit gefährdet äußerst schöne Grünflächen überall";
        let enc = unstructured("Subject", text);
        let words: Vec<&str> = enc
            .split([' ', '\r', '\n'])
            .filter(|w| w.starts_with("=?"))
            .collect();
        assert!(words.len() > 1, "{enc}");
        for w in &words {
            assert!(w.len() <= WORD, "{w}");
        }
        for w in &words[..words.len() - 1] {
            let d = decode(w);
            assert!(d.ends_with(' '), "split inside a word: {d:?} in {enc}");
        }
        assert_eq!(decode(&enc), text);
        // One very long word of 4-byte characters: split between characters.
        let long = "😀".repeat(40);
        let enc = unstructured("Subject", &long);
        assert_eq!(decode(&enc), long);
        assert!(enc.split("\r\n").all(|l| l.trim_start().len() <= WORD));
    }

    #[test]
    fn ascii_names_are_quoted_when_needed() {
        assert_eq!(
            mailbox("To", Some("Anna"), "a@example.org"),
            "Anna <a@example.org>"
        );
        assert_eq!(
            mailbox("To", Some("Doe, John"), "a@example.org"),
            "\"Doe, John\" <a@example.org>"
        );
        assert_eq!(mailbox("To", None, "a@example.org"), "a@example.org");
        assert_eq!(mailbox("To", Some("  "), "a@example.org"), "a@example.org");
    }
}
