//! Running one campaign: claim a leased batch of due deliveries, render and
//! send each through the sender (throttled), record outcomes in groups,
//! repeat until nothing is left, the campaign is paused or cancelled, the
//! send window closes, or the process is asked to stop.
//!
//! Three things overlap so the database never stalls the pipe: the sends
//! (at most `concurrency` in flight), the recorder task that writes finished
//! outcomes in groups (whatever arrived while the previous group was being
//! written, at most `record_every`), and the claim of the next batch (taken
//! while the current one is being started).

use crate::breaker::{Breaker, BreakerLimits, Trip, complaint_trip};
use crate::clock::Clock;
use crate::retry::{Retry, RetryPolicy};
use crate::schedule::{Window, parse_tz};
use chrono::{DateTime, Utc};
use rundbrief_core::{CampaignState, DeliveryState};
use rundbrief_sender::throttle::Throttle;
use rundbrief_sender::{Delivery, Outcome, SendError, Transport};
use rundbrief_store::{CampaignCounts, DeliveryOutcome, PendingDelivery, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest time between two looks at the campaign's state (pause, cancel)
/// and between two progress reports.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long the recorder waits for more outcomes before it writes a group
/// that is not full.
const RECORD_LINGER: Duration = Duration::from_millis(5);

/// How often a run counts the campaign's complaints for the breaker.
const COMPLAINT_INTERVAL: Duration = Duration::from_secs(5);

/// How long a delivery of a suspended provider waits before it is looked
/// at again (`campaign resume --provider` makes it due at once).
const HOLD_FOR: Duration = Duration::from_secs(60);

/// Why a hook could not do its part. The `Display` is what the delivery
/// records as its reason (`render: …`, `DKIM: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The message could not be built from the campaign's templates for
    /// this recipient (the message says what, without the address, so the
    /// same failure reads the same for every recipient).
    #[error("render: {0}")]
    Render(String),
    /// The built message could not be DKIM-signed: it is not sent unsigned.
    #[error("DKIM: {0}")]
    Sign(String),
    /// The bounce policy could not be applied to a synchronous bounce.
    #[error("bounce policy: {0}")]
    Policy(String),
}

/// What the caller supplies per campaign: the renderer and what happens
/// after a synchronous bounce. Keeps templates and bounce policy out of
/// this crate.
#[async_trait::async_trait]
pub trait Hooks: Send + Sync {
    /// The complete message for one delivery, or why it cannot be built
    /// (the delivery then fails with that reason).
    fn render(&self, d: &PendingDelivery) -> Result<Vec<u8>, HookError>;
    /// A 5xx at RCPT or DATA: classify and score it like a bounce.
    async fn rejected(&self, d: &PendingDelivery, error: &SendError) -> Result<(), HookError>;
    /// Every outcome, for metrics: recipient domain, final state, send time.
    fn observe(&self, _domain: &str, _state: DeliveryState, _latency: Duration) {}
    /// Whether a refusal (5xx, or a 4xx deferral) says the receiver refused
    /// *us* (a block), for the circuit breaker. By default: an x.7.x status.
    fn is_block(&self, error: &SendError) -> bool {
        error
            .reply()
            .and_then(|r| r.enhanced)
            .is_some_and(|e| e.subject == 7)
    }
    /// The circuit breaker suspended `provider` (or, with `None`, paused the
    /// whole campaign) for `reason`; already stored and logged.
    fn tripped(&self, _provider: Option<&str>, _reason: &str) {}
}

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// This worker's name in leases (unique per process).
    pub owner: String,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Deliveries claimed per batch.
    pub batch: u64,
    /// How long a claim is ours; a dead worker's claims return after it.
    pub lease: Duration,
    /// At most this many outcomes are recorded per transaction, and at most
    /// this many more wait for the recorder: finished sends not yet recorded
    /// are at most `2 × record_every` (see [`RunConfig::unrecorded_window`]).
    pub record_every: usize,
    pub retry: RetryPolicy,
    /// Wait for retries and for the send window instead of returning.
    pub wait: bool,
    /// Materialise the recipients at the start (off when the caller did).
    pub materialise: bool,
    /// The reputation circuit breaker's thresholds; `None` turns it off.
    pub breaker: Option<BreakerLimits>,
}

