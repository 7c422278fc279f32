//! The bounce endpoint: an smtpd `Handler` that accepts mail only for our
//! signed VERP addresses (and the `mailto:` unsubscribe addresses, and the
//! feedback-loop address) and stores it durably before the 250, plus the
//! worker that parses stored messages afterwards. [`start_endpoint`] is the
//! one way to run it: `bounce serve`, `serve` and `demo` all call it.
//!
//! Mail to `unsub-TOKEN@<bounce domain>` (the `mailto:` of
//! `List-Unsubscribe`) is accepted when TOKEN verifies
//! (`Purpose::UnsubscribeMail`, the delivery id): the message is stored like
//! a bounce, then the delivery's subscriber is unsubscribed from that
//! campaign's lists (audited, actor `mailto`), both before the 250. A forged
//! one is refused at RCPT.
//!
//! Mail to `postmaster` (bare, or at the bounce domain) is accepted as RFC
//! 5321 §4.5.1 requires, stored as kind `postmaster` for the operator
//! (`bounce ls --kind postmaster`) and never parsed as a bounce.
//!
//! Limits against a flood (a subscriber knows their own return path): a
//! message is stored once for all its recipients, repeated recipients count
//! once, at most `bounce.max_stored_bytes` of it is kept, and each address
//! and each peer IP has a rate limit (450 beyond it; the sender retries).

use crate::Observer;
use crate::bounces::Bounces;
use crate::error::{Result, ResultExt};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rundbrief_core::links::{MailtoAddress, parse_unsubscribe_address};
use rundbrief_core::{Actor, TokenError, Verp};
use rundbrief_smtpd::{
    CancellationToken, DataDecision, Decision, Envelope, Handler, Recipient, Reply, SessionInfo,
};
use rundbrief_store::{NewMessage, Store};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::Notify;

/// Keys a limiter keeps before idle ones are dropped: bounds the memory an
/// attacker with many addresses or tokens can make us use.
const MAX_KEYS: usize = 100_000;

/// The endpoint's flood limits (from `[bounce]`).
#[derive(Debug, Clone)]
pub struct FloodLimits {
    pub max_stored_bytes: usize,
    pub token_burst: u32,
    pub token_per_hour: u32,
    /// 0: no per-peer limit.
    pub peer_burst: u32,
    pub peer_per_second: u32,
}

