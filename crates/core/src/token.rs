//! Signed tokens: VERP return paths and unsubscribe/confirmation tokens.
//!
//! A token is `base32(payload ‖ tag)`, lower-case, without padding, where the
//! tag is HMAC-SHA256 over a purpose label and the payload, truncated to
//! [`TAG_LEN`] bytes. The label separates purposes: a VERP token can never be
//! replayed as an unsubscribe token. Lower-case base32 survives MTAs that
//! fold the case of local parts; decoding accepts either case.
//!
//! Verification is constant-time (`hmac`'s `verify_truncated_left`) and
//! accepts the current secret and, during a rotation, the previous one.
//!
//! A VERP address is `<prefix>-<token>@<bounce domain>` with a 16-byte
//! delivery id as payload: 45 token characters, so with the default prefix
//! `b` the local part is 47 octets (limit 64).

use crate::config::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// Bytes of HMAC-SHA256 kept in a token (96 bits).
pub const TAG_LEN: usize = 12;
/// Longest local part SMTP allows (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;

/// What a token is for; each purpose signs under its own label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The VERP return path of one delivery (payload: delivery id).
    Verp,
    /// `mailto:unsub-TOKEN@bounce-domain` (payload: delivery id).
    UnsubscribeMail,
    /// The one-click unsubscribe link (payload: subscriber id, list id, optional campaign id).
    UnsubscribeLink,
    /// A double opt-in confirmation link (payload: subscriber id, list id).
    Confirm,
    /// The re-subscribe link shown after an unsubscribe (payload: subscriber
    /// id, list id). Never sent by mail, only shown on the confirmation page.
    Resubscribe,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Verp => b"rundbrief/verp/v1",
            Purpose::UnsubscribeMail => b"rundbrief/unsub-mail/v1",
            Purpose::UnsubscribeLink => b"rundbrief/unsub-link/v1",
            Purpose::Confirm => b"rundbrief/confirm/v1",
            Purpose::Resubscribe => b"rundbrief/resubscribe/v1",
        }
    }
}

/// Why a token or address did not verify. None of these reveal which part of
/// the tag was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not base32, or not the length this purpose uses.
    #[error("malformed token")]
    Malformed,
    /// The tag does not match under the current or the previous secret.
    #[error("token signature does not verify")]
    BadSignature,
    /// The address is not at our bounce domain.
    #[error("`{0}` is not at the bounce domain")]
    WrongDomain(String),
    /// The local part does not start with the VERP prefix.
    #[error("`{0}` is not a VERP address")]
    NotVerp(String),
}

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies tokens under the configured secrets.
#[derive(Clone)]
pub struct Signer {
    current: Secret,
    previous: Option<Secret>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secrets redacted>)")
    }
}

impl Signer {
    pub fn new(current: Secret, previous: Option<Secret>) -> Self {
        Signer { current, previous }
    }

