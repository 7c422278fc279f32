//! Changes a subscriber makes themselves: double opt-in, one-click and
//! mailto unsubscribe, re-subscribe.
//!
//! Every function here but [`Store::request_subscription`] takes ids that
//! came out of a verified signed token (never an address typed into a form),
//! and each change writes its audit entry in the same transaction. All of
//! them are idempotent: doing the same thing twice changes nothing the
//! second time and says so.

use crate::subscribers::{audit, exec, find, insert_subscriber};
use crate::{Doing, Result, Store};
use chrono::{DateTime, Utc};
use rundbrief_core::{Actor, Address, AuditAction, MembershipStatus, SubscriberStatus};
use sea_orm::{ConnectionTrait, FromQueryResult};
use uuid::Uuid;

/// One membership as the unsubscribe and confirmation pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    pub subscriber_id: Uuid,
    pub list_id: Uuid,
    pub email: String,
    pub list: String,
    pub status: MembershipStatus,
    pub subscriber_status: SubscriberStatus,
    /// Why the re-subscribe button cannot bring this subscriber back (see
    /// [`Store::resubscribe_member`]); `None` when it can.
    pub no_way_back: Option<NoWayBack>,
}

/// What [`Store::request_subscription`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptIn {
    /// The membership waits for confirmation: send the confirmation mail
    /// for these ids.
    SendConfirmation { subscriber_id: Uuid, list_id: Uuid },
    /// Nothing to send: already subscribed, or the address is blocklisted.
    /// The caller must answer exactly as for `SendConfirmation`.
    Nothing,
}

/// What [`Store::confirm_subscription`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// The membership became `subscribed` (and an unsubscribed or bounced
    /// subscriber `active` again: the confirmation proves the mailbox works
    /// and wants the mail).
    Subscribed,
    /// It was `subscribed` already; nothing changed.
    AlreadySubscribed,
    /// The address is blocklisted; nothing changed.
    Blocklisted,
    /// The subscriber or the list no longer exists.
    Gone,
    /// Only from [`Store::resubscribe_member`]: the re-subscribe button
    /// cannot bring this subscriber back; nothing changed.
    Refused(NoWayBack),
}

/// Why the re-subscribe button (`/r/TOKEN`, a link any old mail carries)
/// cannot bring a subscriber back. Each of these undoes somebody's decision
/// or a fact about the mailbox, so only a fresh double opt-in confirmation
/// mailed to the address ([`Store::request_subscription`], then
/// [`Store::confirm_subscription`]) does: it proves the mailbox works and
/// that its owner wants the mail again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoWayBack {
    /// The address bounced (pruned as dead): it stays pruned.
    Bounced,
    /// The subscriber reported our mail as spam (an ARF complaint).
    Complained,
    /// The subscriber left every list (`sub unsub` without `--list`).
    UnsubscribedEverywhere,
    /// The address is blocklisted: it never comes back this way or any other.
    Blocklisted,
}

impl NoWayBack {
    /// The word used in logs and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            NoWayBack::Bounced => "bounced",
            NoWayBack::Complained => "complained",
            NoWayBack::UnsubscribedEverywhere => "unsubscribed from all lists",
            NoWayBack::Blocklisted => "blocklisted",
        }
    }
}

/// Whether the subscriber's latest global opt-out was a spam complaint: the
/// bounce processor unsubscribes (action `unsubscribed`, actor `bounce`)
/// for ARF complaints only, and nothing has restored them since.
async fn complained<C: ConnectionTrait>(c: &C, subscriber: Uuid) -> Result<bool> {
    #[derive(FromQueryResult)]
    struct A {
        action: String,
    }
    let last = A::find_by_statement(crate::stmt_for(
        c.get_database_backend(),
        "SELECT action FROM audit WHERE subscriber_id = ? \
         AND ((action = ? AND actor = ?) OR action = ?) \
         ORDER BY created_at DESC, id DESC LIMIT 1",
        vec![
            subscriber.into(),
            AuditAction::Unsubscribed.as_str().into(),
            Actor::Bounce.as_str().into(),
            AuditAction::Restored.as_str().into(),
        ],
    ))
    .one(c)
    .await
    .doing("looking for a complaint")?;
    Ok(last.is_some_and(|a| a.action == AuditAction::Unsubscribed.as_str()))
}

