//! The bounce endpoint: an smtpd `Handler` that accepts mail only for our
//! signed VERP addresses and stores it durably before the 250, and the worker
//! that parses stored messages afterwards.
//!
//! A parsed bounce only ever affects the subscriber of the delivery its VERP
//! token names (a recipient could otherwise forge a DSN to their own return
//! path naming somebody else): its class feeds that subscriber's score, and
//! the verdict (prune, unsubscribe after a complaint, nothing for a block) is
//! carried out with an audit entry naming the bounce, the rule and the score.
//! Only the report's line for the delivery's own address counts. Messages
//! without a verified delivery are stored and parsed, never acted on.
//!
//! It also takes mail for `unsub-TOKEN@<bounce domain>`, the `mailto:` of
//! `List-Unsubscribe`, when TOKEN verifies (`Purpose::UnsubscribeMail`, the
//! delivery id): the message is stored like a bounce, then the delivery's
//! subscriber is unsubscribed from that campaign's lists (audited, actor
//! `mailto`), both before the 250. A forged one is refused at RCPT.

use rundbrief_bounce::score::{Score, ScoreConfig, Verdict};
use rundbrief_core::{Actor, Address, BounceSource, Purpose, TokenError, Verp};
use rundbrief_smtpd::{DataDecision, Decision, Envelope, Handler, Recipient, Reply, SessionInfo};
use rundbrief_store::{NewBounce, Store};
use std::sync::Arc;
use tokio::sync::Notify;

/// How verdicts are carried out (from the `[bounce]` configuration).
#[derive(Debug, Clone)]
pub struct Policy {
    pub score: ScoreConfig,
    pub auto_prune: bool,
}

impl Policy {
    pub fn from_config(cfg: &rundbrief_core::Config) -> Policy {
        let b = &cfg.bounce;
        Policy {
            score: ScoreConfig {
                threshold: b.threshold,
                soft_weight: b.soft_weight,
                hard_after: b.hard_after,
                half_life_days: b.half_life_days,
            },
            auto_prune: b.auto_prune,
        }
    }
}

/// Accepts only verified VERP recipients; stores before answering.
pub struct Endpoint {
    pub store: Store,
    pub verp: Verp,
    pub domain: String,
    /// The feedback-loop address (`bounce.abuse_address`), lower-case.
    pub abuse: Option<String>,
    /// Wakes the parse worker after each stored message.
    pub stored: Arc<Notify>,
    /// Connections accepted (`rundbrief_endpoint_connections_total` under `serve`).
    pub connections: prometheus_client::metrics::counter::Counter,
}

/// Local-part prefix of the `mailto:` unsubscribe address (`List-Unsubscribe:
/// <mailto:unsub-TOKEN@bounce-domain>`); the token signs the delivery id.
const UNSUB_PREFIX: &str = "unsub-";

impl Endpoint {
    /// `None`: not an unsubscribe address. `Some(Ok(delivery))`: one whose
    /// token verifies. `Some(Err(()))`: looks like one, but forged or altered.
    fn unsubscribe_address(&self, address: &str) -> Option<Result<uuid::Uuid, ()>> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = address.rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(self.verp.domain()) {
            return None;
        }
        let token = local
            .get(..UNSUB_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(UNSUB_PREFIX))
            .map(|_| &local[UNSUB_PREFIX.len()..])?;
        Some(
            self.verp
                .signer()
                .verify(Purpose::UnsubscribeMail, token, 16)
                .ok()
                .and_then(|p| uuid::Uuid::from_slice(&p).ok())
                .ok_or(()),
        )
    }

    /// Unsubscribes the recipients of the verified `unsub-` addresses of a
    /// stored message from their campaign's lists, audited.
    async fn unsubscribe_by_mail(
        &self,
        tx: &Envelope,
        bounce: Option<uuid::Uuid>,
    ) -> anyhow::Result<()> {
        for rcpt in &tx.recipients {
            if let Some(Ok(delivery)) = self.unsubscribe_address(&rcpt.address) {
                let reason = format!(
                    "mailto unsubscribe (message {})",
                    bounce.map_or_else(|| "-".to_string(), |b| b.to_string())
                );
                match self
                    .store
                    .unsubscribe_delivery(delivery, Actor::Mailto, &reason)
                    .await?
                {
                    Some((email, changed)) => {
                        tracing::info!(subscriber = %email, %delivery, changed, "unsubscribed by mail")
                    }
                    None => {
                        tracing::warn!(%delivery, "mailto unsubscribe for a delivery that is gone")
                    }
                }
            }
        }
        Ok(())
    }
}

impl Handler for Endpoint {
    async fn connect(&self, _info: &SessionInfo) -> Decision {
        self.connections.inc();
        Decision::Accept
    }

