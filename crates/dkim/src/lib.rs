//! DKIM for rundbrief: signs the finished bytes of a rendered message
//! (RFC 6376, `rsa-sha256` and `ed25519-sha256` of RFC 8463), derives the TXT
//! record an operator publishes for the key, and generates keys.
//!
//! **Owns:** loading the `[dkim]` private keys (the single key and every
//! `[[dkim.keys]]` entry; PEM: RSA as PKCS#1 or PKCS#8, Ed25519 as PKCS#8;
//! the algorithm follows from the key), signing with each (RSA + Ed25519
//! dual signatures), the list of signed and over-signed headers, the
//! `<selector>._domainkey.<domain>` records, and the pre-flight check on the
//! set of keys ([`warnings`]).
//!
//! **Never does:** DNS lookups, sending, rendering. The key file is read once,
//! in [`DkimSigner::from_config`]; signing is pure CPU work on bytes.
//!
//! **Why mail-auth and not lettre's `dkim` feature.** Our renderer produces the
//! complete RFC 5322 message as bytes, and lettre's `dkim_sign` only signs a
//! lettre `Message` it builds itself. mail-auth signs raw bytes, uses ring for
//! the cryptography (already linked for rustls, constant-time RSA; the `rsa`
//! crate that lettre would bring is only used here to *generate* RSA keys,
//! which ring cannot), and comes with the verifier our tests check signatures
//! with, so signer and verifier are independent of our own code. It lives in
//! its own crate so that `rundbrief-render` stays free of mail-auth's DNS
//! resolver dependencies.
//!
//! **Start at** [`DkimSigner::from_config`], then [`DkimSigner::sign`] per
//! message; [`DkimSigner::dns_records`] backs `rundbrief dns records` (one
//! record per key).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::Done;
use rundbrief_core::Config;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use std::fmt;
use std::path::{Path, PathBuf};

/// The headers we sign. Covers what a reader or a filter relies on: who sent
/// it, to whom, what about, when, the MIME structure, the list headers that
/// one-click unsubscribe (RFC 8058) requires to be signed, and `Feedback-ID`
/// (Gmail's feedback loop only trusts a signed one). `Reply-To` is signed
/// too, so nobody can redirect replies to a signed message.
///
/// mail-auth puts every instance of a listed header into `h=`, and a listed
/// name it did not find (or a second listing of one it found once) once more:
/// that "over-signs" it (RFC 6376 §8.15), so a header added to the message
/// later (a second `From:`, a `Subject:` or a `List-Unsubscribe:` of a
/// spammer's choosing) breaks the signature. The headers readers and
/// unsubscribe logic act on are listed twice for that reason; the others
/// are over-signed only when absent.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    // Over-signed: one more listing than they occur.
    "From",
    "Subject",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Bits of the RSA keys `rundbrief dkim keygen` writes: the size the large
/// mailbox providers ask for; longer keys need TXT records split in more parts.
pub const RSA_KEYGEN_BITS: usize = 2048;

/// What went wrong with DKIM: configuration, the key file, or signing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DkimError {
    /// Some but not all of `dkim.key_file`, `dkim.selector`, `dkim.domain` are set.
    #[error(
        "`{key}` is not set: DKIM signing needs dkim.key_file, dkim.selector and dkim.domain \
         (set it in rundbrief.toml or RUNDBRIEF_{env})"
    )]
    Incomplete {
        /// The missing key.
        key: &'static str,
        /// Its environment variable, without the prefix.
        env: &'static str,
    },
    /// The key file could not be read.
    #[error("cannot read the DKIM key file {}: {source}", path.display())]
    ReadKey {
        /// The file named by `dkim.key_file`.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file was read but holds no key we can sign with.
    #[error(
        "{} is not a usable DKIM private key: {reason}. Expected a PEM RSA key (2048 bits or more, \
         PKCS#1 or PKCS#8) or an Ed25519 key (PKCS#8); `rundbrief dkim keygen --out FILE` writes one",
        path.display()
    )]
    InvalidKey {
        /// The file named by `dkim.key_file`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The message could not be signed (for example it has no `From:` header).
    #[error("DKIM signing failed: {0}")]
    Sign(String),
    /// A new key could not be generated.
    #[error("generating a DKIM key failed: {0}")]
    Generate(String),
}

