//! The id a list carries in `List-Id` headers (RFC 2919).
//!
//! `List-Id: Team News <team-news.example.org>`: the part before the domain
//! is the list's *label*. RFC 2919 makes the whole id a `dot-atom-text`;
//! we allow the conservative subset every filter and mail client handles:
//! lower-case ASCII letters, digits, `-` and `_`, in parts separated by
//! single dots. A list gets its label when it is created, derived from its
//! name when the name allows it (`Team News` → `team-news`) or given
//! explicitly (`list create bücher --label buecher`).

use serde::Serialize;
use std::fmt;

/// Longest label: the List-Id must stay well inside a header line, and the
/// domain follows it.
pub const MAX_LABEL_LEN: usize = 64;

/// A validated list label. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ListLabel(String);

/// Why a string is not a list label, or a name gives none; the message says
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListLabelError {
    /// The label given is not one.
    #[error(
        "`{value}` cannot be a List-Id label: {reason}. Use lower-case ASCII letters, digits, \
         '-' and '_', optionally in parts separated by single dots (e.g. team-news), at most \
         {MAX_LABEL_LEN} characters"
    )]
    Invalid {
        /// The label as given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No label can be derived from the list's name.
    #[error(
        "the list name `{name}` cannot be turned into a List-Id label ({reason}): mail to this \
         list needs one (RFC 2919 allows only ASCII there). Give one with --label, e.g. \
         `rundbrief list create \"{name}\" --label {suggestion}`"
    )]
    Underivable {
        /// The list's name.
        name: String,
        /// Why not.
        reason: &'static str,
        /// An example label to offer.
        suggestion: String,
    },
}

impl ListLabel {
    /// Checks `value` as a label.
    ///
    /// # Errors
    /// [`ListLabelError::Invalid`] saying what is wrong.
    pub fn parse(value: &str) -> Result<ListLabel, ListLabelError> {
        let bad = |reason| {
            Err(ListLabelError::Invalid {
                value: value.to_owned(),
                reason,
            })
        };
        if value.is_empty() {
            return bad("it is empty");
        }
        if value.len() > MAX_LABEL_LEN {
            return bad("it is too long");
        }
        if value.bytes().any(|b| b.is_ascii_uppercase()) {
            return bad("it has upper-case letters");
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        {
            return bad("it has characters other than a-z, 0-9, '-', '_' and '.'");
        }
        if value.split('.').any(str::is_empty) {
            return bad("a dot starts or ends it, or two dots follow each other");
        }
        Ok(ListLabel(value.to_owned()))
    }

    /// The label for a list called `name`: lower-cased, each run of spaces
    /// and punctuation turned into one `-`, trimmed of `-` at both ends.
    ///
    /// # Errors
    /// [`ListLabelError::Underivable`] when the name has letters outside
    /// ASCII (a guess such as `bücher` → `bucher` would put a word the
    /// operator never chose into every header) or nothing usable at all.
    pub fn derive(name: &str) -> Result<ListLabel, ListLabelError> {
        let suggestion = || {
            let s = ascii_suggestion(name);
            if s.is_empty() { "news".to_owned() } else { s }
        };
        if !name.is_ascii() {
            return Err(ListLabelError::Underivable {
                name: name.to_owned(),
                reason: "it has characters outside ASCII",
                suggestion: suggestion(),
            });
        }
        let mut out = String::with_capacity(name.len());
        let mut dash = false;
        for c in name.trim().chars() {
            if c.is_ascii_alphanumeric() || c == '_' {
                if dash && !out.is_empty() {
                    out.push('-');
                }
                dash = false;
                out.push(c.to_ascii_lowercase());
            } else {
                dash = true;
            }
        }
        out.truncate(MAX_LABEL_LEN);
        let out = out.trim_end_matches('-');
        if out.is_empty() {
            return Err(ListLabelError::Underivable {
                name: name.to_owned(),
                reason: "it has no letters or digits",
                suggestion: suggestion(),
            });
        }
        ListLabel::parse(out).map_err(|_| ListLabelError::Underivable {
            name: name.to_owned(),
            reason: "it gives no valid label",
            suggestion: suggestion(),
        })
    }

    /// The label as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full List-Id for mail from `domain`: `label.domain`.
    #[must_use]
    pub fn list_id(&self, domain: &str) -> String {
        format!("{}.{}", self.0, domain.trim_end_matches('.'))
    }
}

/// German umlauts and ß the usual way, other letters without their marks
/// where Unicode's Latin-1 range gives an obvious base letter; the rest
/// dropped. Only to suggest a label in an error message.
fn ascii_suggestion(name: &str) -> String {
    let mut s = String::new();
    for c in name.to_lowercase().chars() {
        match c {
            'ä' => s.push_str("ae"),
            'ö' => s.push_str("oe"),
            'ü' => s.push_str("ue"),
            'ß' => s.push_str("ss"),
            'à'..='å' => s.push('a'),
            'è'..='ë' => s.push('e'),
            'ì'..='ï' => s.push('i'),
            'ò'..='õ' | 'ø' => s.push('o'),
            'ù'..='û' => s.push('u'),
            'ç' => s.push('c'),
            'ñ' => s.push('n'),
            c if c.is_ascii_alphanumeric() => s.push(c),
            c if c.is_ascii() && !s.ends_with('-') && !s.is_empty() => s.push('-'),
            _ => {}
        }
    }
    s.trim_matches('-').chars().take(MAX_LABEL_LEN).collect()
}

impl fmt::Display for ListLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ListLabel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_derive_from_names_or_say_what_to_do() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("news", Ok("news")),
            ("Team News", Ok("team-news")),
            ("  Tom & Jerry's <news>  ", Ok("tom-jerry-s-news")),
            ("weekly_digest 2026", Ok("weekly_digest-2026")),
            ("bücher", Err("--label buecher")),
            ("Ça va", Err("--label ca-va")),
            ("日本", Err("--label news")),
            ("!!!", Err("no letters or digits")),
        ];
        for (name, want) in cases {
            match (ListLabel::derive(name), want) {
                (Ok(l), Ok(w)) => assert_eq!(l.as_str(), *w, "{name}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
        let long = "x".repeat(100);
        assert_eq!(
            ListLabel::derive(&long).map(|l| l.0.len()),
            Ok(MAX_LABEL_LEN)
        );
    }

    #[test]
    fn labels_are_checked() {
        for ok in ["news", "team-news", "a.b", "x_1"] {
            assert!(ListLabel::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "News",
            "team news",
            "a..b",
            ".a",
            "a.",
            "bücher",
            &"x".repeat(65),
        ] {
            assert!(ListLabel::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ListLabel::parse("team-news").map(|l| l.list_id("example.org")),
            Ok("team-news.example.org".to_owned())
        );
    }
}
