//! The bounce endpoint: an smtpd `Handler` that accepts mail only for our
//! signed VERP addresses and stores it durably before the 250, and the worker
//! that parses stored messages afterwards.
//!
//! Pruning is deliberately not done here yet: a bounce may only ever affect
//! the subscriber of the delivery its token names, and deliveries arrive with
//! the campaign ledger. Until then, parsed bounces are stored and listed.

use rundbrief_core::{BounceSource, TokenError, Verp};
use rundbrief_smtpd::{DataDecision, Decision, Envelope, Handler, Recipient, Reply, SessionInfo};
use rundbrief_store::{NewBounce, Store};
use std::sync::Arc;
use tokio::sync::Notify;

/// Accepts only verified VERP recipients; stores before answering.
pub struct Endpoint {
    pub store: Store,
    pub verp: Verp,
    pub domain: String,
    /// Wakes the parse worker after each stored message.
    pub stored: Arc<Notify>,
}

impl Handler for Endpoint {
    async fn rcpt(&self, _info: &SessionInfo, _tx: &Envelope, rcpt: &Recipient) -> Decision {
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
        self.stored.notify_one();
        DataDecision::Accept {
            queue_id: first.map(|id| id.to_string()),
            close: false,
        }
    }
}

/// Parses every pending stored message; returns how many were handled.
/// A message the parser cannot finish is marked `failed`, never lost.
pub async fn process_pending(store: &Store) -> anyhow::Result<u64> {
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
                    store
                        .record_bounce_parse(b.id, &kind, parsed.class.as_str(), json)
                        .await?;
                    tracing::debug!(bounce = %b.id, class = parsed.class.as_str(), rule = parsed.rule, "parsed");
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
