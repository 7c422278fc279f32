//! `rundbrief-sender`: sends rendered messages to an SMTP relay, one
//! envelope per delivery with a signed VERP return path, and says exactly
//! how each send ended.
//!
//! Owns: relay URLs, named relays and their options ([`Relay`];
//! [`Relay::resolve`] is the one place a `--relay NAME|URL` becomes a relay),
//! the SMTP conversation
//! driven one step at a time over lettre's `AsyncSmtpConnection`
//! (`connection.rs`), a pool of long-lived connections ([`Sender`],
//! [`Worker`]) and the classification of every send into an [`Outcome`]
//! whose error names the [`SmtpStep`] and quotes the server's [`Reply`].
//! Never: touches the database, renders, or decides what a bounce means.
//! `lettre` appears only in this crate.
//!
//! Start with [`Sender::send`], then [`Outcome`] and [`SendError`] (pure,
//! table-tested), then `connection.rs` for the conversation itself.
//!
//! ```no_run
//! # async fn demo(verp: rundbrief_core::Verp) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use rundbrief_sender::{Delivery, Outcome, Relay, Sender};
//! let mut relay = Relay::parse("smtp://127.0.0.1:2525")?;
//! relay.options.pool_size = 8;
//! let sender = Sender::new(relay, verp)?;
//! let message: Arc<[u8]> = Arc::from(&b"Subject: hi\r\n\r\nHello\r\n"[..]);
//! match sender.send(Delivery { id: uuid::Uuid::now_v7(), to: "ann@example.org".into(), message, per_connection: None }).await {
//!     Outcome::Sent { reply } => println!("sent: {reply}"),
//!     Outcome::Deferred { error } => println!("retry later: {error}"),
//!     Outcome::Rejected { error } => println!("bounced at {}: {error}", error.step()),
//!     Outcome::Failed { error } => println!("fix the configuration: {error}"),
//! }
//! sender.shutdown().await;
//! # Ok(()) }
//! ```

pub mod check;
mod connection;
mod error;
mod pool;
mod relay;
pub mod throttle;
mod tls;
pub mod transport;

pub use error::{EnhancedStatus, Outcome, Reply, SendError, SmtpStep};
pub use pool::{Delivery, Sender, SenderError, Worker};
pub use relay::{
    PasswordSource, Relay, RelayError, RelayOptions, SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT,
    TlsMode,
};
pub use transport::{StubTransport, Transport};