/// Why the re-subscribe button cannot bring this subscriber back, if it
/// cannot: only an `active` subscriber (who left one list) may use it.
async fn no_way_back<C: ConnectionTrait>(
    c: &C,
    subscriber: Uuid,
    status: SubscriberStatus,
) -> Result<Option<NoWayBack>> {
    Ok(match status {
        SubscriberStatus::Active => None,
        // Mail to the address could not be delivered either way: the
        // double opt-in mail (which proves it can) brings it back.
        SubscriberStatus::Bounced | SubscriberStatus::Undeliverable => Some(NoWayBack::Bounced),
        SubscriberStatus::Blocklisted => Some(NoWayBack::Blocklisted),
        SubscriberStatus::Unsubscribed if complained(c, subscriber).await? => {
            Some(NoWayBack::Complained)
        }
        SubscriberStatus::Unsubscribed => Some(NoWayBack::UnsubscribedEverywhere),
    })
}

#[derive(FromQueryResult)]
struct ViewRow {
    email: String,
    list: String,
    status: Option<String>,
    subscriber_status: String,
}

/// The subscriber's and (if any) the membership's status, and the names.
async fn view<C: ConnectionTrait>(
    c: &C,
    subscriber: Uuid,
    list: Uuid,
) -> Result<Option<(MembershipView, bool)>> {
    let row = ViewRow::find_by_statement(crate::stmt_for(
        c.get_database_backend(),
        "SELECT s.email, l.name AS list, m.status, s.status AS subscriber_status \
         FROM subscribers s CROSS JOIN lists l \
         LEFT JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = l.id \
         WHERE s.id = ? AND l.id = ?",
        vec![subscriber.into(), list.into()],
    ))
    .one(c)
    .await
    .doing("looking up a membership")?;
    let Some(r) = row else { return Ok(None) };
    let member = r.status.is_some();
    let subscriber_status: SubscriberStatus = r.subscriber_status.parse()?;
    let no_way_back = no_way_back(c, subscriber, subscriber_status).await?;
    Ok(Some((
        MembershipView {
            subscriber_id: subscriber,
            list_id: list,
            email: r.email,
            list: r.list,
            // A missing membership reads as `unsubscribed`: the person is not
            // on the list, which is what the pages need to say.
            status: match r.status {
                Some(s) => s.parse()?,
                None => MembershipStatus::Unsubscribed,
            },
            subscriber_status,
            no_way_back,
        },
        member,
    )))
}

async fn set_membership<C: ConnectionTrait>(
    c: &C,
    subscriber: Uuid,
    list: Uuid,
    status: MembershipStatus,
    exists: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    if exists {
        exec(
            c,
            "updating a membership",
            "UPDATE memberships SET status = ?, updated_at = ? WHERE subscriber_id = ? AND list_id = ?",
            vec![status.as_str().into(), now.into(), subscriber.into(), list.into()],
        )
        .await?;
    } else {
        exec(
            c,
            "adding a membership",
            "INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            vec![subscriber.into(), list.into(), status.as_str().into(), now.into(), now.into()],
        )
        .await?;
    }
    Ok(())
}

impl Store {
    /// The membership of `subscriber` on `list` with both names, or `None`
    /// when the subscriber or the list is gone. A subscriber who is not on
    /// the list at all shows as `unsubscribed`.
    pub async fn membership_view(
        &self,
        subscriber: Uuid,
        list: Uuid,
    ) -> Result<Option<MembershipView>> {
        Ok(view(&self.db, subscriber, list).await?.map(|(v, _)| v))
    }

