//! Several relays for one campaign (issue #18): each message goes to one
//! relay picked by weight among those under their quota and not rested; a
//! relay that fails at CONNECT, TLS or AUTH `rest_after` times in a row is
//! rested for `rest_for` and its share goes to the others, and the message
//! that failed is tried on another relay.
//!
//! Quotas live in the database ([`Store::take_relay_quota`]), so they hold
//! across restarts and across workers. A message counts when it is *handed
//! to the relay*: the pool reserves quota before the send (in chunks of up
//! to `chunk` messages per relay, so the database is asked once per chunk,
//! not per message) and takes a reservation back when the send ended
//! before the relay saw the message (DNS, CONNECT, GREETING, TLS or AUTH
//! failed). Reserved but unused quota is given back when the run ends; a
//! worker that dies keeps its unused reservation counted until the bucket
//! ends (at most `chunk` per relay: quotas err on the safe side).

use crate::clock::Clock;
use chrono::{DateTime, Utc};
use rundbrief_sender::{Delivery, Outcome, SendError, SmtpStep, Transport};
use rundbrief_store::{RelayQuota, Store, StoreError, hour_bucket};
use std::sync::Arc;
use std::time::Duration;

/// One relay of a campaign.
pub struct Route {
    /// The relay's name (`[relays.NAME]`), or its URL for a bare URL: the
    /// key of its quota and rest in the database, and what status shows.
    pub name: String,
    pub transport: Arc<dyn Transport>,
    /// Share among the relays (at least 1).
    pub weight: u32,
    pub quota: RelayQuota,
    /// Failures in a row at CONNECT, TLS or AUTH before it is rested.
    pub rest_after: u32,
    pub rest_for: Duration,
}

/// What a relay's state is, as the pool sees it.
#[derive(Debug, Default)]
struct State {
    /// Smooth weighted round robin (nginx's): raised by the weight at each
    /// pick, lowered by the total when picked.
    current: i64,
    /// Quota reserved in the database and not used yet.
    allowance: u64,
    /// The hour and day buckets the allowance was taken in.
    bucket: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// At its quota until then (what the database said at the last take).
    full_until: Option<DateTime<Utc>>,
    /// Rested until then.
    rested_until: Option<DateTime<Utc>>,
    rest_reason: String,
    /// CONNECT/TLS/AUTH failures in a row.
    failures: u32,
}

/// Why no relay can take a message now, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub until: DateTime<Utc>,
    /// `every relay is at its quota` or `… rested`, with the names.
    pub reason: String,
}

/// How a routed send ended.
pub enum Routed {
    /// A relay took the message (or refused it, or every relay failed).
    Done(Outcome),
    /// No relay can take it before `until`: put it back untried.
    Wait(Wait),
}

/// The relays of one run, their weights, quotas and rests.
pub struct RelayPool {
    store: Store,
    clock: Arc<dyn Clock>,
    routes: Vec<Route>,
    chunk: u64,
    state: tokio::sync::Mutex<Vec<State>>,
}

impl std::fmt::Debug for RelayPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayPool")
            .field("relays", &self.names())
            .field("chunk", &self.chunk)
            .finish()
    }
}

/// True when `e` says the relay itself could not be used (unreachable,
/// TLS, refused us at the greeting or AUTH), not that it refused the
/// message: the message never reached it.
pub fn is_relay_failure(e: &SendError) -> bool {
    if matches!(e, SendError::Shutdown) {
        return false;
    }
    matches!(
        e.step(),
        SmtpStep::Dns | SmtpStep::Connect | SmtpStep::Greeting | SmtpStep::Tls | SmtpStep::Auth
    )
}

impl RelayPool {
    /// A pool over `routes`; quota is reserved `chunk` messages at a time
    /// (the sends in flight is a good size).
    pub fn new(store: Store, clock: Arc<dyn Clock>, routes: Vec<Route>, chunk: u64) -> Self {
        let state = routes.iter().map(|_| State::default()).collect();
        RelayPool {
            store,
            clock,
            routes,
            chunk: chunk.max(1),
            state: tokio::sync::Mutex::new(state),
        }
    }

    /// The relays' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }

