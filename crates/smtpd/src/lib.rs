//! Inbound SMTP server core for rundbrief, on tokio and smtp-proto.
//!
//! Owns: listening, SMTP sessions (EHLO, MAIL, RCPT, DATA, STARTTLS,
//! PIPELINING), limits, timeouts and graceful shutdown; and `rundbrief sink`
//! ([`sink`]), a fake SMTP server for dry runs and tests.
//! Never: decides what a message means. Which recipients to accept and where
//! a message goes is the [`Handler`]'s business (the bounce endpoint's in the
//! `bounce` crate, the sink's in [`sink`]).
//!
//! Start reading at [`run`] (the listener), then `session.rs` (the pure
//! protocol state machine: a parsed request in, a [`Step`] out) and
//! `connection.rs` (the only code that owns a socket).
//!
//! # A policy hook
//!
//! The bounce endpoint accepts only its own signed VERP addresses and stores
//! each message before the 250. In outline (the token check and the storage
//! are the `bounce` crate's):
//!
//! ```no_run
//! use std::sync::Arc;
//! use rundbrief_smtpd::{
//!     CancellationToken, DataDecision, Decision, Envelope, Handler, Limits, Recipient, Reply,
//!     ServerConfig, SessionInfo,
//! };
//!
//! struct Endpoint;
//!
//! impl Handler for Endpoint {
//!     async fn rcpt(&self, _s: &SessionInfo, _tx: &Envelope, rcpt: &Recipient) -> Decision {
//!         let Some((local, domain)) = rcpt.address.rsplit_once('@') else {
//!             return Decision::Reject(Reply::with_status(501, (5, 1, 3), "Bad address"));
//!         };
//!         if !domain.eq_ignore_ascii_case("bounce.example.org") {
//!             return Decision::Reject(Reply::with_status(550, (5, 7, 1), "Relaying denied"));
//!         }
//!         if !local.starts_with("b-") {
//!             // the real check verifies the token's HMAC tag
//!             return Decision::Reject(Reply::with_status(550, (5, 1, 1), "Unknown address"));
//!         }
//!         Decision::Accept
//!     }
//!
//!     async fn data(&self, _s: &SessionInfo, _tx: &Envelope, message: Vec<u8>) -> DataDecision {
//!         // store `message` durably (row committed / file fsynced), then:
//!         let _ = message;
//!         DataDecision::accept()
//!     }
//! }
//!
//! # async fn serve() -> Result<(), rundbrief_smtpd::SmtpdError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await.map_err(rundbrief_smtpd::SmtpdError::Accept)?;
//! let stop = CancellationToken::new();
//! let cfg = ServerConfig { hostname: "bounce.example.org".into(), ..Limits::default().into() };
//! rundbrief_smtpd::run(listener, cfg, Arc::new(Endpoint), None, stop).await
//! # }
//! ```

pub mod client;
mod config;
mod connection;
mod error;
mod handler;
mod reply;
mod server;
mod session;
pub mod sink;
pub mod tls;

pub use config::{Limits, MAX_LINE_LENGTH, ServerConfig};
pub use error::{ReplyParseError, SmtpdError};
pub use handler::{
    Body, DataDecision, Decision, Envelope, Handler, MailFrom, Notify, Recipient, Ret, SessionInfo,
};
pub use reply::{EnhancedStatus, Reply};
pub use server::run;
pub use session::{Session, Step};
pub use tokio_rustls::TlsAcceptor;
pub use tokio_util::sync::CancellationToken;
