//! The policy seam: what the bounce endpoint and the sink decide. The server
//! core speaks SMTP; a [`Handler`] says which senders and recipients to accept
//! and stores messages.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::reply::Reply;

/// What the handler knows about the session it is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Process-unique session number, also in the `session` tracing span.
    pub id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Our address the peer connected to.
    pub local: SocketAddr,
    /// The name given in EHLO/HELO, once given.
    pub helo: Option<String>,
    /// True once STARTTLS has completed.
    pub tls: bool,
    /// Messages accepted (answered 250) in this session so far.
    pub messages: u32,
}

/// `BODY=` of MAIL FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Body {
    /// No `BODY=` or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// `RET=` of MAIL FROM (RFC 3461): what a DSN should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ret {
    /// `RET=FULL`: the whole message.
    Full,
    /// `RET=HDRS`: the headers only.
    Headers,
}

/// The reverse path and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailFrom {
    /// The address; empty for the null reverse path `<>` (bounces).
    pub address: String,
    /// `SIZE=` as declared, if any.
    pub size: Option<usize>,
    /// `BODY=`.
    pub body: Body,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// `RET=` (DSN).
    pub ret: Option<Ret>,
    /// `ENVID=` (DSN), decoded.
    pub env_id: Option<String>,
}

impl MailFrom {
    /// True for `MAIL FROM:<>`.
    pub fn is_null(&self) -> bool {
        self.address.is_empty()
    }
}

/// `NOTIFY=` of RCPT TO (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
    /// `NEVER`.
    pub never: bool,
}

/// One forward path and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    /// The address as given.
    pub address: String,
    /// `ORCPT=` (DSN), the decoded address.
    pub orcpt: Option<String>,
    /// `NOTIFY=`; `None` when not given (RFC 3461 default: failures and delays).
    pub notify: Option<Notify>,
}

impl Recipient {
    /// Whether a failure DSN may be sent for this recipient (RFC 3461 §4.1).
    pub fn wants_failure_dsn(&self) -> bool {
        self.notify.is_none_or(|n| n.failure && !n.never)
    }
}

/// The transaction so far: sender and the recipients accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// MAIL FROM.
    pub mail_from: MailFrom,
    /// Accepted RCPT TOs, in order.
    pub recipients: Vec<Recipient>,
}

/// A handler's answer to a connection, MAIL FROM or RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Go on (the server sends its usual 220/250).
    Accept,
    /// Answer with this reply instead. A 4xx or 5xx refuses the command; a
    /// `421` also closes the connection.
    Reject(Reply),
}

/// A handler's answer to a complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataDecision {
    /// The message is stored durably: send `250 2.0.0 Ok` (with `queued as
    /// ID` when `queue_id` is given). With `close`, the connection is closed
    /// right after that reply, without waiting for QUIT.
    Accept {
        /// Shown in the 250 text.
        queue_id: Option<String>,
        /// Close after the 250.
        close: bool,
    },
    /// Refuse the message with this reply (4xx or 5xx; 421 also closes).
    Reject(Reply),
}

impl DataDecision {
    /// Accepted, no queue id, connection kept.
    pub fn accept() -> Self {
        Self::Accept {
            queue_id: None,
            close: false,
        }
    }
}

/// Policy and storage behind an SMTP listener.
///
/// Implementors write `async fn` for each method; the futures must be `Send`.
/// Each call is bounded by [`crate::Limits::handler_timeout`]: past it the
/// peer gets `451 4.3.0` and the call is dropped, so a handler must not leave
/// half-done state behind on cancellation.
pub trait Handler: Send + Sync + 'static {
    /// A new connection, before the banner. Default: accept.
    fn connect(&self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        let _ = info;
        async { Decision::Accept }
    }

    /// MAIL FROM, after syntax and SIZE were checked. Default: accept.
    fn mail(&self, info: &SessionInfo, from: &MailFrom) -> impl Future<Output = Decision> + Send {
        let _ = (info, from);
        async { Decision::Accept }
    }

    /// RCPT TO, after syntax and the recipient limit were checked. `tx` holds
    /// MAIL FROM and the recipients accepted so far. The bounce endpoint
    /// verifies its VERP token here.
    fn rcpt(
        &self,
        info: &SessionInfo,
        tx: &Envelope,
        rcpt: &Recipient,
    ) -> impl Future<Output = Decision> + Send;

    /// A complete message (dot-unstuffed, CRLF line ends as received, at most
    /// [`crate::Limits::max_message_size`] bytes), handed over so it can be
    /// stored without a copy. Return `Accept` only once the message is stored
    /// durably: the 250 goes out after this returns.
    fn data(
        &self,
        info: &SessionInfo,
        tx: &Envelope,
        message: Vec<u8>,
    ) -> impl Future<Output = DataDecision> + Send;

    /// A pause before each reply (the sink's `--latency`). Default: none.
    fn reply_delay(&self) -> Option<Duration> {
        None
    }
}