impl FloodLimits {
    pub fn from_config(cfg: &rundbrief_core::Config) -> Self {
        let b = &cfg.bounce;
        FloodLimits {
            max_stored_bytes: b.max_stored_bytes,
            token_burst: b.token_burst,
            token_per_hour: b.token_per_hour,
            peer_burst: b.peer_burst,
            peer_per_second: b.peer_per_second,
        }
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

struct Limiters {
    per_token: DefaultKeyedRateLimiter<String>,
    per_peer: Option<DefaultKeyedRateLimiter<IpAddr>>,
    max_stored: usize,
}

impl Limiters {
    fn new(l: &FloodLimits) -> Self {
        Limiters {
            per_token: RateLimiter::keyed(
                Quota::with_period(std::time::Duration::from_secs(
                    3600 / u64::from(l.token_per_hour.max(1)),
                ))
                .unwrap_or(Quota::per_hour(nonzero(l.token_per_hour)))
                .allow_burst(nonzero(l.token_burst)),
            ),
            per_peer: (l.peer_burst > 0).then(|| {
                RateLimiter::keyed(
                    Quota::per_second(nonzero(l.peer_per_second))
                        .allow_burst(nonzero(l.peer_burst)),
                )
            }),
            max_stored: l.max_stored_bytes,
        }
    }

    fn guard_size(&self) {
        if self.per_token.len() > MAX_KEYS {
            self.per_token.retain_recent();
        }
        if let Some(p) = &self.per_peer
            && p.len() > MAX_KEYS
        {
            p.retain_recent();
        }
    }
}

/// `postmaster` or `postmaster@<domain>` (any case), as RFC 5321 §4.5.1 names
/// it. smtp-proto hands a bare `<postmaster>` over as the empty address.
fn is_postmaster(address: &str, domain: &str) -> bool {
    let a = address.trim().trim_start_matches('<').trim_end_matches('>');
    match a.rsplit_once('@') {
        None => a.is_empty() || a.eq_ignore_ascii_case("postmaster"),
        Some((local, d)) => {
            local.eq_ignore_ascii_case("postmaster") && d.eq_ignore_ascii_case(domain)
        }
    }
}

fn busy(what: &str) -> Decision {
    Decision::Reject(Reply::with_status(
        450,
        (4, 7, 1),
        format!("too many messages {what}; try again later"),
    ))
}

/// Accepts only verified recipients; stores before answering.
pub struct Endpoint {
    store: Store,
    verp: Verp,
    limits: Limiters,
    /// The feedback-loop address (`bounce.abuse_address`), lower-case.
    abuse: Option<String>,
    /// Wakes the parse worker after each stored message.
    stored: Arc<Notify>,
    observer: Arc<dyn Observer>,
}

impl Endpoint {
    pub fn new(
        store: Store,
        verp: Verp,
        abuse: Option<&str>,
        limits: &FloodLimits,
        stored: Arc<Notify>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Endpoint {
            store,
            verp,
            limits: Limiters::new(limits),
            abuse: abuse.map(|a| a.trim().to_ascii_lowercase()),
            stored,
            observer,
        }
    }

    fn mailto(&self, address: &str) -> MailtoAddress {
        parse_unsubscribe_address(self.verp.signer(), self.verp.domain(), address)
    }

    /// Unsubscribes the recipients of the verified `unsub-` addresses of a
    /// stored message from their campaign's lists, audited.
    async fn unsubscribe_by_mail(&self, tx: &Envelope, bounce: Option<uuid::Uuid>) -> Result<()> {
        for rcpt in &tx.recipients {
            if let MailtoAddress::Delivery(delivery) = self.mailto(&rcpt.address) {
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
        self.observer.endpoint_connection();
        Decision::Accept
    }

    async fn mail(&self, info: &SessionInfo, _from: &rundbrief_smtpd::MailFrom) -> Decision {
        self.limits.guard_size();
        if let Some(peer) = &self.limits.per_peer
            && peer.check_key(&info.peer.ip()).is_err()
        {
            tracing::warn!(peer = %info.peer, "bounce endpoint: peer over its rate limit; 450");
            return busy("from your address");
        }
        Decision::Accept
    }

    async fn rcpt(&self, _info: &SessionInfo, tx: &Envelope, rcpt: &Recipient) -> Decision {
        // The same recipient twice in one transaction counts (and is stored) once.
        if tx
            .recipients
            .iter()
            .any(|r| r.address.trim().eq_ignore_ascii_case(rcpt.address.trim()))
        {
            return Decision::Accept;
        }
        if is_postmaster(&rcpt.address, self.verp.domain()) {
            return Decision::Accept;
        }
        let key = rcpt.address.trim().to_ascii_lowercase();
        match self.mailto(&rcpt.address) {
            MailtoAddress::Delivery(_) => {
                return if self.limits.per_token.check_key(&key).is_ok() {
                    Decision::Accept
                } else {
                    busy("for this address")
                };
            }
            MailtoAddress::Forged => {
                return Decision::Reject(Reply::with_status(
                    550,
                    (5, 1, 1),
                    "no such unsubscribe address",
                ));
            }
            MailtoAddress::NotOurs => {}
        }
        if self
            .abuse
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(rcpt.address.trim()))
        {
            return Decision::Accept;
        }
        match self.verp.delivery(&rcpt.address) {
            Ok(_) if self.limits.per_token.check_key(&key).is_ok() => Decision::Accept,
            Ok(_) => {
                tracing::warn!(rcpt = %key, "bounce endpoint: return path over its rate limit; 450");
                busy("for this address")
            }
            Err(TokenError::WrongDomain(_)) => Decision::Reject(Reply::with_status(
                550,
                (5, 7, 1),
                format!(
                    "relaying denied: this server only takes bounces for {}",
                    self.verp.domain()
                ),
            )),
            Err(_) => {
                Decision::Reject(Reply::with_status(550, (5, 1, 1), "no such bounce address"))
            }
        }
    }

    async fn data(&self, info: &SessionInfo, tx: &Envelope, message: Vec<u8>) -> DataDecision {
        // Distinct recipients, first spelling kept (RCPT accepted repeats).
        let mut recipients: Vec<(String, Option<uuid::Uuid>)> = Vec::new();
        for rcpt in &tx.recipients {
            if !recipients
                .iter()
                .any(|(a, _)| a.trim().eq_ignore_ascii_case(rcpt.address.trim()))
            {
                let address = if rcpt.address.trim().is_empty() {
                    "postmaster".to_string()
                } else {
                    rcpt.address.clone()
                };
                recipients.push((address, self.verp.delivery(&rcpt.address).ok()));
            }
        }
        let postmaster = recipients
            .iter()
            .all(|(a, _)| is_postmaster(a, self.verp.domain()));
        let kept = &message[..message.len().min(self.limits.max_stored)];
        let stored = self
            .store
            .insert_message(&NewMessage {
                peer: Some(info.peer.to_string()),
                mail_from: Some(tx.mail_from.address.clone()),
                recipients,
                raw: kept,
                size: message.len() as u64,
                postmaster,
            })
            .await;
        let first = match stored {
            Ok(ids) => ids.first().copied(),
            Err(e) => {
                tracing::error!(error = %e, "cannot store an inbound message; answering 451");
                return DataDecision::Reject(Reply::with_status(
                    451,
                    (4, 3, 0),
                    "cannot store the message right now; try again later",
                ));
            }
        };
        if postmaster {
            tracing::info!(peer = %info.peer, "mail to postmaster stored; see `rundbrief bounce ls --kind postmaster`");
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

/// How to run the endpoint.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    pub listen: SocketAddr,
    /// Largest message accepted (SIZE), bytes.
    pub max_size: usize,
    pub max_connections: usize,
    /// Run the worker that parses stored messages (off: store only).
    pub parse: bool,
    /// Offer STARTTLS with a self-signed certificate.
    pub starttls: bool,
}

impl EndpointOptions {
    /// The defaults `serve` uses: 10 MiB, 128 connections, parsing, STARTTLS.
    pub fn new(listen: SocketAddr) -> Self {
        EndpointOptions {
            listen,
            max_size: 10 << 20,
            max_connections: 128,
            parse: true,
            starttls: true,
        }
    }
}

/// A running bounce endpoint (server and parse worker).
pub struct RunningEndpoint {
    pub addr: SocketAddr,
    pub domain: String,
    /// Notified after each stored message.
    pub stored: Arc<Notify>,
    server: tokio::task::JoinHandle<Result<(), rundbrief_smtpd::SmtpdError>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    bounces: Bounces,
}

impl RunningEndpoint {
    /// Waits for messages in flight (after the stop token was cancelled),
    /// then parses what is still pending.
    ///
    /// # Errors
    /// The server failed, or the last parse did.
    pub async fn finish(self) -> Result<()> {
        self.server.await.map_err(|e| {
            crate::AppError::unavailable(format!("the endpoint task failed: {e}"))
        })??;
        if let Some(w) = self.worker {
            let _ = w.await;
            self.bounces.process_pending().await?;
        }
        Ok(())
    }
}

/// Starts the bounce endpoint (and, with `opts.parse`, the worker that
/// parses stored messages) until `stop` is cancelled.
///
/// # Errors
/// No secret or bounce domain configured, or the address cannot be bound.
pub async fn start_endpoint(
    app: &crate::App,
    opts: &EndpointOptions,
    stop: CancellationToken,
) -> Result<RunningEndpoint> {
    let verp = app.verp()?;
    let domain = verp.domain().to_string();
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let stored = Arc::new(Notify::new());
    let handler = Arc::new(Endpoint::new(
        app.store.clone(),
        verp,
        app.config.bounce.abuse_address.as_deref(),
        &FloodLimits::from_config(&app.config),
        Arc::clone(&stored),
        Arc::clone(&app.observer),
    ));
    let limits = rundbrief_smtpd::Limits {
        max_message_size: opts.max_size,
        max_connections: opts.max_connections,
        max_recipients: 10,
        ..rundbrief_smtpd::Limits::default()
    };
    let server_cfg = rundbrief_smtpd::ServerConfig {
        hostname: domain.clone(),
        advertise_dsn: false,
        limits,
    };
    let tls = if opts.starttls {
        Some(
            rundbrief_smtpd::tls::self_signed(&["localhost"])
                .map_err(|e| crate::AppError::unavailable(format!("STARTTLS certificate: {e}")))?
                .0,
        )
    } else {
        None
    };
    let server = tokio::spawn(rundbrief_smtpd::run(
        listener,
        server_cfg,
        handler,
        tls,
        stop.clone(),
    ));
    let bounces = app.bounces();
    let worker = opts.parse.then(|| {
        let (bounces, stored) = (bounces.clone(), Arc::clone(&stored));
        tokio::spawn(async move {
            loop {
                if let Err(e) = bounces.process_pending().await {
                    tracing::error!(error = %e, "parsing stored bounces failed; retrying");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = stored.notified() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
            }
        })
    });
    Ok(RunningEndpoint {
        addr,
        domain,
        stored,
        server,
        worker,
        bounces,
    })
}

#[cfg(test)]
mod tests {
    use super::is_postmaster;

    #[test]
    fn postmaster_in_every_spelling_and_only_ours() {
        for a in [
            "postmaster",
            "PostMaster",
            "",
            "<postmaster@bounce.example.org>",
            "POSTMASTER@Bounce.Example.ORG",
        ] {
            assert!(is_postmaster(a, "bounce.example.org"), "{a:?}");
        }
        for a in [
            "postmaster@other.example",
            "postmasters",
            "b-x@bounce.example.org",
            "abuse",
        ] {
            assert!(!is_postmaster(a, "bounce.example.org"), "{a:?}");
        }
    }
}
