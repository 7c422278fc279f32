//! Error types of the crate. Per-session problems (a peer that times out or
//! sends garbage) are answered on the wire and logged, never returned here:
//! these errors are about the server as a whole.

use std::io;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpdError {
    /// A limit in the configuration is unusable (for example zero connections).
    #[error("invalid smtpd configuration: {field} {reason}")]
    Config {
        /// The `Limits`/`ServerConfig` field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `accept()` kept failing after the retries with back-off.
    #[error("accepting connections failed: {0}")]
    Accept(#[source] io::Error),
    /// Building the TLS configuration or the self-signed certificate failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

impl SmtpdError {
    /// True for errors that may go away on a retry (accept failures such as
    /// running out of file descriptors); configuration errors are not.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Accept(_))
    }
}

/// A reply or status code given as text (from the command line) is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyParseError {
    /// The reply does not start with a three-digit code in 200..=599.
    #[error("`{input}`: a reply must start with a code 200-599, e.g. `550 5.1.1 User unknown`")]
    Code {
        /// The text as given.
        input: String,
    },
    /// The enhanced status is not `class.subject.detail` (RFC 3463).
    #[error(
        "`{input}`: not an enhanced status code such as `5.1.1` (class 2, 4 or 5; parts 0-999)"
    )]
    Status {
        /// The text as given.
        input: String,
    },
    /// The enhanced status class differs from the reply code's first digit.
    #[error("`{input}`: the enhanced status class must match the reply code (550 goes with 5.x.x)")]
    ClassMismatch {
        /// The text as given.
        input: String,
    },
}
