//! `rundbrief-scheduler`: runs campaigns.
//!
//! - [`schedule`]: one-off instants and recurring cron schedules in a time
//!   zone, send windows; pure functions over an injected [`Clock`].
//! - [`run`]: one campaign to the end with leased batches ([`Runner`]).
//! - [`tick`]: what a long-running `serve` does every few seconds: start due
//!   one-offs, create the run of each due recurring campaign (once).
//! - [`local`]: local-time delivery, each reader's due time in their zone.
//! - [`relays`]: several relays per campaign: weights, quotas, failover.
//! - [`retry`]: back-off with jitter and a maximum age for deferrals.
//!
//! SMTP is the sender's business and SQL the store's; templates and bounce
//! policy come in through [`Hooks`].

pub mod breaker;
pub mod clock;
pub mod local;
pub mod relays;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod tick;

pub use breaker::{Breaker, BreakerLimits, Trip};
pub use clock::{Clock, ManualClock, SystemClock};
pub use relays::{RelayPool, Route};
pub use retry::{Retry, RetryPolicy};
pub use run::{Ended, HookError, Hooks, RunConfig, RunError, RunReport, Runner};
pub use schedule::{Recurrence, ScheduleError, Window, parse_at, parse_tz};
