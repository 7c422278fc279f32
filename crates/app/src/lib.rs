//! `rundbrief-app`: the application layer between the mechanism crates and
//! the front ends (`core ← store, bounce, render, dkim, sender, smtpd,
//! scheduler ← app ← cli, http, admin`).
//!
//! [`App::from_config`] builds what every command needs once: the store,
//! the token signer and VERP codec, the DKIM signer, the bounce policy, the
//! clock and the [`Observer`] (metrics). The services are plain methods and
//! functions with typed requests and results and one error type
//! ([`AppError`], whose [`ErrorKind`] a front end maps to a hint, an exit
//! code or an HTTP status):
//!
//! - [`campaigns`]: validation, compiling a campaign with its signed links,
//!   pre-flight, the status object;
//! - [`sending`]: the scheduler hooks, runners, foreground and test sends;
//! - [`bounces`]: the one bounce policy (endpoint, sending, `clean`),
//!   `process_pending`;
//! - [`endpoint`]: the bounce endpoint's smtpd handler and [`endpoint::start_endpoint`];
//! - [`members`]: what the people on a list do through their signed links
//!   (unsubscribe, re-subscribe) and double opt-in; [`confirm`]: the
//!   confirmation mail and the queue that sends it;
//! - [`domains`]: the recipient-domain check at import and before a
//!   campaign sends (undeliverable subscribers, skipped deliveries);
//! - [`serve`]: the `serve` supervisor loop;
//! - [`links`]: the signed link formats (re-exported from `rundbrief_core::links`).
//!
//! Start reading at [`App`], then [`sending::CampaignHooks`].

pub mod bounces;
pub mod breaker;
pub mod campaigns;
pub mod confirm;
pub mod domains;
pub mod endpoint;
pub mod error;
pub mod export;
pub mod members;
pub mod preflight;
pub mod sending;
pub mod serve;
pub mod shaping;

pub use error::{AppError, ErrorKind, Reason, Result, ResultExt};
pub use rundbrief_core::links;

use rundbrief_core::{Config, DeliveryState};
use rundbrief_scheduler::{Clock, SystemClock};
use rundbrief_store::Store;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What the services report for metrics. Every method has an empty
/// default, so an observer implements only what it counts.
pub trait Observer: Send + Sync {
    /// A connection to the bounce endpoint was accepted.
    fn endpoint_connection(&self) {}
    /// One delivery's outcome: recipient domain, state, time to send.
    fn delivery(&self, _domain: &str, _state: DeliveryState, _latency: Duration) {}
    /// A running campaign's deliveries still to send.
    fn queue_depth(&self, _campaign: &str, _depth: u64) {}
    /// How many campaigns are running.
    fn campaigns_running(&self, _n: u64) {}
    /// Subscriber and bounce counts from the database.
    fn db_counts(&self, _counts: &rundbrief_store::MetricCounts) {}
    /// The circuit breaker suspended `provider` in `campaign` (or, with
    /// `None`, paused the whole campaign).
    fn breaker_tripped(&self, _campaign: &str, _provider: Option<&str>) {}
}

/// An observer that counts nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;
impl Observer for NoObserver {}

/// Everything the services share, built once from the configuration.
/// Cheap to clone (shared parts are reference-counted).
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub observer: Arc<dyn Observer>,
    policy: bounces::Policy,
    dkim: Arc<OnceLock<Result<Option<Arc<rundbrief_dkim::DkimSigner>>, String>>>,
    /// The domain check, built on first use (`[dns] check = false`: `None`).
    domains: Arc<OnceLock<Result<Option<domains::DomainChecker>, String>>>,
    shaping: Arc<OnceLock<Result<Arc<shaping::Shaping>, String>>>,
}

impl App {
    /// Opens the store named by the configuration, brings its schema up to
    /// date, and builds the rest.
    ///
    /// # Errors
    /// The database cannot be opened or migrated.
    pub async fn from_config(config: Config, observer: Arc<dyn Observer>) -> Result<App> {
        let store = rundbrief_store::Store::connect(&rundbrief_store::ConnectConfig {
            url: config.database.url.clone(),
            max_connections: config.database.max_connections,
            pg_schema: config.database.schema.clone(),
        })
        .await?;
        let applied = store.migrate().await?;
        if applied.is_empty() {
            tracing::debug!(
                backend = store.backend_name(),
                "database schema is up to date"
            );
        } else {
            tracing::info!(
                backend = store.backend_name(),
                applied = applied.len(),
                migrations = %applied.join(", "),
                "database migrated"
            );
        }
        Ok(App::new(config, store, Arc::new(SystemClock), observer))
    }

    /// An app over an open store, with the given clock (a `ManualClock` in tests).
    pub fn new(
        config: Config,
        store: Store,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
    ) -> App {
        App {
            policy: bounces::Policy::from_config(&config),
            config: Arc::new(config),
            store,
            clock,
            observer,
            dkim: Arc::new(OnceLock::new()),
            domains: Arc::new(OnceLock::new()),
            shaping: Arc::new(OnceLock::new()),
        }
    }

    /// The token signer (current and previous secret).
    ///
    /// # Errors
    /// No secret configured.
    pub fn signer(&self) -> Result<rundbrief_core::Signer> {
        Ok(self.config.signer()?)
    }

    /// The VERP codec for the bounce domain.
    ///
    /// # Errors
    /// No secret or no `sending.bounce_domain`.
    pub fn verp(&self) -> Result<rundbrief_core::Verp> {
        Ok(self.config.verp()?)
    }

    /// The DKIM signer of `[dkim]`, loaded once; `None` when not configured.
    ///
    /// # Errors
    /// The key cannot be loaded (every later call says the same).
    pub fn dkim(&self) -> Result<Option<Arc<rundbrief_dkim::DkimSigner>>> {
        self.dkim
            .get_or_init(|| {
                rundbrief_dkim::DkimSigner::from_config(&self.config)
                    .map(|s| s.map(Arc::new))
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| AppError::invalid(format!("[dkim]: {e}")))
    }

    /// The bounce policy service.
    pub fn bounces(&self) -> bounces::Bounces {
        bounces::Bounces::new(
            self.store.clone(),
            self.policy.clone(),
            Arc::clone(&self.clock),
        )
    }
}
