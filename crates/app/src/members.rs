//! Memberships changed by the people on the list: the signed links in every
//! message (unsubscribe, re-subscribe) and double opt-in (the request and
//! the confirmation). The HTTP endpoint's pages, `sub add --confirm` and the
//! dashboard's API call these; each picks its own way of answering.
//!
//! Every change is keyed by ids from a signed token ([`rundbrief_core::links`],
//! the one place for the formats): a forged or altered token is
//! [`ErrorKind::NotFound`] and changes nothing.

use crate::App;
use crate::confirm::ConfirmJob;
use crate::error::{AppError, ErrorKind, Result};
use rundbrief_core::{Actor, Address, MembershipStatus, Purpose, Signer, SubscriberStatus};
use rundbrief_store::{Confirmed, MembershipView, OptIn, Store};
use uuid::Uuid;

/// Longest display name kept from a subscription request, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The membership a verified link names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub purpose: Purpose,
    pub subscriber: Uuid,
    pub list: Uuid,
    /// The campaign the message came from (unsubscribe links only).
    pub campaign: Option<Uuid>,
}

/// How an unsubscribe arrived, for the audit's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubscribeVia {
    /// RFC 8058 one-click: a mail provider's POST.
    OneClick,
    /// The button on the unsubscribe page.
    Page,
}

/// What confirming (or re-subscribing through) a link did.
#[derive(Debug, Clone)]
pub enum Confirmation {
    /// Subscribed now, or already subscribed: the membership as it is.
    Subscribed(MembershipView),
    /// The link cannot bring this subscriber back; the view says why
    /// (`no_way_back`).
    Refused(MembershipView),
}

/// What a subscription request did. The front end must answer the same
/// whatever it was (no way to learn who is subscribed).
#[derive(Debug, Clone)]
pub enum Requested {
    /// Send this confirmation mail.
    Confirm(ConfirmJob),
    /// Nothing to send: already subscribed, or blocklisted.
    Nothing,
}

/// The membership service. Cheap to clone.
#[derive(Clone)]
pub struct Members {
    store: Store,
    signer: Signer,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members").finish_non_exhaustive()
    }
}

impl App {
    /// The membership service.
    ///
    /// # Errors
    /// No secret configured (links cannot be signed or verified).
    pub fn members(&self) -> Result<Members> {
        Ok(Members::new(self.store.clone(), self.signer()?))
    }
}

impl Members {
    pub fn new(store: Store, signer: Signer) -> Members {
        Members { store, signer }
    }

    /// The membership `token` names, if it verifies for `purpose`.
    pub fn verify(&self, purpose: Purpose, token: &str) -> Option<Link> {
        rundbrief_core::links::verify_member_token(&self.signer, purpose, token).map(
            |(subscriber, list, campaign)| Link {
                purpose,
                subscriber,
                list,
                campaign,
            },
        )
    }

    /// The membership a link names, as it is now; `None` when the subscriber
    /// is no longer on the list (or gone).
    ///
    /// # Errors
    /// The store failed.
    pub async fn view(&self, link: &Link) -> Result<Option<MembershipView>> {
        Ok(self
            .store
            .membership_view(link.subscriber, link.list)
            .await?)
    }

    /// The token of the re-subscribe button for `v`, or `None` when that
    /// button cannot bring this subscriber back (bounced, complained,
    /// blocklisted, left every list): then a page does not offer it.
    pub fn resubscribe_token(&self, v: &MembershipView) -> Option<String> {
        v.no_way_back.is_none().then(|| {
            rundbrief_core::links::member_token(
                &self.signer,
                Purpose::Resubscribe,
                v.subscriber_id,
                v.list_id,
            )
        })
    }

    /// Unsubscribes the member an unsubscribe link names, at once and
    /// idempotently, with the way and the campaign in the audit. `None`
    /// when the subscriber is not on the list.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] for a link of another purpose; store failures.
    pub async fn unsubscribe(
        &self,
        link: &Link,
        via: UnsubscribeVia,
        actor: Actor,
    ) -> Result<Option<MembershipView>> {
        if link.purpose != Purpose::UnsubscribeLink {
            return Err(AppError::invalid("not an unsubscribe link"));
        }
        let mut reason = match via {
            UnsubscribeVia::OneClick => "one-click unsubscribe (RFC 8058)".to_string(),
            UnsubscribeVia::Page => "unsubscribe page".to_string(),
        };
        if let Some(c) = link.campaign {
            reason.push_str(&format!(", campaign {c}"));
        }
        let Some(changed) = self
            .store
            .unsubscribe_member(link.subscriber, link.list, actor, &reason)
            .await?
        else {
            return Ok(None);
        };
        tracing::info!(subscriber = %link.subscriber, list = %link.list, ?via, changed, "unsubscribe");
        self.view(link).await
    }

    /// Whether the page of a confirm or re-subscribe link should offer its
    /// button: `Ok(None)` when the link names nobody who could be shown
    /// (gone, or blocklisted: answered as an unknown link).
    ///
    /// # Errors
    /// The store failed.
    pub async fn subscribe_view(&self, link: &Link) -> Result<Option<MembershipView>> {
        Ok(self
            .view(link)
            .await?
            .filter(|v| v.subscriber_status != SubscriberStatus::Blocklisted))
    }

    /// Whether `v` is subscribed and active (nothing left to confirm).
    pub fn is_subscribed(v: &MembershipView) -> bool {
        v.status == MembershipStatus::Subscribed && v.subscriber_status == SubscriberStatus::Active
    }

