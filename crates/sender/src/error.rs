//! How a send ends: the step that failed, the server's reply, and the
//! [`Outcome`] the scheduler acts on.
//!
//! Everything here is pure: [`Reply`] parsing and the [`Outcome`]
//! classification are plain functions with table tests.

use std::fmt;
use std::time::Duration;

/// The step of an SMTP conversation a send was in when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SmtpStep {
    /// Resolving the relay's host name.
    Dns,
    /// Opening the TCP connection (and, for `smtps://`, the TLS handshake is
    /// [`SmtpStep::Tls`]).
    Connect,
    /// The 220 banner and EHLO. lettre reads both in one call, so a refusal
    /// in the banner and one at EHLO are not told apart.
    Greeting,
    /// STARTTLS or the implicit TLS handshake.
    Tls,
    /// AUTH.
    Auth,
    /// RSET between transactions on a kept connection.
    Rset,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA, the message body and the final dot.
    Data,
}

impl SmtpStep {
    /// Lower-case name, as used in `smtp check --json` (`dns`, `connect`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpStep::Dns => "dns",
            SmtpStep::Connect => "connect",
            SmtpStep::Greeting => "greeting",
            SmtpStep::Tls => "tls",
            SmtpStep::Auth => "auth",
            SmtpStep::Rset => "rset",
            SmtpStep::Mail => "mail",
            SmtpStep::Rcpt => "rcpt",
            SmtpStep::Data => "data",
        }
    }
}

impl fmt::Display for SmtpStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SmtpStep::Dns => "DNS",
            SmtpStep::Connect => "CONNECT",
            SmtpStep::Greeting => "GREETING",
            SmtpStep::Tls => "TLS",
            SmtpStep::Auth => "AUTH",
            SmtpStep::Rset => "RSET",
            SmtpStep::Mail => "MAIL",
            SmtpStep::Rcpt => "RCPT",
            SmtpStep::Data => "DATA",
        })
    }
}

/// An RFC 3463 enhanced status code such as `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2, 4 or 5.
    pub class: u8,
    /// The subject (`1` addressing, `7` security/policy, …).
    pub subject: u16,
    /// The detail.
    pub detail: u16,
}

impl EnhancedStatus {
    /// Parses `C.S.D` (class 2, 4 or 5; subject and detail of 1 to 3 digits).
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let (c, sub, det) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        let ok = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        if c.len() != 1 || !ok(c) || !ok(sub) || !ok(det) {
            return None;
        }
        let class: u8 = c.parse().ok()?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(Self {
            class,
            subject: sub.parse().ok()?,
            detail: det.parse().ok()?,
        })
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A server reply: code, enhanced status (when the server gave one that
/// agrees with the code) and the text after it, lines joined by spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code, e.g. 550.
    pub code: u16,
    /// The enhanced status code at the start of the text, e.g. 5.1.1.
    pub enhanced: Option<EnhancedStatus>,
    /// The rest of the text, e.g. `User unknown`.
    pub text: String,
}

impl Reply {
    /// Splits `text` (the reply's lines joined) into enhanced status and
    /// text. An enhanced status whose class differs from the code's first
    /// digit is left in the text (RFC 2034 §4).
    pub fn new(code: u16, text: &str) -> Self {
        let text = text.trim();
        let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
        match EnhancedStatus::parse(first) {
            Some(e) if u16::from(e.class) == code / 100 => Reply {
                code,
                enhanced: Some(e),
                text: rest.trim().to_owned(),
            },
            _ => Reply {
                code,
                enhanced: None,
                text: text.to_owned(),
            },
        }
    }

