//! The links rundbrief puts into mail and reads back: one place for their
//! format, used by the renderer's caller (building), the HTTP endpoint
//! (`/u/`, `/r/`, `/c/`) and the bounce endpoint (`mailto:unsub-…`).
//!
//! | link | token purpose | payload |
//! |---|---|---|
//! | `PUBLIC_URL/u/TOKEN` (one-click unsubscribe, RFC 8058) | [`Purpose::UnsubscribeLink`] | subscriber id ‖ list id (‖ campaign id, accepted) |
//! | `mailto:unsub-TOKEN@BOUNCE_DOMAIN` (List-Unsubscribe mailto) | [`Purpose::UnsubscribeMail`] | delivery id |
//! | `PUBLIC_URL/c/TOKEN` (double opt-in confirmation) | [`Purpose::Confirm`] | subscriber id ‖ list id |
//! | `/r/TOKEN` (re-subscribe, shown on a page, never mailed) | [`Purpose::Resubscribe`] | subscriber id ‖ list id |
//!
//! Every token is signed ([`Signer`]); verification is constant-time and a
//! token of one purpose never verifies as another.

use crate::token::{Purpose, Signer};
use uuid::Uuid;

/// Local-part prefix of the `mailto:` unsubscribe address.
pub const UNSUB_MAIL_PREFIX: &str = "unsub-";

/// The 32-byte payload naming one membership: subscriber id ‖ list id.
pub fn member_payload(subscriber: Uuid, list: Uuid) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..16].copy_from_slice(subscriber.as_bytes());
    p[16..].copy_from_slice(list.as_bytes());
    p
}

/// A membership token for `purpose` (unsubscribe link, confirm, re-subscribe).
pub fn member_token(signer: &Signer, purpose: Purpose, subscriber: Uuid, list: Uuid) -> String {
    signer.sign(purpose, &member_payload(subscriber, list))
}

/// The ids in a verified membership token: subscriber, list and (48-byte
/// unsubscribe links only) the campaign it came with. `None` when it does
/// not verify for `purpose`.
pub fn verify_member_token(
    signer: &Signer,
    purpose: Purpose,
    token: &str,
) -> Option<(Uuid, Uuid, Option<Uuid>)> {
    let lens: &[usize] = if purpose == Purpose::UnsubscribeLink {
        &[32, 48]
    } else {
        &[32]
    };
    lens.iter().find_map(|&len| {
        let p = signer.verify(purpose, token, len).ok()?;
        let id = |i: usize| Uuid::from_slice(&p[i * 16..(i + 1) * 16]).ok();
        Some((id(0)?, id(1)?, if len == 48 { id(2) } else { None }))
    })
}

/// `PUBLIC_URL/u/TOKEN`: the one-click unsubscribe link of one membership.
pub fn unsubscribe_url(signer: &Signer, public_url: &str, subscriber: Uuid, list: Uuid) -> String {
    format!(
        "{}/u/{}",
        public_url.trim_end_matches('/'),
        member_token(signer, Purpose::UnsubscribeLink, subscriber, list)
    )
}

/// `PUBLIC_URL/c/TOKEN`: the double opt-in confirmation link.
pub fn confirm_url(signer: &Signer, public_url: &str, subscriber: Uuid, list: Uuid) -> String {
    format!(
        "{}/c/{}",
        public_url.trim_end_matches('/'),
        member_token(signer, Purpose::Confirm, subscriber, list)
    )
}

/// `unsub-TOKEN@BOUNCE_DOMAIN`: the address of the `mailto:` unsubscribe of
/// one delivery (without the `mailto:` scheme).
pub fn unsubscribe_address(signer: &Signer, bounce_domain: &str, delivery: Uuid) -> String {
    format!(
        "{UNSUB_MAIL_PREFIX}{}@{bounce_domain}",
        signer.sign(Purpose::UnsubscribeMail, delivery.as_bytes())
    )
}

/// `mailto:unsub-TOKEN@BOUNCE_DOMAIN`, for `List-Unsubscribe`.
pub fn unsubscribe_mailto(signer: &Signer, bounce_domain: &str, delivery: Uuid) -> String {
    format!(
        "mailto:{}",
        unsubscribe_address(signer, bounce_domain, delivery)
    )
}

