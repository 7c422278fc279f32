//! The double opt-in confirmation mail and the queue that sends it.
//!
//! The mail is transactional, not a campaign: plain text, no `List-*`
//! headers, `Auto-Submitted: auto-generated` (RFC 3834) so vacation replies
//! stay quiet. It is built here rather than by `rundbrief-render`, whose
//! renderer is campaign-shaped (layout, List-Unsubscribe). Every value that
//! comes from outside (address, list name) goes only into the base64 body
//! or an RFC 2047 encoded word, never raw into a header.
//!
//! The HTTP handler never waits for SMTP: it puts a [`ConfirmJob`] on a
//! bounded queue and answers at once, so the answer takes the same time
//! whether or not a mail goes out (no way to learn who is subscribed).

use crate::HttpError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rundbrief_core::{Purpose, Signer};
use rundbrief_sender::{Delivery, Outcome, Sender};
use std::sync::Arc;
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

/// Sends confirmation mails through the sender crate.
/// Applied to each finished confirmation mail before it is sent (the CLI
/// passes DKIM signing here, so this crate needs no key handling). An error
/// means the mail is not sent, as a campaign message that cannot be signed
/// is not: never unsigned.
pub type Finish = Arc<dyn Fn(Vec<u8>) -> Result<Vec<u8>, String> + Send + Sync>;

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

impl Mailer {
    /// `from` is the `From:` header value (`sending.from`), `public_url`
    /// the base of the confirmation link (`sending.public_url`).
    ///
    /// # Errors
    /// [`HttpError::Config`] when `from` has no domain or contains a line break.
    pub fn new(
        sender: Sender,
        signer: Signer,
        from: &str,
        public_url: &str,
        message_id_domain: Option<&str>,
    ) -> Result<Mailer, HttpError> {
        if from.chars().any(char::is_control) {
            return Err(HttpError::Config {
                key: "sending.from",
                problem: "must not contain line breaks or control characters".into(),
            });
        }
        let domain = rundbrief_core::mailbox_address(from)
            .map(|a| a.domain().to_string())
            .map_err(|e| HttpError::Config {
                key: "sending.from",
                problem: format!("`{from}` has no usable address: {e}"),
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

    /// `{public_url}/c/{token}` for this membership.
    /// Passes every mail through `finish` before sending (e.g. DKIM signing).
    pub fn with_finish(mut self, finish: Finish) -> Self {
        self.finish = Some(finish);
        self
    }

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
            &encode_word(&format!("Please confirm your subscription to {}", job.list)),
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
    /// [`HttpError::Send`] with the SMTP step and the relay's reply.
    pub async fn send(&self, job: &ConfirmJob) -> Result<(), HttpError> {
        let id = job.subscriber_id;
        let mut bytes = self.message(job, Uuid::now_v7(), chrono::Utc::now());
        if let Some(finish) = &self.finish {
            bytes = finish(bytes).map_err(|error| HttpError::Send {
                to: job.email.clone(),
                outcome: "not signed",
                error,
            })?;
        }
        let message: Arc<[u8]> = Arc::from(bytes);
        match self
            .sender
            .send(Delivery {
                id,
                to: job.email.clone(),
                message,
            })
            .await
        {
            Outcome::Sent { .. } => Ok(()),
            other => Err(HttpError::Send {
                to: job.email.clone(),
                outcome: other.as_str(),
                error: other.error().map(ToString::to_string).unwrap_or_default(),
            }),
        }
    }

    /// Waits for sends in flight and closes the relay connections.
    pub async fn shutdown(&self) {
        self.sender.shutdown().await;
    }
}

pub use rundbrief_core::links::member_payload;

/// A header value: as is when it is short printable ASCII, otherwise an RFC
/// 2047 encoded word (base64, split so each word stays under 76 octets and
/// never inside a UTF-8 sequence). Control characters are dropped.
fn encode_word(value: &str) -> String {
    let clean: String = value.chars().filter(|c| !c.is_control()).collect();
    if clean.is_ascii() && clean.len() <= 60 {
        return clean;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in clean.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| format!("=?utf-8?b?{}?=", STANDARD.encode(w.as_bytes())))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_safe() {
        assert_eq!(encode_word("Confirm news"), "Confirm news");
        assert_eq!(
            encode_word("a\r\nBcc: x@example.org"),
            "aBcc: x@example.org"
        );
        let w = encode_word("Bitte bestätigen Sie Ihr Abonnement für die Liste Zürich-Nachrichten");
        assert!(w.starts_with("=?utf-8?b?"), "{w}");
        for line in w.split("\r\n") {
            assert!(line.len() < 78, "{line}");
        }
    }
}
