//! The recipient-domain check: can mail to this domain be delivered at all?

use crate::resolver::{Answer, LookupError, Resolver, Rtype, normalize};
use std::collections::{HashMap, HashSet};
use tokio::task::JoinSet;

/// Reason of a domain that does not exist (NXDOMAIN). Final.
pub const REASON_NXDOMAIN: &str = "no MX or A (NXDOMAIN)";
/// Reason of a domain that exists but has neither MX nor A/AAAA records.
pub const REASON_NO_MX_OR_A: &str = "no MX or A";
/// Reason of a domain that says it takes no mail (a single `MX 0 .`).
pub const REASON_NULL_MX: &str = "null MX (RFC 7505)";
/// Reason of a name that cannot be a domain.
const REASON_INVALID: &str = "not a valid domain name";

/// What DNS says about delivering mail to a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainCheck {
    /// Mail can be delivered: the domain has MX hosts, or no MX but an
    /// address (the implicit MX of RFC 5321 §5.1).
    Deliverable {
        /// The MX hosts, most preferred first; empty for an implicit MX.
        mx: Vec<String>,
    },
    /// Mail to the domain cannot be delivered; `reason` is one of
    /// [`REASON_NXDOMAIN`], [`REASON_NO_MX_OR_A`], [`REASON_NULL_MX`] (or
    /// "not a valid domain name"). The caller may mark the address
    /// undeliverable (reversibly: DNS changes).
    Undeliverable {
        /// Why, in the words the import report and the audit show.
        reason: String,
    },
    /// No usable answer (SERVFAIL, REFUSED, timeout, network): nothing is
    /// known about the domain. Never mark anything for it; check again later.
    Unknown {
        /// What went wrong, for logs.
        reason: String,
    },
}

impl DomainCheck {
    /// True for [`DomainCheck::Undeliverable`].
    pub fn is_undeliverable(&self) -> bool {
        matches!(self, DomainCheck::Undeliverable { .. })
    }

    /// The reason of an undeliverable or unknown result.
    pub fn reason(&self) -> Option<&str> {
        match self {
            DomainCheck::Deliverable { .. } => None,
            DomainCheck::Undeliverable { reason } | DomainCheck::Unknown { reason } => Some(reason),
        }
    }

    fn undeliverable(reason: &str) -> Self {
        DomainCheck::Undeliverable {
            reason: reason.to_string(),
        }
    }

    fn unknown(e: LookupError) -> Self {
        match e {
            LookupError::InvalidName(_) => Self::undeliverable(REASON_INVALID),
            e => DomainCheck::Unknown {
                reason: e.to_string(),
            },
        }
    }
}

/// What one answer decides: the result, or the record type to ask next.
enum Next {
    Done(DomainCheck),
    Ask(Rtype),
}

/// The check as a pure function of one answer: MX first; without MX, A,
/// then AAAA (RFC 5321 §5.1's implicit MX).
fn after(rtype: Rtype, answer: &Answer) -> Next {
    match (rtype, answer) {
        (Rtype::Mx, Answer::Mx(records)) => {
            // RFC 7505: a single MX whose exchange is the root name. A root
            // entry beside real hosts is ignored.
            let hosts: Vec<String> = records
                .iter()
                .filter(|m| !m.exchange.is_empty())
                .map(|m| m.exchange.clone())
                .collect();
            Next::Done(if hosts.is_empty() {
                DomainCheck::undeliverable(REASON_NULL_MX)
            } else {
                DomainCheck::Deliverable { mx: hosts }
            })
        }
        (_, Answer::NxDomain) => Next::Done(DomainCheck::undeliverable(REASON_NXDOMAIN)),
        (Rtype::Mx, _) => Next::Ask(Rtype::A),
        (Rtype::A | Rtype::Aaaa, Answer::Addrs(_)) => {
            Next::Done(DomainCheck::Deliverable { mx: Vec::new() })
        }
        (Rtype::A, _) => Next::Ask(Rtype::Aaaa),
        (Rtype::Aaaa, _) => Next::Done(DomainCheck::undeliverable(REASON_NO_MX_OR_A)),
    }
}

/// A domain literal (`[192.0.2.1]`) or a bare IP address: no DNS needed.
fn literal(domain: &str) -> bool {
    domain.starts_with('[') && domain.ends_with(']') || domain.parse::<std::net::IpAddr>().is_ok()
}

impl Resolver {
    /// Checks whether mail to `domain` can be delivered: its MX records,
    /// and when it has none, its A then AAAA records. Answers come from the
    /// cache while their TTL lasts.
    ///
    /// A domain literal (`[192.0.2.1]`) or a bare IP address is deliverable
    /// without DNS.
    pub async fn check_domain(&self, domain: &str) -> DomainCheck {
        let domain = normalize(domain);
        if literal(&domain) {
            return DomainCheck::Deliverable { mx: Vec::new() };
        }
        let mut rtype = Rtype::Mx;
        // At most three steps: MX, A, AAAA.
        loop {
            match self.lookup(&domain, rtype).await {
                Ok(answer) => match after(rtype, &answer) {
                    Next::Done(check) => return check,
                    Next::Ask(next) => rtype = next,
                },
                Err(e) => return DomainCheck::unknown(e),
            }
        }
    }

    /// The check from the cache alone: `None` when an answer it needs is
    /// not cached (then [`Resolver::check_domain`] asks). Never waits.
    pub fn cached_check(&self, domain: &str) -> Option<DomainCheck> {
        let domain = normalize(domain);
        if literal(&domain) {
            return Some(DomainCheck::Deliverable { mx: Vec::new() });
        }
        let mut rtype = Rtype::Mx;
        loop {
            match self.cached(&domain, rtype)? {
                Ok(answer) => match after(rtype, &answer) {
                    Next::Done(check) => return Some(check),
                    Next::Ask(next) => rtype = next,
                },
                Err(e) => return Some(DomainCheck::unknown(e)),
            }
        }
    }

    /// Checks many domains at once: each distinct domain (compared in lower
    /// case, without a trailing dot) once, at most `[dns] concurrency`
    /// checks in flight, answers shared through the cache. For an import,
    /// call it per batch with the batch's domains: memory stays bounded by
    /// the batch, and domains seen in earlier batches come from the cache.
    ///
    /// Returns one result per distinct domain, keyed by its normal form.
    ///
    /// # Panics
    /// Only if a check task panics, which the checks never do.
    pub async fn check_domains<I, S>(&self, domains: I) -> HashMap<String, DomainCheck>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut seen = HashSet::new();
        let mut results = HashMap::new();
        let mut tasks = JoinSet::new();
        let limit = self.concurrency();
        for d in domains {
            let d = normalize(d.as_ref());
            if !seen.insert(d.clone()) {
                continue;
            }
            // Most domains of a large import were seen in an earlier batch.
            if let Some(hit) = self.cached_check(&d) {
                results.insert(d, hit);
                continue;
            }
            if tasks.len() >= limit
                && let Some(done) = tasks.join_next().await
            {
                let (k, v) = done.expect("a domain check never panics");
                results.insert(k, v);
            }
            let me = self.clone();
            tasks.spawn(async move {
                let r = me.check_domain(&d).await;
                (d, r)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (k, v) = done.expect("a domain check never panics");
            results.insert(k, v);
        }
        results
    }
}