impl RunConfig {
    pub fn new(owner: impl Into<String>, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        RunConfig {
            owner: owner.into(),
            concurrency,
            batch: (concurrency as u64 * 8).clamp(16, 1000),
            lease: Duration::from_secs(120),
            record_every: 64,
            retry: RetryPolicy::default(),
            wait: true,
            materialise: true,
            breaker: Some(BreakerLimits::default()),
        }
    }

    /// The most deliveries that can be handed to the relay without their
    /// outcome being recorded: the sends in flight plus the finished ones
    /// waiting for or inside the recorder's transaction. Only these can be
    /// sent twice, and only if this worker dies.
    pub fn unrecorded_window(&self) -> usize {
        self.concurrency + 2 * self.record_every
    }
}

/// Why a run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every delivery has a final outcome; the campaign is finished.
    Finished,
    /// Paused or cancelled meanwhile (the state it has now).
    Stopped(CampaignState),
    /// Only retries, or deliveries due later (local time), are left; the
    /// earliest is then (`wait` off).
    RetriesLater(DateTime<Utc>),
    /// Outside the send window until then (`wait` off).
    WindowClosed(DateTime<Utc>),
    /// The process is shutting down; in-flight sends were finished.
    Shutdown,
    /// Only deliveries held for providers the circuit breaker suspended
    /// are left: `campaign resume NAME [--provider P]` lets them go.
    Suspended,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub ended: Ended,
    pub counts: CampaignCounts,
    /// Outcomes recorded by this run (deferrals included).
    pub attempts: u64,
    /// Final outcomes (sent, rejected, failed) recorded by this run.
    pub done: u64,
    pub seconds: f64,
}

/// Errors that end a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] rundbrief_store::StoreError),
    #[error("campaign schedule: {0}")]
    Schedule(#[from] crate::schedule::ScheduleError),
    #[error("a send task failed: {0}")]
    Task(String),
}

/// How one send task ended.
struct Sent {
    d: PendingDelivery,
    /// `None`: not sent, its provider is suspended (the reason).
    outcome: Result<Result<Outcome, HookError>, String>,
    latency: Duration,
    /// The throttle's key: the provider group, or the domain.
    provider: Arc<str>,
    /// The rate a 421/4.7.x reply slowed the provider down to.
    slowed: Option<u32>,
    /// Not sent: no relay of the campaign could take it (every one at its
    /// quota or rested); back to pending until then.
    requeue: Option<DateTime<Utc>>,
}

/// Sends in flight and the recorder their outcomes go to, across batches.
struct Flight {
    campaign_id: uuid::Uuid,
    /// This run's circuit breaker (`None` when it is off).
    breaker: Option<Arc<Breaker>>,
    limit: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<Sent>,
    recorder: Recorder,
    /// When the campaign's state was last read, if ever.
    last_check: Option<Instant>,
    last_progress: Instant,
    /// The campaign left `running` (pause, cancel): start nothing more.
    halted: bool,
    attempts: u64,
    done: u64,
    /// Claimed deliveries of suspended providers, by provider (and its
    /// reason), to be put back as deferred.
    held: Vec<(Arc<str>, String, uuid::Uuid)>,
    /// The last slowed rate stored per provider.
    slowed: std::collections::HashMap<Arc<str>, u32>,
    /// When complaints were last counted.
    last_complaints: Option<Instant>,
    /// Claimed deliveries no relay could take, and when one can: put back
    /// as pending (untried) until then.
    requeued: Vec<(DateTime<Utc>, uuid::Uuid)>,
}

impl Flight {
    fn new(
        campaign_id: uuid::Uuid,
        breaker: Option<BreakerLimits>,
        concurrency: usize,
        recorder: Recorder,
    ) -> Self {
        Flight {
            campaign_id,
            breaker: breaker.map(|l| Arc::new(Breaker::new(l))),
            limit: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            tasks: tokio::task::JoinSet::new(),
            recorder,
            last_check: None,
            last_progress: Instant::now(),
            halted: false,
            attempts: 0,
            done: 0,
            held: Vec::new(),
            slowed: std::collections::HashMap::new(),
            last_complaints: None,
            requeued: Vec::new(),
        }
    }

