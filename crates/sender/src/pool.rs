//! [`Worker`]: one long-lived connection, reused message after message;
//! [`Sender`]: `pool_size` workers behind a semaphore, the API the
//! scheduler calls.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::Address;
use rundbrief_core::Verp;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, debug_span, warn};
use uuid::Uuid;

use crate::connection::{Connection, client_id};
use crate::error::{Outcome, SendError, SmtpStep};
use crate::relay::{Relay, RelayError};
use crate::tls::{self, TlsSetup};

/// QUIT gets this long before the socket is just closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// One message to one recipient.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The delivery id: signed into the VERP return path and sent as
    /// `ENVID`.
    pub id: Uuid,
    /// The recipient (RCPT TO).
    pub to: String,
    /// The rendered message, CRLF line ends, as it should arrive (not
    /// dot-stuffed). Shared, so one rendering can go to many workers.
    pub message: Arc<[u8]>,
    /// The recipient's mailbox provider and its `messages_per_connection`:
    /// a relay connection that has carried that many messages to the
    /// provider is closed (QUIT) and a new one opened before the next.
    /// `None`: only the relay's `max_messages_per_connection` applies.
    pub per_connection: Option<(Arc<str>, u32)>,
}

/// What every worker of a sender shares.
struct Shared {
    relay: Relay,
    verp: Verp,
    tls: TlsSetup,
    hello: lettre::transport::smtp::extension::ClientId,
}

impl Shared {
    fn new(relay: Relay, verp: Verp) -> Result<Self, SenderError> {
        relay.validate()?;
        let tls = tls::setup(relay.host(), relay.options.dangerous_accept_invalid_certs)?;
        let hello = client_id(&relay);
        Ok(Shared {
            relay,
            verp,
            tls,
            hello,
        })
    }
}

/// One connection to the relay, kept open across messages: reconnects when
/// it is gone, closes it after `max_messages_per_connection`, and resets a
/// transaction left open by a refusal (RSET) before the next message.
///
/// A successful transaction needs no RSET (RFC 5321 §4.1.1.4: the reply to
/// the final dot clears the state), so none is sent then: that saves a
/// round trip per message.
pub struct Worker {
    shared: Arc<Shared>,
    conn: Option<Connection>,
    /// Messages the open connection carried per provider that has a
    /// `messages_per_connection` ([`Delivery::per_connection`]).
    per_provider: std::collections::HashMap<Arc<str>, u32>,
    /// Set while I/O is in flight. Still set at the next call means the last
    /// send was cancelled mid-command: the connection is in an unknown
    /// state and is dropped.
    busy: bool,
}

impl Worker {
    /// A single connection to `relay`, opened on the first send; for callers
    /// that send in sequence and want no pool (the relay's `pool_size` is
    /// ignored).
    ///
    /// # Errors
    /// As [`Sender::new`].
    pub fn new(relay: Relay, verp: Verp) -> Result<Self, SenderError> {
        Ok(Self::from_shared(Arc::new(Shared::new(relay, verp)?)))
    }

    fn from_shared(shared: Arc<Shared>) -> Self {
        Worker {
            shared,
            conn: None,
            per_provider: std::collections::HashMap::new(),
            busy: false,
        }
    }

    /// Sends one delivery with its VERP return path.
    ///
    /// A connection that was kept from an earlier message and turns out to
    /// be closed before MAIL got a reply (the relay timed it out or closed
    /// it after its own per-connection limit) is replaced and the message
    /// tried once more on the fresh one: nothing was sent yet.
    ///
    /// # Cancel safety
    /// Cancelling loses nothing but the connection, which is dropped at the
    /// next call; whether the relay took the message is then unknown.
    pub async fn send(&mut self, delivery: &Delivery) -> Outcome {
        let relay = &self.shared.relay;
        let return_path = self.shared.verp.address(delivery.id);
        let from: Address = match return_path.parse() {
            Ok(a) => a,
            Err(e) => {
                return SendError::InvalidAddress {
                    step: SmtpStep::Mail,
                    address: return_path,
                    detail: e.to_string(),
                }
                .into_outcome();
            }
        };
        let to: Address = match delivery.to.parse() {
            Ok(a) => a,
            Err(e) => {
                return SendError::InvalidAddress {
                    step: SmtpStep::Rcpt,
                    address: delivery.to.clone(),
                    detail: e.to_string(),
                }
                .into_outcome();
            }
        };
        if std::mem::take(&mut self.busy) {
            self.conn = None;
        }
        let provider_full = delivery
            .per_connection
            .as_ref()
            .is_some_and(|(p, n)| self.per_provider.get(p).is_some_and(|sent| *sent >= *n));
        if let Some(c) = &self.conn
            && (c.sent >= relay.options.max_messages_per_connection || provider_full)
            && let Some(c) = self.conn.take()
        {
            c.quit(QUIT_TIMEOUT).await;
        }
        if self.conn.is_none() {
            self.per_provider.clear();
        }
        self.busy = true;
        let mut retried = false;
        let outcome = loop {
            let reused = self.conn.is_some();
            let conn = match &mut self.conn {
                Some(c) => c,
                None => match Connection::open(relay, &self.shared.tls, &self.shared.hello).await {
                    Ok(c) => {
                        self.per_provider.clear();
                        self.conn.insert(c)
                    }
                    Err(e) => break e.into_outcome(),
                },
            };
            match conn
                .send(relay, &from, &to, delivery.id, &delivery.message)
                .await
            {
                Ok(reply) => break Outcome::Sent { reply },
                Err(e) => {
                    let keep = !conn.poisoned
                        && matches!(&e, SendError::Refused { reply, .. } if reply.code != 421);
                    if !keep {
                        self.conn = None;
                    }
                    let stale = reused
                        && !retried
                        && matches!(
                            &e,
                            SendError::ConnectionLost {
                                step: SmtpStep::Rset | SmtpStep::Mail,
                                ..
                            }
                        );
                    if stale {
                        debug!(error = %e, "kept connection was closed; reconnecting");
                        retried = true;
                        continue;
                    }
                    break e.into_outcome();
                }
            }
        };
        if let Some((provider, _)) = &delivery.per_connection
            && self.conn.is_some()
            && matches!(outcome, Outcome::Sent { .. })
        {
            *self.per_provider.entry(Arc::clone(provider)).or_default() += 1;
        }
        self.busy = false;
        outcome
    }

