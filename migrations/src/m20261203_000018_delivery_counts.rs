//! Delivery counts the dashboard and `campaign status` read without
//! scanning a campaign's deliveries (issue 19: at 1M deliveries the scans
//! took 0.5 s to 2 s per request).
//!
//! - `delivery_state_counts (campaign_id, state, n)`: deliveries per state.
//! - `delivery_domain_counts (campaign_id, domain, total, queued, sent)`:
//!   deliveries per recipient domain (the part of `email` after the first
//!   '@', as stored): all of them, the ones not yet final (pending, sending,
//!   deferred) and the sent ones.
//!
//! Both are kept by triggers on `deliveries`, so every path that inserts,
//! deletes (cascades included) or changes `state` stays counted without
//! knowing about them. Readers always `SUM(...) GROUP BY`, which is right on
//! both backends:
//!
//! - SQLite: a row-level trigger per change upserts `n ± 1` into a row keyed
//!   by (campaign, state) or (campaign, domain). Writers are serialised, so
//!   a hot row costs nothing extra.
//! - PostgreSQL: row-level upserts would make the claim and the outcome
//!   transactions of concurrent workers lock the same counter rows in
//!   different orders, which deadlocks. Statement-level triggers with
//!   transition tables instead APPEND one aggregated delta row per (campaign,
//!   state) or (campaign, domain) that the statement changed: plain inserts,
//!   no unique key, no lock on any existing row. Readers fold a campaign's
//!   delta rows back into one row per key (`Store::fold_delivery_counts`) when
//!   there are more than a few hundred. PostgreSQL allows no column list on a
//!   trigger with transition tables, so the update trigger fires on every
//!   update of `deliveries` and keeps only rows whose state changed.
//!
//! `idx_deliveries_problems`: a partial index on (campaign, state,
//! last_error) of the failed, deferred, rejected and skipped deliveries, so
//! `Store::campaign_errors` groups them with an index-only scan (2 ms
//! instead of 26-40 ms warm, and 0.5 s cold under load, for 20,000 failures
//! among 1M deliveries) and nothing else on the sending path pays for it: sent
//! deliveries are not in it. A btree entry must stay under ~2,700 bytes on
//! PostgreSQL, so a BEFORE trigger there cuts a `last_error` longer than
//! 2,000 bytes to its first 500 characters and says so (an SMTP reply line
//! is at most 512 bytes; only unusual multi-line replies get there).
//!
//! No foreign key to `campaigns`: a deleted campaign's deliveries cascade,
//! their delete trigger brings its counts to zero (folding drops zero rows).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// States whose deliveries are not final yet (`DomainCount::pending`).
const QUEUED: &str = "('pending', 'sending', 'deferred')";

/// States `campaign_errors` lists; the index's predicate. The query must
/// spell them as literals (not bound values) for either planner to use it.
const PROBLEMS_INDEX: &str = "CREATE INDEX idx_deliveries_problems ON deliveries (campaign_id, state, last_error) \
     WHERE state IN ('failed', 'deferred', 'rejected', 'skipped')";

