//! `rundbrief-core`: the vocabulary every other crate speaks.
//!
//! It owns the domain types (addresses, lists, subscribers, statuses, audit
//! entries), the configuration (layered defaults → `rundbrief.toml` →
//! environment) and the streaming CSV row reader used by `rundbrief import`.
//!
//! It never touches a socket or a database: everything here is a plain
//! function or type over bytes, strings and `std::io::Read`.
//!
//! Start with [`address::Address`] (how an address is validated and
//! normalised), then [`model`] (the statuses and their meaning) and
//! [`config::Config`].

pub mod address;
pub mod config;
pub mod csvin;
pub mod links;
pub mod list_label;
pub mod model;
pub mod token;

pub use address::{Address, AddressError, mailbox_address};
pub use config::{Config, ConfigError, Secret};
pub use list_label::{ListLabel, ListLabelError};
pub use model::*;
pub use token::{Purpose, Signer, TokenError, Verp};