    /// QUITs the connection, if one is open.
    pub async fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            c.quit(QUIT_TIMEOUT).await;
        }
    }
}

/// Sends deliveries over up to `pool_size` connections to one relay.
///
/// Each [`Sender::send`] borrows a [`Worker`] (and its open connection) for
/// the duration of one message; callers beyond `pool_size` wait for one.
pub struct Sender {
    shared: Arc<Shared>,
    slots: Semaphore,
    idle: Mutex<Vec<Worker>>,
    pool_size: usize,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("relay", &self.shared.relay.to_string())
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Why a [`Sender`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SenderError {
    /// The relay's options are out of range.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] SendError),
}

impl Sender {
    /// A sender to `relay`, signing return paths with `verp`. Connects
    /// lazily, on the first sends.
    ///
    /// # Errors
    /// [`SenderError::Relay`] for invalid options, [`SenderError::Tls`] if
    /// the TLS configuration cannot be built.
    pub fn new(relay: Relay, verp: Verp) -> Result<Self, SenderError> {
        let pool_size = relay.options.pool_size;
        let shared = Arc::new(Shared::new(relay, verp)?);
        let idle = (0..pool_size)
            .map(|_| Worker::from_shared(Arc::clone(&shared)))
            .collect();
        Ok(Sender {
            shared,
            slots: Semaphore::new(pool_size),
            idle: Mutex::new(idle),
            pool_size,
        })
    }

    /// The relay sent to.
    pub fn relay(&self) -> &Relay {
        &self.shared.relay
    }

    /// Sends one delivery and says how it ended. Never panics, never
    /// returns early: every failure is an [`Outcome`] with the step.
    ///
    /// # Cancel safety
    /// Cancel safe in the sense that the pool stays usable: the worker goes
    /// back and drops its connection. Whether the relay took a message
    /// whose send was cancelled is unknown.
    pub async fn send(&self, delivery: Delivery) -> Outcome {
        let Ok(_permit) = self.slots.acquire().await else {
            return Outcome::Failed {
                error: SendError::Shutdown,
            };
        };
        let worker = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut lease = Lease {
            idle: &self.idle,
            worker: Some(worker.unwrap_or_else(|| Worker::from_shared(Arc::clone(&self.shared)))),
        };
        let domain = delivery
            .to
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_owned();
        let span = debug_span!("delivery", delivery_id = %delivery.id, domain = %domain, relay = %self.shared.relay);
        let Some(worker) = lease.worker.as_mut() else {
            return Outcome::Failed {
                error: SendError::Shutdown,
            };
        };
        let outcome = worker.send(&delivery).instrument(span.clone()).await;
        span.in_scope(|| match outcome.error() {
            None => debug!(outcome = outcome.as_str(), "delivery done"),
            Some(e) => debug!(outcome = outcome.as_str(), smtp.step = e.step().as_str(), smtp.code = e.reply().map(|r| r.code), error = %e, "delivery done"),
        });
        if let Outcome::Failed { error } = &outcome {
            warn!(relay = %self.shared.relay, smtp.step = error.step().as_str(), error = %error, "send failed on our side");
        }
        outcome
    }

    /// Waits for sends in flight, refuses new ones
    /// ([`SendError::Shutdown`]) and QUITs every connection.
    pub async fn shutdown(&self) {
        let all = u32::try_from(self.pool_size).unwrap_or(u32::MAX);
        let held = self.slots.acquire_many(all).await;
        self.slots.close();
        drop(held);
        let workers =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for mut w in workers {
            w.close().await;
        }
    }
}

/// A worker borrowed from the idle list, given back on drop (also when the
/// send is cancelled).
struct Lease<'a> {
    idle: &'a Mutex<Vec<Worker>>,
    worker: Option<Worker>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(w);
        }
    }
}