const SQLITE_UP: &[&str] = &[
    PROBLEMS_INDEX,
    "CREATE TABLE delivery_state_counts (campaign_id uuid_text NOT NULL, state varchar(16) NOT NULL, \
     n bigint NOT NULL, PRIMARY KEY (campaign_id, state))",
    "CREATE TABLE delivery_domain_counts (campaign_id uuid_text NOT NULL, domain text NOT NULL, \
     total bigint NOT NULL, queued bigint NOT NULL, sent bigint NOT NULL, PRIMARY KEY (campaign_id, domain))",
    "INSERT INTO delivery_state_counts (campaign_id, state, n) \
     SELECT campaign_id, state, COUNT(*) FROM deliveries GROUP BY campaign_id, state",
    "INSERT INTO delivery_domain_counts (campaign_id, domain, total, queued, sent) \
     SELECT campaign_id, substr(email, instr(email, '@') + 1), COUNT(*), \
     SUM(state IN ('pending', 'sending', 'deferred')), SUM(state = 'sent') \
     FROM deliveries GROUP BY campaign_id, substr(email, instr(email, '@') + 1)",
    "CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries BEGIN \
     INSERT INTO delivery_state_counts (campaign_id, state, n) VALUES (new.campaign_id, new.state, 1) \
     ON CONFLICT (campaign_id, state) DO UPDATE SET n = n + 1; \
     INSERT INTO delivery_domain_counts (campaign_id, domain, total, queued, sent) \
     VALUES (new.campaign_id, substr(new.email, instr(new.email, '@') + 1), 1, \
     new.state IN ('pending', 'sending', 'deferred'), new.state = 'sent') \
     ON CONFLICT (campaign_id, domain) DO UPDATE SET total = total + 1, \
     queued = queued + excluded.queued, sent = sent + excluded.sent; \
     END",
    "CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries BEGIN \
     UPDATE delivery_state_counts SET n = n - 1 WHERE campaign_id = old.campaign_id AND state = old.state; \
     UPDATE delivery_domain_counts SET total = total - 1, \
     queued = queued - (old.state IN ('pending', 'sending', 'deferred')), sent = sent - (old.state = 'sent') \
     WHERE campaign_id = old.campaign_id AND domain = substr(old.email, instr(old.email, '@') + 1); \
     END",
    "CREATE TRIGGER deliveries_count_update AFTER UPDATE OF state ON deliveries \
     WHEN old.state IS NOT new.state BEGIN \
     UPDATE delivery_state_counts SET n = n - 1 WHERE campaign_id = old.campaign_id AND state = old.state; \
     INSERT INTO delivery_state_counts (campaign_id, state, n) VALUES (new.campaign_id, new.state, 1) \
     ON CONFLICT (campaign_id, state) DO UPDATE SET n = n + 1; \
     END",
    // The domain row only changes when the delivery moves between queued,
    // sent and the rest: its own trigger whose WHEN skips the claims
    // (pending -> sending) and the retries (deferred -> sending) without
    // running a statement.
    "CREATE TRIGGER deliveries_count_update_domain AFTER UPDATE OF state ON deliveries \
     WHEN (new.state IN ('pending', 'sending', 'deferred')) <> (old.state IN ('pending', 'sending', 'deferred')) \
     OR (new.state = 'sent') <> (old.state = 'sent') BEGIN \
     UPDATE delivery_domain_counts SET \
     queued = queued + (new.state IN ('pending', 'sending', 'deferred')) - (old.state IN ('pending', 'sending', 'deferred')), \
     sent = sent + (new.state = 'sent') - (old.state = 'sent') \
     WHERE campaign_id = new.campaign_id AND domain = substr(new.email, instr(new.email, '@') + 1); \
     END",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_deliveries_problems",
    "DROP TRIGGER IF EXISTS deliveries_count_update_domain",
    "DROP TRIGGER IF EXISTS deliveries_count_update",
    "DROP TRIGGER IF EXISTS deliveries_count_delete",
    "DROP TRIGGER IF EXISTS deliveries_count_insert",
    "DROP TABLE IF EXISTS delivery_domain_counts",
    "DROP TABLE IF EXISTS delivery_state_counts",
];

