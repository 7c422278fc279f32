//! The recipient-domain check at import and before a campaign sends.
//!
//! `rundbrief-dns` answers what DNS says about a domain ([`DomainCheck`]);
//! this module decides what that means for subscribers: a domain that does
//! not exist (NXDOMAIN), has neither MX nor A/AAAA, or publishes a null MX
//! (RFC 7505) makes its subscribers `undeliverable`, audited with the
//! reason; a campaign's deliveries to them are `skipped`. A server failure
//! or a timeout is *unknown* and never marks anything. The check runs when
//! `[dns] check` is on (the default) and the command was not given
//! `--no-dns-check`; every lookup goes to `[dns] servers` (or the system's
//! resolver) through one cache per process.

use crate::App;
use crate::error::{AppError, Result};
use rundbrief_core::csvin::ImportRow;
use rundbrief_core::{Actor, Address};
use rundbrief_dns::{DomainCheck, Resolver};
use rundbrief_store::{Store, UndeliverableMark};
use uuid::Uuid;

/// The check: a resolver (and its cache) for recipient domains. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct DomainChecker {
    resolver: Resolver,
}

/// A row of an import whose domain cannot receive mail, as
/// `import --json` lists it in `undeliverable_rows` (field names are a
/// contract): `{"line": L, "email": "…", "reason": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UndeliverableRow {
    /// The row's line in the file (1 = the header).
    pub line: u64,
    /// The address in normal form.
    pub email: String,
    /// What DNS said, one of `rundbrief_dns::REASON_*`:
    /// `no MX or A (NXDOMAIN)`, `no MX or A`, `null MX (RFC 7505)`.
    pub reason: String,
    /// The address's domain (for the audit entry).
    #[serde(skip)]
    pub domain: String,
}

/// What the check before a campaign's send did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CampaignCheck {
    /// Distinct recipient domains checked.
    pub domains: u64,
    /// Of those, how many cannot receive mail.
    pub undeliverable_domains: u64,
    /// Of those, how many got no answer (SERVFAIL, timeout): nothing marked.
    pub unknown_domains: u64,
    /// Subscribers marked `undeliverable` now.
    pub marked: u64,
    /// Deliveries made `skipped` now.
    pub skipped: u64,
}

/// The audit reason of a mark: `DOMAIN: WHAT DNS SAID`.
pub fn audit_reason(domain: &str, reason: &str) -> String {
    format!("{domain}: {reason}")
}

impl DomainChecker {
    /// The checker `[dns]` describes, or `None` when `[dns] check = false`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`]: a server that is not `IP[:PORT]`, or
    /// no servers and no readable system resolver configuration.
    pub fn from_config(cfg: &rundbrief_core::Config) -> Result<Option<Self>> {
        if !cfg.dns.check {
            return Ok(None);
        }
        Resolver::new(&cfg.dns)
            .map(|resolver| Some(DomainChecker { resolver }))
            .map_err(|e| {
                AppError::invalid(format!(
                    "the domain check cannot start: {e} (or turn it off: `[dns] check = false`, \
                     RUNDBRIEF_DNS__CHECK=false)"
                ))
            })
    }

    /// A checker over an existing resolver (tests, the demo).
    pub fn with_resolver(resolver: Resolver) -> Self {
        DomainChecker { resolver }
    }