    /// The reply inside a recorded refusal, as [`SendError`] displays it
    /// and the store keeps it as a delivery's last error (`RCPT refused by
    /// HOST: 550 5.1.1 text`). `None` for any other error text.
    pub fn from_recorded(error: &str) -> Option<Self> {
        let (_, after) = error.split_once(" refused by ")?;
        let (_, reply) = after.split_once(": ")?;
        let reply = reply.trim();
        let (code, rest) = reply.split_once(' ').unwrap_or((reply, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Reply::new(code.parse().ok()?, rest))
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    pub(crate) fn from_response(r: &lettre::transport::smtp::response::Response) -> Self {
        let text = r.message().collect::<Vec<_>>().join(" ");
        Reply::new(code_number(r.code()), &text)
    }

    pub(crate) fn from_error(e: &lettre::transport::smtp::Error) -> Option<Self> {
        let code = e.status()?;
        // lettre keeps the reply text (lines joined) as the error's source.
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        Some(Reply::new(code_number(code), &text))
    }
}

fn code_number(code: lettre::transport::smtp::response::Code) -> u16 {
    // `Code` displays as its three digits.
    code.to_string().parse().unwrap_or(0)
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// Why one send did not end in 250. Every variant names the step
/// ([`SendError::step`]) and the relay host.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The relay answered `step` with a 4xx or 5xx reply.
    #[error("{step} refused by {host}: {reply}")]
    Refused {
        /// The command refused.
        step: SmtpStep,
        /// The relay.
        host: String,
        /// The reply, quoted.
        reply: Reply,
    },
    /// No answer to `step` within its timeout; the connection is dropped.
    #[error("{step} timed out after {after:?} on {host}")]
    Timeout {
        /// The step in flight.
        step: SmtpStep,
        /// The relay.
        host: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection broke (reset, closed, garbled reply) during `step`.
    #[error("connection to {host} lost during {step}: {detail}")]
    ConnectionLost {
        /// The step in flight.
        step: SmtpStep,
        /// The relay.
        host: String,
        /// What the network layer said.
        detail: String,
    },
    /// The relay's name did not resolve (step DNS).
    #[error("DNS: cannot resolve {host}: {detail}")]
    Resolve {
        /// The relay.
        host: String,
        /// The resolver's error.
        detail: String,
    },
    /// No TCP connection could be opened (step CONNECT).
    #[error("CONNECT to {host}:{port} failed: {detail}")]
    Connect {
        /// The relay.
        host: String,
        /// The port.
        port: u16,
        /// The last error, e.g. `Connection refused`.
        detail: String,
    },
    /// The TLS handshake failed (certificate not trusted, wrong name,
    /// protocol mismatch) (step TLS).
    #[error("TLS with {host} failed: {detail}")]
    Tls {
        /// The relay.
        host: String,
        /// The TLS library's error.
        detail: String,
    },
    /// `tls=required` but the relay does not offer STARTTLS (step TLS).
    #[error("TLS: {host} does not offer STARTTLS but the relay URL says tls=required")]
    TlsNotOffered {
        /// The relay.
        host: String,
    },
    /// Credentials are configured but the relay offers no AUTH mechanism we
    /// speak (PLAIN, LOGIN), often because it wants TLS first (step AUTH).
    #[error("AUTH: {host} offers no PLAIN or LOGIN mechanism{hint}")]
    AuthUnsupported {
        /// The relay.
        host: String,
        /// A hint (e.g. "; it may only offer AUTH after STARTTLS").
        hint: &'static str,
    },
    /// An address lettre will not put in a command (step MAIL or RCPT).
    #[error("{step}: `{address}` is not a valid address: {detail}")]
    InvalidAddress {
        /// MAIL for the return path, RCPT for the recipient.
        step: SmtpStep,
        /// The address as given.
        address: String,
        /// Why.
        detail: String,
    },
    /// The sender was shut down before this send could start.
    #[error("the sender is shut down")]
    Shutdown,
}

impl SendError {
    /// The step the send was in.
    pub fn step(&self) -> SmtpStep {
        match self {
            SendError::Refused { step, .. }
            | SendError::Timeout { step, .. }
            | SendError::ConnectionLost { step, .. }
            | SendError::InvalidAddress { step, .. } => *step,
            SendError::Resolve { .. } => SmtpStep::Dns,
            SendError::Connect { .. } | SendError::Shutdown => SmtpStep::Connect,
            SendError::Tls { .. } | SendError::TlsNotOffered { .. } => SmtpStep::Tls,
            SendError::AuthUnsupported { .. } => SmtpStep::Auth,
        }
    }

    /// The server's reply, when the send ended on one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            SendError::Refused { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// Worth trying again later: a 4xx reply, a timeout, a lost or refused
    /// connection, a name that did not resolve (resolvers fail
    /// transiently; a name that never resolves is caught by the
    /// campaign's error budget and the message's maximum age).
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Refused { reply, .. } => reply.is_transient(),
            SendError::Timeout { .. }
            | SendError::ConnectionLost { .. }
            | SendError::Resolve { .. }
            | SendError::Connect { .. } => true,
            SendError::Tls { .. }
            | SendError::TlsNotOffered { .. }
            | SendError::AuthUnsupported { .. }
            | SendError::InvalidAddress { .. }
            | SendError::Shutdown => false,
        }
    }

    /// How this error ends the send; see [`Outcome`].
    pub fn into_outcome(self) -> Outcome {
        if self.is_transient() {
            return Outcome::Deferred { error: self };
        }
        match (&self, self.step()) {
            (SendError::Refused { .. }, SmtpStep::Rcpt | SmtpStep::Data) => {
                Outcome::Rejected { error: self }
            }
            (SendError::InvalidAddress { .. }, SmtpStep::Rcpt) => Outcome::Rejected { error: self },
            _ => Outcome::Failed { error: self },
        }
    }
}

/// How one send ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The relay took the message: 250 after the final dot.
    Sent {
        /// The relay's reply (often with its queue id).
        reply: Reply,
    },
    /// Try again later: a 4xx reply at any step, a timeout, a lost or
    /// refused connection, DNS.
    Deferred {
        /// What went wrong, with the step.
        error: SendError,
    },
    /// A synchronous bounce: a 5xx at RCPT or DATA (or a recipient address
    /// that cannot be written in RCPT). Hand the reply to bounce
    /// classification; do not retry.
    Rejected {
        /// What went wrong, with the step and the reply.
        error: SendError,
    },
    /// Our side is wrong, not the message: a 5xx at MAIL, AUTH or the
    /// greeting, TLS required but not offered or not trusted, no usable AUTH
    /// mechanism. Retrying will not help until the configuration changes.
    Failed {
        /// What went wrong, with the step.
        error: SendError,
    },
}

impl Outcome {
    /// The error, unless the message was sent.
    pub fn error(&self) -> Option<&SendError> {
        match self {
            Outcome::Sent { .. } => None,
            Outcome::Deferred { error }
            | Outcome::Rejected { error }
            | Outcome::Failed { error } => Some(error),
        }
    }

