//! Shaping per mailbox provider: which provider group a recipient domain
//! belongs to (crate `rundbrief-dns`), the throttle's limits per group, and
//! the per-provider queue `campaign status` shows.
//!
//! A domain's group is known from its name alone (`gmail.com` is Google's)
//! and, when `[dns] servers` is set, from its MX hosts (a company domain
//! whose MX is Google's). Without `[dns] servers` no lookup is made here:
//! the system's resolver is never asked on the send path.

use crate::{App, Result};
use rundbrief_core::Config;
use rundbrief_dns::{ProviderTable, Providers, Resolver};
use rundbrief_sender::throttle::{
    Budget, BudgetError, DomainLimits, Grants, Grouping, Limits, Throttle,
};
use rundbrief_store::{ProviderCondition, ProviderState, Store};
use std::collections::HashMap;
use std::sync::Arc;

/// Maps recipient domains to provider groups.
#[derive(Debug, Clone)]
pub struct Shaping {
    table: Arc<ProviderTable>,
    /// With `[dns] servers`: MX lookups through the shared cache.
    providers: Option<Providers>,
}

impl Shaping {
    /// The groups of `[shaping]`; MX lookups only with `[dns] servers`.
    ///
    /// # Errors
    /// A `[dns] servers` entry that is not `IP[:PORT]`.
    pub fn from_config(cfg: &Config) -> Result<Self> {
        let providers = if cfg.dns.servers.is_empty() {
            None
        } else {
            let resolver = Resolver::new(&cfg.dns)
                .map_err(|e| crate::AppError::invalid(format!("[dns]: {e}")))?;
            Some(Providers::new(&cfg.shaping, resolver))
        };
        Ok(Shaping {
            table: Arc::new(ProviderTable::from_config(&cfg.shaping)),
            providers,
        })
    }

    /// The provider group of `domain`, or `None` when it is a provider of
    /// its own (or its MX lookup failed: it stands for itself meanwhile).
    pub async fn group_of(&self, domain: &str) -> Option<Arc<str>> {
        match &self.providers {
            Some(p) => {
                let found = p.provider_of(domain).await;
                found.is_group().then_some(found.name)
            }
            None => self.table.by_domain(domain).map(|g| g.name.clone()),
        }
    }

    /// The provider of `domain` for display, without waiting for DNS: its
    /// group when known by name or from a cached MX answer, else the domain.
    /// (A process that has not looked the domain up yet — a fresh `campaign
    /// status` — shows a domain grouped by MX alone under its own name.)
    pub fn provider_name(&self, domain: &str) -> Arc<str> {
        let cached = match &self.providers {
            Some(p) => p
                .cached_provider_of(domain)
                .filter(rundbrief_dns::Provider::is_group)
                .map(|p| p.name),
            None => None,
        };
        cached
            .or_else(|| self.table.by_domain(domain).map(|g| g.name.clone()))
            .unwrap_or_else(|| Arc::from(domain.to_ascii_lowercase()))
    }