    /// Sends `delivery` through a relay picked by weight; on a CONNECT, TLS
    /// or AUTH failure, through another one (each relay at most once).
    /// Without a relay to take it: [`Routed::Wait`], or the last relay's
    /// outcome when one was tried.
    pub async fn send(&self, delivery: Delivery) -> Routed {
        let mut tried: Vec<usize> = Vec::new();
        let mut last: Option<Outcome> = None;
        for _ in 0..self.routes.len() {
            let i = match self.pick(&tried).await {
                Ok(Ok(i)) => i,
                Ok(Err(wait)) => {
                    return match last {
                        Some(o) => Routed::Done(o),
                        None => Routed::Wait(wait),
                    };
                }
                Err(e) => {
                    // Without the quota table we cannot know what is
                    // allowed: wait rather than overshoot.
                    tracing::warn!(error = %e, "relay quota could not be read; the message waits");
                    return match last {
                        Some(o) => Routed::Done(o),
                        None => Routed::Wait(Wait {
                            until: self.clock.now() + chrono::Duration::seconds(30),
                            reason: format!("the relay quota could not be read: {e}"),
                        }),
                    };
                }
            };
            let o = self.routes[i].transport.send(delivery.clone()).await;
            if self.report(i, &o).await {
                tried.push(i);
                last = Some(o);
                continue;
            }
            return Routed::Done(o);
        }
        match last {
            Some(o) => Routed::Done(o),
            None => Routed::Wait(Wait {
                until: self.clock.now() + chrono::Duration::seconds(1),
                reason: "no relay".into(),
            }),
        }
    }

    /// Picks a relay not in `exclude`, under its quota and not rested, by
    /// weight, and reserves one message of its quota; else why none can.
    async fn pick(&self, exclude: &[usize]) -> Result<Result<usize, Wait>, StoreError> {
        let now = self.clock.now();
        let mut state = self.state.lock().await;
        // Bounded: each pass either returns or marks one relay full.
        for _ in 0..=self.routes.len() {
            let mut open: Vec<usize> = (0..self.routes.len())
                .filter(|i| !exclude.contains(i))
                .filter(|&i| available(&state[i], now))
                .collect();
            if open.is_empty() {
                return Ok(Err(self.wait_of(&state, exclude, now)));
            }
            // Standbys (weight 0) take mail only while no weighted relay
            // can; then they share it equally.
            let weighted = |i: &usize| self.routes[*i].weight > 0;
            if open.iter().any(weighted) {
                open.retain(weighted);
            }
            let weight = |i: usize| i64::from(self.routes[i].weight.max(1));
            let total: i64 = open.iter().map(|&i| weight(i)).sum();
            for &i in &open {
                state[i].current += weight(i);
            }
            let best = open
                .iter()
                .copied()
                .max_by_key(|&i| (state[i].current, std::cmp::Reverse(i)))
                .unwrap_or(open[0]);
            state[best].current -= total;
            let route = &self.routes[best];
            let s = &mut state[best];
            // Quota reserved in an earlier hour is not this hour's: back.
            if let Some((hour, day)) = s.bucket
                && hour != hour_bucket(now)
            {
                let n = std::mem::take(&mut s.allowance);
                s.bucket = None;
                self.store
                    .give_back_relay_quota(&route.name, hour, day, n)
                    .await?;
            }
            if s.allowance == 0 {
                let taken = self
                    .store
                    .take_relay_quota(&route.name, now, self.chunk, route.quota)
                    .await?;
                s.allowance = taken.n;
                s.bucket = Some((taken.hour, taken.day));
                if taken.n == 0 {
                    let until = taken
                        .full_until
                        .unwrap_or(now + chrono::Duration::seconds(1));
                    if s.full_until.is_none_or(|t| t <= now) {
                        tracing::info!(relay = %route.name, %until, "relay at its quota");
                    }
                    s.full_until = Some(until);
                    continue;
                }
            }
            s.allowance -= 1;
            return Ok(Ok(best));
        }
        Ok(Err(self.wait_of(&state, exclude, now)))
    }