/// What an envelope recipient at the bounce endpoint is, as far as the
/// `mailto:` unsubscribe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailtoAddress {
    /// Not an `unsub-` address of `bounce_domain`.
    NotOurs,
    /// An `unsub-` address whose token verifies: the delivery it names.
    Delivery(Uuid),
    /// Looks like one, but the token is forged or altered.
    Forged,
}

/// Reads `unsub-TOKEN@BOUNCE_DOMAIN` (angle brackets and case tolerated).
pub fn parse_unsubscribe_address(
    signer: &Signer,
    bounce_domain: &str,
    address: &str,
) -> MailtoAddress {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let Some((local, domain)) = address.rsplit_once('@') else {
        return MailtoAddress::NotOurs;
    };
    if !domain.eq_ignore_ascii_case(bounce_domain) {
        return MailtoAddress::NotOurs;
    }
    let Some(token) = local
        .get(..UNSUB_MAIL_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(UNSUB_MAIL_PREFIX))
        .map(|_| &local[UNSUB_MAIL_PREFIX.len()..])
    else {
        return MailtoAddress::NotOurs;
    };
    match signer
        .verify(Purpose::UnsubscribeMail, token, 16)
        .ok()
        .and_then(|p| Uuid::from_slice(&p).ok())
    {
        Some(d) => MailtoAddress::Delivery(d),
        None => MailtoAddress::Forged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn signer() -> Signer {
        Signer::new(Secret::new("0123456789abcdef0123456789abcdef"), None)
    }

    #[test]
    fn unsubscribe_links_round_trip_and_never_cross_purposes() {
        let s = signer();
        let (sub, list) = (Uuid::now_v7(), Uuid::now_v7());
        let url = unsubscribe_url(&s, "https://news.example.org/", sub, list);
        let token = url
            .strip_prefix("https://news.example.org/u/")
            .expect("one slash");
        assert_eq!(
            verify_member_token(&s, Purpose::UnsubscribeLink, token),
            Some((sub, list, None))
        );
        assert_eq!(verify_member_token(&s, Purpose::Confirm, token), None);
        let confirm = confirm_url(&s, "https://n.example", sub, list);
        let ct = confirm.rsplit('/').next().unwrap();
        assert_eq!(
            verify_member_token(&s, Purpose::Confirm, ct),
            Some((sub, list, None))
        );
        assert_eq!(verify_member_token(&s, Purpose::Resubscribe, ct), None);
    }

    #[test]
    fn campaign_links_carry_three_ids_and_only_unsubscribe_links_do() {
        let s = signer();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let three: Vec<u8> = [a, b, c].iter().flat_map(|u| *u.as_bytes()).collect();
        let link = s.sign(Purpose::UnsubscribeLink, &three);
        assert_eq!(
            verify_member_token(&s, Purpose::UnsubscribeLink, &link),
            Some((a, b, Some(c)))
        );
        assert_eq!(
            verify_member_token(&s, Purpose::UnsubscribeLink, &link.to_uppercase()),
            Some((a, b, Some(c))),
            "base32 tokens survive a client that upper-cases the URL"
        );
        let confirm = s.sign(Purpose::Confirm, &three);
        assert_eq!(
            verify_member_token(&s, Purpose::Confirm, &confirm),
            None,
            "48 bytes only for unsubscribe links"
        );
    }

    #[test]
    fn mailto_addresses_verify_and_forgeries_are_told_apart() {
        let s = signer();
        let d = Uuid::now_v7();
        let m = unsubscribe_mailto(&s, "bounce.example.org", d);
        let addr = m.strip_prefix("mailto:").unwrap();
        assert_eq!(
            parse_unsubscribe_address(
                &s,
                "bounce.example.org",
                &format!("<{}>", addr.to_uppercase())
            ),
            MailtoAddress::Delivery(d)
        );
        let mut forged = addr.to_string();
        forged.replace_range(7..8, if &forged[7..8] == "a" { "b" } else { "a" });
        assert_eq!(
            parse_unsubscribe_address(&s, "bounce.example.org", &forged),
            MailtoAddress::Forged
        );
        assert_eq!(
            parse_unsubscribe_address(&s, "other.example.org", addr),
            MailtoAddress::NotOurs
        );
        assert_eq!(
            parse_unsubscribe_address(&s, "bounce.example.org", "b-abc@bounce.example.org"),
            MailtoAddress::NotOurs
        );
    }
}