    /// The throttle's limits per group: a group's own `[shaping.providers]`
    /// limits, else `[sending]`'s per-domain ones for the group as a whole.
    pub fn group_limits(&self, cfg: &Config) -> HashMap<String, DomainLimits> {
        let s = &cfg.sending;
        self.table
            .groups()
            .iter()
            .map(|g| {
                (
                    g.name.to_string(),
                    DomainLimits {
                        rate: g.limits.rate_per_second.unwrap_or(s.domain_rate),
                        concurrency: g.limits.connections.unwrap_or(s.domain_concurrency),
                        rate_per_hour: g.limits.rate_per_hour,
                        messages_per_connection: g.limits.messages_per_connection,
                    },
                )
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Grouping for Shaping {
    async fn group_of(&self, domain: &str) -> Option<Arc<str>> {
        Shaping::group_of(self, domain).await
    }
}

/// The store's `provider_budget` as the throttle's shared [`Budget`]
/// (issue #18: the rates hold across workers on one database).
pub struct StoreBudget(pub Store);

#[async_trait::async_trait]
impl Budget for StoreBudget {
    async fn take(
        &self,
        key: &str,
        window_start: i64,
        limit: u32,
        want: u32,
    ) -> std::result::Result<Grants, BudgetError> {
        let g = self
            .0
            .take_grants(key, window_start, limit, want)
            .await
            .map_err(|e| BudgetError(e.to_string()))?;
        Ok(Grants {
            granted: g.granted,
            window_start: g.window_start,
            cap: g.cap,
        })
    }

    async fn cap(
        &self,
        key: &str,
        rate: u32,
        until: i64,
        now: i64,
    ) -> std::result::Result<(), BudgetError> {
        self.0
            .cap_grants(key, rate, until, now)
            .await
            .map_err(|e| BudgetError(e.to_string()))
    }

    async fn caps(&self, now: i64) -> std::result::Result<Vec<(String, u32, i64)>, BudgetError> {
        self.0
            .grant_caps(now)
            .await
            .map_err(|e| BudgetError(e.to_string()))
    }
}

/// The throttle of a runner: [`throttle`], and with `[sending]
/// shared_limits` its rates shared with every worker on `store`.
pub fn throttle_for(cfg: &Config, shaping: Arc<Shaping>, store: &Store) -> Throttle {
    let t = throttle(cfg, shaping);
    if cfg.sending.shared_limits {
        t.with_budget(Arc::new(StoreBudget(store.clone())))
    } else {
        t
    }
}

/// The throttle from `[sending]` and `[shaping]` for this process alone:
/// global rate, per provider group (or per domain outside any group) rate,
/// hourly rate and concurrency.
pub fn throttle(cfg: &Config, shaping: Arc<Shaping>) -> Throttle {
    let s = &cfg.sending;
    Throttle::with_grouping(
        Limits {
            global_rate: s.rate,
            default_domain: DomainLimits::new(s.domain_rate, s.domain_concurrency),
            domains: s
                .domains
                .iter()
                .map(|(d, l)| {
                    (
                        d.to_ascii_lowercase(),
                        DomainLimits::new(l.rate, l.concurrency),
                    )
                })
                .collect(),
            groups: shaping.group_limits(cfg),
            ..Limits::default()
        },
        shaping,
    )
}

/// One provider's queue in `campaign status --json` (`providers`; the
/// field names are a contract).
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct ProviderQueue {
    /// The group's name, or the domain outside any group.
    pub name: String,
    /// Deliveries not yet final (pending, claimed, deferred or held).
    pub pending: u64,
    /// Deliveries accepted by the receiver.
    pub sent: u64,
    /// The rate it may be sent at now, messages per second (halved while
    /// slowed, 0 while suspended): the contract's name.
    pub rate: f64,
    /// The same as `rate` (the name of the first release).
    pub rate_per_s: f64,
    /// `sending` (deliveries left and the campaign running), `waiting`
    /// (nothing to send now: the campaign is not running or nothing is
    /// left), `slowed` (a 421/4.7.x halved its rate) or `suspended` (the
    /// circuit breaker stopped it for this campaign).
    pub state: &'static str,
    /// Why it is waiting, slowed or suspended; empty while `sending`.
    pub reason: String,
}

/// A provider's state with deliveries left while the campaign runs.
const SENDING: &str = "sending";
/// A provider's state with nothing to send now.
const WAITING: &str = "waiting";

/// Domains read per status, most deliveries first; the rest are left out.
const STATUS_DOMAINS: u64 = 2000;
/// Providers listed per status, besides every slowed or suspended one.
const STATUS_PROVIDERS: usize = 50;

/// The campaign's queue per provider, biggest first: every provider that
/// is slowed or suspended, and the largest others.
///
/// # Errors
/// The store failed.
pub async fn provider_queues(
    store: &Store,
    shaping: &Shaping,
    cfg: &Config,
    campaign_id: uuid::Uuid,
    running: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<ProviderQueue>> {
    let mut by: Vec<ProviderQueue> = Vec::new();
    let mut index: HashMap<Arc<str>, usize> = HashMap::new();
    let limits = shaping.group_limits(cfg);
    for d in store
        .campaign_domain_counts(campaign_id, STATUS_DOMAINS)
        .await?
    {
        let name = shaping.provider_name(&d.domain);
        let i = *index.entry(Arc::clone(&name)).or_insert_with(|| {
            let rate = limits
                .get(&*name)
                .map_or(cfg.sending.domain_rate, |l| l.rate);
            by.push(ProviderQueue {
                name: name.to_string(),
                pending: 0,
                sent: 0,
                rate: f64::from(rate),
                rate_per_s: f64::from(rate),
                state: SENDING,
                reason: String::new(),
            });
            by.len() - 1
        });
        by[i].pending += d.pending;
        by[i].sent += d.sent;
    }
    let states: Vec<ProviderState> = store.provider_states(campaign_id).await?;
    for s in &states {
        let i = match index.get(s.provider.as_str()) {
            Some(&i) => i,
            None => {
                by.push(ProviderQueue {
                    name: s.provider.clone(),
                    pending: 0,
                    sent: 0,
                    rate: 0.0,
                    rate_per_s: 0.0,
                    state: SENDING,
                    reason: String::new(),
                });
                by.len() - 1
            }
        };
        let q = &mut by[i];
        match s.state {
            ProviderCondition::Suspended => {
                q.state = "suspended";
                q.rate = 0.0;
                q.rate_per_s = 0.0;
                q.reason = s.reason.clone();
            }
            ProviderCondition::Slowed if s.until.is_some_and(|t| t > now) => {
                q.state = "slowed";
                if let Some(r) = s.rate {
                    q.rate = f64::from(r);
                    q.rate_per_s = q.rate;
                }
                q.reason = s.reason.clone();
            }
            ProviderCondition::Slowed => {}
        }
    }
    for q in by.iter_mut().filter(|q| q.state == SENDING) {
        if q.pending == 0 {
            q.state = WAITING;
            q.reason = "nothing left to send".into();
        } else if !running {
            q.state = WAITING;
            q.reason = "the campaign is not running".into();
        }
    }
    let held_back = |q: &ProviderQueue| q.state == "slowed" || q.state == "suspended";
    by.sort_by(|a, b| {
        held_back(b)
            .cmp(&held_back(a))
            .then((b.pending + b.sent).cmp(&(a.pending + a.sent)))
            .then(a.name.cmp(&b.name))
    });
    let keep = by
        .iter()
        .filter(|q| held_back(q))
        .count()
        .max(STATUS_PROVIDERS);
    by.truncate(keep);
    Ok(by)
}

impl App {
    /// The provider grouping of `[shaping]` (and `[dns] servers`), built once.
    ///
    /// # Errors
    /// A `[dns]` server that is not `IP[:PORT]` (every later call says the same).
    pub fn shaping(&self) -> Result<Arc<Shaping>> {
        self.shaping
            .get_or_init(|| {
                Shaping::from_config(&self.config)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(crate::AppError::invalid)
    }
}