    /// The resolver (and its cache) behind the check.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The rows whose domain cannot receive mail, in row order. Each
    /// distinct domain is asked once (at most `[dns] concurrency` at a
    /// time); domains of earlier batches come from the cache. Rows whose
    /// domain got no answer are not returned: unknown is never held against
    /// an address.
    pub async fn check_rows(&self, rows: &[ImportRow]) -> Vec<UndeliverableRow> {
        // Owned names: a borrowing iterator held across the await makes the
        // future not `Send` for every lifetime (a spawned task needs that).
        let domains: Vec<String> = rows
            .iter()
            .map(|r| r.address.domain().to_string())
            .collect();
        let results = self.resolver.check_domains(domains).await;
        rows.iter()
            .filter_map(|r| {
                let domain = r.address.domain();
                match results.get(&normal(domain)) {
                    Some(DomainCheck::Undeliverable { reason }) => Some(UndeliverableRow {
                        line: r.line,
                        email: r.address.to_string(),
                        reason: reason.clone(),
                        domain: domain.to_string(),
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// Marks the subscribers of `rows` `undeliverable` (those that are
    /// active: a blocklisted, unsubscribed or bounced one keeps its
    /// status), audited as the import's. Returns how many changed.
    ///
    /// # Errors
    /// The store failed.
    pub async fn mark_rows(&self, store: &Store, rows: &[UndeliverableRow]) -> Result<u64> {
        let marks: Vec<UndeliverableMark> = rows
            .iter()
            .filter_map(|r| {
                Some(UndeliverableMark {
                    key: Address::parse(&r.email).ok()?.key(),
                    reason: audit_reason(&r.domain, &r.reason),
                })
            })
            .collect();
        Ok(store.mark_undeliverable(&marks, Actor::Import).await?)
    }

    /// Checks the domains of the campaign's recipients still to send
    /// (pending or deferred deliveries): each undeliverable one's
    /// subscribers become `undeliverable` (actor `scheduler`) and their
    /// deliveries `skipped`. Unknown domains are left alone.
    ///
    /// # Errors
    /// The store failed.
    pub async fn check_campaign(&self, store: &Store, campaign_id: Uuid) -> Result<CampaignCheck> {
        let recipients = store.recipients_to_send(campaign_id).await?;
        let domain_of =
            |email: &str| -> String { normal(email.rsplit_once('@').map_or(email, |(_, d)| d)) };
        let domains: Vec<String> = recipients.iter().map(|r| domain_of(&r.email)).collect();
        let results = self.resolver.check_domains(domains).await;
        let mut out = CampaignCheck {
            domains: results.len() as u64,
            ..CampaignCheck::default()
        };
        for v in results.values() {
            match v {
                DomainCheck::Undeliverable { .. } => out.undeliverable_domains += 1,
                DomainCheck::Unknown { reason } => {
                    out.unknown_domains += 1;
                    tracing::debug!(%reason, "domain check: no answer; the domain is not marked");
                }
                DomainCheck::Deliverable { .. } => {}
            }
        }
        let marks: Vec<(Uuid, String)> = recipients
            .iter()
            .filter_map(|r| {
                let d = domain_of(&r.email);
                match results.get(&d) {
                    Some(DomainCheck::Undeliverable { reason }) => {
                        Some((r.subscriber_id, audit_reason(&d, reason)))
                    }
                    _ => None,
                }
            })
            .collect();
        let marked = store
            .skip_undeliverable(campaign_id, &marks, Actor::Scheduler)
            .await?;
        out.marked = marked.subscribers;
        out.skipped = marked.deliveries;
        if out.unknown_domains > 0 {
            tracing::warn!(
                unknown = out.unknown_domains,
                "domain check: some recipient domains got no answer (SERVFAIL or timeout); \
                 they are sent to as usual and checked again next time"
            );
        }
        Ok(out)
    }
}

/// A domain as the resolver keys its results.
fn normal(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl App {
    /// The domain check of `[dns]`, built once per app; `None` when
    /// `[dns] check = false`.
    ///
    /// # Errors
    /// As [`DomainChecker::from_config`] (every later call says the same).
    pub fn domain_checker(&self) -> Result<Option<DomainChecker>> {
        self.domains
            .get_or_init(|| DomainChecker::from_config(&self.config).map_err(|e| e.to_string()))
            .clone()
            .map_err(AppError::invalid)
    }

    /// Runs the check before campaign `campaign_id` sends, unless it is
    /// off; `None` when it did not run.
    ///
    /// # Errors
    /// The checker cannot be built; the store failed.
    pub async fn check_campaign_domains(&self, campaign_id: Uuid) -> Result<Option<CampaignCheck>> {
        let Some(checker) = self.domain_checker()? else {
            return Ok(None);
        };
        checker
            .check_campaign(&self.store, campaign_id)
            .await
            .map(Some)
    }
}