    /// True when the campaign's state should be read again.
    fn check_due(&self) -> bool {
        self.halted
            || self
                .last_check
                .is_none_or(|t| t.elapsed() >= CHECK_INTERVAL)
    }
}

/// What the recorder task is sent.
enum ToRecorder {
    Outcome {
        outcome: DeliveryOutcome,
        /// A synchronous bounce for the hooks, after it is recorded.
        rejection: Option<Box<(PendingDelivery, SendError)>>,
        final_: bool,
    },
    /// Answered once everything sent before it is recorded.
    Sync(oneshot::Sender<()>),
}

/// The task that writes outcomes: each group is what arrived while the
/// previous one was written or within `RECORD_LINGER` after (up to
/// `record_every`), so sending never waits for the database unless the
/// recorder falls `record_every` behind.
struct Recorder {
    tx: mpsc::Sender<ToRecorder>,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
    /// Final outcomes (sent, rejected, failed) recorded so far.
    recorded: Arc<AtomicU64>,
}

impl Recorder {
    fn start(store: Store, hooks: Arc<dyn Hooks>, group: usize) -> Recorder {
        let group = group.max(1);
        let (tx, rx) = mpsc::channel(group);
        let recorded = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(record_loop(store, hooks, rx, group, Arc::clone(&recorded)));
        Recorder { tx, task, recorded }
    }

    /// Hands one message to the recorder; if the recorder has died, its error.
    async fn send(&mut self, m: ToRecorder) -> Result<(), RunError> {
        if self.tx.send(m).await.is_ok() {
            return Ok(());
        }
        Err(self.failure().await)
    }

    /// Waits until every outcome handed over so far is recorded.
    async fn sync(&mut self) -> Result<(), RunError> {
        let (tx, rx) = oneshot::channel();
        self.send(ToRecorder::Sync(tx)).await?;
        match rx.await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure().await),
        }
    }

    /// Why the recorder task ended early.
    async fn failure(&mut self) -> RunError {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => RunError::Task("the outcome recorder stopped".into()),
            Err(e) => RunError::Task(format!("the outcome recorder: {e}")),
        }
    }
}

async fn record_loop(
    store: Store,
    hooks: Arc<dyn Hooks>,
    mut rx: mpsc::Receiver<ToRecorder>,
    group: usize,
    recorded: Arc<AtomicU64>,
) -> Result<(), RunError> {
    let mut records = Vec::with_capacity(group);
    let mut rejections = Vec::new();
    let mut finals = 0;
    let (mut writes, mut written, mut busy) = (0u64, 0usize, Duration::ZERO);
    while let Some(first) = rx.recv().await {
        // Wait a moment for a fuller group (one commit per outcome would
        // make the database the bottleneck), never longer than RECORD_LINGER.
        let deadline = tokio::time::Instant::now() + RECORD_LINGER;
        let mut waiter = None;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                ToRecorder::Outcome {
                    outcome,
                    rejection,
                    final_,
                } => {
                    records.push(outcome);
                    rejections.extend(rejection.map(|b| *b));
                    finals += u64::from(final_);
                }
                ToRecorder::Sync(w) => {
                    waiter = Some(w);
                    // Everything before it is taken: write now.
                    break;
                }
            }
            if records.len() < group {
                next = match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        tokio::time::timeout_at(deadline, rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                };
            }
        }
        let t0 = Instant::now();
        store.record_outcomes(&records).await?;
        busy += t0.elapsed();
        writes += u64::from(!records.is_empty());
        written += records.len();
        records.clear();
        recorded.fetch_add(std::mem::take(&mut finals), Ordering::Relaxed);
        // After the record, so the delivery is `rejected` before the bounce
        // policy looks at it.
        for (d, error) in rejections.drain(..) {
            if let Err(e) = hooks.rejected(&d, &error).await {
                tracing::warn!(delivery = %d.delivery_id, "could not classify a synchronous bounce: {e}");
            }
        }
        if let Some(w) = waiter {
            let _ = w.send(());
        }
    }
    tracing::debug!(
        writes,
        outcomes = written,
        busy_ms = busy.as_millis() as u64,
        "outcome recorder done"
    );
    Ok(())
}

