//! E-mail addresses: validated with a real parser, normalised once.
//!
//! Normal form: the local part exactly as given (RFC 5321 says only the
//! receiving host may interpret its case), the domain lower-cased and
//! IDNA-encoded (`Bücher.example` → `xn--bcher-kva.example`). Two addresses
//! are the same subscriber when their [`Address::key`] (the whole normal form
//! lower-cased) is equal, so `Anna@Example.org` and `anna@example.org` are one
//! person.

use std::fmt;

/// Longest address we accept, in octets (RFC 5321 path limit minus the brackets).
pub const MAX_ADDRESS_LEN: usize = 254;
/// Longest local part we accept, in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_LEN: usize = 64;

/// Why an address was refused. The message says what was wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Nothing was given.
    #[error("the address is empty")]
    Empty,
    /// A control character (CR, LF, NUL, TAB…) can never be part of an address and
    /// is how header injection is attempted.
    #[error("`{input}` contains a control character (CR, LF, NUL or similar)")]
    ControlCharacter { input: String },
    /// Something like `Anna <anna@example.org>` was given where only the address belongs.
    #[error(
        "`{input}` is not a bare address: give only `local@domain`, without a display name or angle brackets"
    )]
    DisplayName { input: String },
    /// There is no `@` separating local part and domain.
    #[error("`{input}` has no `@`: an address looks like `name@example.org`")]
    NoAt { input: String },
    /// The domain could not be IDNA-encoded.
    #[error("the domain of `{input}` is not a valid domain name ({reason})")]
    Domain { input: String, reason: String },
    /// The address is longer than the SMTP limits allow.
    #[error("`{input}` is too long ({len} octets; the limit is {limit})")]
    TooLong {
        input: String,
        len: usize,
        limit: usize,
    },
    /// The parser refused the address.
    #[error("`{input}` is not a valid address: {reason}")]
    Invalid { input: String, reason: String },
}

/// A validated, normalised e-mail address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    full: String,
    at: usize,
}

impl Address {
    /// Validates `input` (surrounding whitespace is ignored) and returns it in
    /// normal form.
    ///
    /// # Errors
    /// [`AddressError`] naming what is wrong; nothing is guessed or repaired
    /// beyond trimming whitespace and lower-casing/IDNA-encoding the domain.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(AddressError::Empty);
        }
        let owned = || trimmed.to_string();
        if trimmed.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter { input: owned() });
        }
        if trimmed.contains('<') || trimmed.contains('>') {
            return Err(AddressError::DisplayName { input: owned() });
        }
        let at = trimmed
            .rfind('@')
            .ok_or_else(|| AddressError::NoAt { input: owned() })?;
        let (local, domain) = (&trimmed[..at], &trimmed[at + 1..]);
        if local.len() > MAX_LOCAL_LEN {
            return Err(AddressError::TooLong {
                input: owned(),
                len: local.len(),
                limit: MAX_LOCAL_LEN,
            });
        }
        let ascii_domain = if domain.is_ascii() {
            domain.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(domain).map_err(|e| AddressError::Domain {
                input: owned(),
                reason: format!("{e:?}"),
            })?
        };
        let full = format!("{local}@{ascii_domain}");
        if full.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong {
                input: owned(),
                len: full.len(),
                limit: MAX_ADDRESS_LEN,
            });
        }
        let opts = email_address::Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
        };
        email_address::EmailAddress::parse_with_options(&full, opts).map_err(|e| {
            AddressError::Invalid {
                input: owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(Address {
            at: local.len(),
            full,
        })
    }

    /// The normal form, `local@domain`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The local part, as given.
    pub fn local(&self) -> &str {
        &self.full[..self.at]
    }

    /// The domain, lower-case ASCII (IDNA).
    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..]
    }

    /// The uniqueness key: the normal form lower-cased. Two subscribers never
    /// share a key.
    pub fn key(&self) -> String {
        self.full.to_lowercase()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.full)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

/// The address inside a mailbox value such as a `From:` setting:
/// `news@example.org` or `"Name" <news@example.org>` (the part between the
/// last `<` and `>` when there are both). The one place rundbrief reads the
/// domain of a configured From.
///
/// # Errors
/// The part that should be an address is not one.
pub fn mailbox_address(mailbox: &str) -> Result<Address, AddressError> {
    let addr = match (mailbox.rfind('<'), mailbox.rfind('>')) {
        (Some(l), Some(r)) if l < r => &mailbox[l + 1..r],
        _ => mailbox,
    };
    Address::parse(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_domain_keeps_local_part() {
        let cases = [
            (
                "Anna.Smith@Example.ORG",
                "Anna.Smith@example.org",
                "anna.smith@example.org",
            ),
            ("  bob@example.org \t", "bob@example.org", "bob@example.org"),
            (
                "info@Bücher.example",
                "info@xn--bcher-kva.example",
                "info@xn--bcher-kva.example",
            ),
            (
                "x+tag@sub.example.co.uk",
                "x+tag@sub.example.co.uk",
                "x+tag@sub.example.co.uk",
            ),
        ];
        for (input, normal, key) in cases {
            let a = Address::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(a.as_str(), normal, "{input}");
            assert_eq!(a.key(), key, "{input}");
        }
        let a = Address::parse("Anna@Example.org").unwrap();
        assert_eq!((a.local(), a.domain()), ("Anna", "example.org"));
    }

    type Check = fn(&AddressError) -> bool;

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let cases: [(&str, Check); 9] = [
            ("", |e| matches!(e, AddressError::Empty)),
            ("   ", |e| matches!(e, AddressError::Empty)),
            ("no-at-sign.example.org", |e| {
                matches!(e, AddressError::NoAt { .. })
            }),
            ("a@b", |e| matches!(e, AddressError::Invalid { .. })),
            ("two@@example.org", |e| {
                matches!(e, AddressError::Invalid { .. })
            }),
            ("x\r\nBcc: victim@example.org", |e| {
                matches!(e, AddressError::ControlCharacter { .. })
            }),
            ("nul\0@example.org", |e| {
                matches!(e, AddressError::ControlCharacter { .. })
            }),
            ("Anna <anna@example.org>", |e| {
                matches!(e, AddressError::DisplayName { .. })
            }),
            ("spaces in@example.org", |e| {
                matches!(e, AddressError::Invalid { .. })
            }),
        ];
        for (input, want) in cases {
            let err = Address::parse(input).expect_err(input);
            assert!(want(&err), "{input:?} gave {err:?}");
            assert!(!err.to_string().is_empty());
        }
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert!(matches!(
            Address::parse(&long_local),
            Err(AddressError::TooLong { .. })
        ));
    }

    #[test]
    fn mailbox_address_reads_the_address_of_a_from_value() {
        for (input, domain) in [
            ("news@Example.ORG", "example.org"),
            (
                "\"News, weekly\" <news@news.example.org>",
                "news.example.org",
            ),
            ("Rundbrief <a@b.example>", "b.example"),
        ] {
            assert_eq!(mailbox_address(input).unwrap().domain(), domain, "{input}");
        }
        assert!(mailbox_address("Rundbrief <>").is_err());
        assert!(mailbox_address("no address").is_err());
    }
}