    /// Confirms a double opt-in (`Purpose::Confirm`) or re-subscribes from
    /// the unsubscribe page (`Purpose::Resubscribe`, which cannot bring back
    /// a bounced, complained or blocklisted subscriber).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the subscriber is gone or blocklisted;
    /// [`ErrorKind::Invalid`] for a link of another purpose; store failures.
    pub async fn confirm(&self, link: &Link, actor: Actor) -> Result<Confirmation> {
        let outcome = match link.purpose {
            Purpose::Resubscribe => {
                self.store
                    .resubscribe_member(
                        link.subscriber,
                        link.list,
                        actor,
                        "re-subscribed from the unsubscribe page",
                    )
                    .await?
            }
            Purpose::Confirm => {
                self.store
                    .confirm_subscription(
                        link.subscriber,
                        link.list,
                        actor,
                        "confirmed by the subscriber (double opt-in)",
                    )
                    .await?
            }
            _ => return Err(AppError::invalid("not a confirm or re-subscribe link")),
        };
        let gone = || AppError::not_found("no such membership");
        match outcome {
            Confirmed::Gone | Confirmed::Blocklisted => Err(gone()),
            Confirmed::Refused(why) => {
                tracing::info!(subscriber = %link.subscriber, list = %link.list, why = why.as_str(), "re-subscribe refused: only a double opt-in brings this subscriber back");
                let mut v = self.view(link).await?.ok_or_else(gone)?;
                v.no_way_back = Some(why);
                Ok(Confirmation::Refused(v))
            }
            outcome @ (Confirmed::Subscribed | Confirmed::AlreadySubscribed) => {
                tracing::info!(subscriber = %link.subscriber, list = %link.list, ?outcome, "subscription confirmed");
                Ok(Confirmation::Subscribed(
                    self.view(link).await?.ok_or_else(gone)?,
                ))
            }
        }
    }

    /// A request to put `email` on `list` with double opt-in (a form, an
    /// integration, `sub add --confirm`). With `public_only`, a list that is
    /// not public is [`ErrorKind::NotFound`], exactly like one that does not
    /// exist, so a form cannot tell which lists exist. The name is cleaned
    /// (control characters dropped, at most [`MAX_NAME_CHARS`]).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] (no such list, or not public);
    /// [`ErrorKind::Invalid`] (not an address); store failures.
    pub async fn request(
        &self,
        list: &str,
        email: &str,
        name: Option<&str>,
        public_only: bool,
        actor: Actor,
        reason: &str,
    ) -> Result<Requested> {
        if public_only {
            match self.store.find_list(list).await? {
                Some(l) if l.public => {}
                _ => return Err(AppError::not_found(format!("no public list `{list}`"))),
            }
        }
        let addr = Address::parse(email.trim()).map_err(|e| {
            AppError::wrap(ErrorKind::Invalid, e)
                .context(format!("`{}` is not an e-mail address", email.trim()))
        })?;
        let name = name.map(clean_name).filter(|n| !n.is_empty());
        match self
            .store
            .request_subscription(&addr, list, name.as_deref(), actor, reason)
            .await?
        {
            OptIn::SendConfirmation {
                subscriber_id,
                list_id,
            } => Ok(Requested::Confirm(ConfirmJob {
                email: addr.to_string(),
                list: list.to_string(),
                subscriber_id,
                list_id,
            })),
            OptIn::Nothing => Ok(Requested::Nothing),
        }
    }
}

/// Subscribes `email` to `list` at once (no confirmation mail): what
/// `rundbrief sub add` and the API's `POST /api/v1/lists/{list}/members`
/// do. Creates the subscriber when needed and merges `name` and
/// `attributes` into an existing one; `resubscribe` brings back an
/// unsubscribed or bounced subscriber.
///
/// # Errors
/// [`ErrorKind::Invalid`]: not an address, or a name with line breaks or
/// other control characters; [`ErrorKind::NotFound`]: no such list;
/// [`ErrorKind::Conflict`]: the address is blocklisted, or unsubscribed or
/// bounced without `resubscribe`; store failures.
#[allow(clippy::too_many_arguments)]
pub async fn add(
    store: &Store,
    list: &str,
    email: &str,
    name: Option<&str>,
    attributes: rundbrief_core::Attributes,
    resubscribe: bool,
    actor: Actor,
    reason: &str,
) -> Result<(Address, rundbrief_store::AddOutcome)> {
    let addr = Address::parse(email.trim()).map_err(|e| {
        AppError::wrap(ErrorKind::Invalid, e)
            .context(format!("`{}` is not an e-mail address", email.trim()))
    })?;
    if name.is_some_and(|n| n.chars().any(char::is_control)) {
        return Err(AppError::invalid(
            "the name must not contain line breaks or other control characters",
        ));
    }
    if name.is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
        return Err(AppError::invalid(format!(
            "the name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    let out = store
        .add_subscriber(&addr, list, name, attributes, resubscribe, actor, reason)
        .await?;
    Ok((addr, out))
}

/// A display name as kept: no control characters, at most
/// [`MAX_NAME_CHARS`], trimmed.
fn clean_name(n: &str) -> String {
    n.chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_control_characters_and_length() {
        assert_eq!(clean_name(" Ann\r\nBcc: x "), "AnnBcc: x");
        assert_eq!(clean_name(&"é".repeat(500)).chars().count(), MAX_NAME_CHARS);
    }
}
