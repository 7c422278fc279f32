//! Delivery counts kept by triggers (migration 18) in one table, per
//! campaign and recipient domain: all deliveries, the not-yet-final ones
//! (pending, sending and deferred together as `queued`, which the reader
//! splits with an indexed count of the few sending and deferred rows) and
//! each final state. [`Store::campaign_counts`] (sums over the campaign's
//! domains) and [`Store::campaign_domain_counts`] read these instead of
//! scanning the campaign's deliveries, which took 0.5 s and 2 s at 1M
//! deliveries on PostgreSQL (issue 19).
//!
//! On PostgreSQL the triggers append delta rows (no counter row is ever
//! locked by a sending worker, so concurrent claim and outcome transactions
//! cannot deadlock on them); readers sum them and fold a campaign's rows back
//! into one per key once there are more than [`FOLD_AFTER`]. On SQLite each
//! key has exactly one row, updated in place, and folding does nothing.

use crate::{CampaignCounts, Doing, DomainCount, Result, Store};
use rundbrief_core::DeliveryState;
use sea_orm::{ConnectionTrait, FromQueryResult};
use uuid::Uuid;

/// Delta rows one campaign may gather, beyond twice its domains, before a
/// reader folds them: reading a few hundred rows costs well under a
/// millisecond, folding them about as much. A fold rewrites one row per
/// domain (thousands for a big campaign), so a running campaign's page,
/// reloaded every few seconds, does not rewrite them on every view.
const FOLD_AFTER: i64 = 256;

/// Advisory lock class (first key) of the fold; the second key is the
/// campaign's hash. Two folds of one campaign would
/// delete the same rows in different orders; the second one skips instead.
const FOLD_LOCK_DOMAINS: i32 = 1_901_802;

impl Store {
    /// Folds the campaign's delta rows into one row per domain
    /// (PostgreSQL; a no-op on SQLite), dropping keys that sum to zero.
    /// Readers do this on their own when rows pile up; the scheduler calls it
    /// when a campaign finishes, so a finished campaign reads a few rows.
    ///
    /// Safe while workers write: rows appended after the fold's snapshot are
    /// not deleted and count on top of the folded row. When another fold of
    /// the same campaign runs, this one does nothing.
    pub async fn fold_delivery_counts(&self, campaign_id: Uuid) -> Result<()> {
        if !self.is_postgres() {
            return Ok(());
        }
        self.db
            .execute_raw(self.stmt(
                "WITH l AS (SELECT pg_try_advisory_xact_lock(?, hashtext(?::text)) AS ok), \
                 d AS (DELETE FROM delivery_domain_counts WHERE campaign_id = ? AND (SELECT ok FROM l) \
                 RETURNING campaign_id, domain, total, queued, sent, failed, rejected, bounced, skipped) \
                 INSERT INTO delivery_domain_counts \
                 (campaign_id, domain, total, queued, sent, failed, rejected, bounced, skipped) \
                 SELECT campaign_id, domain, SUM(total), SUM(queued), SUM(sent), SUM(failed), \
                 SUM(rejected), SUM(bounced), SUM(skipped) FROM d \
                 GROUP BY campaign_id, domain \
                 HAVING SUM(total) <> 0 OR SUM(queued) <> 0 OR SUM(sent) <> 0 OR SUM(failed) <> 0 \
                 OR SUM(rejected) <> 0 OR SUM(bounced) <> 0 OR SUM(skipped) <> 0",
                vec![
                    FOLD_LOCK_DOMAINS.into(),
                    campaign_id.to_string().into(),
                    campaign_id.into(),
                ],
            ))
            .await
            .doing("folding a campaign's per-domain delivery counts")?;
        Ok(())
    }

    /// Folds when a reader saw `rows` count rows (delta rows on
    /// PostgreSQL) for `domains` domains of the campaign: once the deltas
    /// outnumber [`FOLD_AFTER`] plus twice the domains.
    pub(crate) async fn fold_if_piled_up(
        &self,
        campaign_id: Uuid,
        rows: i64,
        domains: i64,
    ) -> Result<()> {
        if rows > FOLD_AFTER + 2 * domains {
            self.fold_delivery_counts(campaign_id).await?;
        }
        Ok(())
    }