    async fn rcpt(&self, _info: &SessionInfo, _tx: &Envelope, rcpt: &Recipient) -> Decision {
        match self.unsubscribe_address(&rcpt.address) {
            Some(Ok(_)) => return Decision::Accept,
            Some(Err(())) => {
                return Decision::Reject(Reply::with_status(
                    550,
                    (5, 1, 1),
                    "no such unsubscribe address",
                ));
            }
            None => {}
        }
        if self
            .abuse
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(rcpt.address.trim()))
        {
            return Decision::Accept;
        }
        match self.verp.delivery(&rcpt.address) {
            Ok(_) => Decision::Accept,
            Err(TokenError::WrongDomain(_)) => Decision::Reject(Reply::with_status(
                550,
                (5, 7, 1),
                format!(
                    "relaying denied: this server only takes bounces for {}",
                    self.domain
                ),
            )),
            Err(_) => {
                Decision::Reject(Reply::with_status(550, (5, 1, 1), "no such bounce address"))
            }
        }
    }

    async fn data(&self, info: &SessionInfo, tx: &Envelope, message: Vec<u8>) -> DataDecision {
        let mut first = None;
        for rcpt in &tx.recipients {
            let bounce = NewBounce {
                source: BounceSource::Smtp,
                peer: Some(info.peer.to_string()),
                mail_from: Some(tx.mail_from.address.clone()),
                rcpt: Some(rcpt.address.clone()),
                delivery_id: self.verp.delivery(&rcpt.address).ok(),
                raw: &message,
            };
            match self.store.insert_bounce(&bounce).await {
                Ok(id) => {
                    first.get_or_insert(id);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store an inbound message; answering 451");
                    return DataDecision::Reject(Reply::with_status(
                        451,
                        (4, 3, 0),
                        "cannot store the message right now; try again later",
                    ));
                }
            }
        }
        // Stored first; the unsubscribe is done before the 250 too, and a
        // failure asks the sender to retry (unsubscribing is idempotent).
        if let Err(e) = self.unsubscribe_by_mail(tx, first).await {
            tracing::error!(error = %e, "mailto unsubscribe failed; answering 451");
            return DataDecision::Reject(Reply::with_status(
                451,
                (4, 3, 0),
                "cannot process the unsubscribe right now; try again later",
            ));
        }
        self.stored.notify_one();
        DataDecision::Accept {
            queue_id: first.map(|id| id.to_string()),
            close: false,
        }
    }
}

/// Parses every pending stored message; returns how many were handled.
/// A message the parser cannot finish is marked `failed`, never lost.
pub async fn process_pending(store: &Store, policy: &Policy) -> anyhow::Result<u64> {
    let mut done = 0;
    loop {
        let batch = store.pending_bounces(100).await?;
        if batch.is_empty() {
            return Ok(done);
        }
        for b in batch {
            let raw = b.raw;
            match std::panic::catch_unwind(|| rundbrief_bounce::parse(&raw)) {
                Ok(parsed) => {
                    let json = serde_json::to_value(&parsed)?;
                    let kind = json["kind"].as_str().unwrap_or("unknown").to_string();
                    tracing::debug!(bounce = %b.id, class = parsed.class.as_str(), rule = parsed.rule, "parsed");
                    // The VERP token first; without one (e.g. `bounce ingest`),
                    // the ENVID we sent or the returned Message-ID.
                    let delivery = b.delivery_id.or_else(|| delivery_from_report(&parsed));
                    let counted = match delivery {
                        // Counted once: `bounce reprocess` parses it again,
                        // but a soft bounce counted yesterday must not count
                        // again today.
                        Some(_) if b.acted_at.is_some() => {
                            tracing::debug!(bounce = %b.id, "acted on before; not counted again");
                            false
                        }
                        Some(delivery) => {
                            act_on(store, policy, b.id, b.received_at, delivery, &parsed).await?
                        }
                        None => false,
                    };
                    if counted {
                        store.mark_bounce_acted(b.id).await?;
                    }
                    // Recorded after acting: a crash in between leaves the
                    // message pending, and the retry finds it acted on.
                    store
                        .record_bounce_parse(b.id, &kind, parsed.class.as_str(), json)
                        .await?;
                }
                Err(_) => {
                    store
                        .record_bounce_failure(
                            b.id,
                            "the parser panicked; kept for `bounce reprocess`",
                        )
                        .await?;
                    tracing::error!(bounce = %b.id, "the bounce parser panicked; the message is kept");
                }
            }
            done += 1;
        }
    }
}

/// The delivery a report names without a VERP token: the DSN's
/// Original-Envelope-Id (we send `ENVID=<delivery id>`) or the returned
/// message's Message-ID (`<delivery id, 32 hex digits>@domain`). Safe for the
/// same reason as the token: only the report's line for that delivery's own
/// address is acted on.
fn delivery_from_report(parsed: &rundbrief_bounce::ParsedBounce) -> Option<uuid::Uuid> {
    let envid = parsed
        .original_envelope_id
        .as_deref()
        .and_then(|e| uuid::Uuid::parse_str(e.trim()).ok());
    envid.or_else(|| {
        let mid = parsed.original_message_id.as_deref()?;
        let local = mid.trim().trim_start_matches('<').split('@').next()?;
        (local.len() == 32)
            .then(|| uuid::Uuid::parse_str(local).ok())
            .flatten()
    })
}

