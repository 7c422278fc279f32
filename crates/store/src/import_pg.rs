//! The PostgreSQL side of the import: `COPY` into a temporary staging table,
//! then one set-based statement per batch (see the [`crate::import`] module
//! doc for the whole path).

use crate::import::{Batch, RESTORE_REASON, reason_prefix, sqlx_error};
use crate::{BatchReport, Result, StoreError};
use rundbrief_core::model::UnknownValue;
use rundbrief_core::{Actor, AuditAction, MembershipStatus, SubscriberStatus};
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use std::io::Write as _;
use uuid::Uuid;

pub(crate) struct PgImport {
    conn: Conn,
}

/// The import's own connection: the staging table is a temporary table of
/// its session.
enum Conn {
    /// One transaction per batch.
    Batches(PoolConnection<Postgres>),
    /// The one transaction of a dry run.
    Dry(Transaction<'static, Postgres>),
}

const STAGE: &str = "CREATE TEMP TABLE IF NOT EXISTS rundbrief_import_stage (\
    key text NOT NULL, email text NOT NULL, name text, attrs jsonb NOT NULL, \
    line bigint NOT NULL, occ bigint NOT NULL, new_id uuid NOT NULL, aid uuid NOT NULL, aid2 uuid NOT NULL\
    ) ON COMMIT DELETE ROWS";

const COPY: &str = "COPY rundbrief_import_stage (key, email, name, attrs, line, occ, new_id, aid, aid2) FROM STDIN";

/// The whole batch in one statement. `d` classifies each staged row: `n`ew
/// (no subscriber with this key), `u`pdate (active, or bounced and restored,
/// and not unsubscribed from this list) or `s`kip; the data-modifying CTEs
/// write from it, and the final SELECT returns the counts and any status
/// word the code does not know (which fails the batch).
///
/// $1 list id, $2 restore bounced, $3 now, $4 `active`, $5 `bounced`,
/// $6 `subscribed`, $7 membership `unsubscribed`, $8 actor, $9–$11 the
/// actions created / restored / subscribed, $12 and $13 the reason prefixes
/// (`import: SOURCE:` and the restore one), $14 and $15 the known subscriber
/// and membership status words.
const APPLY: &str = "WITH d AS MATERIALIZED (
  SELECT x.*, CASE WHEN x.sid IS NULL THEN 'n'
      WHEN (x.sst = $4 OR (x.sst = $5 AND $2)) AND x.mst IS DISTINCT FROM $7 THEN 'u'
      ELSE 's' END AS what
  FROM (SELECT st.*, s.id AS sid, s.name AS sname, s.attributes AS sattrs,
          lower(btrim(s.status)) AS sst, lower(btrim(m.status)) AS mst
        FROM rundbrief_import_stage st
        LEFT JOIN subscribers s ON s.email_key = st.key
        LEFT JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = $1) x
), ins AS (
  INSERT INTO subscribers (id, email, email_key, name, attributes, status, created_at, updated_at)
  SELECT new_id, email, key, name, attrs, $4, $3, $3 FROM d WHERE what = 'n'
), upd AS (
  UPDATE subscribers s SET name = COALESCE(d.name, s.name), attributes = s.attributes || d.attrs,
      status = $4, updated_at = $3,
      -- back from `bounced`: the old bounces no longer count (as `sub restore`)
      bounce_score = CASE WHEN d.sst = $5 THEN NULL ELSE s.bounce_score END,
      bounce_day = CASE WHEN d.sst = $5 THEN NULL ELSE s.bounce_day END,
      bounce_day_weight = CASE WHEN d.sst = $5 THEN NULL ELSE s.bounce_day_weight END,
      bounce_last = CASE WHEN d.sst = $5 THEN NULL ELSE s.bounce_last END,
      bounce_reset_at = CASE WHEN d.sst = $5 THEN $3 ELSE s.bounce_reset_at END
  FROM d WHERE d.what = 'u' AND s.id = d.sid
    AND (d.sst <> $4 OR (d.name IS NOT NULL AND d.name IS DISTINCT FROM d.sname)
         OR (d.sattrs || d.attrs) IS DISTINCT FROM d.sattrs)
), mem AS (
  INSERT INTO memberships (subscriber_id, list_id, status, created_at, updated_at)
  SELECT COALESCE(sid, new_id), $1, $6, $3, $3 FROM d
  WHERE what = 'n' OR (what = 'u' AND mst IS DISTINCT FROM $6)
  ON CONFLICT (subscriber_id, list_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at
), aud AS (
  INSERT INTO audit (id, subscriber_id, list_id, action, actor, reason, created_at)
  SELECT aid, new_id, $1, $9, $8, $12 || line, $3 FROM d WHERE what = 'n'
  UNION ALL
  SELECT aid, sid, NULL, $10, $8, $13 || line, $3 FROM d WHERE what = 'u' AND sst <> $4
  UNION ALL
  SELECT aid2, sid, $1, $11, $8, $12 || line, $3 FROM d WHERE what = 'u' AND mst IS DISTINCT FROM $6
)
SELECT count(*) FILTER (WHERE what = 'n'),
  (COALESCE(sum(occ) FILTER (WHERE what = 'u'), 0) + COALESCE(sum(occ - 1) FILTER (WHERE what = 'n'), 0))::bigint,
  COALESCE(sum(occ) FILTER (WHERE what = 's'), 0)::bigint,
  min(sst) FILTER (WHERE sid IS NOT NULL AND NOT (sst = ANY($14))),
  min(mst) FILTER (WHERE mst IS NOT NULL AND NOT (mst = ANY($15)))
FROM d";

impl PgImport {
    pub(crate) async fn begin(pool: &PgPool, dry_run: bool) -> Result<PgImport> {
        let conn = if dry_run {
            // Created inside the transaction: the rollback drops it again.
            let mut txn = pool
                .begin()
                .await
                .map_err(sqlx_error("starting the dry run"))?;
            txn.execute(STAGE)
                .await
                .map_err(sqlx_error("creating the import staging table"))?;
            Conn::Dry(txn)
        } else {
            let mut conn = pool
                .acquire()
                .await
                .map_err(sqlx_error("starting the import"))?;
            conn.execute(STAGE)
                .await
                .map_err(sqlx_error("creating the import staging table"))?;
            Conn::Batches(conn)
        };
        Ok(PgImport { conn })
    }

    pub(crate) async fn write(&mut self, batch: Batch<'_>) -> Result<BatchReport> {
        let data = copy_data(&batch)?;
        match &mut self.conn {
            Conn::Dry(txn) => {
                // No commit between batches: empty the table by hand.
                txn.execute("TRUNCATE rundbrief_import_stage")
                    .await
                    .map_err(sqlx_error("emptying the import staging table"))?;
                apply(txn, &batch, data).await
            }
            Conn::Batches(conn) => {
                let mut txn = conn.begin().await.map_err(sqlx_error("starting a batch"))?;
                // On error the transaction is dropped, which rolls it back.
                let report = apply(&mut txn, &batch, data).await?;
                txn.commit()
                    .await
                    .map_err(sqlx_error("committing a batch"))?;
                Ok(report)
            }
        }
    }

    pub(crate) async fn finish(self) -> Result<()> {
        match self.conn {
            Conn::Dry(txn) => txn
                .rollback()
                .await
                .map_err(sqlx_error("rolling back the dry run")),
            Conn::Batches(mut conn) => {
                // The connection goes back to the pool: leave nothing behind.
                conn.execute("DROP TABLE IF EXISTS pg_temp.rundbrief_import_stage")
                    .await
                    .map_err(sqlx_error("dropping the import staging table"))?;
                Ok(())
            }
        }
    }
}

async fn apply(conn: &mut PgConnection, batch: &Batch<'_>, data: Vec<u8>) -> Result<BatchReport> {
    if batch.rows.is_empty() {
        return Ok(BatchReport::default());
    }
    // A batch is a thousand-odd staged rows against tables of up to
    // millions, so the only good plan probes the indexes row by row. During
    // an import the tables have no statistics yet (autoanalyze lags), and
    // the planner then hashed all of `subscribers` or the list's memberships
    // for every batch while they were below a few hundred thousand rows
    // (a third of the time at 200k rows). For this transaction only.
    conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        .await
        .map_err(sqlx_error("preparing the import transaction"))?;
    let mut copy = conn
        .copy_in_raw(COPY)
        .await
        .map_err(sqlx_error("staging the batch"))?;
    if let Err(e) = copy.send(data).await {
        let _ = copy.abort("sending failed").await;
        return Err(sqlx_error("staging the batch")(e));
    }
    copy.finish()
        .await
        .map_err(sqlx_error("staging the batch"))?;

    let words = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (imported, updated, skipped, bad_status, bad_membership): (
        i64,
        i64,
        i64,
        Option<String>,
        Option<String>,
    ) = sea_orm::sqlx::query_as(APPLY)
        // The unnamed statement: planned for this batch, never a cached generic plan.
        .persistent(false)
        .bind(batch.list_id)
        .bind(batch.opts.resubscribe_bounced)
        .bind(batch.now)
        .bind(SubscriberStatus::Active.as_str())
        .bind(SubscriberStatus::Bounced.as_str())
        .bind(MembershipStatus::Subscribed.as_str())
        .bind(MembershipStatus::Unsubscribed.as_str())
        .bind(Actor::Import.as_str())
        .bind(AuditAction::Created.as_str())
        .bind(AuditAction::Restored.as_str())
        .bind(AuditAction::Subscribed.as_str())
        .bind(reason_prefix("import", &batch.opts.source))
        .bind(reason_prefix(RESTORE_REASON, &batch.opts.source))
        .bind(words(
            &SubscriberStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        ))
        .bind(words(
            &MembershipStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
        ))
        .fetch_one(&mut *conn)
        .await
        .map_err(sqlx_error("writing imported rows"))?;
    // Returning the error drops the transaction: the batch is rolled back.
    if let Some(given) = bad_status {
        return Err(unknown(
            "SubscriberStatus",
            given,
            SubscriberStatus::ALL.iter().map(|s| s.as_str()),
        ));
    }
    if let Some(given) = bad_membership {
        return Err(unknown(
            "MembershipStatus",
            given,
            MembershipStatus::ALL.iter().map(|s| s.as_str()),
        ));
    }
    Ok(BatchReport {
        imported: imported as u64,
        updated: updated as u64,
        skipped: skipped as u64,
    })
}

fn unknown<'a>(
    what: &'static str,
    given: String,
    all: impl Iterator<Item = &'a str>,
) -> StoreError {
    StoreError::Corrupt(UnknownValue {
        what,
        given,
        expected: all.collect::<Vec<_>>().join(", "),
    })
}

