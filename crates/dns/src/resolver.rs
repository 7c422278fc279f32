//! Cached, bounded lookups of MX, A and AAAA records.

use crate::DnsError;
use crate::cache::{AnswerCache, Key};
use crate::clock::{Clock, SystemClock};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as WireError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use rundbrief_core::config::DnsConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};

/// The record types the crate asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Rtype {
    Mx,
    A,
    Aaaa,
}

impl Rtype {
    fn wire(self) -> RecordType {
        match self {
            Rtype::Mx => RecordType::MX,
            Rtype::A => RecordType::A,
            Rtype::Aaaa => RecordType::AAAA,
        }
    }
}

/// One MX record: the host (lower case, no trailing dot; empty for the root
/// name `.` of a null MX) and its preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower values are tried first.
    pub preference: u16,
    /// The mail exchanger's name, e.g. `aspmx.l.google.com`.
    pub exchange: String,
}

/// What DNS said about one (domain, record type): what the cache keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// MX records, most preferred first.
    Mx(Arc<[MxRecord]>),
    /// A or AAAA addresses.
    Addrs(Arc<[IpAddr]>),
    /// The name exists but has no records of the type (NODATA).
    NoData,
    /// The name does not exist (NXDOMAIN): final.
    NxDomain,
}

/// A lookup that got no usable answer: the server failed, refused or did
/// not answer. Never a statement about the domain; ask again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The server answered with an error code (SERVFAIL, REFUSED, …).
    #[error("{code} from the name server")]
    Server {
        /// The response code, as DNS names it (`SERVFAIL`, `REFUSED`).
        code: String,
    },
    /// No answer within the timeout, after every try.
    #[error("no answer from the name server within {0:?}")]
    Timeout(Duration),
    /// The name cannot be a DNS name (empty label, too long).
    #[error("`{0}` is not a valid domain name")]
    InvalidName(String),
    /// Anything else (network errors, a malformed answer).
    #[error("{0}")]
    Other(String),
}

/// Counters of a [`Resolver`] (shared by its clones), for tests and the
/// benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lookups sent to the name servers.
    pub queries: u64,
    /// Lookups answered from the cache.
    pub cache_hits: u64,
    /// Most lookups that were ever in flight at once.
    pub max_in_flight: u64,
}

/// The recipient-domain resolver: hickory-resolver pointed at `[dns]
/// servers` (or the system's resolver), behind a bounded cache that honours
/// TTLs and a limit of `[dns] concurrency` lookups in flight. Cheap to
/// clone: clones share the cache, the limit and the counters, so build one
/// per process and hand out clones.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

type Shared = Arc<OnceCell<Result<Answer, LookupError>>>;

struct Inner {
    hickory: TokioResolver,
    cache: AnswerCache,
    slots: Semaphore,
    /// Lookups under way, so concurrent callers of one key share one query.
    in_flight: Mutex<HashMap<Key, Shared>>,
    concurrency: usize,
    timeout: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
    failure_ttl: Duration,
    queries: AtomicU64,
    hits: AtomicU64,
    running: AtomicU64,
    max_running: AtomicU64,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("concurrency", &self.inner.concurrency)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver for `[dns]`, on the real clock.
    ///
    /// # Errors
    /// [`DnsError::Config`] for a server that is not `IP[:PORT]`;
    /// [`DnsError::SystemConfig`] when no servers are configured and the
    /// system's configuration cannot be read.
    pub fn new(cfg: &DnsConfig) -> Result<Self, DnsError> {
        Self::with_clock(cfg, Arc::new(SystemClock))
    }