/// The key's algorithm, inferred from the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `rsa-sha256`: what every receiver verifies.
    Rsa,
    /// `ed25519-sha256` (RFC 8463): short keys, but not every receiver checks
    /// it yet, so it is best published next to an RSA selector.
    Ed25519,
}

impl Algorithm {
    /// The `k=` tag of the DNS record.
    pub fn dns_tag(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dns_tag())
    }
}

/// The TXT record that publishes a signer's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimRecord {
    /// `<selector>._domainkey.<domain>`
    pub name: String,
    /// `v=DKIM1; k=rsa|ed25519; p=<base64>`, unsplit. An RSA-2048 value is
    /// longer than 255 characters: DNS hosts that ask for one string per
    /// 255 characters get it split with [`DkimRecord::value_split`].
    pub value: String,
}

impl DkimRecord {
    /// The value as zone-file strings of at most 255 characters each, quoted
    /// and separated by spaces: `"v=DKIM1; k=rsa; p=MIIB…" "…IDAQAB"`.
    pub fn value_split(&self) -> String {
        let bytes = self.value.as_bytes();
        bytes
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Signs messages with every configured key (`[dkim]` and
/// `[[dkim.keys]]`), so a message can carry an RSA and an Ed25519 signature.
/// Cheap to share between send workers behind an `Arc` (it is `Send + Sync`).
/// The accessors without a key index ([`DkimSigner::algorithm`],
/// [`DkimSigner::dns_record`], …) describe the first key; [`DkimSigner::keys`]
/// gives each.
#[derive(Debug)]
pub struct DkimSigner {
    keys: Vec<KeySigner>,
}

/// Signs with one key, for one selector and domain.
pub struct KeySigner {
    inner: mail_auth::dkim::DkimSigner<DkimKey, Done>,
    algorithm: Algorithm,
    /// Public key bytes as published in `p=`: SubjectPublicKeyInfo DER for
    /// RSA (what OpenSSL-based verifiers expect), the raw 32 bytes for Ed25519.
    public_key: Vec<u8>,
    selector: String,
    domain: String,
    key_file: PathBuf,
}

impl fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("KeySigner")
            .field("algorithm", &self.algorithm)
            .field("selector", &self.selector)
            .field("domain", &self.domain)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl DkimSigner {
    /// The signer for `[dkim]` with every key it names, or `None` when it
    /// names none.
    ///
    /// # Errors
    /// [`DkimError::Incomplete`] when only some keys of the single form are
    /// set, [`DkimError::ReadKey`] / [`DkimError::InvalidKey`] naming the key file.
    pub fn from_config(cfg: &Config) -> Result<Option<DkimSigner>, DkimError> {
        let d = &cfg.dkim;
        if !d.is_configured() {
            return Ok(None);
        }
        if d.key_file.is_some() || d.selector.is_some() || d.domain.is_some() {
            d.key_file.as_deref().ok_or(DkimError::Incomplete {
                key: "dkim.key_file",
                env: "DKIM__KEY_FILE",
            })?;
            d.selector.as_deref().ok_or(DkimError::Incomplete {
                key: "dkim.selector",
                env: "DKIM__SELECTOR",
            })?;
            d.domain.as_deref().ok_or(DkimError::Incomplete {
                key: "dkim.domain",
                env: "DKIM__DOMAIN",
            })?;
        }
        let keys = d
            .all_keys()
            .iter()
            .map(|k| KeySigner::from_file(&k.key_file, &k.selector, &k.domain))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(DkimSigner { keys }))
    }

    /// A signer with one key from a PEM key file.
    ///
    /// # Errors
    /// [`DkimError::ReadKey`] or [`DkimError::InvalidKey`], naming `path`.
    pub fn from_file(path: &Path, selector: &str, domain: &str) -> Result<DkimSigner, DkimError> {
        KeySigner::from_file(path, selector, domain).map(DkimSigner::from)
    }

    /// A signer with one key from PEM bytes; `path` only names the key in errors.
    ///
    /// # Errors
    /// [`DkimError::InvalidKey`].
    pub fn from_pem(
        pem: &[u8],
        path: &Path,
        selector: &str,
        domain: &str,
    ) -> Result<DkimSigner, DkimError> {
        KeySigner::from_pem(pem, path, selector, domain).map(DkimSigner::from)
    }

    /// A signer with several keys, which sign in this order.
    ///
    /// # Panics
    /// Never; an empty list gives a signer that adds no signature.
    #[must_use]
    pub fn from_keys(keys: Vec<KeySigner>) -> DkimSigner {
        DkimSigner { keys }
    }

    /// Each key, in signing order.
    pub fn keys(&self) -> &[KeySigner] {
        &self.keys
    }

    /// The message with one `DKIM-Signature:` header per key prepended (the
    /// first key's on top). See [`KeySigner::sign`].
    ///
    /// # Errors
    /// [`DkimError::Sign`] when a key cannot sign.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let header = self.signature_header(message)?;
        let mut out = Vec::with_capacity(header.len() + message.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(message);
        Ok(out)
    }

    /// Only the `DKIM-Signature: …\r\n` headers, for a caller that writes
    /// header and message separately. Each signature covers the message
    /// alone, not the other signatures.
    ///
    /// # Errors
    /// As [`DkimSigner::sign`].
    pub fn signature_header(&self, message: &[u8]) -> Result<String, DkimError> {
        let mut out = String::new();
        for k in &self.keys {
            out.push_str(&k.signature_header(message)?);
        }
        Ok(out)
    }

    /// The TXT record of every key, in order.
    pub fn dns_records(&self) -> Vec<DkimRecord> {
        self.keys.iter().map(KeySigner::dns_record).collect()
    }

    fn first(&self) -> Option<&KeySigner> {
        self.keys.first()
    }

    /// The first key's TXT record (see [`DkimSigner::dns_records`]).
    ///
    /// # Panics
    /// If the signer was built with [`DkimSigner::from_keys`] and no keys.
    pub fn dns_record(&self) -> DkimRecord {
        self.first()
            .expect("a configured signer has a key")
            .dns_record()
    }

    /// The first key's algorithm.
    ///
    /// # Panics
    /// As [`DkimSigner::dns_record`].
    pub fn algorithm(&self) -> Algorithm {
        self.first()
            .expect("a configured signer has a key")
            .algorithm
    }

    /// The first key's signing domain (`d=`).
    ///
    /// # Panics
    /// As [`DkimSigner::dns_record`].
    pub fn domain(&self) -> &str {
        &self.first().expect("a configured signer has a key").domain
    }

    /// The first key's selector (`s=`).
    ///
    /// # Panics
    /// As [`DkimSigner::dns_record`].
    pub fn selector(&self) -> &str {
        &self
            .first()
            .expect("a configured signer has a key")
            .selector
    }

    /// The first key's file.
    ///
    /// # Panics
    /// As [`DkimSigner::dns_record`].
    pub fn key_file(&self) -> &Path {
        &self
            .first()
            .expect("a configured signer has a key")
            .key_file
    }

    /// Pre-flight warnings about the set of keys, each saying what to do.
    /// Pure: see [`warnings`].
    pub fn warnings(&self) -> Vec<String> {
        warnings(&self.keys.iter().map(|k| k.algorithm).collect::<Vec<_>>())
    }
}

impl From<KeySigner> for DkimSigner {
    fn from(k: KeySigner) -> DkimSigner {
        DkimSigner { keys: vec![k] }
    }
}

/// Pre-flight warnings for a set of signing keys given by their algorithms
/// (in configuration order), each saying what to do. Empty when fine.
///
/// - Only Ed25519 keys: many receivers cannot verify `ed25519-sha256`
///   (SpamAssassin's Mail::DKIM reports "unsupported algorithm", and so do
///   several large providers), so to them the mail is unsigned. RFC 8463
///   recommends signing with RSA as well.
#[must_use]
pub fn warnings(algorithms: &[Algorithm]) -> Vec<String> {
    let mut out = Vec::new();
    if !algorithms.is_empty() && algorithms.iter().all(|a| *a == Algorithm::Ed25519) {
        out.push(
            "every DKIM key is Ed25519: many receivers (SpamAssassin, several large mailbox \
             providers) cannot verify ed25519-sha256 and treat the mail as unsigned. Add an RSA \
             key as well (`rundbrief dkim keygen --out dkim-rsa.pem`, then a [[dkim.keys]] entry \
             with its own selector) so every message is signed with both"
                .to_owned(),
        );
    }
    out
}

impl KeySigner {
    /// A signer from a PEM key file.
    ///
    /// # Errors
    /// [`DkimError::ReadKey`] or [`DkimError::InvalidKey`], naming `path`.
    pub fn from_file(path: &Path, selector: &str, domain: &str) -> Result<KeySigner, DkimError> {
        let pem = std::fs::read(path).map_err(|source| DkimError::ReadKey {
            path: path.to_owned(),
            source,
        })?;
        KeySigner::from_pem(&pem, path, selector, domain)
    }

    /// A signer from PEM bytes; `path` only names the key in errors.
    ///
    /// # Errors
    /// [`DkimError::InvalidKey`].
    pub fn from_pem(
        pem: &[u8],
        path: &Path,
        selector: &str,
        domain: &str,
    ) -> Result<KeySigner, DkimError> {
        let invalid = |reason: String| DkimError::InvalidKey {
            path: path.to_owned(),
            reason,
        };
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            invalid(match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    if String::from_utf8_lossy(pem).contains("ENCRYPTED PRIVATE KEY") {
                        "the key is encrypted; store it without a passphrase \
                         (and readable by rundbrief only)"
                            .into()
                    } else {
                        "no PEM private key found in the file".into()
                    }
                }
                other => format!("bad PEM: {other}"),
            })
        })?;
        let (key, algorithm, public_key) = match der {
            PrivateKeyDer::Pkcs8(p8) if is_ed25519_pkcs8(p8.secret_pkcs8_der()) => {
                let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
                    .map_err(|e| invalid(format!("bad Ed25519 key: {e}")))?;
                let public = key.public_key();
                (DkimKey::Ed25519(key), Algorithm::Ed25519, public)
            }
            der @ (PrivateKeyDer::Pkcs1(_) | PrivateKeyDer::Pkcs8(_)) => {
                let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| {
                    invalid(format!(
                        "bad RSA key ({}; keys shorter than 2048 bits are refused)",
                        crypto_reason(&e)
                    ))
                })?;
                let public = rsa_spki(&key.public_key());
                (DkimKey::Rsa(key), Algorithm::Rsa, public)
            }
            PrivateKeyDer::Sec1(_) => {
                return Err(invalid(
                    "it is an EC (ECDSA) key, which DKIM does not define".into(),
                ));
            }
            _ => return Err(invalid("unsupported key type".into())),
        };
        let inner = mail_auth::dkim::DkimSigner::from_key(key)
            .domain(domain)
            .selector(selector)
            .headers(SIGNED_HEADERS.iter().copied());
        Ok(KeySigner {
            inner,
            algorithm,
            public_key,
            selector: selector.to_owned(),
            domain: domain.to_owned(),
            key_file: path.to_owned(),
        })
    }

    /// The message with a `DKIM-Signature:` header prepended. Canonicalization
    /// is relaxed/relaxed, which survives the header refolding and trailing
    /// whitespace changes relays make. The message must be complete: signing
    /// happens after rendering and before anything else touches it.
    ///
    /// # Errors
    /// [`DkimError::Sign`] when the message has none of the signed headers
    /// or the cryptography fails.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        let header = self.signature_header(message)?;
        let mut out = Vec::with_capacity(header.len() + message.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(message);
        Ok(out)
    }

    /// Only the `DKIM-Signature: …\r\n` header line(s), for a caller that
    /// writes header and message separately.
    ///
    /// # Errors
    /// As [`DkimSigner::sign`].
    pub fn signature_header(&self, message: &[u8]) -> Result<String, DkimError> {
        let sig = self
            .inner
            .sign(message)
            .map_err(|e| DkimError::Sign(e.to_string()))?;
        Ok(sig.to_header())
    }

    /// The TXT record to publish for this key.
    pub fn dns_record(&self) -> DkimRecord {
        DkimRecord {
            name: format!("{}._domainkey.{}", self.selector, self.domain),
            value: format!(
                "v=DKIM1; k={}; p={}",
                self.algorithm.dns_tag(),
                B64.encode(&self.public_key)
            ),
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The key file the signer was loaded from.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
}

/// A new private key as PEM: RSA-2048 as PKCS#1 (`BEGIN RSA PRIVATE KEY`),
/// Ed25519 as PKCS#8 (`BEGIN PRIVATE KEY`). Both load with
/// [`DkimSigner::from_pem`].
///
/// # Errors
/// [`DkimError::Generate`] when the system has no randomness or the library fails.
pub fn generate_key(algorithm: Algorithm) -> Result<String, DkimError> {
    use mail_auth::dkim::generate::DkimKeyPair;
    let gen_err = |e: mail_auth::Error| DkimError::Generate(e.to_string());
    let (label, der) = match algorithm {
        Algorithm::Rsa => (
            "RSA PRIVATE KEY",
            DkimKeyPair::generate_rsa(RSA_KEYGEN_BITS).map_err(gen_err)?,
        ),
        Algorithm::Ed25519 => (
            "PRIVATE KEY",
            DkimKeyPair::generate_ed25519().map_err(gen_err)?,
        ),
    };
    Ok(pem(label, der.private_key()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn crypto_reason(e: &mail_auth::Error) -> String {
    match e {
        mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(s)) => s.clone(),
        other => other.to_string(),
    }
}

/// The DER of the Ed25519 algorithm identifier (OID 1.3.101.112), which sits
/// at the start of an Ed25519 PKCS#8 key.
const ED25519_ALG_ID: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

fn is_ed25519_pkcs8(der: &[u8]) -> bool {
    // SEQUENCE { INTEGER version, AlgorithmIdentifier, … }: the identifier
    // comes within the first 16 bytes.
    der.get(..24)
        .unwrap_or(der)
        .windows(ED25519_ALG_ID.len())
        .any(|w| w == ED25519_ALG_ID)
}

/// Wraps a PKCS#1 `RSAPublicKey` in a SubjectPublicKeyInfo, the form
/// `openssl rsa -pubout` prints and that every verifier accepts in `p=`.
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    const RSA_ALG_ID: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_len(&mut bit_string, rsa_public_key.len() + 1);
    bit_string.push(0); // no unused bits
    bit_string.extend_from_slice(rsa_public_key);
    let mut out = vec![0x30];
    der_len(&mut out, RSA_ALG_ID.len() + bit_string.len());
    out.extend_from_slice(&RSA_ALG_ID);
    out.extend_from_slice(&bit_string);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signer_can_be_shared_between_send_workers() {
        fn shared<T: Send + Sync>() {}
        shared::<DkimSigner>();
    }

    #[test]
    fn der_lengths() {
        for (len, want) in [
            (5usize, vec![5u8]),
            (0x7f, vec![0x7f]),
            (0x80, vec![0x81, 0x80]),
            (270, vec![0x82, 0x01, 0x0e]),
        ] {
            let mut out = Vec::new();
            der_len(&mut out, len);
            assert_eq!(out, want, "length {len}");
        }
    }

    #[test]
    fn ed25519_keys_are_recognised_and_split_records_stay_short() {
        let pem = generate_key(Algorithm::Ed25519).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let s =
            DkimSigner::from_pem(pem.as_bytes(), Path::new("k.pem"), "s1", "example.org").unwrap();
        assert_eq!(s.algorithm(), Algorithm::Ed25519);
        let rec = s.dns_record();
        assert_eq!(rec.name, "s1._domainkey.example.org");
        assert!(
            rec.value.starts_with("v=DKIM1; k=ed25519; p="),
            "{}",
            rec.value
        );
        assert_eq!(rec.value_split(), format!("\"{}\"", rec.value));
        assert!(!format!("{s:?}").contains("BEGIN"));
    }

    #[test]
    fn garbage_and_ec_keys_are_refused_with_the_file_name() {
        let ec = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBYr\n-----END EC PRIVATE KEY-----\n";
        for (pem, want) in [
            (&b"hello"[..], "no PEM private key"),
            (
                &b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"[..],
                "encrypted",
            ),
            (&ec[..], "EC"),
            (
                &b"-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n"[..],
                "bad RSA key",
            ),
        ] {
            let err = DkimSigner::from_pem(pem, Path::new("/etc/dkim.pem"), "s", "example.org")
                .unwrap_err()
                .to_string();
            assert!(err.contains("/etc/dkim.pem") && err.contains(want), "{err}");
        }
    }
}
