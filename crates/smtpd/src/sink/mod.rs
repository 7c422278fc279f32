//! `rundbrief sink`: a fake SMTP server for dry runs and tests.
//!
//! It accepts mail on the [`crate::run`] core and, with a spool directory,
//! stores each message as one `.eml` file (see [`spool::envelope_header`] for
//! the exact envelope lines). Rules simulate the world: reject or defer
//! recipients at RCPT (always, or only the first N times: greylisting), or
//! accept and then answer over SMTP to the message's return path (the VERP
//! address) with a real RFC 3464 DSN, an RFC 3834 automatic reply or an RFC
//! 5965 ARF complaint ([`report`]).
//! [`SinkStats`] counts what happened and wakes waiters, so tests wait for a
//! signal instead of sleeping.
//!
//! Rules are tried in the order given; the first whose pattern matches the
//! recipient decides. No match: accept.

pub mod dsn;
pub mod report;
pub mod rules;
pub mod spool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::client::{Client, ClientError};
use crate::config::{Limits, ServerConfig};
use crate::error::SmtpdError;
use crate::handler::{DataDecision, Decision, Envelope, Handler, Recipient, SessionInfo};
use crate::reply::Reply;
use crate::tls;

pub use dsn::{FailedRecipient, build_dsn};
pub use report::{build_auto_reply, build_feedback_report};
pub use rules::{Rule, RuleAction, RuleError};

/// Reports (DSNs, auto-replies, complaints) waiting for delivery; over it a
/// report is dropped and counted in `bounces_failed`.
const DSN_QUEUE: usize = 256;
/// Timeout of each step of a report delivery.
const DSN_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Recipients whose deferrals `--defer-once` rules count; past it a rule no
/// longer defers addresses it has not seen yet (it accepts them at once), so
/// a long-running sink cannot grow without bound.
const MAX_DEFER_TRACKED: usize = 1_000_000;

/// Whether and how the sink offers STARTTLS.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum SinkTls {
    /// No STARTTLS.
    Off,
    /// STARTTLS with a self-signed certificate generated at start-up (default).
    #[default]
    SelfSigned,
    /// STARTTLS with this acceptor.
    Acceptor(TlsAcceptor),
}

impl std::fmt::Debug for SinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Off => "Off",
            Self::SelfSigned => "SelfSigned",
            Self::Acceptor(_) => "Acceptor(..)",
        })
    }
}

/// What the sink does; build with `SinkConfig { dir: …, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Spool directory (`--dir`); `None`: count messages, store nothing. It
    /// must exist.
    pub dir: Option<PathBuf>,
    /// `--reject`, `--defer`, `--defer-once`, `--bounce`, `--auto-reply` and
    /// `--complain` rules, first match wins.
    pub rules: Vec<Rule>,
    /// Where DSNs, auto-replies and complaints are delivered (`--bounce-to`).
    /// Required when there is a bounce, auto-reply or complain rule.
    pub bounce_to: Option<SocketAddr>,
    /// `--latency`: pause before every reply.
    pub latency: Option<Duration>,
    /// `--drop-after N`: close a connection right after the 250 for its N-th
    /// message (no 421, no QUIT), as a server with a per-connection message
    /// cap or a flaky network would.
    pub drop_after: Option<u32>,
    /// Our host name (banner, EHLO, Reporting-MTA). Default `rundbrief-sink.localhost`.
    pub hostname: String,
    /// STARTTLS. Default: a generated self-signed certificate.
    pub tls: SinkTls,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            dir: None,
            rules: Vec::new(),
            bounce_to: None,
            latency: None,
            drop_after: None,
            hostname: "rundbrief-sink.localhost".to_owned(),
            tls: SinkTls::SelfSigned,
        }
    }
}

/// Why the sink could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A `--bounce`, `--auto-reply` or `--complain` rule was given without
    /// `--bounce-to`.
    #[error("--{flag} rule `{rule}` needs --bounce-to HOST:PORT to deliver what it sends")]
    BounceWithoutTarget {
        /// The flag of the rule, without dashes.
        flag: &'static str,
        /// The rule's pattern.
        rule: String,
    },
    /// The spool directory is missing or not a directory.
    #[error("--dir {}: {reason}", dir.display())]
    Dir {
        /// The directory as given.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--drop-after 0`.
    #[error("--drop-after must be at least 1")]
    DropAfterZero,
    /// The server core failed.
    #[error(transparent)]
    Server(#[from] SmtpdError),
}

/// A snapshot of [`SinkStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkCounts {
    /// Messages accepted (and stored, with a spool directory).
    pub messages: u64,
    /// Recipients of accepted messages.
    pub recipients: u64,
    /// Recipients refused by `--reject` rules.
    pub rejected: u64,
    /// Recipients refused by `--defer` and `--defer-once` rules.
    pub deferred: u64,
    /// DSNs delivered to `--bounce-to`.
    pub bounces_sent: u64,
    /// Automatic replies (`--auto-reply`) delivered to `--bounce-to`.
    pub replies_sent: u64,
    /// ARF complaints (`--complain`) delivered to `--bounce-to`.
    pub complaints_sent: u64,
    /// DSNs, replies and complaints that could not be delivered (or were
    /// dropped on a full queue).
    pub bounces_failed: u64,
    /// Messages that could not be stored (answered 451).
    pub store_failures: u64,
}