/// Applies one parsed bounce (received at `received_at`) to the subscriber
/// of `delivery`; true when it counted (a hard or soft bounce or a
/// complaint applied to the subscriber), which it then must not again.
async fn act_on(
    store: &Store,
    policy: &Policy,
    bounce: uuid::Uuid,
    received_at: chrono::DateTime<chrono::Utc>,
    delivery: uuid::Uuid,
    parsed: &rundbrief_bounce::ParsedBounce,
) -> anyhow::Result<bool> {
    // A campaign delivery, else a confirmation mail (its token names the
    // subscriber it was sent to).
    let target = match store.delivery_target(delivery).await? {
        Some(t) => Some(t),
        None => store.confirmation_target(delivery).await?,
    };
    let Some(target) = target else {
        tracing::warn!(%bounce, %delivery, "the delivery named by the token is gone; nothing to act on");
        return Ok(false);
    };
    // Only the report's line about our delivery's own address counts: a
    // report at this token naming somebody else changes nothing for anybody.
    let Some(line) = parsed
        .recipients
        .iter()
        .find(|r| r.address.eq_ignore_ascii_case(&target.email))
    else {
        tracing::warn!(%bounce, %delivery, "the report does not name the delivery's recipient; nothing done");
        return Ok(false);
    };
    // `sub restore` reset the score: a bounce from before that (parsed
    // again by `bounce reprocess`) must not count again.
    if matches!(
        line.class,
        rundbrief_bounce::BounceClass::Hard | rundbrief_bounce::BounceClass::Soft
    ) && store
        .bounce_reset_at(target.subscriber_id)
        .await?
        .is_some_and(|reset| received_at < reset)
    {
        tracing::info!(%bounce, %delivery, "received before the subscriber was restored; not counted");
        return Ok(false);
    }
    let status = if line.status.is_empty() {
        "-"
    } else {
        line.status.as_str()
    };
    apply_class(
        store,
        policy,
        &target,
        line.class,
        status,
        line.rule,
        &format!("bounce {bounce}"),
    )
    .await?;
    // What changed the subscriber (score, prune, unsubscribe) must not
    // count again; a block or an auto-reply changed nothing, and a parser
    // that learns better later may still turn it into a bounce that counts.
    Ok(matches!(
        line.class,
        rundbrief_bounce::BounceClass::Hard
            | rundbrief_bounce::BounceClass::Soft
            | rundbrief_bounce::BounceClass::Complaint
    ))
}

/// Feeds one classified bounce (from a DSN, or a 5xx seen while sending) to
/// the score of the delivery's subscriber and carries out the verdict, audited.
pub async fn apply_class(
    store: &Store,
    policy: &Policy,
    target: &rundbrief_store::DeliveryTarget,
    class: rundbrief_bounce::BounceClass,
    status: &str,
    rule: &str,
    source: &str,
) -> anyhow::Result<()> {
    let previous =
        store
            .bounce_score(target.subscriber_id)
            .await?
            .map(|(value, day, day_weight)| Score {
                value,
                day,
                day_weight,
            });
    let day = chrono::Utc::now().timestamp().div_euclid(86_400);
    let (score, verdict) = rundbrief_bounce::score::apply(previous, class, day, &policy.score);
    let value = score.map_or(0.0, |s| s.value);
    let reason = format!(
        "{source}: {} {status} (rule {rule}, score {value:.1})",
        class.as_str()
    );
    // An auto-reply or a complaint means the message was delivered: the
    // delivery stays `sent` and the score is untouched.
    if !matches!(
        class,
        rundbrief_bounce::BounceClass::Ignore | rundbrief_bounce::BounceClass::Complaint
    ) {
        // The score and the words of the bounce behind it change only when
        // this bounce counted (a block, or a second bounce on a day that
        // already counted as much, leaves both as they were): a later
        // `rundbrief clean` names that bounce in its prune.
        let counted = score.filter(|s| Some(*s) != previous);
        store
            .record_bounce_score(
                target,
                counted.map(|s| ((s.value, s.day, s.day_weight), reason.as_str())),
            )
            .await?;
    }
    let addr = Address::parse(&target.email)?;
    match verdict {
        Verdict::Prune { rule: why } if !policy.auto_prune => {
            tracing::info!(subscriber = %addr, source, why, "over the bounce threshold; bounce.auto_prune is off: `rundbrief clean` prunes");
        }
        Verdict::Prune { rule: why } => {
            if store
                .mark_bounced(&addr, Actor::Bounce, &format!("{reason}; {why}"))
                .await?
            {
                tracing::info!(subscriber = %addr, source, "pruned");
            }
        }
        Verdict::Unsubscribe => {
            store
                .unsubscribe(&addr, None, Actor::Bounce, &format!("complaint: {reason}"))
                .await?;
            tracing::info!(subscriber = %addr, source, "unsubscribed after a complaint");
        }
        Verdict::SenderProblem => {
            tracing::warn!(
                domain = addr.domain(),
                source,
                rule,
                "the receiver refused our mail (block): nobody pruned"
            );
        }
        Verdict::Keep => {}
    }
    Ok(())
}