    /// True for [`Outcome::Sent`].
    pub fn is_sent(&self) -> bool {
        matches!(self, Outcome::Sent { .. })
    }

    /// `sent`, `deferred`, `rejected` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Deferred { .. } => "deferred",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Failed { .. } => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_enhanced_status() {
        let table = [
            (550, "5.1.1 User unknown", Some("5.1.1"), "User unknown"),
            (451, "4.7.1 Try later", Some("4.7.1"), "Try later"),
            (550, "User unknown", None, "User unknown"),
            // class disagrees with the code: left in the text
            (550, "4.1.1 odd", None, "4.1.1 odd"),
            (
                250,
                "2.0.0 Ok: queued as X",
                Some("2.0.0"),
                "Ok: queued as X",
            ),
            (554, "5.7.1", Some("5.7.1"), ""),
            (421, "", None, ""),
            (550, "5.1.1.1 x", None, "5.1.1.1 x"),
        ];
        for (code, text, enhanced, rest) in table {
            let r = Reply::new(code, text);
            assert_eq!(
                r.enhanced.map(|e| e.to_string()).as_deref(),
                enhanced,
                "{text}"
            );
            assert_eq!(r.text, rest, "{text}");
        }
        assert_eq!(
            Reply::new(550, "5.1.1 User unknown").to_string(),
            "550 5.1.1 User unknown"
        );
    }

    #[test]
    fn outcomes_by_step_and_class() {
        let refused = |step, code, text: &str| SendError::Refused {
            step,
            host: "h".into(),
            reply: Reply::new(code, text),
        };
        let table: Vec<(SendError, &str)> = vec![
            (
                refused(SmtpStep::Rcpt, 550, "5.1.1 User unknown"),
                "rejected",
            ),
            (refused(SmtpStep::Data, 554, "5.7.1 Spam"), "rejected"),
            (refused(SmtpStep::Rcpt, 451, "4.7.1 Later"), "deferred"),
            (refused(SmtpStep::Mail, 421, "4.3.2 Busy"), "deferred"),
            (
                refused(SmtpStep::Mail, 553, "5.7.1 Sender not allowed"),
                "failed",
            ),
            (
                refused(SmtpStep::Auth, 535, "5.7.8 Bad credentials"),
                "failed",
            ),
            (refused(SmtpStep::Greeting, 554, "No service"), "failed"),
            (
                SendError::Timeout {
                    step: SmtpStep::Data,
                    host: "h".into(),
                    after: Duration::from_secs(1),
                },
                "deferred",
            ),
            (
                SendError::ConnectionLost {
                    step: SmtpStep::Rcpt,
                    host: "h".into(),
                    detail: "eof".into(),
                },
                "deferred",
            ),
            (
                SendError::Connect {
                    host: "h".into(),
                    port: 25,
                    detail: "refused".into(),
                },
                "deferred",
            ),
            (
                SendError::Resolve {
                    host: "h".into(),
                    detail: "nx".into(),
                },
                "deferred",
            ),
            (SendError::TlsNotOffered { host: "h".into() }, "failed"),
            (
                SendError::Tls {
                    host: "h".into(),
                    detail: "UnknownIssuer".into(),
                },
                "failed",
            ),
            (
                SendError::InvalidAddress {
                    step: SmtpStep::Rcpt,
                    address: "x".into(),
                    detail: "no @".into(),
                },
                "rejected",
            ),
            (
                SendError::InvalidAddress {
                    step: SmtpStep::Mail,
                    address: "x".into(),
                    detail: "no @".into(),
                },
                "failed",
            ),
        ];
        for (err, want) in table {
            let text = err.to_string();
            assert_eq!(err.into_outcome().as_str(), want, "{text}");
        }
    }

    #[test]
    fn errors_name_the_step_and_quote_the_reply() {
        let e = SendError::Refused {
            step: SmtpStep::Rcpt,
            host: "relay.example".into(),
            reply: Reply::new(550, "5.1.1 User unknown"),
        };
        assert_eq!(
            e.to_string(),
            "RCPT refused by relay.example: 550 5.1.1 User unknown"
        );
        assert_eq!(e.step(), SmtpStep::Rcpt);
        assert_eq!(e.reply().map(|r| r.code), Some(550));
        // What the store keeps reads back as the same reply.
        assert_eq!(Reply::from_recorded(&e.to_string()).as_ref(), e.reply());
        assert_eq!(
            Reply::from_recorded("DATA refused by mx.example: 554 rejected as spam"),
            Some(Reply::new(554, "rejected as spam"))
        );
        assert_eq!(
            Reply::from_recorded("connect to mx.example failed: timed out"),
            None
        );
    }
}
