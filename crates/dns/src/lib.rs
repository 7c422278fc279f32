//! Recipient domains: what DNS says about them, and whose mail servers they use.
//!
//! This crate owns the lookups of recipient domains (MX, A, AAAA) through
//! hickory-resolver, a bounded cache of their answers that honours TTLs, the
//! domain check run at import and before a campaign ([`DomainCheck`]: a null
//! MX or a name that does not exist is undeliverable; a server failure is
//! unknown, never held against the domain) and the grouping of domains by
//! mailbox provider ([`Providers`]: Google, Microsoft, … by well-known domain
//! names and by the MX hosts a domain resolves to, extended by `[shaping]`).
//!
//! It never decides what happens to a subscriber (the caller marks and
//! audits), never touches the database and never sends mail.
//!
//! Start reading at [`Resolver`] (built from `[dns]`: the servers, or the
//! system's resolver), then [`Resolver::check_domain`] and
//! [`Providers::provider_of`]. For an import, [`Resolver::check_domains`]
//! checks a batch's distinct domains with bounded concurrency; on hot paths
//! [`Resolver::cached_check`] and [`Providers::cached_provider_of`] answer
//! from the cache without waiting. [`responder`] is a small authoritative
//! DNS server on loopback for tests, the demo and the benchmark.
//!
//! ```no_run
//! # async fn f() -> Result<(), rundbrief_dns::DnsError> {
//! let cfg = rundbrief_core::config::Config::default();
//! let dns = rundbrief_dns::Resolver::new(&cfg.dns)?;
//! match dns.check_domain("example.org").await {
//!     rundbrief_dns::DomainCheck::Undeliverable { reason } => println!("mark: {reason}"),
//!     other => println!("{other:?}"),
//! }
//! let providers = rundbrief_dns::Providers::new(&cfg.shaping, dns.clone());
//! println!("{}", providers.provider_of("example.org").await.name);
//! # Ok(()) }
//! ```

mod cache;
mod check;
mod clock;
mod provider;
mod resolver;
pub mod responder;

pub use check::{DomainCheck, REASON_NO_MX_OR_A, REASON_NULL_MX, REASON_NXDOMAIN};
pub use clock::{Clock, ManualClock, SystemClock};
pub use provider::{Basis, Provider, ProviderGroup, ProviderLimits, ProviderTable, Providers};
pub use resolver::{Answer, LookupError, MxRecord, Resolver, Stats};

/// Why a [`Resolver`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A `[dns]` value is wrong (see [`rundbrief_core::config::DnsConfig`]).
    #[error(transparent)]
    Config(#[from] rundbrief_core::config::ConfigError),
    /// `[dns] servers` is empty and the system's resolver configuration
    /// (`/etc/resolv.conf`) could not be read.
    #[error(
        "cannot read the system's resolver configuration ({0}); set `[dns] servers` \
         (e.g. servers = [\"127.0.0.1:53\"])"
    )]
    SystemConfig(String),
}