    /// Why nothing outside `exclude` is available, and until when.
    fn wait_of(&self, state: &[State], exclude: &[usize], now: DateTime<Utc>) -> Wait {
        let mut until: Option<DateTime<Utc>> = None;
        let (mut full, mut rested) = (Vec::new(), Vec::new());
        for (i, s) in state.iter().enumerate() {
            if exclude.contains(&i) {
                continue;
            }
            let free = [s.full_until, s.rested_until]
                .into_iter()
                .flatten()
                .filter(|t| *t > now)
                .max();
            if let Some(t) = free {
                until = Some(until.map_or(t, |u| u.min(t)));
            }
            if s.rested_until.is_some_and(|t| t > now) {
                rested.push(self.routes[i].name.as_str());
            } else if s.full_until.is_some_and(|t| t > now) {
                full.push(self.routes[i].name.as_str());
            }
        }
        let mut reason = Vec::new();
        if !full.is_empty() {
            reason.push(format!("at its quota: {}", full.join(", ")));
        }
        if !rested.is_empty() {
            reason.push(format!("rested: {}", rested.join(", ")));
        }
        Wait {
            until: until.unwrap_or(now + chrono::Duration::seconds(1)),
            reason: format!("no relay can take mail now ({})", reason.join("; ")),
        }
    }

    /// Records how a send through relay `i` ended; true when the relay
    /// failed (CONNECT, TLS, AUTH): its reservation is taken back and,
    /// after `rest_after` such failures in a row, it is rested.
    async fn report(&self, i: usize, o: &Outcome) -> bool {
        let route = &self.routes[i];
        let failed = o.error().is_some_and(is_relay_failure);
        let now = self.clock.now();
        let rest = {
            let mut state = self.state.lock().await;
            let s = &mut state[i];
            if !failed {
                s.failures = 0;
                return false;
            }
            // Not handed over: the message does not count.
            if s.bucket.is_some_and(|(h, _)| h == hour_bucket(now)) {
                s.allowance += 1;
            }
            s.failures += 1;
            if s.failures < route.rest_after || s.rested_until.is_some_and(|t| t > now) {
                return true;
            }
            s.failures = 0;
            let until = now
                + chrono::Duration::from_std(route.rest_for)
                    .unwrap_or(chrono::Duration::minutes(5));
            s.rested_until = Some(until);
            s.rest_reason = o.error().map(|e| e.to_string()).unwrap_or_default();
            (until, s.rest_reason.clone())
        };
        let (until, reason) = rest;
        tracing::warn!(
            relay = %route.name,
            %until,
            failures = route.rest_after,
            error = %reason,
            "relay failed at connect/TLS/AUTH repeatedly; rested, the other relays take its share"
        );
        if let Err(e) = self
            .store
            .rest_relay(&route.name, until, &reason, now)
            .await
        {
            tracing::warn!(relay = %route.name, error = %e, "could not store the relay's rest");
        }
        true
    }

    /// Reads the rests other workers stored (a relay rested elsewhere is
    /// rested here too).
    ///
    /// # Errors
    /// The store failed.
    pub async fn sync_rests(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let rests = self.store.relay_rests(&self.names(), now).await?;
        let mut state = self.state.lock().await;
        for r in rests {
            if let Some(i) = self.routes.iter().position(|x| x.name == r.relay) {
                let s = &mut state[i];
                if s.rested_until.is_none_or(|t| t < r.until) {
                    s.rested_until = Some(r.until);
                    s.rest_reason = r.reason;
                }
            }
        }
        Ok(())
    }

    /// When every relay is at its quota or rested (as far as this pool
    /// knows): until when and why. `None` while one can take mail.
    pub async fn blocked(&self) -> Option<Wait> {
        let now = self.clock.now();
        let state = self.state.lock().await;
        if state.iter().any(|s| available(s, now)) {
            return None;
        }
        Some(self.wait_of(&state, &[], now))
    }

    /// Gives every unused reservation back (the run ends).
    pub async fn finish(&self) {
        let mut state = self.state.lock().await;
        for (route, s) in self.routes.iter().zip(state.iter_mut()) {
            let n = std::mem::take(&mut s.allowance);
            if let Some((hour, day)) = s.bucket.take()
                && let Err(e) = self
                    .store
                    .give_back_relay_quota(&route.name, hour, day, n)
                    .await
            {
                tracing::warn!(relay = %route.name, error = %e, "could not give unused relay quota back");
            }
        }
    }

    /// Closes every relay's connections.
    pub async fn shutdown(&self) {
        for r in &self.routes {
            r.transport.shutdown().await;
        }
    }
}

fn available(s: &State, now: DateTime<Utc>) -> bool {
    s.full_until.is_none_or(|t| t <= now) && s.rested_until.is_none_or(|t| t <= now)
}