    /// What [`Store::campaign_counts`] and [`Store::campaign_domain_counts`]
    /// (all domains) would say if they scanned the deliveries, as they did
    /// before the counts were maintained: the tests compare both after real
    /// work, and an operator can check a suspicious figure. Costs a full
    /// scan of the campaign's deliveries.
    pub async fn scan_delivery_counts(
        &self,
        campaign_id: Uuid,
    ) -> Result<(CampaignCounts, Vec<DomainCount>)> {
        #[derive(FromQueryResult)]
        struct S {
            state: String,
            n: i64,
        }
        let rows = S::find_by_statement(self.stmt(
            "SELECT state, COUNT(*) AS n FROM deliveries WHERE campaign_id = ? GROUP BY state",
            vec![campaign_id.into()],
        ))
        .all(&self.db)
        .await
        .doing("counting deliveries")?;
        let mut counts = CampaignCounts::default();
        for r in rows {
            counts.add(r.state.parse()?, r.n);
        }
        #[derive(FromQueryResult)]
        struct D {
            domain: String,
            pending: i64,
            sent: i64,
        }
        let domain = if self.is_postgres() {
            "split_part(email, '@', 2)"
        } else {
            "substr(email, instr(email, '@') + 1)"
        };
        let rows = D::find_by_statement(self.stmt(
            &format!(
                "SELECT {domain} AS domain, \
                 SUM(CASE WHEN state IN (?, ?, ?) THEN 1 ELSE 0 END) AS pending, \
                 SUM(CASE WHEN state = ? THEN 1 ELSE 0 END) AS sent \
                 FROM deliveries WHERE campaign_id = ? GROUP BY {domain} \
                 ORDER BY COUNT(*) DESC, {domain}"
            ),
            vec![
                DeliveryState::Pending.as_str().into(),
                DeliveryState::Sending.as_str().into(),
                DeliveryState::Deferred.as_str().into(),
                DeliveryState::Sent.as_str().into(),
                campaign_id.into(),
            ],
        ))
        .all(&self.db)
        .await
        .doing("counting deliveries per domain")?;
        let domains = rows
            .into_iter()
            .map(|r| DomainCount {
                domain: r.domain,
                pending: u64::try_from(r.pending).unwrap_or(0),
                sent: u64::try_from(r.sent).unwrap_or(0),
            })
            .collect();
        Ok((counts, domains))
    }
}

impl CampaignCounts {
    /// Adds `n` deliveries in `state` to the figures they belong to.
    pub(crate) fn add(&mut self, state: DeliveryState, n: i64) {
        let n = u64::try_from(n).unwrap_or(0);
        self.total += n;
        match state {
            DeliveryState::Pending => self.pending += n,
            DeliveryState::Sending => {
                self.pending += n;
                self.sending += n;
            }
            DeliveryState::Sent => self.sent += n,
            DeliveryState::Deferred => self.deferred += n,
            DeliveryState::Rejected => {
                self.rejected += n;
                self.bounced += n;
            }
            DeliveryState::Failed => self.failed += n,
            DeliveryState::Bounced => self.bounced += n,
            DeliveryState::Skipped => self.skipped += n,
        }
    }
}

impl Store {
    /// Runs one statement with no parameters and returns the rows it
    /// changed: for tests that need what the API does not offer (deleting
    /// a campaign to see its deliveries cascade). Not for application code.
    #[doc(hidden)]
    pub async fn execute_for_tests(&self, sql: &str) -> Result<u64> {
        Ok(self
            .db
            .execute_raw(self.stmt(sql, vec![]))
            .await
            .doing("running a test statement")?
            .rows_affected())
    }

    /// The domains of the campaign in the counts table, and the rows
    /// (delta rows on PostgreSQL) it holds for them: for tests of the
    /// folding.
    #[doc(hidden)]
    pub async fn delivery_count_rows(&self, campaign_id: Uuid) -> Result<(u64, u64)> {
        #[derive(FromQueryResult)]
        struct N {
            domains: i64,
            rows: i64,
        }
        let n = N::find_by_statement(self.stmt(
            "SELECT COUNT(DISTINCT domain) AS domains, COUNT(*) AS rows \
             FROM delivery_domain_counts WHERE campaign_id = ?",
            vec![campaign_id.into()],
        ))
        .one(&self.db)
        .await
        .doing("counting count rows")?
        .map_or((0, 0), |n| (n.domains, n.rows));
        Ok((n.0 as u64, n.1 as u64))
    }
}