/// The batch in `COPY`'s text format, one line per merged address, with the
/// ids its new subscriber and audit entries would get.
fn copy_data(batch: &Batch<'_>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.rows.len() * 256);
    let mut json = Vec::with_capacity(256);
    for m in &batch.rows {
        let row = &m.row;
        put_text(&mut out, &m.key);
        out.push(b'\t');
        put_text(&mut out, row.address.as_str());
        out.push(b'\t');
        match &row.name {
            Some(n) => put_text(&mut out, n),
            None => out.extend_from_slice(b"\\N"),
        }
        out.push(b'\t');
        json.clear();
        serde_json::to_writer(&mut json, &row.attributes).map_err(|e| {
            StoreError::CorruptColumn {
                column: "import row attributes",
                problem: e.to_string(),
            }
        })?;
        put_bytes(&mut out, &json);
        // Writing to a Vec cannot fail.
        let _ = writeln!(
            out,
            "\t{}\t{}\t{}\t{}\t{}",
            row.line,
            m.occurrences,
            Uuid::now_v7().hyphenated(),
            Uuid::now_v7().hyphenated(),
            Uuid::now_v7().hyphenated()
        );
    }
    Ok(out)
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Escapes a value for `COPY … FROM STDIN` text format.
fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_its_special_bytes() {
        let mut out = Vec::new();
        put_text(&mut out, "a\\b\tc\nd\re\"f");
        assert_eq!(out, b"a\\\\b\\tc\\nd\\re\"f");
    }
}