    /// Someone asked (a form, or `sub add --confirm`) to put `addr` on
    /// `list` with double opt-in. A new address becomes an `active`
    /// subscriber (with `name`) whose membership is `unconfirmed`; an
    /// existing subscriber keeps their name and data (an anonymous form must
    /// not change them) and gets an `unconfirmed` membership if they had
    /// none. An `unsubscribed` membership stays so until confirmed. Either
    /// way nobody receives campaigns before confirming.
    ///
    /// # Errors
    /// [`crate::StoreError::ListNotFound`].
    pub async fn request_subscription(
        &self,
        addr: &Address,
        list: &str,
        name: Option<&str>,
        actor: Actor,
        reason: &str,
    ) -> Result<OptIn> {
        let list = self.list(list).await?;
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let now = Utc::now();
        let id = match find(&txn, addr).await? {
            Some(s) => {
                if s.status.parse::<SubscriberStatus>()? == SubscriberStatus::Blocklisted {
                    return Ok(OptIn::Nothing);
                }
                s.id
            }
            None => {
                insert_subscriber(&txn, addr, name, Default::default(), actor, reason, now).await?
            }
        };
        let Some((v, member)) = view(&txn, id, list.id).await? else {
            return Ok(OptIn::Nothing);
        };
        let out = if member
            && v.status == MembershipStatus::Subscribed
            && v.subscriber_status == SubscriberStatus::Active
        {
            OptIn::Nothing
        } else {
            if !member {
                set_membership(&txn, id, list.id, MembershipStatus::Unconfirmed, false, now)
                    .await?;
            }
            OptIn::SendConfirmation {
                subscriber_id: id,
                list_id: list.id,
            }
        };
        txn.commit()
            .await
            .doing("committing the subscription request")?;
        Ok(out)
    }

    /// Makes the membership `subscribed`: the double opt-in confirmation
    /// (`/c/TOKEN`, from a mail sent to the address just now). An
    /// `unsubscribed` or `bounced` subscriber becomes `active` again (audited
    /// as restored, saying what they were and, after a spam complaint, that
    /// they came back through a fresh confirmation); a blocklisted one stays
    /// out.
    pub async fn confirm_subscription(
        &self,
        subscriber: Uuid,
        list: Uuid,
        actor: Actor,
        reason: &str,
    ) -> Result<Confirmed> {
        self.subscribe_member(subscriber, list, actor, reason, false)
            .await
    }

    /// The re-subscribe button shown after an unsubscribe (`/r/TOKEN`). Its
    /// token comes with every unsubscribe page, so anyone holding an old
    /// mail can use it: it only undoes a one-list unsubscribe of an `active`
    /// subscriber. A bounced, blocklisted or complaining subscriber, or one
    /// who left every list, gets [`Confirmed::Refused`] and nothing changes
    /// (see [`NoWayBack`]).
    pub async fn resubscribe_member(
        &self,
        subscriber: Uuid,
        list: Uuid,
        actor: Actor,
        reason: &str,
    ) -> Result<Confirmed> {
        self.subscribe_member(subscriber, list, actor, reason, true)
            .await
    }

