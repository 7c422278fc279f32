//! One scheduler tick: start the one-off campaigns whose time has come and
//! create the run of each recurring campaign that is due. Safe to call from
//! several processes at once: each start is a compare-and-set in the store.

use crate::clock::Clock;
use crate::run::RunError;
use crate::schedule::{Recurrence, parse_tz};
use rundbrief_core::CampaignState;
use rundbrief_store::Store;
use uuid::Uuid;

/// A campaign a tick set running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub id: Uuid,
    pub name: String,
    /// For a run of a recurring campaign: the occurrence it is for.
    pub occurrence: Option<chrono::DateTime<chrono::Utc>>,
}

/// Starts what is due at `clock.now()`.
pub async fn tick(store: &Store, clock: &dyn Clock) -> Result<Vec<Started>, RunError> {
    let now = clock.now();
    let mut started = Vec::new();
    for c in store.active_campaigns().await? {
        if c.state != CampaignState::Scheduled {
            continue;
        }
        let tz = parse_tz(c.schedule.tz.as_deref().unwrap_or("UTC"))?;
        if let Some(pattern) = &c.schedule.cron {
            let rec = Recurrence::parse(pattern, tz)?;
            let Some(occurrence) = rec.due(c.last_run_at, c.updated_at, now) else {
                continue;
            };
            let name = format!(
                "{}@{}",
                c.name,
                occurrence.with_timezone(&tz).format("%Y-%m-%dT%H:%M")
            );
            match store
                .create_run(c.id, c.last_run_at, occurrence, &name)
                .await
            {
                Ok(Some(id)) => {
                    tracing::info!(campaign = %c.name, run = %name, %occurrence, late_by = %(now - occurrence), "recurring run started");
                    started.push(Started {
                        id,
                        name,
                        occurrence: Some(occurrence),
                    });
                }
                Ok(None) => {} // another worker was first
                Err(rundbrief_store::StoreError::CampaignExists(n)) => {
                    tracing::warn!(run = %n, "a campaign with the run's name exists already; skipping this occurrence");
                }
                Err(e) => return Err(e.into()),
            }
        } else if let Some(at) = c.schedule.send_at
            && at <= now
            && store.start_scheduled(c.id).await?
        {
            tracing::info!(campaign = %c.name, %at, "scheduled campaign started");
            started.push(Started {
                id: c.id,
                name: c.name,
                occurrence: None,
            });
        }
    }
    Ok(started)
}
