//! Running one campaign: claim a leased batch of due deliveries, render and
//! send each through the sender (throttled), record outcomes in groups,
//! repeat until nothing is left, the campaign is paused or cancelled, the
//! send window closes, or the process is asked to stop.

use crate::clock::Clock;
use crate::retry::{Retry, RetryPolicy};
use crate::schedule::{Window, parse_tz};
use chrono::{DateTime, Utc};
use rundbrief_core::{CampaignState, DeliveryState};
use rundbrief_sender::throttle::Throttle;
use rundbrief_sender::{Delivery, Outcome, SendError, Sender};
use rundbrief_store::{CampaignCounts, DeliveryOutcome, PendingDelivery, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest time between two outcome records (progress and pause checks).
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

/// What the caller supplies per campaign: the renderer and what happens
/// after a synchronous bounce. Keeps templates and bounce policy out of
/// this crate.
#[async_trait::async_trait]
pub trait Hooks: Send + Sync {
    /// The complete message for one delivery, or why it cannot be built.
    fn render(&self, d: &PendingDelivery) -> Result<Vec<u8>, String>;
    /// A 5xx at RCPT or DATA: classify and score it like a bounce.
    async fn rejected(&self, d: &PendingDelivery, error: &SendError) -> Result<(), String>;
    /// Every outcome, for metrics: recipient domain, final state, send time.
    fn observe(&self, _domain: &str, _state: DeliveryState, _latency: Duration) {}
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
    /// Outcomes recorded per transaction.
    pub record_every: usize,
    pub retry: RetryPolicy,
    /// Wait for retries and for the send window instead of returning.
    pub wait: bool,
    /// Materialise the recipients at the start (off when the caller did).
    pub materialise: bool,
}

impl RunConfig {
    pub fn new(owner: impl Into<String>, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        RunConfig {
            owner: owner.into(),
            concurrency,
            batch: (concurrency as u64 * 8).clamp(16, 1000),
            lease: Duration::from_secs(120),
            record_every: 32,
            retry: RetryPolicy::default(),
            wait: true,
            materialise: true,
        }
    }
}

/// Why a run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every delivery has a final outcome; the campaign is finished.
    Finished,
    /// Paused or cancelled meanwhile (the state it has now).
    Stopped(CampaignState),
    /// Only retries later than now are left (`wait` off).
    RetriesLater(DateTime<Utc>),
    /// Outside the send window until then (`wait` off).
    WindowClosed(DateTime<Utc>),
    /// The process is shutting down; in-flight sends were finished.
    Shutdown,
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

/// Sends in flight and outcomes not yet recorded, across batches.
struct Flight {
    limit: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<(PendingDelivery, Result<Outcome, String>, Duration)>,
    records: Vec<DeliveryOutcome>,
    rejections: Vec<(PendingDelivery, SendError)>,
    last_flush: Instant,
    /// The campaign left `running` (pause, cancel): start nothing more.
    halted: bool,
    attempts: u64,
    done: u64,
}

impl Flight {
    fn new(concurrency: usize) -> Self {
        Flight {
            limit: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            tasks: tokio::task::JoinSet::new(),
            records: Vec::new(),
            rejections: Vec::new(),
            last_flush: Instant::now(),
            halted: false,
            attempts: 0,
            done: 0,
        }
    }
}

/// Everything a run needs.
pub struct Runner {
    pub store: Store,
    pub sender: Arc<Sender>,
    pub throttle: Arc<Throttle>,
    pub hooks: Arc<dyn Hooks>,
    pub clock: Arc<dyn Clock>,
    pub config: RunConfig,
}

impl Runner {
    /// Runs `campaign_id` (which must be `running`) until it ends; see [`Ended`].
    /// `progress` is called with the number of final outcomes after each group.
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
        let mut flight = Flight::new(self.config.concurrency);
        let ended = loop {
            if stop.is_cancelled() {
                self.drain(&mut flight, progress).await?;
                break Ended::Shutdown;
            }
            let state = store.campaign_state(campaign_id).await?;
            if state != CampaignState::Running {
                self.drain(&mut flight, progress).await?;
                break Ended::Stopped(state);
            }
            let now = self.clock.now();
            if let Some(w) = window
                && !w.contains(tz, now)
            {
                let opens = w.opens_at(tz, now);
                self.drain(&mut flight, progress).await?;
                if !self.config.wait {
                    break Ended::WindowClosed(opens);
                }
                tracing::info!(campaign = %sched.name, %opens, "outside the send window; waiting");
                self.sleep_until(opens, stop).await;
                continue;
            }
            let lease_until = now
                + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(2));
            let batch = store
                .claim_deliveries(campaign_id, &self.config.owner, now, lease_until, self.config.batch)
                .await?;
            if batch.is_empty() {
                if !flight.tasks.is_empty() || !flight.records.is_empty() {
                    // Ours in flight: record them, then look again.
                    self.drain(&mut flight, progress).await?;
                    continue;
                }
                if store.finish_if_done(campaign_id).await? {
                    break Ended::Finished;
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
            self.send_batch(campaign_id, batch, &mut flight, stop, progress)
                .await?;
        };
        if matches!(ended, Ended::Shutdown | Ended::Stopped(_)) {
            // Claimed but never started: back to the pool for whoever continues.
            store.release_claims(campaign_id, &self.config.owner).await?;
        }
        let mut counts = store.campaign_counts(campaign_id).await?;
        counts.state = store.campaign_state(campaign_id).await?.to_string();
        Ok(RunReport {
            ended,
            counts,
            attempts: flight.attempts,
            done: flight.done,
            seconds: started.elapsed().as_secs_f64(),
        })
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

    /// Starts sends for one claimed batch, settling and recording finished
    /// ones as permits free up. Sends still in flight at the end stay in
    /// `flight`: the next batch is claimed while they finish, so the pipe
    /// never drains between batches.
    async fn send_batch(
        &self,
        campaign_id: uuid::Uuid,
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
            let (sender, throttle, hooks) = (
                Arc::clone(&self.sender),
                Arc::clone(&self.throttle),
                Arc::clone(&self.hooks),
            );
            flight.tasks.spawn(async move {
                let t0 = Instant::now();
                // Rendering (and DKIM signing) runs on the runtime's threads,
                // not on the claiming task.
                let outcome = match hooks.render(&d) {
                    Ok(bytes) => {
                        let domain = d.email.rsplit('@').next().unwrap_or_default().to_string();
                        let _slot = throttle.acquire(&domain).await;
                        let o = sender
                            .send(Delivery {
                                id: d.delivery_id,
                                to: d.email.clone(),
                                message: Arc::from(bytes),
                            })
                            .await;
                        let reply = o.error().and_then(|e| e.reply());
                        throttle.report(
                            &domain,
                            reply.map(|r| r.code),
                            reply.and_then(|r| r.enhanced).map(|e| (e.class, e.subject)),
                            o.is_sent(),
                        );
                        Ok(o)
                    }
                    Err(e) => Err(e),
                };
                drop(permit);
                (d, outcome, t0.elapsed())
            });
            while let Some(r) = flight.tasks.try_join_next() {
                self.settle(r, flight).await?;
            }
            if flight.records.len() >= self.config.record_every
                || flight.last_flush.elapsed() >= FLUSH_INTERVAL
            {
                self.flush(flight, progress).await?;
                // A pause or cancel takes effect within one flush interval:
                // sends in flight finish, the rest of the batch is released.
                flight.halted =
                    self.store.campaign_state(campaign_id).await? != CampaignState::Running;
            }
        }
        Ok(())
    }

    /// Waits for every send in flight and records all outcomes.
    async fn drain(
        &self,
        flight: &mut Flight,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RunError> {
        while let Some(r) = flight.tasks.join_next().await {
            self.settle(r, flight).await?;
            if flight.records.len() >= self.config.record_every {
                self.flush(flight, progress).await?;
            }
        }
        self.flush(flight, progress).await
    }

    /// Records a group of outcomes, then hands the synchronous bounces among
    /// them to the hooks (after, so the delivery is `rejected` before the
    /// bounce policy looks at it).
    async fn flush(
        &self,
        flight: &mut Flight,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RunError> {
        self.store.record_outcomes(&flight.records).await?;
        flight.records.clear();
        for (d, error) in flight.rejections.drain(..) {
            if let Err(e) = self.hooks.rejected(&d, &error).await {
                tracing::warn!(delivery = %d.delivery_id, "could not classify a synchronous bounce: {e}");
            }
        }
        flight.last_flush = Instant::now();
        progress(flight.done);
        Ok(())
    }

    /// Turns one finished send into the outcome to record.
    async fn settle(
        &self,
        joined: Result<
            (PendingDelivery, Result<Outcome, String>, Duration),
            tokio::task::JoinError,
        >,
        flight: &mut Flight,
    ) -> Result<(), RunError> {
        let (d, outcome, latency) = joined.map_err(|e| RunError::Task(e.to_string()))?;
        let now = self.clock.now();
        let (state, error, next) = match &outcome {
            Err(render_error) => (DeliveryState::Failed, Some(format!("render: {render_error}")), None),
            Ok(Outcome::Sent { .. }) => (DeliveryState::Sent, None, None),
            Ok(Outcome::Rejected { error }) => (DeliveryState::Rejected, Some(error.to_string()), None),
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
        flight.records.push(DeliveryOutcome {
            delivery_id: d.delivery_id,
            state,
            error,
            next_attempt_at: next,
        });
        if let Ok(Outcome::Rejected { error }) = outcome {
            flight.rejections.push((d, error));
        }
        flight.attempts += 1;
        flight.done += u64::from(state != DeliveryState::Deferred);
        Ok(())
    }
}
