//! Server configuration: the limits every listener enforces, with their
//! defaults and what happens when each one is hit.

use std::time::Duration;

use crate::error::SmtpdError;

/// Upper bound for [`Limits::max_line_length`]: smtp-proto's request
/// receiver buffers at most this many bytes of a command line.
pub const MAX_LINE_LENGTH: usize = smtp_proto::request::receiver::MAX_LINE_LENGTH;

/// Bounds on what one listener and each of its sessions may use.
///
/// Every field says its default and what the server does when it is hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Sessions served at once. Default 256.
    ///
    /// When all are in use, the next connection is still accepted and answered
    /// `421 4.3.2 Too many connections, try again later`, then closed, so the peer
    /// is not left hanging. Those refusals have their own small pool
    /// ([`Limits::overflow_replies`]); when it is exhausted too the server stops
    /// accepting until a slot frees (the kernel backlog holds the peer).
    pub max_connections: usize,
    /// Connections over [`Limits::max_connections`] that may be answered `421` at
    /// the same time. Default 16. Each such refusal lasts at most
    /// [`Limits::write_timeout`]. 0: never answer 421, just stop accepting
    /// while all session slots are busy.
    pub overflow_replies: usize,
    /// Sessions from one IP address at once; 0 means no per-address cap.
    /// Default 64. Over it: `421 4.7.0 Too many connections from your address`.
    pub max_connections_per_ip: usize,
    /// Session slots kept for addresses that hold no session yet. Default
    /// 32, and never more than a quarter of [`Limits::max_connections`].
    /// Once fewer slots than this are free, an address that already holds a
    /// session gets `421 4.7.0 Too many connections from your address`, and
    /// only new addresses are served: one or two busy (or hostile) peers
    /// cannot take every slot and lock out a real sender.
    pub reserved_slots: usize,
    /// Largest message accepted, in bytes (after dot-unstuffing). Default
    /// 25 MiB. Advertised as `SIZE`; a `MAIL FROM` with a larger `SIZE=` gets
    /// `552 5.3.4` at once, and a DATA that grows past it is read to the end
    /// (discarded, not buffered) and answered `552 5.3.4 Message too big`.
    pub max_message_size: usize,
    /// Recipients per transaction. Default 100 (RFC 5321 §4.5.3.1.8 minimum).
    /// One more gets `452 4.5.3 Too many recipients`; the transaction goes on
    /// with those accepted so far.
    pub max_recipients: usize,
    /// Longest command line, CRLF included. Default 2048 (RFC 5321 needs
    /// 512; parameters such as ORCPT need more); at most [`MAX_LINE_LENGTH`].
    /// A longer line is answered `500 5.5.2 Line too long`, the rest of it up
    /// to its LF is discarded, and it counts against [`Limits::max_errors`].
    /// DATA lines are not limited (only the whole message is).
    pub max_line_length: usize,
    /// Protocol errors and refusals per session, counted since the last
    /// accepted message: unknown commands, syntax errors, commands out of
    /// sequence, over-long lines, and every `MAIL` or `RCPT` the handler
    /// refused (so a peer cannot hold a slot by probing addresses that are
    /// refused). Default 10. One more: `421 4.7.0 Too many errors`, then the
    /// connection is closed.
    pub max_errors: u32,
    /// Commands that move no mail (NOOP, VRFY, HELP, RSET, a repeated
    /// EHLO/HELO) per session, counted since the last accepted message.
    /// Default 100. One more: `421 4.7.0 Too many commands without mail`,
    /// then close. A pooled sender sending RSET between messages never gets
    /// near it.
    pub max_junk_commands: u32,
    /// Longest life of a session, from accept. Default 600 s. Each command
    /// restarts only [`Limits::idle_timeout`]; this one does not restart.
    /// Once it is over, the next wait for a command ends the session with
    /// `421 4.4.2 Session too long`; a message being received is finished
    /// first (within [`Limits::data_timeout`]). A sender with more to send
    /// connects again.
    pub max_session_duration: Duration,
    /// Longest wait for the next complete command line, counted from our last
    /// reply (RFC 5321 §4.5.3.2.7 suggests 5 minutes). Default 300 s. Covers
    /// both an idle peer and one dripping a command byte by byte. On expiry:
    /// `421 4.4.2 Idle timeout`, then close.
    pub idle_timeout: Duration,
    /// Longest time for a whole DATA body, from our `354` to the final dot.
    /// Default 600 s. On expiry: `421 4.4.2 DATA timeout`, message dropped,
    /// connection closed.
    pub data_timeout: Duration,
    /// Longest time to write our replies to a peer that does not read them.
    /// Default 60 s; on expiry the connection is dropped without a reply.
    pub write_timeout: Duration,
    /// Longest time for the TLS handshake after `220 Ready to start TLS`.
    /// Default 30 s; on expiry the connection is dropped.
    pub tls_handshake_timeout: Duration,
    /// Longest time a handler decision (`mail`, `rcpt`, `data`) may take.
    /// Default 120 s. On expiry the peer gets `451 4.3.0 Temporary failure`
    /// (for DATA: the message may or may not have been stored; the sender
    /// retries, so storage must tolerate a duplicate).
    pub handler_timeout: Duration,
    /// After shutdown is requested: how long sessions in the middle of a
    /// message may go on to finish it. Default 30 s. Idle sessions get
    /// `421 4.3.2 Shutting down` at once; a message still incomplete at the
    /// deadline is dropped with `421 4.3.2`.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            overflow_replies: 16,
            max_connections_per_ip: 64,
            reserved_slots: 32,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 2048,
            max_errors: 10,
            max_junk_commands: 100,
            max_session_duration: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// The slots actually kept for new addresses: [`Limits::reserved_slots`],
    /// at most a quarter of [`Limits::max_connections`].
    pub fn effective_reserve(&self) -> usize {
        self.reserved_slots.min(self.max_connections / 4)
    }

    /// Checks that every limit is usable.
    ///
    /// # Errors
    /// [`SmtpdError::Config`] naming the first field that is zero where zero
    /// would make the server refuse everything or spin.
    pub fn validate(&self) -> Result<(), SmtpdError> {
        let nonzero = |v: bool, field: &'static str| {
            if v {
                Ok(())
            } else {
                Err(SmtpdError::Config {
                    field,
                    reason: "must be > 0",
                })
            }
        };
        nonzero(self.max_connections > 0, "max_connections")?;
        nonzero(self.max_message_size > 0, "max_message_size")?;
        nonzero(self.max_recipients > 0, "max_recipients")?;
        if self.max_line_length < 512 || self.max_line_length > MAX_LINE_LENGTH {
            return Err(SmtpdError::Config {
                field: "max_line_length",
                reason: "must be between 512 and 4096",
            });
        }
        for (d, field) in [
            (self.idle_timeout, "idle_timeout"),
            (self.data_timeout, "data_timeout"),
            (self.write_timeout, "write_timeout"),
            (self.tls_handshake_timeout, "tls_handshake_timeout"),
            (self.handler_timeout, "handler_timeout"),
            (self.max_session_duration, "max_session_duration"),
        ] {
            nonzero(!d.is_zero(), field)?;
        }
        Ok(())
    }
}

/// Everything [`crate::run`] needs besides the socket, the handler and TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Our name in the banner and the EHLO reply. Default `localhost`.
    pub hostname: String,
    /// Advertise the DSN extension (RFC 3461) so senders pass `RET`, `ENVID`,
    /// `NOTIFY` and `ORCPT`; the handler sees them in the envelope. Default
    /// false: only a handler that acts on them (the sink) should say yes.
    pub advertise_dsn: bool,
    /// Bounds on connections and sessions.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            advertise_dsn: false,
            limits: Limits::default(),
        }
    }
}

impl From<Limits> for ServerConfig {
    fn from(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }
}

impl ServerConfig {
    /// Validates the limits and the host name.
    ///
    /// # Errors
    /// [`SmtpdError::Config`] for the first unusable field.
    pub fn validate(&self) -> Result<(), SmtpdError> {
        self.limits.validate()?;
        let ok = !self.hostname.is_empty()
            && self.hostname.len() <= 255
            && self.hostname.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
            });
        if ok {
            Ok(())
        } else {
            Err(SmtpdError::Config {
                field: "hostname",
                reason: "must be a domain name or address literal",
            })
        }
    }
}