/// Live counters of a running sink, shared with the CLI and tests.
#[derive(Debug, Default)]
pub struct SinkStats {
    messages: AtomicU64,
    recipients: AtomicU64,
    rejected: AtomicU64,
    deferred: AtomicU64,
    bounces_sent: AtomicU64,
    replies_sent: AtomicU64,
    complaints_sent: AtomicU64,
    bounces_failed: AtomicU64,
    store_failures: AtomicU64,
    changed: Notify,
}

impl SinkStats {
    /// The counters now.
    pub fn snapshot(&self) -> SinkCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Acquire);
        SinkCounts {
            messages: g(&self.messages),
            recipients: g(&self.recipients),
            rejected: g(&self.rejected),
            deferred: g(&self.deferred),
            bounces_sent: g(&self.bounces_sent),
            replies_sent: g(&self.replies_sent),
            complaints_sent: g(&self.complaints_sent),
            bounces_failed: g(&self.bounces_failed),
            store_failures: g(&self.store_failures),
        }
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Acquire)
    }

    fn bump(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Resolves at the next change of any counter (for a live display).
    ///
    /// # Cancel safety
    /// Cancel safe; a change between two calls may be missed, so re-read
    /// [`SinkStats::snapshot`] after each wake-up.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Waits until `done(snapshot)` holds or `limit` passes; returns the
    /// snapshot that satisfied it, or `None` on timeout. No wake-up is lost.
    pub async fn wait_for(
        &self,
        limit: Duration,
        done: impl Fn(&SinkCounts) -> bool,
    ) -> Option<SinkCounts> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.snapshot();
            if done(&now) {
                return Some(now);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let last = self.snapshot();
                return done(&last).then_some(last);
            }
        }
    }
}

/// A configured sink, ready to run.
pub struct Sink {
    cfg: SinkConfig,
    stats: Arc<SinkStats>,
}