/// Everything a run needs.
pub struct Runner {
    pub store: Store,
    /// Where messages go: the SMTP pool, or a stub in tests.
    pub sender: Arc<dyn Transport>,
    pub throttle: Arc<Throttle>,
    pub hooks: Arc<dyn Hooks>,
    pub clock: Arc<dyn Clock>,
    pub config: RunConfig,
    /// Several relays with weights, quotas and failover
    /// ([`crate::relays::RelayPool`]); `None`: everything goes to `sender`.
    pub relays: Option<Arc<crate::relays::RelayPool>>,
}

impl Runner {
    /// Runs `campaign_id` (which must be `running`) until it ends; see [`Ended`].
    /// `progress` is called with the number of final outcomes recorded so far.
    pub async fn run(
        &self,
        campaign_id: uuid::Uuid,
        stop: &CancellationToken,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let store = &self.store;
        let sched = store.campaign_schedule(campaign_id).await?;
        let window = match (&sched.schedule.window_start, &sched.schedule.window_end) {
            (Some(a), Some(b)) => Window::from_parts(a, b),
            _ => None,
        };
        let tz = parse_tz(sched.schedule.tz.as_deref().unwrap_or("UTC"))?;
        if self.config.materialise
            && store.campaign_state(campaign_id).await? == CampaignState::Running
        {
            let added = store.materialise_deliveries(campaign_id).await?;
            tracing::info!(campaign = %sched.name, added, "recipients materialised");
        }
        // Local time: due times for whatever was materialised (here or by
        // the caller) and is still held.
        crate::local::assign_due(store, campaign_id, self.clock.now()).await?;
        let recorder = Recorder::start(
            store.clone(),
            Arc::clone(&self.hooks),
            self.config.record_every,
        );
        let mut flight = Flight::new(
            campaign_id,
            self.config.breaker,
            self.config.concurrency,
            recorder,
        );
        // The next batch, claimed while the current one is being started.
        let mut prefetch: Option<tokio::task::JoinHandle<Result<Vec<PendingDelivery>, RunError>>> =
            None;
        // Time this loop waited for claims (a debug figure).
        let mut claim_wait = Duration::ZERO;
        // The opening time last logged while waiting for the send window.
        let mut window_logged: Option<DateTime<Utc>> = None;
        // The same for waiting on the relays' quotas and rests.
        let mut relays_logged: Option<DateTime<Utc>> = None;
        let ended = loop {
            if stop.is_cancelled() {
                self.drain(&mut flight, progress).await?;
                break Ended::Shutdown;
            }
            if flight.check_due() {
                let state = self.look(&mut flight).await?;
                if flight.halted {
                    self.drain(&mut flight, progress).await?;
                    break Ended::Stopped(state);
                }
            }
            let now = self.clock.now();
            if let Some(w) = window
                && !w.contains(tz, now)
            {
                let opens = w.opens_at(tz, now);
                self.drain(&mut flight, progress).await?;
                // A batch claimed ahead goes back until the window opens.
                if Self::settle_prefetch(&mut prefetch).await? {
                    store
                        .release_claims(campaign_id, &self.config.owner)
                        .await?;
                }
                if !self.config.wait {
                    break Ended::WindowClosed(opens);
                }
                // Said once per closed window, not at every look (each second).
                if window_logged != Some(opens) {
                    tracing::info!(campaign = %sched.name, %opens, "outside the send window; waiting");
                    window_logged = Some(opens);
                }
                self.sleep_until(opens, stop).await;
                continue;
            }
            // Every relay at its quota or rested: claim nothing (the
            // deliveries stay pending) until one can take mail again.
            if let Some(pool) = &self.relays
                && let Some(wait) = pool.blocked().await
            {
                self.drain(&mut flight, progress).await?;
                if Self::settle_prefetch(&mut prefetch).await? {
                    store
                        .release_claims(campaign_id, &self.config.owner)
                        .await?;
                }
                if !self.config.wait {
                    break Ended::RetriesLater(wait.until);
                }
                if relays_logged != Some(wait.until) {
                    tracing::info!(campaign = %sched.name, until = %wait.until, reason = %wait.reason, "waiting for a relay");
                    relays_logged = Some(wait.until);
                }
                self.sleep_until(wait.until, stop).await;
                continue;
            }
            let t0 = Instant::now();
            let batch = match prefetch.take() {
                Some(claim) => claim
                    .await
                    .map_err(|e| RunError::Task(format!("claiming deliveries: {e}")))??,
                None => self.claim(campaign_id).await?,
            };
            claim_wait += t0.elapsed();
            if batch.is_empty() {
                let in_flight = !flight.tasks.is_empty();
                // Record everything of ours before deciding.
                self.drain(&mut flight, progress).await?;
                if in_flight {
                    // They may have been deferred: look again.
                    continue;
                }
                if store.finish_if_done(campaign_id).await? {
                    break Ended::Finished;
                }
                // Held by another worker's materialisation: give them a time.
                crate::local::assign_due(store, campaign_id, now).await?;
                if flight.breaker.is_some() && !store.has_unheld_work(campaign_id).await? {
                    break Ended::Suspended;
                }
                let next = store
                    .next_work_at(campaign_id)
                    .await?
                    .unwrap_or(now + chrono::Duration::seconds(1));
                if !self.config.wait {
                    break Ended::RetriesLater(next);
                }
                self.sleep_until(next, stop).await;
                continue;
            }
            if batch.len() as u64 >= self.config.batch {
                prefetch = Some(self.claim_ahead(campaign_id));
            }
            self.send_batch(batch, &mut flight, stop, progress).await?;
        };
        tracing::debug!(claim_wait_ms = claim_wait.as_millis() as u64, "claims done");
        // A batch claimed ahead is ours until released below.
        Self::settle_prefetch(&mut prefetch).await?;
        if matches!(ended, Ended::Shutdown | Ended::Stopped(_)) {
            // Claimed but never started: back to the pool for whoever continues.
            store
                .release_claims(campaign_id, &self.config.owner)
                .await?;
        }
        if let Some(pool) = &self.relays {
            pool.finish().await;
        }
        let Flight {
            recorder,
            attempts,
            done,
            ..
        } = flight;
        let Recorder { tx, task, .. } = recorder;
        drop(tx);
        task.await
            .map_err(|e| RunError::Task(format!("the outcome recorder: {e}")))??;
        if matches!(ended, Ended::Finished) {
            // Nothing changes its counts any more: fold them once, so every
            // later read of a finished campaign reads a few rows.
            store.fold_delivery_counts(campaign_id).await?;
        }
        let mut counts = store.campaign_counts(campaign_id).await?;
        counts.state = store.campaign_state(campaign_id).await?.to_string();
        Ok(RunReport {
            ended,
            counts,
            attempts,
            done,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Claims the next batch of due deliveries for this worker.
    async fn claim(&self, campaign_id: uuid::Uuid) -> Result<Vec<PendingDelivery>, RunError> {
        claim(&self.store, &*self.clock, &self.config, campaign_id).await
    }

    /// Claims the next batch on another task, while this one sends.
    fn claim_ahead(
        &self,
        campaign_id: uuid::Uuid,
    ) -> tokio::task::JoinHandle<Result<Vec<PendingDelivery>, RunError>> {
        let (store, clock, config) = (
            self.store.clone(),
            Arc::clone(&self.clock),
            self.config.clone(),
        );
        tokio::spawn(async move { claim(&store, &*clock, &config, campaign_id).await })
    }

    /// Waits for a claim made ahead, if any; true when it claimed something
    /// (left `sending` under this worker's name until released).
    async fn settle_prefetch(
        prefetch: &mut Option<tokio::task::JoinHandle<Result<Vec<PendingDelivery>, RunError>>>,
    ) -> Result<bool, RunError> {
        match prefetch.take() {
            None => Ok(false),
            Some(claim) => Ok(!claim
                .await
                .map_err(|e| RunError::Task(format!("claiming deliveries: {e}")))??
                .is_empty()),
        }
    }

    /// Sleeps until `at` by the injected clock, in real steps of at most one
    /// second (so a pause, a stop or a moved test clock is noticed).
    async fn sleep_until(&self, at: DateTime<Utc>, stop: &CancellationToken) {
        let left = (at - self.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            () = stop.cancelled() => {}
        }
    }

    /// Starts sends for one claimed batch, handing finished ones to the
    /// recorder as permits free up. Sends still in flight at the end stay in
    /// `flight`: the next batch is started while they finish, so the pipe
    /// never drains between batches.
    async fn send_batch(
        &self,
        batch: Vec<PendingDelivery>,
        flight: &mut Flight,
        stop: &CancellationToken,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RunError> {
        for d in batch {
            // Claimed but not started when stopping: the caller releases them.
            if stop.is_cancelled() || flight.halted {
                break;
            }
            let permit = tokio::select! {
                p = Arc::clone(&flight.limit).acquire_owned() => p.map_err(|e| RunError::Task(e.to_string()))?,
                () = stop.cancelled() => break,
            };
            let (sender, throttle, hooks, breaker) = (
                Arc::clone(&self.sender),
                Arc::clone(&self.throttle),
                Arc::clone(&self.hooks),
                flight.breaker.clone(),
            );
            let relays = self.relays.clone();
            flight.tasks.spawn(async move {
                let t0 = Instant::now();
                let domain = d.email.rsplit('@').next().unwrap_or_default().to_string();
                // The provider group (or the domain): the throttle's and
                // the breaker's unit.
                let key = throttle.key_of(&domain).await;
                if let Some(reason) = breaker.as_ref().and_then(|b| b.suspended(&key.name)) {
                    drop(permit);
                    return Sent {
                        d,
                        outcome: Err(reason),
                        latency: t0.elapsed(),
                        provider: key.name,
                        slowed: None,
                        requeue: None,
                    };
                }
                let mut slowed = None;
                let mut requeue = None;
                // Rendering (and DKIM signing) runs on the runtime's threads,
                // not on the claiming task.
                let outcome = match hooks.render(&d) {
                    Ok(bytes) => {
                        let slot = throttle.acquire(&key.name).await;
                        let per_connection = slot
                            .messages_per_connection()
                            .map(|n| (Arc::clone(&key.name), n));
                        let delivery = Delivery {
                            id: d.delivery_id,
                            to: d.email.clone(),
                            message: Arc::from(bytes),
                            per_connection,
                        };
                        let o = match &relays {
                            None => sender.send(delivery).await,
                            Some(pool) => match pool.send(delivery).await {
                                crate::relays::Routed::Done(o) => o,
                                crate::relays::Routed::Wait(w) => {
                                    requeue = Some(w.until);
                                    Outcome::Deferred {
                                        error: SendError::Shutdown,
                                    }
                                }
                            },
                        };
                        let reply = o.error().and_then(|e| e.reply());
                        slowed = requeue
                            .is_none()
                            .then(|| {
                                throttle.report(
                                    &key.name,
                                    reply.map(|r| r.code),
                                    reply.and_then(|r| r.enhanced).map(|e| (e.class, e.subject)),
                                    o.is_sent(),
                                )
                            })
                            .flatten();
                        Ok(o)
                    }
                    Err(e) => Err(e),
                };
                drop(permit);
                Sent {
                    d,
                    outcome: Ok(outcome),
                    latency: t0.elapsed(),
                    provider: key.name,
                    slowed,
                    requeue,
                }
            });
            while let Some(r) = flight.tasks.try_join_next() {
                self.settle(r, flight).await?;
            }
            if flight.last_progress.elapsed() >= CHECK_INTERVAL {
                flight.last_progress = Instant::now();
                progress(flight.recorder.recorded.load(Ordering::Relaxed));
            }
            if flight.check_due() {
                // A pause or cancel takes effect within one check interval:
                // sends in flight finish, the rest of the batch is released.
                self.look(flight).await?;
            }
        }
        Ok(())
    }

    /// Waits for every send in flight and until all outcomes are recorded.
    async fn drain(
        &self,
        flight: &mut Flight,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RunError> {
        while let Some(r) = flight.tasks.join_next().await {
            self.settle(r, flight).await?;
        }
        self.flush_held(flight).await?;
        self.flush_requeued(flight).await?;
        flight.recorder.sync().await?;
        progress(flight.recorder.recorded.load(Ordering::Relaxed));
        Ok(())
    }

    /// Turns one finished send into the outcome to record and hands it to
    /// the recorder.
    async fn settle(
        &self,
        joined: Result<Sent, tokio::task::JoinError>,
        flight: &mut Flight,
    ) -> Result<(), RunError> {
        let Sent {
            d,
            outcome,
            latency,
            provider,
            slowed,
            requeue,
        } = joined.map_err(|e| RunError::Task(e.to_string()))?;
        if let Some(until) = requeue {
            // No relay could take it: back to pending, untried.
            flight.requeued.push((until, d.delivery_id));
            if flight.requeued.len() >= self.config.record_every {
                self.flush_requeued(flight).await?;
            }
            return Ok(());
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(reason) => {
                // Its provider is suspended: back to the queue, untried.
                flight.held.push((provider, reason, d.delivery_id));
                if flight.held.len() >= self.config.record_every {
                    self.flush_held(flight).await?;
                }
                return Ok(());
            }
        };
        if let Some(rate) = slowed
            && flight.slowed.get(&provider) != Some(&rate)
        {
            flight.slowed.insert(Arc::clone(&provider), rate);
            let why = match &outcome {
                Ok(o) => o.error().map(|e| e.to_string()).unwrap_or_default(),
                Err(_) => String::new(),
            };
            let why: String = why.chars().take(300).collect();
            let now = self.clock.now();
            let until = now
                + chrono::Duration::from_std(self.throttle.slow_down_for())
                    .unwrap_or(chrono::Duration::minutes(10));
            self.store
                .slow_provider(flight.campaign_id, &provider, &why, rate, now, until)
                .await?;
            tracing::info!(campaign = %flight.campaign_id, %provider, rate, reply = %why, "provider slowed down");
        }
        if let Some(b) = flight.breaker.clone() {
            let block = match &outcome {
                Ok(Outcome::Sent { .. }) => Some(false),
                Ok(Outcome::Rejected { error }) => Some(self.hooks.is_block(error)),
                Ok(Outcome::Deferred { error }) => self.hooks.is_block(error).then_some(true),
                _ => None,
            };
            if let Some(block) = block
                && let Some(trip) = b.record(&provider, block)
            {
                self.on_trip(flight, trip).await?;
            }
        }
        let now = self.clock.now();
        let (state, error, next) = match &outcome {
            Err(hook_error) => (DeliveryState::Failed, Some(hook_error.to_string()), None),
            Ok(Outcome::Sent { .. }) => (DeliveryState::Sent, None, None),
            Ok(Outcome::Rejected { error }) => {
                (DeliveryState::Rejected, Some(error.to_string()), None)
            }
            Ok(Outcome::Failed { error }) => (DeliveryState::Failed, Some(error.to_string()), None),
            Ok(Outcome::Deferred { error }) => {
                let first = d.first_attempt_at.unwrap_or(now);
                match self.config.retry.after_deferral(
                    d.delivery_id,
                    (d.attempts + 1).max(1) as u32,
                    first,
                    now,
                ) {
                    Retry::At(at) => (DeliveryState::Deferred, Some(error.to_string()), Some(at)),
                    Retry::GiveUp => (
                        DeliveryState::Failed,
                        Some(format!(
                            "deferred since {} (past the maximum age of {} s): {error}",
                            first.format("%Y-%m-%d %H:%M:%S UTC"),
                            self.config.retry.max_age.as_secs()
                        )),
                        None,
                    ),
                }
            }
        };
        let domain = d.email.rsplit('@').next().unwrap_or_default();
        self.hooks.observe(domain, state, latency);
        let final_ = state != DeliveryState::Deferred;
        flight.attempts += 1;
        flight.done += u64::from(final_);
        let outcome_record = DeliveryOutcome {
            delivery_id: d.delivery_id,
            campaign_id: flight.campaign_id,
            state,
            error,
            next_attempt_at: next,
        };
        let rejection = match outcome {
            Ok(Outcome::Rejected { error }) => Some(Box::new((d, error))),
            _ => None,
        };
        flight
            .recorder
            .send(ToRecorder::Outcome {
                outcome: outcome_record,
                rejection,
                final_,
            })
            .await
    }
}

impl Runner {
    /// Reads the campaign's state (pause, cancel) and, with the breaker on,
    /// the suspensions stored for it (a restart keeps them; `campaign resume
    /// --provider` lifts them from another process) and, every few seconds,
    /// its complaint ratio. Sets `flight.halted` when it is not running.
    async fn look(&self, flight: &mut Flight) -> Result<CampaignState, RunError> {
        let id = flight.campaign_id;
        flight.last_check = Some(Instant::now());
        if let Some(b) = flight.breaker.clone() {
            let stored = self.store.suspended_providers(id).await?;
            for p in b.sync_suspended(&stored) {
                tracing::info!(campaign = %id, provider = %p, "provider resumed");
            }
            if flight
                .last_complaints
                .is_none_or(|t| t.elapsed() >= COMPLAINT_INTERVAL)
            {
                flight.last_complaints = Some(Instant::now());
                let (complaints, sent) = self.store.campaign_complaints(id).await?;
                if let Some(reason) = complaint_trip(&b.limits(), complaints, sent) {
                    self.pause(flight, &reason).await?;
                }
            }
        }
        if let Some(pool) = &self.relays {
            pool.sync_rests().await?;
        }
        let state = self.store.campaign_state(id).await?;
        flight.halted = state != CampaignState::Running;
        Ok(state)
    }

    /// Acts on what the breaker tripped: stores the suspension, or pauses.
    async fn on_trip(&self, flight: &mut Flight, trip: Trip) -> Result<(), RunError> {
        match trip {
            Trip::Provider { provider, reason } => {
                self.store
                    .suspend_provider(flight.campaign_id, &provider, &reason, self.clock.now())
                    .await?;
                tracing::warn!(
                    campaign = %flight.campaign_id,
                    %provider,
                    %reason,
                    "circuit breaker: provider suspended for this campaign; \
                     `campaign resume NAME --provider P` lifts it"
                );
                self.hooks.tripped(Some(&provider), &reason);
            }
            Trip::Campaign { reason } => self.pause(flight, &reason).await?,
        }
        Ok(())
    }

    /// Pauses the campaign with the breaker's reason.
    async fn pause(&self, flight: &mut Flight, reason: &str) -> Result<(), RunError> {
        if self
            .store
            .pause_campaign_because(flight.campaign_id, reason)
            .await?
        {
            tracing::warn!(
                campaign = %flight.campaign_id,
                %reason,
                "circuit breaker: campaign paused; `campaign resume NAME` continues it"
            );
            self.hooks.tripped(None, reason);
        }
        flight.halted = true;
        Ok(())
    }

    /// Puts the deliveries no relay could take back as pending, due when a
    /// relay frees up.
    async fn flush_requeued(&self, flight: &mut Flight) -> Result<(), RunError> {
        let mut requeued = std::mem::take(&mut flight.requeued);
        requeued.sort();
        for group in requeued.chunk_by(|a, b| a.0 == b.0) {
            let ids: Vec<uuid::Uuid> = group.iter().map(|r| r.1).collect();
            self.store.requeue_deliveries(&ids, group[0].0).await?;
        }
        Ok(())
    }

    /// Puts the deliveries held for suspended providers back as deferred.
    async fn flush_held(&self, flight: &mut Flight) -> Result<(), RunError> {
        if flight.held.is_empty() {
            return Ok(());
        }
        let until = self.clock.now()
            + chrono::Duration::from_std(HOLD_FOR).unwrap_or(chrono::Duration::minutes(1));
        let mut held = std::mem::take(&mut flight.held);
        held.sort_by(|a, b| a.0.cmp(&b.0));
        for group in held.chunk_by(|a, b| a.0 == b.0) {
            let (provider, reason, _) = &group[0];
            let error = format!(
                "{}is suspended by the circuit breaker: {reason}",
                rundbrief_store::hold_prefix(provider)
            );
            let ids: Vec<uuid::Uuid> = group.iter().map(|h| h.2).collect();
            self.store.hold_deliveries(&ids, &error, until).await?;
        }
        Ok(())
    }
}

/// One claim of up to `config.batch` due deliveries, leased to `config.owner`.
async fn claim(
    store: &Store,
    clock: &dyn Clock,
    config: &RunConfig,
    campaign_id: uuid::Uuid,
) -> Result<Vec<PendingDelivery>, RunError> {
    let now = clock.now();
    let lease_until =
        now + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::minutes(2));
    Ok(store
        .claim_deliveries(campaign_id, &config.owner, now, lease_until, config.batch)
        .await?)
}