    async fn subscribe_member(
        &self,
        subscriber: Uuid,
        list: Uuid,
        actor: Actor,
        reason: &str,
        button: bool,
    ) -> Result<Confirmed> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let Some((v, member)) = view(&txn, subscriber, list).await? else {
            return Ok(Confirmed::Gone);
        };
        let now = Utc::now();
        let out = match (v.subscriber_status, v.no_way_back) {
            (SubscriberStatus::Blocklisted, _) => Confirmed::Blocklisted,
            (_, Some(why)) if button => Confirmed::Refused(why),
            (SubscriberStatus::Active, _) if member && v.status == MembershipStatus::Subscribed => {
                Confirmed::AlreadySubscribed
            }
            (status, why) => {
                if status != SubscriberStatus::Active {
                    exec(
                        &txn,
                        "restoring a subscriber",
                        "UPDATE subscribers SET status = ?, updated_at = ? WHERE id = ?",
                        vec![
                            SubscriberStatus::Active.as_str().into(),
                            now.into(),
                            subscriber.into(),
                        ],
                    )
                    .await?;
                    if status == SubscriberStatus::Bounced {
                        crate::subscribers::reset_bounce_score(&txn, subscriber, now).await?;
                    }
                    let was = match why {
                        Some(NoWayBack::Complained) => format!(
                            "was {status} after a spam complaint; back only through this \
                             double opt-in confirmation mailed to the address"
                        ),
                        _ => format!("was {status}"),
                    };
                    audit(
                        &txn,
                        subscriber,
                        None,
                        AuditAction::Restored,
                        actor,
                        &format!("{reason} ({was})"),
                        now,
                    )
                    .await?;
                }
                if !(member && v.status == MembershipStatus::Subscribed) {
                    set_membership(
                        &txn,
                        subscriber,
                        list,
                        MembershipStatus::Subscribed,
                        member,
                        now,
                    )
                    .await?;
                    audit(
                        &txn,
                        subscriber,
                        Some(list),
                        AuditAction::Subscribed,
                        actor,
                        reason,
                        now,
                    )
                    .await?;
                }
                Confirmed::Subscribed
            }
        };
        txn.commit().await.doing("committing the confirmation")?;
        Ok(out)
    }

    /// Unsubscribes `subscriber` from `list` (the one-click link). Returns
    /// `None` when the subscriber or the list is gone or the subscriber was
    /// never on the list, otherwise whether anything changed.
    pub async fn unsubscribe_member(
        &self,
        subscriber: Uuid,
        list: Uuid,
        actor: Actor,
        reason: &str,
    ) -> Result<Option<bool>> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        let Some((v, member)) = view(&txn, subscriber, list).await? else {
            return Ok(None);
        };
        if !member {
            return Ok(None);
        }
        let changed = v.status != MembershipStatus::Unsubscribed;
        if changed {
            let now = Utc::now();
            set_membership(
                &txn,
                subscriber,
                list,
                MembershipStatus::Unsubscribed,
                true,
                now,
            )
            .await?;
            audit(
                &txn,
                subscriber,
                Some(list),
                AuditAction::Unsubscribed,
                actor,
                reason,
                now,
            )
            .await?;
        }
        txn.commit().await.doing("committing the unsubscribe")?;
        Ok(Some(changed))
    }

    /// Unsubscribes the recipient of `delivery` from every list of its
    /// campaign (the `mailto:unsub-TOKEN@…` address). Returns the recipient's
    /// address and how many memberships changed, or `None` when the delivery
    /// is gone.
    pub async fn unsubscribe_delivery(
        &self,
        delivery: Uuid,
        actor: Actor,
        reason: &str,
    ) -> Result<Option<(String, u64)>> {
        let txn = self.write_txn().await.doing("starting a transaction")?;
        #[derive(FromQueryResult)]
        struct M {
            subscriber_id: Uuid,
            email: String,
            list_id: Option<Uuid>,
            status: Option<String>,
        }
        let rows = M::find_by_statement(crate::stmt_for(
            txn.get_database_backend(),
            "SELECT d.subscriber_id, d.email, m.list_id, m.status FROM deliveries d \
             LEFT JOIN campaign_lists cl ON cl.campaign_id = d.campaign_id \
             LEFT JOIN memberships m ON m.list_id = cl.list_id AND m.subscriber_id = d.subscriber_id \
             WHERE d.id = ?",
            vec![delivery.into()],
        ))
        .all(&txn)
        .await
        .doing("looking up a delivery's memberships")?;
        let Some(email) = rows.first().map(|r| r.email.clone()) else {
            return Ok(None);
        };
        let now = Utc::now();
        let mut changed = 0;
        for r in rows {
            let (Some(list), Some(status)) = (r.list_id, r.status) else {
                continue;
            };
            if status.parse::<MembershipStatus>()? == MembershipStatus::Unsubscribed {
                continue;
            }
            set_membership(
                &txn,
                r.subscriber_id,
                list,
                MembershipStatus::Unsubscribed,
                true,
                now,
            )
            .await?;
            audit(
                &txn,
                r.subscriber_id,
                Some(list),
                AuditAction::Unsubscribed,
                actor,
                reason,
                now,
            )
            .await?;
            changed += 1;
        }
        txn.commit().await.doing("committing the unsubscribe")?;
        Ok(Some((email, changed)))
    }
}