impl Sink {
    /// Validates the configuration.
    ///
    /// # Errors
    /// [`SinkError`] for a bounce rule without target, a missing spool
    /// directory or `drop_after == 0`.
    pub fn new(cfg: SinkConfig) -> Result<Self, SinkError> {
        if cfg.bounce_to.is_none()
            && let Some((flag, rule)) = cfg.rules.iter().find_map(|r| {
                let flag = match r.action() {
                    RuleAction::Bounce { .. } => "bounce",
                    RuleAction::AutoReply => "auto-reply",
                    RuleAction::Complain => "complain",
                    _ => return None,
                };
                Some((flag, r))
            })
        {
            return Err(SinkError::BounceWithoutTarget {
                flag,
                rule: rule.pattern().to_owned(),
            });
        }
        if let Some(dir) = &cfg.dir {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(SinkError::Dir {
                        dir: dir.clone(),
                        reason: "not a directory".to_owned(),
                    });
                }
                Err(e) => {
                    return Err(SinkError::Dir {
                        dir: dir.clone(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        if cfg.drop_after == Some(0) {
            return Err(SinkError::DropAfterZero);
        }
        Ok(Self {
            cfg,
            stats: Arc::new(SinkStats::default()),
        })
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `stop`, then drains the server and the DSN queue (each
    /// within `limits.drain_timeout`).
    ///
    /// # Errors
    /// [`SinkError::Server`] when the core fails (bad limits, accept errors,
    /// TLS set-up).
    pub async fn run(
        self,
        listener: TcpListener,
        limits: Limits,
        stop: CancellationToken,
    ) -> Result<(), SinkError> {
        let acceptor = match &self.cfg.tls {
            SinkTls::Off => None,
            SinkTls::Acceptor(a) => Some(a.clone()),
            SinkTls::SelfSigned => {
                let mut names = vec![self.cfg.hostname.as_str(), "localhost"];
                names.dedup();
                Some(tls::self_signed(&names)?.0)
            }
        };
        let server_cfg = ServerConfig {
            hostname: self.cfg.hostname.clone(),
            advertise_dsn: true,
            limits: limits.clone(),
        };
        let (dsn_tx, dsn_rx) = mpsc::channel(DSN_QUEUE);
        let worker = self.cfg.bounce_to.map(|addr| {
            tokio::spawn(dsn_worker(
                dsn_rx,
                addr,
                self.cfg.hostname.clone(),
                Arc::clone(&self.stats),
            ))
        });
        info!(rules = self.cfg.rules.len(), dir = ?self.cfg.dir, "sink starting");
        let handler = Arc::new(SinkHandler {
            cfg: self.cfg,
            stats: self.stats,
            dsn: dsn_tx,
            deferrals: Mutex::new(HashMap::new()),
            passed: Mutex::new(HashMap::new()),
        });
        let result = crate::run(listener, server_cfg, handler, acceptor, stop).await;
        // Sessions are done: the handler (and with it the DSN sender) is dropped
        // once `run` returns, so the worker sees the queue close.
        if let Some(w) = worker
            && tokio::time::timeout(limits.drain_timeout, w).await.is_err()
        {
            warn!("DSN queue not drained before the deadline");
        }
        result.map_err(SinkError::from)
    }
}

/// Runs a sink until `stop`. For live counters use [`Sink::new`],
/// [`Sink::stats`] and [`Sink::run`].
///
/// # Errors
/// As [`Sink::new`] and [`Sink::run`].
pub async fn run_sink(
    listener: TcpListener,
    cfg: SinkConfig,
    limits: Limits,
    stop: CancellationToken,
) -> Result<(), SinkError> {
    Sink::new(cfg)?.run(listener, limits, stop).await
}

/// What a queued report is, for the counters.
#[derive(Debug, Clone, Copy)]
enum JobKind {
    Dsn,
    AutoReply,
    Complaint,
}

struct DsnJob {
    kind: JobKind,
    /// MAIL FROM of the report: empty (the null reverse path) for DSNs and
    /// auto-replies.
    from: String,
    return_path: String,
    message: Vec<u8>,
}

struct SinkHandler {
    cfg: SinkConfig,
    stats: Arc<SinkStats>,
    dsn: mpsc::Sender<DsnJob>,
    /// `--defer-once` deferrals so far, by (rule index, lower-cased address);
    /// at most [`MAX_DEFER_TRACKED`] entries.
    deferrals: Mutex<HashMap<(usize, String), u32>>,
    /// `--reject-after`/`--defer-after` recipients seen so far, by rule index.
    passed: Mutex<HashMap<usize, u64>>,
}

impl SinkHandler {
    /// The first rule matching `address`. A `--defer-once` rule matches only
    /// while the address has been deferred fewer than `times` times by it;
    /// with `count`, a match also counts as one more deferral (RCPT time).
    fn rule_for_counting(&self, address: &str, count: bool) -> Option<&Rule> {
        self.cfg.rules.iter().enumerate().find_map(|(i, r)| {
            if !r.matches(address) {
                return None;
            }
            if let RuleAction::RefuseAfter { after, .. } = r.action() {
                let mut passed = self
                    .passed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = passed.entry(i).or_default();
                if *n < *after {
                    if count {
                        *n += 1;
                    }
                    return None;
                }
                return Some(r);
            }
            let RuleAction::DeferFirst { times, .. } = r.action() else {
                return Some(r);
            };
            let mut seen = self
                .deferrals
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let key = (i, address.to_lowercase());
            let full = seen.len() >= MAX_DEFER_TRACKED;
            match seen.get_mut(&key) {
                Some(n) if *n >= *times => None,
                Some(n) => {
                    if count {
                        *n += 1;
                    }
                    Some(r)
                }
                None if full => None,
                None => {
                    if count {
                        seen.insert(key, 1);
                    }
                    Some(r)
                }
            }
        })
    }

    fn rule_for(&self, address: &str) -> Option<&Rule> {
        self.rule_for_counting(address, false)
    }

    fn failed_recipients(&self, tx: &Envelope) -> Vec<FailedRecipient> {
        tx.recipients
            .iter()
            .filter(|r| r.wants_failure_dsn())
            .filter_map(|r| match self.rule_for(&r.address).map(Rule::action) {
                Some(RuleAction::Bounce { status, diagnostic }) => Some(FailedRecipient {
                    recipient: r.clone(),
                    status: *status,
                    diagnostic: diagnostic.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}

impl Handler for SinkHandler {
    async fn rcpt(&self, _info: &SessionInfo, _tx: &Envelope, rcpt: &Recipient) -> Decision {
        match self
            .rule_for_counting(&rcpt.address, true)
            .map(Rule::action)
        {
            Some(RuleAction::Reject(reply)) => {
                self.stats.bump(&self.stats.rejected, 1);
                Decision::Reject(reply.clone())
            }
            Some(RuleAction::Defer(reply) | RuleAction::DeferFirst { reply, .. }) => {
                self.stats.bump(&self.stats.deferred, 1);
                Decision::Reject(reply.clone())
            }
            Some(RuleAction::RefuseAfter { reply, .. }) => {
                let counter = if reply.is_permanent() {
                    &self.stats.rejected
                } else {
                    &self.stats.deferred
                };
                self.stats.bump(counter, 1);
                Decision::Reject(reply.clone())
            }
            _ => Decision::Accept,
        }
    }

    async fn data(&self, info: &SessionInfo, tx: &Envelope, message: Vec<u8>) -> DataDecision {
        let arrival = SystemTime::now();
        // Built before the message moves to the blocking pool, queued only
        // once it is stored.
        let failed = self.failed_recipients(tx);
        let mut jobs = Vec::new();
        if !tx.mail_from.is_null() {
            if !failed.is_empty() {
                jobs.push(DsnJob {
                    kind: JobKind::Dsn,
                    from: String::new(),
                    return_path: tx.mail_from.address.clone(),
                    message: build_dsn(
                        &self.cfg.hostname,
                        tx,
                        &failed,
                        &message,
                        arrival,
                        &spool::unique_stem(),
                    ),
                });
            }
            jobs.extend(self.replies(info, tx, &message, arrival));
        }
        let mut queue_id = None;
        if let Some(dir) = &self.cfg.dir {
            let (dir, env) = (dir.clone(), tx.clone());
            let stored = tokio::task::spawn_blocking(move || spool::store(&dir, &env, &message))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            match stored {
                Ok(path) => {
                    debug!(path = %path.display(), "stored");
                    queue_id = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                }
                Err(e) => {
                    error!(error = %e, "cannot store message");
                    self.stats.bump(&self.stats.store_failures, 1);
                    return DataDecision::Reject(Reply::with_status(
                        451,
                        (4, 3, 0),
                        "Cannot store message, try later",
                    ));
                }
            }
        }
        for job in jobs {
            if self.dsn.try_send(job).is_err() {
                warn!("report queue full, dropping a DSN, reply or complaint");
                self.stats.bump(&self.stats.bounces_failed, 1);
            }
        }
        self.stats
            .recipients
            .fetch_add(tx.recipients.len() as u64, Ordering::AcqRel);
        self.stats.bump(&self.stats.messages, 1);
        let close = self
            .cfg
            .drop_after
            .is_some_and(|n| info.messages.saturating_add(1) >= n);
        DataDecision::Accept { queue_id, close }
    }

    fn reply_delay(&self) -> Option<Duration> {
        self.cfg.latency
    }
}

impl SinkHandler {
    /// One automatic reply or complaint per recipient that an `--auto-reply`
    /// or `--complain` rule matches.
    fn replies(
        &self,
        info: &SessionInfo,
        tx: &Envelope,
        message: &[u8],
        arrival: SystemTime,
    ) -> Vec<DsnJob> {
        let host = &self.cfg.hostname;
        tx.recipients
            .iter()
            .filter_map(|r| match self.rule_for(&r.address).map(Rule::action) {
                Some(RuleAction::AutoReply) => Some(DsnJob {
                    kind: JobKind::AutoReply,
                    from: String::new(),
                    return_path: tx.mail_from.address.clone(),
                    message: build_auto_reply(host, tx, r, message, &spool::unique_stem()),
                }),
                Some(RuleAction::Complain) => Some(DsnJob {
                    kind: JobKind::Complaint,
                    from: format!("fbl@{host}"),
                    return_path: tx.mail_from.address.clone(),
                    message: build_feedback_report(
                        host,
                        tx,
                        r,
                        info.peer.ip(),
                        message,
                        arrival,
                        &spool::unique_stem(),
                    ),
                }),
                _ => None,
            })
            .collect()
    }
}

/// Delivers queued reports one at a time until the queue closes.
async fn dsn_worker(
    mut rx: mpsc::Receiver<DsnJob>,
    addr: SocketAddr,
    hostname: String,
    stats: Arc<SinkStats>,
) {
    while let Some(job) = rx.recv().await {
        let res: Result<(), ClientError> = async {
            let mut client = Client::connect(addr, DSN_STEP_TIMEOUT).await?;
            client
                .deliver(&hostname, &job.from, &job.return_path, &job.message)
                .await
        }
        .await;
        match res {
            Ok(()) => {
                debug!(to = %job.return_path, kind = ?job.kind, "report delivered");
                stats.bump(
                    match job.kind {
                        JobKind::Dsn => &stats.bounces_sent,
                        JobKind::AutoReply => &stats.replies_sent,
                        JobKind::Complaint => &stats.complaints_sent,
                    },
                    1,
                );
            }
            Err(e) => {
                warn!(error = %e, to = %job.return_path, kind = ?job.kind, "report delivery failed");
                stats.bump(&stats.bounces_failed, 1);
            }
        }
    }
}