    fn mac(secret: &Secret, purpose: Purpose, payload: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.expose())
            .expect("HMAC accepts any key length");
        mac.update(purpose.label());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// The token for `payload`.
    pub fn sign(&self, purpose: Purpose, payload: &[u8]) -> String {
        let tag = Self::mac(&self.current, purpose, payload)
            .finalize()
            .into_bytes();
        let mut bytes = Vec::with_capacity(payload.len() + TAG_LEN);
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&tag[..TAG_LEN]);
        data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase()
    }

    /// The payload of a token that verifies, of exactly `payload_len` bytes.
    ///
    /// # Errors
    /// [`TokenError::Malformed`] or [`TokenError::BadSignature`].
    pub fn verify(
        &self,
        purpose: Purpose,
        token: &str,
        payload_len: usize,
    ) -> Result<Vec<u8>, TokenError> {
        let expected_chars = ((payload_len + TAG_LEN) * 8).div_ceil(5);
        if token.len() != expected_chars {
            return Err(TokenError::Malformed);
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(token.to_ascii_uppercase().as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() != payload_len + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = bytes.split_at(payload_len);
        let ok = |secret: &Secret| {
            Self::mac(secret, purpose, payload)
                .verify_truncated_left(tag)
                .is_ok()
        };
        if ok(&self.current) || self.previous.as_ref().is_some_and(ok) {
            Ok(payload.to_vec())
        } else {
            Err(TokenError::BadSignature)
        }
    }
}

/// VERP return paths: `<prefix>-<token>@<domain>`.
#[derive(Debug, Clone)]
pub struct Verp {
    signer: Signer,
    prefix: String,
    domain: String,
}

impl Verp {
    /// `prefix` (e.g. `b`) and `domain` (the bounce domain, e.g.
    /// `bounce.example.org`) are compared case-insensitively when decoding.
    pub fn new(signer: Signer, prefix: impl Into<String>, domain: impl Into<String>) -> Self {
        Verp {
            signer,
            prefix: prefix.into().to_ascii_lowercase(),
            domain: domain.into().to_ascii_lowercase(),
        }
    }

    /// The signer the codec uses (for the other token purposes at the same
    /// domain, such as `mailto:unsub-TOKEN@…`).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The bounce domain, lower-case.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The return path for one delivery.
    pub fn address(&self, delivery: Uuid) -> String {
        format!(
            "{}-{}@{}",
            self.prefix,
            self.signer.sign(Purpose::Verp, delivery.as_bytes()),
            self.domain
        )
    }

    /// The delivery named by a VERP address, if its token verifies.
    ///
    /// # Errors
    /// [`TokenError::WrongDomain`], [`TokenError::NotVerp`], [`TokenError::Malformed`],
    /// [`TokenError::BadSignature`].
    pub fn delivery(&self, address: &str) -> Result<Uuid, TokenError> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = address
            .rsplit_once('@')
            .ok_or_else(|| TokenError::NotVerp(address.to_string()))?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return Err(TokenError::WrongDomain(address.to_string()));
        }
        let token = local
            .split_once('-')
            .filter(|(p, _)| p.eq_ignore_ascii_case(&self.prefix))
            .map(|(_, t)| t)
            .ok_or_else(|| TokenError::NotVerp(address.to_string()))?;
        let payload = self.signer.verify(Purpose::Verp, token, 16)?;
        let bytes: [u8; 16] = payload.try_into().map_err(|_| TokenError::Malformed)?;
        Ok(Uuid::from_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(c: char) -> Secret {
        Secret::new(c.to_string().repeat(40))
    }

    fn verp() -> Verp {
        Verp::new(Signer::new(secret('a'), None), "b", "Bounce.Example.org")
    }

    #[test]
    fn verp_round_trip_fits_a_local_part() {
        let id = Uuid::now_v7();
        let addr = verp().address(id);
        let local = addr.split('@').next().unwrap();
        assert!(
            local.len() <= MAX_LOCAL_PART,
            "{local} is {} octets",
            local.len()
        );
        assert_eq!(local.len(), 47);
        assert!(addr.ends_with("@bounce.example.org"));
        assert!(
            local
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{local}"
        );
        assert_eq!(verp().delivery(&addr).unwrap(), id);
        // MTAs that upper-case local parts, angle brackets from the envelope.
        assert_eq!(
            verp()
                .delivery(&format!("<{}>", addr.to_uppercase()))
                .unwrap(),
            id
        );
    }

    #[test]
    fn verp_refuses_what_is_not_ours() {
        let id = Uuid::now_v7();
        let addr = verp().address(id);
        let other_domain = addr.replace("bounce.example.org", "example.net");
        assert!(matches!(
            verp().delivery(&other_domain),
            Err(TokenError::WrongDomain(_))
        ));
        assert!(matches!(
            verp().delivery("postmaster@bounce.example.org"),
            Err(TokenError::NotVerp(_))
        ));
        assert!(matches!(
            verp().delivery("x-abc@bounce.example.org"),
            Err(TokenError::NotVerp(_))
        ));
        assert!(matches!(
            verp().delivery("b-abc@bounce.example.org"),
            Err(TokenError::Malformed)
        ));
        let forged =
            Verp::new(Signer::new(secret('z'), None), "b", "bounce.example.org").address(id);
        assert_eq!(verp().delivery(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let signer = Signer::new(secret('a'), None);
        let payload = Uuid::now_v7();
        let token = signer.sign(Purpose::Verp, payload.as_bytes());
        let bytes = data_encoding::BASE32_NOPAD
            .decode(token.to_ascii_uppercase().as_bytes())
            .unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let t = data_encoding::BASE32_NOPAD.encode(&b).to_ascii_lowercase();
            assert!(
                signer.verify(Purpose::Verp, &t, 16).is_err(),
                "bit {bit} flipped still verifies"
            );
        }
    }

    #[test]
    fn purposes_do_not_mix_and_rotation_keeps_old_tokens() {
        let old = Signer::new(secret('a'), None);
        let rotated = Signer::new(secret('b'), Some(secret('a')));
        let id = Uuid::now_v7();
        let t = old.sign(Purpose::Verp, id.as_bytes());
        assert_eq!(
            rotated.verify(Purpose::Verp, &t, 16).unwrap(),
            id.as_bytes()
        );
        assert_eq!(
            rotated.verify(Purpose::UnsubscribeMail, &t, 16),
            Err(TokenError::BadSignature)
        );
        let after_rotation_dropped = Signer::new(secret('b'), None);
        assert_eq!(
            after_rotation_dropped.verify(Purpose::Verp, &t, 16),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            old.verify(Purpose::Verp, &t, 32),
            Err(TokenError::Malformed)
        );
        assert!(!format!("{rotated:?}").contains("aaaa"));
    }

    proptest! {
        #[test]
        fn round_trip(id in any::<[u8; 16]>(), key in "[a-zA-Z0-9]{32,64}") {
            let v = Verp::new(Signer::new(Secret::new(key), None), "b", "bounce.example.org");
            let uuid = Uuid::from_bytes(id);
            prop_assert_eq!(v.delivery(&v.address(uuid)).unwrap(), uuid);
        }

        #[test]
        fn arbitrary_input_never_panics_or_verifies(s in "\\PC{0,80}") {
            prop_assert!(verp().delivery(&s).is_err());
        }
    }
}
