//! The overview's member counts per list, counted in the background.
//!
//! Counting every list's members by effective status joins all memberships
//! with their subscribers: 0.46 s at 1M subscribers on PostgreSQL, too slow
//! for a page that should answer in 100 ms (issue 19). Maintaining the
//! counts with triggers would need the subscriber's status at the moment a
//! membership disappears (also by cascade, after the subscriber row is
//! gone), on both backends; a snapshot taken off the request path is
//! simpler and good enough for an overview, which shows its age. The lists
//! page and `/api/v1/lists` still count exactly on each request.

use rundbrief_core::ListSummary;
use rundbrief_store::Store;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// The shortest pause between two counts; a count that takes longer than
/// 1/20 of this waits 20 times its duration, so counting uses at most 5 %
/// of one database connection's time.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// The last snapshot, shared by the refresher and the pages.
#[derive(Default)]
pub struct MemberCounts {
    last: RwLock<Option<Snapshot>>,
}

/// One count of every list's members.
#[derive(Clone)]
pub struct Snapshot {
    pub lists: Vec<ListSummary>,
    /// When the count finished.
    pub at: Instant,
    /// How long it took.
    pub took: Duration,
}

impl MemberCounts {
    /// The last snapshot, `None` until the first count finished.
    pub fn get(&self) -> Option<Snapshot> {
        self.last.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Counts now and keeps the result; returns how long it took.
    pub async fn refresh(&self, store: &Store) -> Result<Duration, rundbrief_store::StoreError> {
        let started = Instant::now();
        let lists = store.list_summaries().await?;
        let took = started.elapsed();
        if let Ok(mut g) = self.last.write() {
            *g = Some(Snapshot {
                lists,
                at: Instant::now(),
                took,
            });
        }
        Ok(took)
    }

    /// Counts, then again after [`REFRESH_EVERY`] (or 20 × the count's
    /// duration, if longer), until the task is dropped. A failed count is
    /// logged and tried again at the next turn; the last snapshot stays.
    pub async fn run(&self, store: Store) {
        loop {
            let pause = match self.refresh(&store).await {
                Ok(took) => REFRESH_EVERY.max(took * 20),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count list members for the overview");
                    REFRESH_EVERY
                }
            };
            tokio::time::sleep(pause).await;
        }
    }
}
