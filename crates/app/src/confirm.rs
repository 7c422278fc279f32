//! The double opt-in confirmation mail, and the queue that sends it for the
//! HTTP endpoint.
//!
//! The mail is transactional, not a campaign: plain text, no `List-*`
//! headers, `Auto-Submitted: auto-generated` (RFC 3834) so vacation replies
//! stay quiet. It is built here rather than by `rundbrief-render`'s
//! renderer, which is campaign-shaped (layout, List-Unsubscribe); the
//! subject is encoded by render's RFC 2047 encoder. Every value that comes
//! from outside (address, list name) goes only into the base64 body or an
//! encoded-word, never raw into a header.
//!
//! Used by `POST /s/LIST` (through an [`Outbox`]: the HTTP handler never
//! waits for SMTP, so the answer takes the same time whether or not a mail
//! goes out) and by `sub add --confirm` (which sends and waits).

use crate::App;
use crate::error::{AppError, ErrorKind, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rundbrief_core::{Purpose, Signer};
use rundbrief_sender::{Delivery, Outcome, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Confirmation mails waiting to be sent; over it a request still gets its
/// answer, but its mail is dropped (and logged): the visitor can retry.
pub const OUTBOX_CAPACITY: usize = 256;

/// One confirmation mail to send.
#[derive(Debug, Clone)]
pub struct ConfirmJob {
    pub email: String,
    pub list: String,
    pub subscriber_id: Uuid,
    pub list_id: Uuid,
}

/// Applied to each finished confirmation mail before it is sent (DKIM
/// signing). An error means the mail is not sent, as a campaign message
/// that cannot be signed is not: never unsigned.
pub type Finish = Arc<dyn Fn(Vec<u8>) -> std::result::Result<Vec<u8>, String> + Send + Sync>;

/// Builds and sends confirmation mails through one relay.
pub struct Mailer {
    finish: Option<Finish>,
    sender: Sender,
    signer: Signer,
    from: String,
    public_url: String,
    message_id_domain: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("sender", &self.sender)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl App {
    /// The confirmation mailer for `relay` (a URL or a `[relays.NAME]`; the
    /// configured relay when `None`), DKIM-signing when `[dkim]` is set.
    /// `Ok(None)` when no relay is given or configured at all.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`]: a relay that does not parse, or a missing
    /// secret, `sending.from`, `sending.public_url` or `sending.bounce_domain`,
    /// each named; a DKIM key that cannot be loaded.
    pub fn confirm_mailer(&self, relay: Option<&str>) -> Result<Option<Mailer>> {
        let cfg: &rundbrief_core::Config = &self.config;
        if relay.is_none() && cfg.relay.is_none() {
            return Ok(None);
        }
        let relay = crate::sending::relay_for(cfg, relay)?;
        let missing = |key: &str, example: &str| {
            AppError::invalid(format!(
                "`{key}` is not set; confirmation mails need it (e.g. {example} in rundbrief.toml)"
            ))
        };
        let from = cfg
            .sending
            .from
            .as_deref()
            .ok_or_else(|| missing("sending.from", "from = \"News <news@example.org>\""))?;
        let public_url = cfg.sending.public_url.as_deref().ok_or_else(|| {
            missing(
                "sending.public_url",
                "public_url = \"https://news.example.org\"",
            )
        })?;
        let sender = Sender::new(relay, self.verp()?)
            .map_err(|e| AppError::wrap(ErrorKind::Invalid, e).context("setting up the relay"))?;
        let mut mailer = Mailer::new(
            sender,
            self.signer()?,
            from,
            public_url,
            cfg.sending.message_id_domain.as_deref(),
        )?;
        if let Some(dkim) = self.dkim()? {
            mailer = mailer.with_finish(Arc::new(move |m: Vec<u8>| {
                dkim.sign(&m)
                    .map_err(|e| format!("DKIM signing failed: {e}"))
            }));
        }
        Ok(Some(mailer))
    }
}

impl Mailer {
    /// `from` is the `From:` header value (`sending.from`), `public_url`
    /// the base of the confirmation link (`sending.public_url`).
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] when `from` has no domain or contains a line break.
    pub fn new(
        sender: Sender,
        signer: Signer,
        from: &str,
        public_url: &str,
        message_id_domain: Option<&str>,
    ) -> Result<Mailer> {
        if from.chars().any(char::is_control) {
            return Err(AppError::invalid(
                "`sending.from` must not contain line breaks or control characters",
            ));
        }
        let domain = rundbrief_core::mailbox_address(from)
            .map(|a| a.domain().to_string())
            .map_err(|e| {
                AppError::invalid(format!(
                    "`sending.from` `{from}` has no usable address: {e}"
                ))
            })?;
        Ok(Mailer {
            finish: None,
            sender,
            signer,
            from: from.to_string(),
            public_url: public_url.trim_end_matches('/').to_string(),
            message_id_domain: message_id_domain.map_or(domain, str::to_string),
        })
    }

    /// Passes every mail through `finish` before sending (e.g. DKIM signing).
    #[must_use]
    pub fn with_finish(mut self, finish: Finish) -> Self {
        self.finish = Some(finish);
        self
    }

    /// `{public_url}/c/{token}` for this membership.
    pub fn confirm_url(&self, subscriber: Uuid, list: Uuid) -> String {
        format!(
            "{}/c/{}",
            self.public_url,
            rundbrief_core::links::member_token(&self.signer, Purpose::Confirm, subscriber, list)
        )
    }

    /// The message bytes (CRLF line ends).
    pub fn message(
        &self,
        job: &ConfirmJob,
        id: Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<u8> {
        let url = self.confirm_url(job.subscriber_id, job.list_id);
        let body = format!(
            "Hello,\r\n\r\nsomebody, hopefully you, asked to subscribe {email} to the list \
             \"{list}\".\r\n\r\nTo confirm, open this link and press the button on the page:\r\n\r\n\
             {url}\r\n\r\nIf this was not you, ignore this message: the address will not be \
             subscribed and gets no further mail from this request.\r\n",
            email = job.email,
            list = job.list,
        );
        let mut m = String::with_capacity(body.len() * 2 + 512);
        let mut h = |name: &str, value: &str| {
            m.push_str(name);
            m.push_str(": ");
            m.push_str(value);
            m.push_str("\r\n");
        };
        h("From", &self.from);
        h("To", &format!("<{}>", job.email));
        h(
            "Subject",
            &rundbrief_render::encode_unstructured(
                "Subject",
                &format!("Please confirm your subscription to {}", job.list),
            ),
        );
        h("Date", &now.to_rfc2822());
        h(
            "Message-ID",
            &format!("<{}@{}>", id.simple(), self.message_id_domain),
        );
        h("Auto-Submitted", "auto-generated");
        h("MIME-Version", "1.0");
        h("Content-Type", "text/plain; charset=utf-8");
        h("Content-Transfer-Encoding", "base64");
        m.push_str("\r\n");
        let encoded = STANDARD.encode(body.as_bytes());
        for chunk in encoded.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            m.push_str("\r\n");
        }
        m.into_bytes()
    }

    /// Sends the confirmation mail for `job` now and waits for the relay.
    ///
    /// The envelope's return path (and ENVID) is a VERP address signing the
    /// subscriber's id, so the bounce endpoint acts on a bounce of it like
    /// on a campaign's: a dead address typed into the form is pruned. The
    /// Message-ID has an id of its own.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] naming the SMTP step and the relay's reply;
    /// [`ErrorKind::Invalid`] when the mail could not be signed (not sent).
    pub async fn send(&self, job: &ConfirmJob) -> Result<()> {
        let id = job.subscriber_id;
        let mut bytes = self.message(job, Uuid::now_v7(), chrono::Utc::now());
        if let Some(finish) = &self.finish {
            bytes = finish(bytes).map_err(|error| {
                AppError::invalid(format!(
                    "the confirmation mail to {} was not sent (not signed): {error}",
                    job.email
                ))
            })?;
        }
        let message: Arc<[u8]> = Arc::from(bytes);
        match self
            .sender
            .send(Delivery {
                id,
                to: job.email.clone(),
                message,
                per_connection: None,
            })
            .await
        {
            Outcome::Sent { .. } => Ok(()),
            other => Err(AppError::unavailable(format!(
                "the confirmation mail to {} was not sent ({}): {}",
                job.email,
                other.as_str(),
                other.error().map(ToString::to_string).unwrap_or_default()
            ))),
        }
    }

    /// Waits for sends in flight and closes the relay connections.
    pub async fn shutdown(&self) {
        self.sender.shutdown().await;
    }
}

/// A bounded queue of confirmation mails and the task that sends them, so a
/// request handler never waits for SMTP. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<ConfirmJob>,
    /// The mail task and the token that tells it to finish the queue.
    worker: Arc<Mutex<Option<MailTask>>>,
}

/// The outbox's running mail task and the token that stops it.
type MailTask = (tokio::task::JoinHandle<()>, CancellationToken);

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &(OUTBOX_CAPACITY - self.tx.capacity()))
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Starts the task that sends what is queued (call from within a tokio
    /// runtime).
    pub fn start(mailer: Mailer) -> Outbox {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let closing = CancellationToken::new();
        let handle = tokio::spawn(run(Arc::new(mailer), rx, closing.clone()));
        Outbox {
            tx,
            worker: Arc::new(Mutex::new(Some((handle, closing)))),
        }
    }

    /// Queues `job`; `false` (and a warning in the log) when the queue is full.
    pub fn queue(&self, job: ConfirmJob) -> bool {
        let subscriber = job.subscriber_id;
        let queued = self.tx.try_send(job).is_ok();
        if !queued {
            tracing::warn!(%subscriber, "confirmation mail queue full; mail dropped");
        }
        queued
    }

    /// Sends what is still queued (within `limit`) and stops the mail task.
    pub async fn finish(&self, limit: Duration) {
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((handle, closing)) = worker {
            closing.cancel();
            if tokio::time::timeout(limit, handle).await.is_err() {
                tracing::warn!("confirmation mails still queued at shutdown were not sent");
            }
        }
    }
}

async fn run(mailer: Arc<Mailer>, mut rx: mpsc::Receiver<ConfirmJob>, closing: CancellationToken) {
    let send = |job: ConfirmJob| {
        let mailer = Arc::clone(&mailer);
        async move {
            match mailer.send(&job).await {
                Ok(()) => {
                    tracing::info!(subscriber = %job.subscriber_id, list = %job.list, "confirmation mail sent");
                }
                Err(e) => {
                    tracing::error!(subscriber = %job.subscriber_id, list = %job.list, error = %e, "confirmation mail not sent");
                }
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            job = rx.recv() => match job {
                Some(job) => send(job).await,
                None => break,
            },
            () = closing.cancelled() => {
                while let Ok(job) = rx.try_recv() {
                    send(job).await;
                }
                break;
            }
        }
    }
    mailer.shutdown().await;
}