    /// A resolver whose cache measures TTLs on `clock` (tests move a
    /// [`crate::ManualClock`]).
    ///
    /// # Errors
    /// As [`Resolver::new`].
    pub fn with_clock(cfg: &DnsConfig, clock: Arc<dyn Clock>) -> Result<Self, DnsError> {
        let servers = cfg.server_addrs()?;
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| DnsError::SystemConfig(e.to_string()))?
        } else {
            let name_servers = servers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                provider,
            )
        };
        let concurrency = cfg.concurrency.max(1);
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        // hickory counts retries after the first try.
        opts.attempts = cfg.attempts.max(1) - 1;
        // Our cache is the one that counts (bounded, on an injectable clock);
        // hickory's would answer from real time behind its back. (Its TTL
        // clamps would rewrite the records' TTLs, so they stay unset.)
        opts.cache_size = 0;
        // Recipient domains come from DNS only, never from /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        // A TCP connection multiplexes queries; let it carry all of ours.
        opts.max_active_requests = opts.max_active_requests.max(concurrency);
        let hickory = builder
            .build()
            .map_err(|e| DnsError::SystemConfig(e.to_string()))?;
        Ok(Resolver {
            inner: Arc::new(Inner {
                hickory,
                cache: AnswerCache::new(cfg.cache_size.max(1), clock),
                slots: Semaphore::new(concurrency),
                in_flight: Mutex::new(HashMap::new()),
                concurrency,
                timeout,
                max_ttl: Duration::from_secs(cfg.max_ttl_secs),
                negative_ttl: Duration::from_secs(cfg.negative_ttl_secs),
                failure_ttl: Duration::from_secs(cfg.failure_ttl_secs),
                queries: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                running: AtomicU64::new(0),
                max_running: AtomicU64::new(0),
            }),
        })
    }

    /// Lookups allowed in flight at once (`[dns] concurrency`).
    pub fn concurrency(&self) -> usize {
        self.inner.concurrency
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        Stats {
            queries: i.queries.load(Ordering::Relaxed),
            cache_hits: i.hits.load(Ordering::Relaxed),
            max_in_flight: i.max_running.load(Ordering::Relaxed),
        }
    }

    /// Entries in the cache now.
    pub fn cache_len(&self) -> u64 {
        self.inner.cache.len()
    }

    /// The cached answer (or recent failure) for (`domain`, `rtype`), if its
    /// TTL has not passed; never asks the name servers.
    pub(crate) fn cached(&self, domain: &str, rtype: Rtype) -> Option<Result<Answer, LookupError>> {
        let hit = self.inner.cache.get(&(Arc::from(normalize(domain)), rtype));
        if hit.is_some() {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// The MX records of `domain`, from the cache or the name servers.
    ///
    /// # Errors
    /// [`LookupError`] when no usable answer came (remembered for
    /// `[dns] failure_ttl_secs`, then asked again).
    pub async fn mx(&self, domain: &str) -> Result<Answer, LookupError> {
        self.lookup(domain, Rtype::Mx).await
    }

    /// The IPv4 addresses of `domain`.
    ///
    /// # Errors
    /// As [`Resolver::mx`].
    pub async fn a(&self, domain: &str) -> Result<Answer, LookupError> {
        self.lookup(domain, Rtype::A).await
    }

    /// The IPv6 addresses of `domain`.
    ///
    /// # Errors
    /// As [`Resolver::mx`].
    pub async fn aaaa(&self, domain: &str) -> Result<Answer, LookupError> {
        self.lookup(domain, Rtype::Aaaa).await
    }

    /// One cached lookup. Concurrent callers of the same key share one query;
    /// at most `concurrency` queries are in flight over all callers.
    ///
    /// # Cancel safety
    /// Cancel-safe: a cancelled caller that was running the shared query
    /// hands it over to the next waiter.
    pub(crate) async fn lookup(&self, domain: &str, rtype: Rtype) -> Result<Answer, LookupError> {
        let key: Key = (Arc::from(normalize(domain)), rtype);
        if let Some(hit) = self.inner.cache.get(&key) {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return hit;
        }
        let cell = {
            let mut map = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let result = cell
            .get_or_init(|| async {
                // Another caller may have finished this key between our cache
                // miss and taking the cell.
                if let Some(hit) = self.inner.cache.get(&key) {
                    self.inner.hits.fetch_add(1, Ordering::Relaxed);
                    return hit;
                }
                let fresh = self.query(&key).await;
                match &fresh {
                    Ok((answer, ttl)) => {
                        tracing::trace!(domain = %key.0, rtype = ?key.1, ?answer, ttl_secs = ttl.as_secs(), "dns answer");
                        self.inner.cache.insert(key.clone(), Ok(answer.clone()), *ttl);
                    }
                    // A name that cannot be asked stays so; anything else is
                    // remembered briefly and asked again after failure_ttl.
                    Err(e @ LookupError::InvalidName(_)) => {
                        tracing::debug!(domain = %key.0, error = %e, "not a domain name");
                    }
                    Err(e) => {
                        tracing::debug!(domain = %key.0, rtype = ?key.1, error = %e, "dns lookup failed");
                        self.inner.cache.insert(key.clone(), Err(e.clone()), self.inner.failure_ttl);
                    }
                }
                fresh.map(|(answer, _)| answer)
            })
            .await
            .clone();
        let mut map = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            map.remove(&key);
        }
        result
    }

    /// Asks the name servers, holding one of the concurrency slots.
    async fn query(&self, key: &Key) -> Result<(Answer, Duration), LookupError> {
        let (domain, rtype) = (&*key.0, key.1);
        let name = Name::from_ascii(format!("{domain}."))
            .map_err(|_| LookupError::InvalidName(domain.to_string()))?;
        if domain.is_empty() || name.len() > 255 {
            return Err(LookupError::InvalidName(domain.to_string()));
        }
        let i = &self.inner;
        let _slot = i
            .slots
            .acquire()
            .await
            .expect("the lookup semaphore is never closed");
        let running = i.running.fetch_add(1, Ordering::Relaxed) + 1;
        i.max_running.fetch_max(running, Ordering::Relaxed);
        i.queries.fetch_add(1, Ordering::Relaxed);
        let res = i.hickory.lookup(name, rtype.wire()).await;
        i.running.fetch_sub(1, Ordering::Relaxed);
        match res {
            Ok(lookup) => {
                let mut ttl = u32::MAX;
                let mut mx = Vec::new();
                let mut addrs = Vec::new();
                for r in lookup.answers() {
                    ttl = ttl.min(r.ttl);
                    match &r.data {
                        RData::MX(m) if rtype == Rtype::Mx => mx.push(MxRecord {
                            preference: m.preference,
                            exchange: host_name(&m.exchange),
                        }),
                        RData::A(a) if rtype == Rtype::A => addrs.push(IpAddr::V4(a.0)),
                        RData::AAAA(a) if rtype == Rtype::Aaaa => addrs.push(IpAddr::V6(a.0)),
                        _ => {}
                    }
                }
                let ttl = Duration::from_secs(u64::from(ttl)).min(i.max_ttl);
                let answer = if !mx.is_empty() {
                    mx.sort_by(|a, b| {
                        (a.preference, &a.exchange).cmp(&(b.preference, &b.exchange))
                    });
                    Answer::Mx(mx.into())
                } else if !addrs.is_empty() {
                    Answer::Addrs(addrs.into())
                } else {
                    // Only aliases answered: nothing of the type at the end.
                    return Ok((Answer::NoData, ttl.min(i.negative_ttl)));
                };
                Ok((answer, ttl))
            }
            Err(NetError::Dns(WireError::NoRecordsFound(nr))) => {
                let ttl = nr
                    .negative_ttl
                    .map_or(i.negative_ttl, |t| Duration::from_secs(u64::from(t)))
                    .min(i.negative_ttl);
                let answer = if nr.response_code == ResponseCode::NXDomain {
                    Answer::NxDomain
                } else {
                    Answer::NoData
                };
                Ok((answer, ttl))
            }
            Err(NetError::Dns(WireError::ResponseCode(code))) => Err(LookupError::Server {
                code: match code {
                    ResponseCode::ServFail => "SERVFAIL".into(),
                    ResponseCode::Refused => "REFUSED".into(),
                    ResponseCode::FormErr => "FORMERR".into(),
                    ResponseCode::NotImp => "NOTIMP".into(),
                    other => other.to_str().to_string(),
                },
            }),
            Err(NetError::Timeout) => Err(LookupError::Timeout(i.timeout)),
            Err(e) => Err(LookupError::Other(e.to_string())),
        }
    }
}

/// A domain as the cache keys it: lower case, without a trailing dot.
pub(crate) fn normalize(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS name as a host name: lower case, no trailing dot (the root is "").
fn host_name(n: &Name) -> String {
    let s = n.to_ascii();
    s.trim_end_matches('.').to_ascii_lowercase()
}