fn postgres_up() -> Vec<String> {
    let domain_delta = |rows: &str, sign: &str| {
        format!(
            "INSERT INTO delivery_domain_counts (campaign_id, domain, total, queued, sent) \
             SELECT campaign_id, split_part(email, '@', 2), {sign}COUNT(*), \
             {sign}COUNT(*) FILTER (WHERE state IN {QUEUED}), {sign}COUNT(*) FILTER (WHERE state = 'sent') \
             FROM {rows} GROUP BY 1, 2;"
        )
    };
    vec![
        "CREATE FUNCTION rundbrief_deliveries_cap_error() RETURNS trigger LANGUAGE plpgsql AS $f$ \
         BEGIN \
         NEW.last_error := left(NEW.last_error, 500) || ' [cut from ' || octet_length(NEW.last_error) || ' bytes]'; \
         RETURN NEW; END $f$"
            .into(),
        "UPDATE deliveries SET last_error = left(last_error, 500) || ' [cut from ' || octet_length(last_error) || ' bytes]' \
         WHERE octet_length(last_error) > 2000"
            .into(),
        "CREATE TRIGGER deliveries_cap_error BEFORE INSERT OR UPDATE OF last_error ON deliveries \
         FOR EACH ROW WHEN (octet_length(NEW.last_error) > 2000) \
         EXECUTE FUNCTION rundbrief_deliveries_cap_error()"
            .into(),
        PROBLEMS_INDEX.into(),
        "CREATE TABLE delivery_state_counts (campaign_id uuid NOT NULL, state varchar(16) NOT NULL, \
         n bigint NOT NULL)"
            .into(),
        "CREATE INDEX idx_delivery_state_counts ON delivery_state_counts (campaign_id)".into(),
        "CREATE TABLE delivery_domain_counts (campaign_id uuid NOT NULL, domain text NOT NULL, \
         total bigint NOT NULL, queued bigint NOT NULL, sent bigint NOT NULL)"
            .into(),
        "CREATE INDEX idx_delivery_domain_counts ON delivery_domain_counts (campaign_id)".into(),
        "INSERT INTO delivery_state_counts (campaign_id, state, n) \
         SELECT campaign_id, state, COUNT(*) FROM deliveries GROUP BY campaign_id, state"
            .into(),
        domain_delta("deliveries", ""),
        format!(
            "CREATE FUNCTION rundbrief_deliveries_count_insert() RETURNS trigger LANGUAGE plpgsql AS $f$ \
             BEGIN \
             INSERT INTO delivery_state_counts (campaign_id, state, n) \
             SELECT campaign_id, state, COUNT(*) FROM new_rows GROUP BY 1, 2; \
             {} \
             RETURN NULL; END $f$",
            domain_delta("new_rows", "")
        ),
        format!(
            "CREATE FUNCTION rundbrief_deliveries_count_delete() RETURNS trigger LANGUAGE plpgsql AS $f$ \
             BEGIN \
             INSERT INTO delivery_state_counts (campaign_id, state, n) \
             SELECT campaign_id, state, -COUNT(*) FROM old_rows GROUP BY 1, 2; \
             {} \
             RETURN NULL; END $f$",
            domain_delta("old_rows", "-")
        ),
        // One pass over the changed rows: the state deltas (+1 new, -1 old,
        // pairs that cancel out dropped) and the domain deltas (only rows
        // that moved between queued, sent and the rest).
        format!(
            "CREATE FUNCTION rundbrief_deliveries_count_update() RETURNS trigger LANGUAGE plpgsql AS $f$ \
             BEGIN \
             WITH ch AS ( \
               SELECT n.campaign_id, n.email, o.state AS old_state, n.state AS new_state \
               FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE o.state IS DISTINCT FROM n.state), \
             s AS ( \
               INSERT INTO delivery_state_counts (campaign_id, state, n) \
               SELECT campaign_id, state, SUM(d) FROM ( \
                 SELECT campaign_id, new_state AS state, 1 AS d FROM ch \
                 UNION ALL SELECT campaign_id, old_state, -1 FROM ch) x \
               GROUP BY 1, 2 HAVING SUM(d) <> 0) \
             INSERT INTO delivery_domain_counts (campaign_id, domain, total, queued, sent) \
             SELECT campaign_id, split_part(email, '@', 2), 0, SUM(q), SUM(t) FROM ( \
               SELECT campaign_id, email, \
               (new_state IN {QUEUED})::int - (old_state IN {QUEUED})::int AS q, \
               (new_state = 'sent')::int - (old_state = 'sent')::int AS t FROM ch) y \
             WHERE q <> 0 OR t <> 0 \
             GROUP BY 1, 2 HAVING SUM(q) <> 0 OR SUM(t) <> 0; \
             RETURN NULL; END $f$"
        ),
        "CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries \
         REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION rundbrief_deliveries_count_insert()"
            .into(),
        "CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries \
         REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION rundbrief_deliveries_count_delete()"
            .into(),
        "CREATE TRIGGER deliveries_count_update AFTER UPDATE ON deliveries \
         REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT \
         EXECUTE FUNCTION rundbrief_deliveries_count_update()"
            .into(),
    ]
}

const POSTGRES_DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_deliveries_problems",
    "DROP TRIGGER IF EXISTS deliveries_cap_error ON deliveries",
    "DROP FUNCTION IF EXISTS rundbrief_deliveries_cap_error()",
    "DROP TRIGGER IF EXISTS deliveries_count_update ON deliveries",
    "DROP TRIGGER IF EXISTS deliveries_count_delete ON deliveries",
    "DROP TRIGGER IF EXISTS deliveries_count_insert ON deliveries",
    "DROP FUNCTION IF EXISTS rundbrief_deliveries_count_update()",
    "DROP FUNCTION IF EXISTS rundbrief_deliveries_count_delete()",
    "DROP FUNCTION IF EXISTS rundbrief_deliveries_count_insert()",
    "DROP TABLE IF EXISTS delivery_domain_counts",
    "DROP TABLE IF EXISTS delivery_state_counts",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let stmts: Vec<String> = match manager.get_database_backend() {
            DbBackend::Postgres => postgres_up(),
            _ => SQLITE_UP.iter().map(|s| String::from(*s)).collect(),
        };
        for s in stmts {
            db.execute_unprepared(&s).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let stmts = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        for s in stmts {
            db.execute_unprepared(s).await?;
        }
        Ok(())
    }
}
