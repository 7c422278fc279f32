//! Send grants shared by every worker on one database (issue #18): the
//! rate limits of `[sending]` and `[shaping]` hold for all workers
//! together, not per worker.
//!
//! A worker that wants to send under a throttle key (a provider group, a
//! recipient domain, `*` for the global rate) asks for a few grants in the
//! current window with [`Store::take_grants`] — one atomic statement — and
//! spends them locally; when it gets none it waits for the next window. A
//! window's grants never exceed the limit the asking worker passes, however
//! many workers ask at once: on PostgreSQL the upsert locks the key's row
//! and sees the latest count; on SQLite writes are serialised.
//!
//! Windows are identified by their start in milliseconds since the Unix
//! epoch, computed by the caller's clock: workers whose clocks disagree by
//! more than a window share less well (the one behind gets nothing until
//! its clock reaches the stored window), never more.

use crate::{Doing, Result, Store};
use sea_orm::{ConnectionTrait, FromQueryResult};

/// What one [`Store::take_grants`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// Sends granted to the caller in the window it asked for: at most
    /// `want`, 0 when the window's limit is reached or the key is already
    /// in a later window (another worker's clock is ahead).
    pub granted: u32,
    /// The key's window now (milliseconds since the epoch).
    pub window_start: i64,
    /// A slow-down recorded by any worker ([`Store::cap_grants`]): the rate
    /// and until when (milliseconds since the epoch), possibly past.
    pub cap: Option<(u32, i64)>,
}

#[derive(FromQueryResult)]
struct Row {
    last: i64,
    window_start: i64,
    cap: Option<i64>,
    cap_until: Option<i64>,
}

/// The grants of this take, as SQL over the old row (`provider_budget`)
/// and the proposed one (`excluded`): what is left under the limit
/// (parameter), at most what was asked for (`excluded.last`).
const TAKE: &str = "CASE WHEN ? - provider_budget.granted <= 0 THEN 0 \
     WHEN ? - provider_budget.granted < excluded.last THEN ? - provider_budget.granted \
     ELSE excluded.last END";

impl Store {
    /// Takes up to `want` send grants under `key` in the window starting
    /// at `window_start` (ms since the epoch) whose limit is `limit`: a new
    /// window starts from zero, the current one grants what is left, an
    /// older one (the caller's clock is behind) grants nothing. One
    /// statement, atomic under concurrent callers on both backends.
    ///
    /// # Errors
    /// The store failed.
    pub async fn take_grants(
        &self,
        key: &str,
        window_start: i64,
        limit: u32,
        want: u32,
    ) -> Result<Grants> {
        let limit = i64::from(limit);
        let first = i64::from(want).min(limit).max(0);
        let sql = format!(
            "INSERT INTO provider_budget (key, window_start, granted, last, cap, cap_until) \
             VALUES (?, ?, ?, ?, NULL, NULL) ON CONFLICT (key) DO UPDATE SET \
             last = CASE WHEN provider_budget.window_start < excluded.window_start THEN excluded.last \
               WHEN provider_budget.window_start = excluded.window_start THEN {TAKE} ELSE 0 END, \
             granted = CASE WHEN provider_budget.window_start < excluded.window_start THEN excluded.granted \
               WHEN provider_budget.window_start = excluded.window_start \
               THEN provider_budget.granted + {TAKE} ELSE provider_budget.granted END, \
             window_start = CASE WHEN provider_budget.window_start < excluded.window_start \
               THEN excluded.window_start ELSE provider_budget.window_start END \
             RETURNING last, window_start, cap, cap_until"
        );
        let mut values = vec![key.into(), window_start.into(), first.into(), first.into()];
        values.extend(std::iter::repeat_n(sea_orm::Value::from(limit), 6));
        let row = Row::find_by_statement(self.stmt(&sql, values))
            .one(&self.db)
            .await
            .doing("taking send grants")?;
        Ok(match row {
            Some(r) => Grants {
                granted: u32::try_from(r.last.max(0)).unwrap_or(u32::MAX),
                window_start: r.window_start,
                cap: r
                    .cap
                    .zip(r.cap_until)
                    .map(|(c, u)| (u32::try_from(c.max(1)).unwrap_or(u32::MAX), u)),
            },
            None => Grants {
                granted: 0,
                window_start,
                cap: None,
            },
        })
    }

    /// Records that `key` is slowed to `rate` until `until` (ms since the
    /// epoch), for every worker: each sees it in its next
    /// [`Store::take_grants`]. A lower cap still in force at `now` stays.
    ///
    /// # Errors
    /// The store failed.
    pub async fn cap_grants(&self, key: &str, rate: u32, until: i64, now: i64) -> Result<()> {
        self.db
            .execute_raw(self.stmt(
                "INSERT INTO provider_budget (key, window_start, granted, last, cap, cap_until) \
                 VALUES (?, 0, 0, 0, ?, ?) ON CONFLICT (key) DO UPDATE SET \
                 cap = CASE WHEN provider_budget.cap_until > ? AND provider_budget.cap < excluded.cap \
                   THEN provider_budget.cap ELSE excluded.cap END, \
                 cap_until = CASE WHEN provider_budget.cap_until > ? AND provider_budget.cap < excluded.cap \
                   THEN provider_budget.cap_until ELSE excluded.cap_until END",
                vec![
                    key.into(),
                    i64::from(rate).into(),
                    until.into(),
                    now.into(),
                    now.into(),
                ],
            ))
            .await
            .doing("recording a shared slow-down")?;
        Ok(())
    }

    /// Every slow-down in force at `now` (ms since the epoch): key, rate,
    /// until. For the keys a worker sends under without taking grants.
    ///
    /// # Errors
    /// The store failed.
    pub async fn grant_caps(&self, now: i64) -> Result<Vec<(String, u32, i64)>> {
        #[derive(FromQueryResult)]
        struct C {
            key: String,
            cap: i64,
            cap_until: i64,
        }
        let rows = C::find_by_statement(self.stmt(
            "SELECT key, cap, cap_until FROM provider_budget \
             WHERE cap IS NOT NULL AND cap_until > ?",
            vec![now.into()],
        ))
        .all(&self.db)
        .await
        .doing("reading shared slow-downs")?;
        Ok(rows
            .into_iter()
            .map(|c| {
                let rate = u32::try_from(c.cap.max(1)).unwrap_or(u32::MAX);
                (c.key, rate, c.cap_until)
            })
            .collect())
    }
}
